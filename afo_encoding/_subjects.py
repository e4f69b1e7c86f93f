"""Which subject: the one check every estimator and network makes of a ``subject`` index."""

from __future__ import annotations

from typing import Any

import numpy as np


class SubjectIndexError(IndexError, ValueError):
    """A subject index outside ``[0, n_subjects)``."""


def check_subject(subject: Any, n_subjects: int, what: str = "this model") -> int:
    """``subject`` as an int in ``[0, n_subjects)``, or a clear error.

    Parameters
    ----------
    subject : int
        The index given.
    n_subjects : int
        How many subjects ``what`` has.
    what : str
        Named in the message (``"this encoder"``, ``"the model"``).

    Raises
    ------
    TypeError
        ``subject`` is not an integer.
    SubjectIndexError
        It is out of range (an ``IndexError`` and a ``ValueError``).
    """
    if isinstance(subject, (bool, np.bool_)) or not isinstance(subject, (int, np.integer)):
        raise TypeError(f"subject must be an int, got {type(subject).__name__}.")
    if not 0 <= subject < n_subjects:
        raise SubjectIndexError(
            f"subject must be in [0, {n_subjects}): {what} has {n_subjects} subject(s), got "
            f"subject={subject}."
        )
    return int(subject)
