"""Logging the MNE way: one package logger, a ``verbose`` argument, no ``print``.

Every public function or estimator that takes ``verbose`` maps it through
:func:`verbose_level`; library code logs through :data:`logger` and shows progress bars
through :func:`progress`, which is silent unless the effective level is INFO or lower.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

logger = logging.getLogger("afo_encoding")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False

_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def verbose_level(verbose: bool | int | str | None) -> int | None:
    """Translate a ``verbose`` argument to a :mod:`logging` level.

    Parameters
    ----------
    verbose : bool | int | str | None
        ``None`` keeps the package level; ``True`` means INFO, ``False`` WARNING;
        a non-negative int is read as scikit-learn reads it (0 WARNING, 1 INFO,
        2 or more DEBUG); a string is a level name such as ``"debug"``.

    Returns
    -------
    level : int | None
        The logging level, or ``None`` when ``verbose`` is ``None``.
    """
    if verbose is None:
        return None
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, int):
        if verbose < 0:
            raise ValueError(f"verbose must be >= 0, got {verbose}.")
        return (logging.WARNING, logging.INFO)[verbose] if verbose < 2 else logging.DEBUG
    if isinstance(verbose, str) and verbose.upper() in _LEVELS:
        return _LEVELS[verbose.upper()]
    raise ValueError(
        f"verbose must be a bool, a non-negative int or one of {sorted(_LEVELS)}, "
        f"got {verbose!r}."
    )


def set_log_level(verbose: bool | int | str | None = None) -> int:
    """Set the level of the ``afo_encoding`` logger and return the previous one.

    Parameters
    ----------
    verbose : bool | int | str | None
        See :func:`verbose_level`; ``None`` means WARNING.

    Returns
    -------
    previous : int
        The level before the call, to restore it later.

    Examples
    --------
    >>> import afo_encoding
    >>> old = afo_encoding.set_log_level("info")
    >>> _ = afo_encoding.set_log_level(old)
    """
    previous = logger.level
    level = verbose_level(verbose)
    logger.setLevel(logging.WARNING if level is None else level)
    return previous


@contextlib.contextmanager
def use_log_level(verbose: bool | int | str | None) -> Iterator[None]:
    """Context manager that sets the package log level for its block (``None``: unchanged)."""
    level = verbose_level(verbose)
    if level is None:
        yield
        return
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def progress(iterable: Iterable, verbose: bool | int | str | None = None, **kwargs):
    """Wrap ``iterable`` in a tqdm progress bar when ``verbose`` asks for INFO or more.

    Parameters
    ----------
    iterable : iterable
        What to iterate over.
    verbose : bool | int | str | None
        As in :func:`verbose_level`; ``None`` follows the package logger.
    **kwargs
        Passed to :class:`tqdm.auto.tqdm` (``desc``, ``total``, ``unit``...).
    """
    level = verbose_level(verbose)
    if level is None:
        level = logger.getEffectiveLevel()
    if level > logging.INFO:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
