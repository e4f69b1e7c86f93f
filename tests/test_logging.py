"""Logging the MNE way: one package logger, ``verbose`` arguments, progress bars, no print."""

import ast
import logging
from pathlib import Path

import pytest
from tqdm import tqdm

import afo_encoding
from afo_encoding import _logging
from afo_encoding._logging import (
    logger,
    progress,
    set_log_level,
    use_log_level,
    verbose_level,
)

PACKAGE = Path(afo_encoding.__file__).parent


@pytest.fixture(autouse=True)
def _restore_level():
    previous = logger.level
    yield
    logger.setLevel(previous)


@pytest.mark.parametrize(
    ("verbose", "level"),
    [
        (None, None),
        (True, logging.INFO),
        (False, logging.WARNING),
        (0, logging.WARNING),
        (1, logging.INFO),
        (2, logging.DEBUG),
        (9, logging.DEBUG),
        (10, logging.DEBUG),
        (20, logging.INFO),
        (30, logging.WARNING),
        (40, logging.ERROR),
        ("debug", logging.DEBUG),
        ("Info", logging.INFO),
        ("WARNING", logging.WARNING),
        ("error", logging.ERROR),
        ("critical", logging.CRITICAL),
    ],
)
def test_verbose_level(verbose, level):
    assert verbose_level(verbose) == level


@pytest.mark.parametrize(
    ("verbose", "match"),
    [(-1, "verbose must be >= 0, got -1"), ("loud", "got 'loud'"), (1.5, "got 1.5")],
)
def test_verbose_level_rejects_bad_values(verbose, match):
    with pytest.raises(ValueError, match=match):
        verbose_level(verbose)


def test_package_logger():
    assert logger is logging.getLogger("afo_encoding")
    assert logger.handlers
    assert not logger.propagate
    assert afo_encoding.set_log_level is set_log_level


def test_set_log_level_returns_the_previous_level():
    set_log_level("error")
    assert set_log_level(True) == logging.ERROR
    assert logger.level == logging.INFO
    previous = set_log_level(None)  # None means the default, WARNING
    assert previous == logging.INFO
    assert logger.level == logging.WARNING


def test_documented_restore_gives_the_old_level_back():
    # old = set_log_level("info"); set_log_level(old): 30 is a level, not a verbosity
    set_log_level("warning")
    old = set_log_level("info")
    assert logger.level == logging.INFO
    set_log_level(old)
    assert logger.level == logging.WARNING
    set_log_level("error")
    old = set_log_level("debug")
    set_log_level(old)
    assert logger.level == logging.ERROR


@pytest.mark.parametrize("encoder", ["TopyEncoder", "LinearProbeEncoder", "AllForOneEncoder"])
def test_encoders_follow_the_global_level_by_default(encoder):
    # MNE's default: verbose=None follows set_log_level, so "info" shows their progress
    assert getattr(afo_encoding, encoder)().verbose is None
    set_log_level("info")
    assert not isinstance(progress([1, 2], getattr(afo_encoding, encoder)().verbose), list)


def test_use_log_level_restores_even_after_an_error():
    set_log_level("warning")
    def fail_inside():
        with use_log_level("debug"):
            assert logger.level == logging.DEBUG
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_inside()
    assert logger.level == logging.WARNING
    with use_log_level(None):  # None leaves the level alone
        assert logger.level == logging.WARNING


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.NOTSET)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_messages_follow_the_level():
    collect = _Collect()
    logger.addHandler(collect)
    try:
        set_log_level("warning")
        logger.info("hidden message")
        with use_log_level(True):
            logger.info("shown message")
        logger.warning("a warning")
    finally:
        logger.removeHandler(collect)
    assert collect.messages == ["shown message", "a warning"]


def test_progress_bar_only_when_verbose(monkeypatch):
    monkeypatch.setattr(_logging, "_on_terminal", lambda: True)
    items = [1, 2, 3]
    assert progress(items, verbose=False) is items
    assert progress(items, verbose=0) is items
    bar = progress(items, verbose=True, desc="fitting", disable=True)
    assert isinstance(bar, tqdm)
    assert list(bar) == items
    set_log_level("warning")
    assert progress(items) is items  # None follows the package logger
    with use_log_level("info"):
        assert isinstance(progress(items, disable=True), tqdm)


def test_progress_in_a_log_writes_a_few_lines_not_every_refresh(monkeypatch, capsys):
    # a log file, CI or a gallery output cell: no carriage-return redraws, a few lines
    monkeypatch.setattr(_logging, "_on_terminal", lambda: False)
    monkeypatch.setattr(_logging, "_in_notebook", lambda: False)
    collect = _Collect()
    logger.addHandler(collect)
    try:
        set_log_level("warning")
        bar = progress(range(100), verbose=True, desc="fit", unit="epoch")
        assert not isinstance(bar, tqdm)
        for i in bar:
            if i == 99:
                bar.set_postfix(loss="0.1")
        bar.close()
    finally:
        logger.removeHandler(collect)
    assert 2 <= len(collect.messages) <= 5
    assert collect.messages[-1] == "fit: 100/100 epoch (loss=0.1)"
    assert "\r" not in capsys.readouterr().err
    assert logger.level == logging.WARNING


def test_progress_in_a_notebook_is_a_widget(monkeypatch):
    monkeypatch.setattr(_logging, "_in_notebook", lambda: True)
    from tqdm.notebook import tqdm as notebook_tqdm

    with use_log_level("info"):
        assert isinstance(progress([1, 2], disable=True), notebook_tqdm)


def _print_calls(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]


def test_library_code_does_not_print():
    # the command line is the only place that writes to the terminal with print
    allowed = {PACKAGE / "cli.py", PACKAGE / "__main__.py"}
    offenders = {str(path.relative_to(PACKAGE)): lines
                 for path in sorted(PACKAGE.rglob("*.py")) if path not in allowed
                 for lines in [_print_calls(path)] if lines}
    assert not offenders, f"print() in library code (use the logger): {offenders}"
