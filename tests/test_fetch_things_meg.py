"""fetch_things_meg on local stand-ins of OpenNeuro ds004212 (a DataLad dataset with MNE's
split FIF epochs) and of the THINGS images on OSF (a password-protected zip)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from standins import files_under, unused_port
from standins_things import (
    MEG_EXP,
    MEG_SHAPE,
    MEG_TEST,
    THINGS_PASSWORD,
)

from datasets_fetchers import TermsNotAcceptedError, fetch_things_meg, load_encoder_inputs
from datasets_fetchers import _things_images as things_images
from datasets_fetchers import things_meg as meg_module
from datasets_fetchers._datalad import Source

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FIF = "derivatives/preprocessed/preprocessed_P1-epo{}.fif"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path, things_images_here):
    closed = f"http://127.0.0.1:{unused_port()}"
    monkeypatch.setattr(meg_module, "SOURCE", Source(name="things_meg", clone_url=closed))
    monkeypatch.delenv("AFO_DATA_MIRROR", raising=False)
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "default_data_dir"))


@pytest.fixture(scope="module")
def meg(ds004212, tmp_path_factory, things_osf):
    root, _ = ds004212
    data_dir = tmp_path_factory.mktemp("meg_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(things_images, "ARCHIVE_URL", (things_osf[0] / "images_THINGS.zip").as_uri())
        mp.setattr(things_images, "TERMS_URL", (things_osf[0] / "password_images.txt").as_uri())
        data = fetch_things_meg(subjects=[1], accept_terms=True, data_dir=data_dir,
                                url=str(root), verbose=0)
    return data_dir, data


def test_terms_must_be_accepted_before_anything_is_downloaded(ds004212, tmp_path):
    with pytest.raises(TermsNotAcceptedError, match="osf.io/jum2f") as err:
        fetch_things_meg(subjects=[1], data_dir=tmp_path, url=str(ds004212[0]))
    assert "accept_terms=True" in str(err.value)
    assert not any(tmp_path.iterdir())


def test_epochs_trials_and_images_match_the_sources(meg, ds004212, things_osf):
    import mne

    data_dir, data = meg
    _, truth = ds004212
    epochs = data.responses[0]
    assert isinstance(epochs, mne.BaseEpochs)
    assert epochs.get_channel_types() == ["mag"] * MEG_SHAPE[0]
    assert np.abs(epochs.info["chs"][0]["loc"][:3]).sum() > 0  # sensor positions kept
    table = truth["tables"][1]
    kept = np.flatnonzero(table["trial_type"] != "catch")
    assert len(epochs) == len(kept) == len(MEG_EXP) + 6 * len(MEG_TEST)
    np.testing.assert_allclose(epochs.get_data(), truth["data1"][kept], rtol=1e-5)
    names = [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in table["image_path"].iloc[kept]]
    assert list(data.image_ids[0]) == names
    assert list(epochs.metadata["trial_type"]) == list(table["trial_type"].iloc[kept])
    # the images are the archive's, decrypted with the password of the terms file
    jpeg = things_osf[1]["jpeg"]
    k = list(data.stimulus_ids).index(MEG_TEST[0][:-4])
    assert Path(data.images[k]).read_bytes() == jpeg[MEG_TEST[0]]
    assert set(data.splits["test"]) == {n[:-4] for n in MEG_TEST}
    assert set(data.splits["train"]) == {n[:-4] for n in MEG_EXP}
    # only the participant's files were downloaded
    present = files_under(data_dir / "things_meg")
    assert {FIF.format(s) for s in ("", "-1", "-2", "-3")} <= present
    assert "sourcedata/sample_attributes_P1.csv" in present
    assert "CC0" in data.license
    assert "Hebart" in data.citation
    assert "THINGS-MEG" in data.description


def test_noise_ceiling_from_the_test_repeats(meg):
    _, data = meg
    nc = data.noise_ceiling[0]
    assert nc.shape == (MEG_SHAPE[0] * MEG_SHAPE[1],)
    # stand-in: signal variance 1, noise variance 0.25 -> ncsnr^2 = 4 -> 80 % per trial
    assert 65 < np.median(nc) < 90


def test_average_repeats_gives_one_epoch_per_image(ds004212, tmp_path, meg):
    import mne

    _, single = meg
    data = fetch_things_meg(subjects=1, trial_types="test", average_repeats=True,
                            accept_terms=True, data_dir=tmp_path, url=str(ds004212[0]),
                            verbose=0)
    epochs = data.responses[0]
    assert isinstance(epochs, mne.EpochsArray)
    assert len(epochs) == len(MEG_TEST)
    assert set(data.trials[0]["n_repeats"]) == {6}
    trials = single.responses[0]
    first = data.image_ids[0][0]
    rows = np.flatnonzero(single.image_ids[0] == first)
    np.testing.assert_allclose(epochs.get_data()[0], trials[rows].get_data().mean(0),
                               rtol=1e-5)
    assert np.all(data.noise_ceiling[0] >= single.noise_ceiling[0] - 1e-9)
    assert list(data.splits) == ["test"]


def test_encoders_fit_on_the_epochs(meg):
    from afo_encoding import TopyEncoder

    _, data = meg
    X, y, params = load_encoder_inputs(data, subject=1, split="train")
    assert params == {}
    y = y[:64].load_data()
    encoder = TopyEncoder(d_model=8, max_epochs=2, batch_size=32, random_state=0,
                          backbone_params={"image_size": 16, "n_scales": 2})
    encoder.fit(X[:64], y)
    assert encoder.predict(X[:2]).shape == (2, MEG_SHAPE[0] * MEG_SHAPE[1])


def test_https_fallback_when_the_special_remote_fails(ds004212, tmp_path, monkeypatch):
    """OpenNeuro's S3 special remote sometimes fails: the files then come from the plain
    HTTPS address of the same file (here a local folder with the dataset's layout)."""
    root, truth = ds004212
    broken = tmp_path / "github_copy"
    subprocess.run(["git", "clone", "-q", str(root), str(broken)], check=True)
    # a clone that knows the files but whose annex holds none of them, and which the
    # origin cannot be asked for (as when the S3 remote is down)
    subprocess.run(["git", "annex", "init", "-q"], cwd=broken, check=True)
    subprocess.run(["git", "remote", "remove", "origin"], cwd=broken, check=True)
    plain = tmp_path / "https_layout"
    shutil.copytree(root, plain, symlinks=False,
                    ignore=shutil.ignore_patterns(".git", ".datalad"))
    monkeypatch.setattr(meg_module, "SOURCE", Source(
        name="things_meg", clone_url=str(broken), fallback_url=plain.as_uri()))
    data = fetch_things_meg(subjects=[1], trial_types="test", accept_terms=True,
                            data_dir=tmp_path / "data", verbose=0)
    assert len(data.responses[0]) == 6 * len(MEG_TEST)
    fif = tmp_path / "data" / "things_meg" / FIF.format("-2")
    assert fif.read_bytes() == (root / FIF.format("-2")).read_bytes()


def test_the_terms_file_holds_the_password(things_osf):
    assert THINGS_PASSWORD in (things_osf[0] / "password_images.txt").read_text()
    assert things_images.concept_of("coat_rack_13s.jpg") == "coat_rack"
    assert things_images.concept_of("images_meg/dog/dog_12s.jpg") == "dog"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subjects": [5]}, "participants 1 to 4"),
        ({"trial_types": ["catch"]}, "trial_types must be among"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_things_meg(**{"accept_terms": True, **kwargs})
