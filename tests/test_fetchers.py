"""The fetchers' shared machinery, on the Cowley et al. 2023 stand-in (the smallest source):
partial gets, mirrors, resumed downloads, and the errors a user can act on. No network:
the "upstream" is a local folder or a local HTTP server."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from standins import (
    RangeServer,
    allow_loopback,
    files_under,
    make_cowley2023_v4,
    unused_port,
)

import datasets_fetchers
from datasets_fetchers import (
    DownloadError,
    GitAnnexNotFoundError,
    NotEnoughSpaceError,
    fetch_cowley2023_v4,
    load_encoder_inputs,
)
from datasets_fetchers import cowley2023_v4 as cowley_module
from datasets_fetchers._datalad import Source

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
UPSTREAM = "data_V4_responses"


@pytest.fixture(scope="session")
def cowley_upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("cowley_upstream")
    return root, make_cowley2023_v4(root)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    """Upstream addresses point to a closed local port, and no mirror or data dir leaks in."""
    monkeypatch.setattr(cowley_module, "SOURCE", Source(
        name="cowley2023_v4", base_url=f"http://127.0.0.1:{unused_port()}/cowley"))
    monkeypatch.delenv("AFO_DATA_MIRROR", raising=False)
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "default_data_dir"))


@pytest.fixture(scope="session")
def filled_data_dir(cowley_upstream, tmp_path_factory):
    """A data directory where session 210305 was fetched from the local upstream."""
    root, _ = cowley_upstream
    data_dir = tmp_path_factory.mktemp("filled")
    data = fetch_cowley2023_v4("210305", data_dir=data_dir, url=str(root), verbose=0)
    return data_dir, data


def test_only_the_requested_session_is_downloaded(filled_data_dir, cowley_upstream):
    data_dir, data = filled_data_dir
    present = {p for p in files_under(data_dir / "cowley2023_v4") if p.startswith(UPSTREAM)}
    assert present == {
        f"{UPSTREAM}/readme.txt",
        f"{UPSTREAM}/images/images_210305.zip",
        f"{UPSTREAM}/responses_repeat_averaged/responses_210305.npy",
        f"{UPSTREAM}/responses_raw/responses_210305.npy",
    }
    # git-annex holds the content under a checksum key: `git annex fsck` can verify it
    out = subprocess.run(
        ["git", "annex", "fsck", "--fast", "--quiet"], cwd=data_dir / "cowley2023_v4",
        capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_bunch_holds_the_upstream_values(filled_data_dir, cowley_upstream):
    _, data = filled_data_dir
    truth = cowley_upstream[1]["210305"]
    n_neurons, n_images, n_repeats = truth["raw"].shape
    assert data.subjects == ["210305"]
    np.testing.assert_allclose(data.responses[0], truth["averaged"].T, rtol=1e-6)
    assert data.repeats[0].shape == (n_images, n_repeats, n_neurons)
    np.testing.assert_array_equal(np.isnan(data.repeats[0]),
                                  np.isnan(truth["raw"]).transpose(1, 2, 0))
    # strongly stimulus-driven stand-in neurons have a high split-half ceiling
    assert data.noise_ceiling[0].shape == (n_neurons,)
    assert np.all(data.noise_ceiling[0] > 50)
    assert list(data.splits["train"]) == [f"210305/image{k:04d}" for k in range(1, 21)]
    assert data.sessions.loc[0, "monkey"] == "PE"
    assert data.license.startswith("GPL-3.0")
    assert "Cowley" in data.citation
    assert "Cowley" in data.description


def test_load_encoder_inputs_pairs_images_and_rows(filled_data_dir):
    _, data = filled_data_dir
    X, y, params = load_encoder_inputs(data, subject="210305")
    assert [Path(p).name for p in X] == [f"image{k:04d}.jpg" for k in range(1, 21)]
    assert y.shape == (20, 4)
    assert params == {}
    X_all, y_all, _ = load_encoder_inputs(data)
    assert len(X_all) == len(y_all) == 1
    with pytest.raises(ValueError, match="not a split of this data set"):
        load_encoder_inputs(data, split="heldout")
    with pytest.raises(ValueError, match="no response to an image of the 'test' split"):
        load_encoder_inputs(data, subject="210305", split="test")
    with pytest.raises(ValueError, match="subject='190925' is not in"):
        load_encoder_inputs(data, subject="190925")


def test_second_fetch_is_offline_and_adds_only_new_files(cowley_upstream, tmp_path):
    root, _ = cowley_upstream
    fetch_cowley2023_v4("210305", data_dir=tmp_path, url=str(root), verbose=0)
    # the upstream is gone: what is present is read from disk, nothing is downloaded
    data = fetch_cowley2023_v4("210305", data_dir=tmp_path, verbose=0)
    assert data.responses[0].shape == (20, 4)
    both = fetch_cowley2023_v4(["210305", "210224"], data_dir=tmp_path, url=str(root),
                               verbose=0)
    assert both.subjects == ["210305", "210224"]
    assert list(both.splits["validation"])[0] == "210224/image0001"


def test_mirror_from_environment_serves_a_machine_without_network(filled_data_dir, tmp_path,
                                                                  monkeypatch):
    mirror, _ = filled_data_dir
    monkeypatch.setenv("AFO_DATA_MIRROR", str(mirror))
    data = fetch_cowley2023_v4("210305", data_dir=tmp_path, verbose=0)
    assert data.responses[0].shape == (20, 4)
    assert (tmp_path / "cowley2023_v4" / UPSTREAM / "images" / "images_210305.zip").exists()
    # a file the mirror does not have: the error names where it was looked for
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1.*images_210224\.zip"):
        fetch_cowley2023_v4("210224", data_dir=tmp_path, verbose=0)


def test_mirror_folder_that_is_missing_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AFO_DATA_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="has no folder 'cowley2023_v4'"):
        fetch_cowley2023_v4("210305", data_dir=tmp_path / "data", verbose=0)


def test_unreachable_url_names_the_url(tmp_path, monkeypatch):
    allow_loopback(monkeypatch)
    url = f"http://127.0.0.1:{unused_port()}/mirror"
    with pytest.raises(DownloadError, match="Could not download 4 file") as err:
        fetch_cowley2023_v4("210305", data_dir=tmp_path, url=url, verbose=0)
    assert f"{url}/{UPSTREAM}/images/images_210305.zip" in str(err.value)
    assert f"{url}/{UPSTREAM}/images/images_210305.zip" in err.value.urls
    assert "url=" in str(err.value)
    assert "AFO_DATA_MIRROR" in str(err.value)


def test_missing_git_annex_is_explained(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(subprocess.run(
        ["which", "git"], capture_output=True, text=True, check=True).stdout.strip())
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(GitAnnexNotFoundError, match="pip install git-annex"):
        fetch_cowley2023_v4("210305", data_dir=tmp_path / "data", verbose=0)
    assert not (tmp_path / "data" / "cowley2023_v4").exists()


def test_full_disk_is_reported_as_such(cowley_upstream, tmp_path, monkeypatch):
    root, _ = cowley_upstream
    # git-annex keeps `annex.diskreserve` free; asking for more than the disk has is a
    # full disk as far as the download is concerned
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "annex.diskreserve")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "100000 terabytes")
    with pytest.raises(NotEnoughSpaceError, match="Not enough free disk space") as err:
        fetch_cowley2023_v4("210305", data_dir=tmp_path, url=str(root), verbose=0)
    assert err.value.errno == 28
    assert "data_dir=" in str(err.value)


def test_unknown_and_imageless_sessions_are_refused():
    with pytest.raises(ValueError, match=r"Unknown session\(s\) \['999999'\]"):
        fetch_cowley2023_v4("999999")
    with pytest.raises(ValueError, match="have no images"):
        fetch_cowley2023_v4("201016")


def test_terms_gate_is_silent_for_open_data():
    # the V4 recordings are GPL-3.0: no terms to accept, unlike NSD (test_fetch_nsd)
    assert "accept_terms" not in fetch_cowley2023_v4.__code__.co_varnames


_KILLED_FETCH = """
import sys
from datasets_fetchers import fetch_cowley2023_v4
fetch_cowley2023_v4("210305", data_dir=sys.argv[1], url=sys.argv[2], verbose=0)
"""


@pytest.mark.slow
@pytest.mark.parametrize("resume", [True, False])
def test_killed_download_resumes_and_never_counts_as_present(tmp_path, monkeypatch, resume):
    upstream = tmp_path / "upstream"
    make_cowley2023_v4(upstream)
    archive = upstream / UPSTREAM / "images" / "images_210305.zip"
    import zipfile

    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("padding.bin", np.random.default_rng(0).bytes(1_500_000))
    allow_loopback(monkeypatch)
    data_dir = tmp_path / "data"
    tmp = data_dir / "cowley2023_v4" / ".git" / "annex" / "tmp"
    with RangeServer(upstream, bytes_per_second=300_000) as server:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_FETCH, str(data_dir),
                                 server.url], env=env, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            partial = [p for p in tmp.glob("*") if p.is_file()] if tmp.is_dir() else []
            if any(p.stat().st_size > 100_000 for p in partial):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert any(p.stat().st_size > 100_000 for p in partial), "no partial download seen"
        target = data_dir / "cowley2023_v4" / UPSTREAM / "images" / "images_210305.zip"
        assert not target.exists()  # a half-downloaded file never counts as present
        server.rate = 0.0
        n_before = len(server.requests)
        data = fetch_cowley2023_v4("210305", data_dir=data_dir, url=server.url,
                                   resume=resume, verbose=0)
    assert target.read_bytes() == archive.read_bytes()
    assert data.responses[0].shape == (20, 4)
    again = [r for path, r in server.requests[n_before:] if path.endswith("images_210305.zip")]
    starts = [int(r.split("=")[1].split("-")[0]) for r in again if r]
    if resume:  # the download continued from the partial file
        assert starts
        assert min(starts) > 100_000
    else:  # it started over
        assert not any(starts)


def test_public_names_are_documented():
    for name in datasets_fetchers.__all__:
        obj = getattr(datasets_fetchers, name)
        assert (obj.__doc__ or "").strip(), name
