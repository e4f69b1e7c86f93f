"""Declared parameter constraints, checked at the top of every encoder's ``fit``.

An encoder lists what each of its parameters may be in a class attribute (the model is
scikit-learn's ``_parameter_constraints``, whose machinery is private to scikit-learn)::

    _parameter_constraints = {
        "learning_rate": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "layers": [None, list, tuple],
        ...
    }

and :func:`validate_params` checks them all before anything is computed, so a typo costs
no backbone pass. A value that satisfies none of its constraints raises
:class:`InvalidParameterError` (a ``ValueError`` and a ``TypeError``) that names the
estimator, the parameter, what it may be and the value given.

A constraint is ``None`` (the value ``None``), a type (``isinstance``), or one of the
classes below.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


class InvalidParameterError(ValueError, TypeError):
    """A constructor parameter of an encoder has a value it cannot take."""


class Constraint:
    """A set of allowed values, with a description for error messages."""

    def is_satisfied_by(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _is_integral(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Interval(Constraint):
    """Numbers of a type (``numbers.Integral`` or ``numbers.Real``) in an interval.

    ``left``/``right`` of ``None`` mean unbounded; ``closed`` is ``"left"``, ``"right"``,
    ``"both"`` or ``"neither"``. Booleans are not numbers here and NaN is in no interval.
    """

    type: type
    left: float | None
    right: float | None
    closed: str = "both"

    def is_satisfied_by(self, value: Any) -> bool:
        if not (_is_integral(value) if self.type is numbers.Integral else _is_real(value)):
            return False
        if math.isnan(value):
            return False
        left_closed = self.closed in ("left", "both")
        right_closed = self.closed in ("right", "both")
        below = self.left is not None and (
            value < self.left or (value == self.left and not left_closed)
        )
        above = self.right is not None and (
            value > self.right or (value == self.right and not right_closed)
        )
        return not (below or above)

    def describe(self) -> str:
        integral = self.type is numbers.Integral
        if self.right is None and self.left is not None:
            inclusive = self.closed in ("left", "both")
            if integral:
                low = self.left if inclusive else self.left + 1
                if low == 1:
                    return "a positive integer"
                if low == 0:
                    return "a non-negative integer"
                return f"an integer >= {low}"
            if self.left == 0:
                return "a non-negative number" if inclusive else "a positive number"
            return f"a number {'>=' if inclusive else '>'} {self.left}"
        left = "-inf" if self.left is None else self.left
        right = "inf" if self.right is None else self.right
        open_ = "[" if self.closed in ("left", "both") else "("
        close = "]" if self.closed in ("right", "both") else ")"
        kind = "an integer" if integral else "a number"
        return f"{kind} in {open_}{left}, {right}{close}"


@dataclass(frozen=True)
class StrOptions(Constraint):
    """One of a few strings."""

    options: frozenset

    def __init__(self, options: Iterable[str]):
        object.__setattr__(self, "options", frozenset(options))

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    def describe(self) -> str:
        names = sorted(self.options)
        if len(names) == 1:
            return repr(names[0])
        return "one of {" + ", ".join(repr(n) for n in names) + "}"


class Boolean(Constraint):
    """``True`` or ``False`` (numpy booleans too)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "True or False"


class ArrayLike(Constraint):
    """A numpy array, a list or tuple, or anything with ``__array__``."""

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, (np.ndarray, list, tuple)) or hasattr(value, "__array__")

    def describe(self) -> str:
        return "an array-like"


class CVObject(Constraint):
    """A cross-validation splitter (an object with ``split``) or an iterable of splits."""

    def is_satisfied_by(self, value: Any) -> bool:
        if hasattr(value, "split") and not isinstance(value, str):
            return True
        return isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict))

    def describe(self) -> str:
        return "a cross-validation splitter or an iterable of (train, test) splits"


class RandomState(Constraint):
    """What :func:`sklearn.utils.check_random_state` takes."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None or _is_integral(value) or isinstance(value, np.random.RandomState)

    def describe(self) -> str:
        return "an int, a numpy RandomState or None"


class Verbosity(Constraint):
    """What :func:`afo_encoding.set_log_level` takes: a bool, an int or a level name."""

    def is_satisfied_by(self, value: Any) -> bool:
        return value is None or isinstance(value, (bool, np.bool_, numbers.Integral, str))

    def describe(self) -> str:
        return "a bool, an int or a logging level name"


class DeviceName(Constraint):
    """A device an encoder runs on: one of ``names`` or ``"cuda:<index>"``."""

    def __init__(self, names: Iterable[str]):
        self.names = tuple(names)

    def is_satisfied_by(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return value in self.names or re.fullmatch(r"cuda:\d+", value) is not None

    def describe(self) -> str:
        return "one of {" + ", ".join(repr(n) for n in self.names) + "} or 'cuda:<index>'"


class Anything(Constraint):
    """No constraint: the value is checked where it is used (masks, ROI labels...)."""

    def is_satisfied_by(self, value: Any) -> bool:
        return True

    def describe(self) -> str:
        return "anything"


#: the disk caches of the encoders: a folder or a joblib.Memory
MEMORY = [None, str, os.PathLike, "joblib.Memory"]
#: a folder
FOLDER = [None, str, os.PathLike]


def _satisfies(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, Constraint):
        return constraint.is_satisfied_by(value)
    if isinstance(constraint, str):  # a class by dotted name, not imported until needed
        return type(value).__name__ == constraint.rpartition(".")[2]
    return isinstance(value, constraint)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, Constraint):
        return constraint.describe()
    if isinstance(constraint, str):
        return f"a {constraint}"
    name = {str: "str", os.PathLike: "path", dict: "dict", list: "list", tuple: "tuple"}.get(
        constraint, constraint.__name__
    )
    return f"a {name}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(estimator: Any, constraints: dict) -> None:
    """Check every parameter of ``estimator`` against its declared ``constraints``.

    Parameters
    ----------
    estimator : BaseEstimator
        Its ``get_params(deep=False)`` are checked.
    constraints : dict
        Parameter name -> list of constraints (the value must satisfy one of them).

    Raises
    ------
    InvalidParameterError
        For the first parameter whose value satisfies none, with the estimator's name, the
        parameter, what it may be and the value given.
    """
    name = type(estimator).__name__
    for param, value in estimator.get_params(deep=False).items():
        if param not in constraints:
            raise InvalidParameterError(
                f"{name} declares no constraint for its parameter {param!r} (a bug: "
                "add it to _parameter_constraints)."
            )
        allowed = constraints[param]
        if any(_satisfies(c, value) for c in allowed):
            continue
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidParameterError(
            f"{param} must be {_join([_describe(c) for c in allowed])}, got {shown} "
            f"(a {type(value).__name__}): set the {param!r} parameter of {name} to one of "
            "those values."
        )
