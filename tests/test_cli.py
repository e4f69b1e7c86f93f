"""The ``afo-encoding`` command line."""

import subprocess
import sys

import pytest

from afo_encoding.cli import build_parser, main


def test_info_reports_the_stack(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("afo-encoding ")
    for dist in ("torch", "nilearn", "mne", "scikit-learn"):
        assert dist in out
    assert "NOT USABLE" not in out


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit) as err:
        main(["train-everything"])
    assert err.value.code == 2


def test_demo_arguments_have_laptop_defaults():
    args = build_parser().parse_args(["demo"])
    assert (args.modality, args.out, args.seed, args.quiet) == ("fmri", "afo_demo", 0, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--modality", "ecog"])


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "afo_encoding", "info"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "afo-encoding" in result.stdout
