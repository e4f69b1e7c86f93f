"""Where fetched data sets live: argument, then $AFO_DATA, then ~/afo_data."""

from datasets_fetchers import get_data_dir


def test_argument_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "env"))
    assert get_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert (tmp_path / "arg").is_dir()


def test_environment_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "env"))
    assert get_data_dir() == tmp_path / "env"
    monkeypatch.delenv("AFO_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_data_dir() == tmp_path / "home" / "afo_data"
