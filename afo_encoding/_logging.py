"""Logging the MNE way: one package logger, a ``verbose`` argument, no ``print``.

Every public function or estimator that takes ``verbose`` maps it through
:func:`verbose_level`; library code logs through :data:`logger` and shows progress bars
through :func:`progress`, which is silent unless the effective level is INFO or lower.
Like MNE's, a progress bar redraws itself only where it can: on a terminal and in a
Jupyter notebook (a widget); in a log file, a CI log or a sphinx-gallery output cell it
writes a few plain lines through the logger instead of one line per refresh.
"""

from __future__ import annotations

import contextlib
import logging
import sys
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
        an int below 10 is read as scikit-learn reads it (0 WARNING, 1 INFO, 2 to 9
        DEBUG); an int of 10 or more is a :mod:`logging` level (``logging.INFO`` is 20),
        as MNE reads it, so the value :func:`set_log_level` returns can be given back;
        a string is a level name such as ``"debug"``.

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
        if verbose >= logging.DEBUG:
            return verbose  # a logging level, e.g. what set_log_level returned
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
        The :mod:`logging` level before the call (e.g. 30 for WARNING); give it back to
        restore that level.

    Examples
    --------
    >>> import afo_encoding
    >>> old = afo_encoding.set_log_level("info")
    >>> _ = afo_encoding.set_log_level(old)
    >>> afo_encoding.set_log_level(old) == old
    True
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


def _in_notebook() -> bool:
    """Whether code runs in a Jupyter kernel (where tqdm draws a widget)."""
    shell = sys.modules.get("IPython")
    shell = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _on_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


class LogProgress:
    """A progress "bar" for logs: at most ``n_lines`` INFO lines, then one when it ends.

    It stands in for tqdm where the output cannot be redrawn (a file, a CI log, a gallery
    output cell), with the part of tqdm's interface the package uses (iteration,
    ``set_postfix``, ``close``).
    """

    def __init__(self, iterable: Iterable, desc: str | None = None, total: int | None = None,
                 initial: int = 0, unit: str = "it", n_lines: int = 4,
                 level: int = logging.INFO, **_: object) -> None:
        self.iterable = iterable
        self.level = level
        self.desc = desc or "progress"
        self.total = total if total is not None else getattr(iterable, "__len__", lambda: None)()
        self.n = int(initial)
        self.unit = unit
        self.postfix = ""
        self._n_lines = n_lines
        self._logged = -1
        self._closed = False

    def __len__(self) -> int:
        return len(self.iterable)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
            if self.total:
                step = max(1, -(-self.total // self._n_lines))
                if self.n % step == 0 and self.n < self.total:
                    self._log()
        self.close()

    def set_postfix(self, **values: object) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _log(self) -> None:
        if self._logged == self.n or (self.total is not None and self.total <= 1):
            return  # a one-step "progress" says nothing
        self._logged = self.n
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        with use_log_level(min(self.level, logger.level)):
            logger.info("%s: %s %s%s", self.desc, done, self.unit,
                        f" ({self.postfix})" if self.postfix else "")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._log()


def progress(iterable: Iterable, verbose: bool | int | str | None = None, **kwargs):
    """Wrap ``iterable`` in a progress bar when ``verbose`` asks for INFO or more.

    On a terminal the bar is tqdm's; in a Jupyter notebook, tqdm's widget; anywhere else
    (a log file, CI, a sphinx-gallery output cell) a :class:`LogProgress` that logs a few
    lines instead of one per refresh.

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
    if _in_notebook():
        from tqdm.notebook import tqdm
    elif _on_terminal():
        from tqdm import tqdm
    else:
        return LogProgress(iterable, level=level, **kwargs)
    return tqdm(iterable, **kwargs)
