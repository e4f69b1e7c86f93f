"""fetch_things_eeg2 on a local stand-in of the authors' OSF projects (files served over
HTTP, subjects' zips found through a stand-in of the OSF API)."""

from pathlib import Path

import numpy as np
import pytest
from standins import RangeServer, allow_loopback, files_under, unused_port
from standins_things import (
    EEG2_CHANNELS,
    EEG2_REPEATS,
    EEG2_TEST,
    EEG2_TIMES,
    EEG2_TRAIN,
    make_things_eeg2,
    osf_listing,
)

from datasets_fetchers import _repositories as repositories
from datasets_fetchers import fetch_things_eeg2, load_encoder_inputs
from datasets_fetchers import things_eeg2 as eeg2_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def osf(tmp_path_factory):
    root = tmp_path_factory.mktemp("osf")
    truth = make_things_eeg2(root)
    with RangeServer(root) as server:
        osf_listing(root, "anp5v", {f"sub-{s:02d}.zip": f"{server.url}/anp5v/sub-{s:02d}.zip"
                                    for s in (1, 2)})
        yield root, server, truth


def _point_to(mp, osf):
    root, server, _ = osf
    allow_loopback(mp)
    mp.setattr(repositories, "OSF_API", f"{server.url}/v2")
    mp.setattr(eeg2_module, "URLS", {k: f"{server.url}/{k}" for k in eeg2_module.URLS})
    mp.delenv("AFO_DATA_MIRROR", raising=False)


@pytest.fixture(scope="module")
def eeg(osf, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("eeg_data")
    with pytest.MonkeyPatch.context() as mp:
        _point_to(mp, osf)
        data = fetch_things_eeg2(subjects=[1], data_dir=data_dir, verbose=0)
    return data_dir, data


def test_epochs_hold_every_repetition_at_montage_positions(eeg, osf):
    import mne

    data_dir, data = eeg
    truth = osf[2]
    epochs = data.responses[0]
    assert isinstance(epochs, mne.EpochsArray)
    assert epochs.ch_names == EEG2_CHANNELS
    positions = np.array([ch["loc"][:3] for ch in epochs.info["chs"]])
    assert np.all(np.linalg.norm(positions, axis=1) > 0.05)  # on the head, in metres
    np.testing.assert_allclose(epochs.times, EEG2_TIMES, atol=1e-9)
    n_train = len(EEG2_TRAIN) * EEG2_REPEATS["train"]
    assert len(epochs) == n_train + len(EEG2_TEST) * EEG2_REPEATS["test"]
    np.testing.assert_allclose(epochs.get_data()[:EEG2_REPEATS["train"]],
                               truth[(1, "train")][0], rtol=1e-5)
    np.testing.assert_allclose(epochs.get_data()[n_train], truth[(1, "test")][0, 0], rtol=1e-5)
    assert list(data.image_ids[0][:5]) == [EEG2_TRAIN[0][:-4]] * 4 + [EEG2_TRAIN[1][:-4]]
    assert list(epochs.metadata["repetition"][:4]) == [0, 1, 2, 3]
    k = list(data.stimulus_ids).index(EEG2_TEST[2][:-4])
    assert Path(data.images[k]).read_bytes() == truth["jpeg"][EEG2_TEST[2]]
    assert list(data.splits["test"]) == [n[:-4] for n in EEG2_TEST]
    present = files_under(data_dir / "things_eeg2")
    assert "preprocessed_data/sub-01.zip" in present
    assert "preprocessed_data/sub-02.zip" not in present
    assert data.license.startswith("CC-BY-4.0")
    assert "Gifford" in data.citation


def test_noise_ceiling_and_averaged_repeats(eeg, osf, tmp_path, monkeypatch):
    _, single = eeg
    nc = single.noise_ceiling[0]
    assert nc.shape == (len(EEG2_CHANNELS) * len(EEG2_TIMES),)
    assert 65 < np.median(nc) < 90  # signal variance 1, noise 0.25 per trial: 80 %
    _point_to(monkeypatch, osf)
    data = fetch_things_eeg2(subjects=2, splits="test", average_repeats=True,
                             data_dir=tmp_path, verbose=0)
    epochs = data.responses[0]
    assert len(epochs) == len(EEG2_TEST)
    np.testing.assert_allclose(epochs.get_data()[1], osf[2][(2, "test")][1].mean(0),
                               rtol=1e-5, atol=1e-6)
    assert np.median(data.noise_ceiling[0]) > 90  # averages of 8 trials: 4 / (4 + 1/8)
    assert list(data.splits) == ["test"]


def test_encoder_fits_on_the_eeg(eeg):
    from afo_encoding import TopyEncoder

    _, data = eeg
    X, y, params = load_encoder_inputs(data, subject=1, split="test")
    assert len(X) == len(y) == len(EEG2_TEST) * EEG2_REPEATS["test"]
    encoder = TopyEncoder(d_model=8, max_epochs=2, batch_size=16, random_state=0,
                          backbone_params={"image_size": 16, "n_scales": 2})
    encoder.fit(X, y)
    assert encoder.predict(X[:3]).shape == (3, len(EEG2_CHANNELS) * len(EEG2_TIMES))


def test_unknown_files_on_osf_are_named(osf, tmp_path, monkeypatch):
    _point_to(monkeypatch, osf)
    with pytest.raises(ValueError, match="subjects 1 to 10"):
        fetch_things_eeg2(subjects=[11])
    with pytest.raises(ValueError, match="splits must be among"):
        fetch_things_eeg2(splits="validation")
    from datasets_fetchers import DownloadError

    with pytest.raises(DownloadError, match=r"no file named \['sub-03.zip'\]"):
        fetch_things_eeg2(subjects=[3], data_dir=tmp_path, verbose=0)
    monkeypatch.setattr(repositories, "OSF_API", f"http://127.0.0.1:{unused_port()}")
    with pytest.raises(DownloadError, match="Could not list the files of the OSF project"):
        fetch_things_eeg2(subjects=[4], data_dir=tmp_path, verbose=0)
