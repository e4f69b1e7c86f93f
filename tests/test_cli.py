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
    assert (args.max_epochs, args.quick) == (None, False)
    args = build_parser().parse_args(["demo", "--max-epochs", "3", "--quick"])
    assert (args.max_epochs, args.quick) == (3, True)
    assert not args.paper  # the defaults, not the paper's SGD recipe
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--modality", "ecog"])


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "afo_encoding", "info"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "afo-encoding" in result.stdout


def test_fetch_list_shows_sizes_and_licences(capsys):
    assert main(["fetch", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("nsd", "cowley2023_v4", "things_fmri", "things_meg", "things_eeg2",
                 "bold5000", "nod"):
        assert f"{name}\n" in out
    assert "GPL-3.0" in out
    assert "CC-BY-4.0" in out
    assert "--accept-terms" in out
    assert "size:" in out


def test_fetch_without_accepting_terms_stops_and_says_where_to_read_them(tmp_path, capsys):
    assert main(["fetch", "nsd", "--subjects", "1", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "terms of use" in err
    assert "--accept-terms" in err
    assert not (tmp_path / "nsd").exists()


def test_fetch_refuses_sessions_where_a_data_set_has_none(capsys):
    assert main(["fetch", "things_eeg2", "--subjects", "1", "--sessions", "1"]) == 2
    assert "things_eeg2 has no --sessions" in capsys.readouterr().err


def test_fetch_names_unknown_data_sets(capsys):
    assert main(["fetch", "imagenet"]) == 2
    assert "unknown data set 'imagenet'" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fetch_downloads_the_sessions_asked_for(tmp_path, capsys, monkeypatch):
    from standins import make_cowley2023_v4

    monkeypatch.delenv("AFO_DATA_MIRROR", raising=False)
    make_cowley2023_v4(tmp_path / "upstream")
    code = main(["fetch", "cowley2023_v4", "--subjects", "210305", "--data-dir",
                 str(tmp_path / "data"), "--url", str(tmp_path / "upstream"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "210305: (20, 4) responses" in out
    assert "GPL-3.0" in out
