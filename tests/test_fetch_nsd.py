"""fetch_nsd on a local stand-in of the NSD bucket (real paths and formats, tiny grids)."""

import numpy as np
import pytest
from PIL import Image
from standins import (
    NSD_ATLASES,
    NSD_SHARED,
    RangeServer,
    allow_loopback,
    files_under,
    make_nsd,
    unused_port,
)

from datasets_fetchers import TermsNotAcceptedError, fetch_nsd, load_encoder_inputs
from datasets_fetchers import nsd as nsd_module
from datasets_fetchers._datalad import Source

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    # the stand-in's FreeSurfer surfaces carry no volume information
    pytest.mark.filterwarnings("ignore:No volume information:UserWarning"),
    pytest.mark.filterwarnings("ignore:Unknown extension code:UserWarning"),
]
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd_bucket")
    return root, make_nsd(root)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path):
    monkeypatch.setattr(nsd_module, "SOURCE", Source(
        name="nsd", base_url=f"http://127.0.0.1:{unused_port()}/bucket"))
    monkeypatch.delenv("AFO_DATA_MIRROR", raising=False)
    monkeypatch.setenv("AFO_DATA", str(tmp_path / "default_data_dir"))


@pytest.fixture(scope="module")
def volume(bucket, tmp_path_factory):
    """Subject 1, session 1, in the functional volume, trial by trial."""
    root, _ = bucket
    data_dir = tmp_path_factory.mktemp("nsd_data")
    data = fetch_nsd(subjects=[1], sessions=[1], accept_terms=True, data_dir=data_dir,
                     url=str(root), verbose=0)
    return data_dir, data


def _zscore(a):
    return (a - a.mean(0)) / a.std(0)


def test_terms_must_be_accepted_before_anything_is_downloaded(bucket, tmp_path):
    with pytest.raises(TermsNotAcceptedError, match="cvnlab.slite.page") as err:
        fetch_nsd(subjects=[1], sessions=[1], data_dir=tmp_path, url=str(bucket[0]))
    assert "accept_terms=True" in str(err.value)
    assert "--accept-terms" in str(err.value)
    assert not (tmp_path / "nsd").exists()


def test_only_the_requested_session_and_subject_are_downloaded(volume):
    data_dir, _ = volume
    present = {p for p in files_under(data_dir / "nsd") if not p.startswith(".")}
    assert f"{BETAS}/betas_session01.nii.gz" in present
    assert f"{BETAS}/ncsnr.nii.gz" in present
    assert "nsddata/experiments/nsd/nsd_expdesign.mat" in present
    assert f"{BETAS}/betas_session02.nii.gz" not in present
    assert not any("subj02" in p or "fsaverage" in p for p in present)
    # the 37 GB stimulus file is read by ranges, never downloaded
    assert not any(p.endswith("nsd_stimuli.hdf5") for p in present)


def test_trials_images_and_betas_match_the_bucket(volume, bucket):
    _, data = volume
    _, truth = bucket
    order, subjectim = truth["masterordering"], truth["subjectim"]
    ids = subjectim[0, order[:750] - 1] - 1
    assert list(data.trials[0]["nsd_id"]) == list(ids)
    assert list(data.image_ids[0][:3]) == [f"nsd-{i:05d}" for i in ids[:3]]
    general = truth["volumes"][1]["nsdgeneral"] > 0
    raw = truth["volumes"][1]["session1"][general].T / 300.0
    np.testing.assert_allclose(data.responses[0], _zscore(raw), atol=1e-4)
    # each image is the stimulus brick's picture, losslessly
    k = list(data.stimulus_ids).index("nsd-00007")
    np.testing.assert_array_equal(np.asarray(Image.open(data.images[k])), truth["brick"][7])
    assert set(data.splits["test"]) == {f"nsd-{i:05d}" for i in NSD_SHARED}
    assert not set(data.splits["train"]) & set(data.splits["test"])


def test_voxels_know_their_place_labels_and_ceiling(volume, bucket):
    _, data = volume
    _, truth = bucket
    general = truth["volumes"][1]["nsdgeneral"] > 0
    ijk = np.argwhere(general)
    affine = truth["affine"]
    np.testing.assert_allclose(data.coords[0], ijk @ affine[:3, :3].T + affine[:3, 3])
    for atlas, names in NSD_ATLASES.items():
        values = truth["volumes"][1][atlas][general]
        expected = [names[v - 1] if v > 0 else "" for v in values]
        assert list(data.rois[0][atlas]) == expected
    snr = truth["volumes"][1]["ncsnr"][general]
    np.testing.assert_allclose(data.noise_ceiling[0], 100 * snr**2 / (snr**2 + 1), rtol=1e-5)
    # the masker gives the volume back on the subject's grid
    img = data.maskers[0].inverse_transform(data.responses[0][:2])
    assert img.shape == (*general.shape, 2)
    np.testing.assert_allclose(np.asarray(img.dataobj)[general][:, 0],
                               data.responses[0][0], atol=1e-6)
    assert "Allen" in data.citation
    assert "Terms" in data.license
    assert "Natural Scenes Dataset" in data.description


def test_fsaverage_over_http_with_repeats_averaged(bucket, tmp_path, monkeypatch):
    root, truth = bucket
    allow_loopback(monkeypatch)
    with RangeServer(root) as server:
        data = fetch_nsd(subjects=[2], sessions=[2], space="fsaverage", mesh="sphere",
                         average_repeats=True, rois="prf-visualrois", accept_terms=True,
                         data_dir=tmp_path, url=server.url, verbose=0)
    # images were cut out of the remote HDF5 file by byte ranges
    assert any(r for path, r in server.requests if path.endswith("nsd_stimuli.hdf5"))
    trial_ids = truth["subjectim"][1, truth["masterordering"][750:1500] - 1] - 1
    keep = np.concatenate([truth["vertex_labels"][("nsdgeneral", h)] for h in ("lh", "rh")]) > 0
    trials = _zscore(truth["surfaces"][2]["session2"][:, keep])
    table = data.trials[0]
    assert len(table) == len(np.unique(trial_ids)) == data.responses[0].shape[0]
    for row in (0, 5):
        nsd_id = table["nsd_id"][row]
        np.testing.assert_allclose(data.responses[0][row],
                                   trials[trial_ids == nsd_id].mean(0), atol=1e-5)
        assert table["n_repeats"][row] == np.sum(trial_ids == nsd_id)
    # hemispheres kept apart on the sphere (they overlap in the mesh files)
    coords = data.coords[0]
    n_left = int(keep[: len(keep) // 2].sum())
    assert coords[:n_left, 0].max() < coords[n_left:, 0].min()
    assert data.maskers[0].inverse_transform(data.responses[0][:1]).shape == (28, 1)
    snr = truth["surfaces"][2]["ncsnr"][keep]
    n_eff = 1 / np.mean(1 / table["n_repeats"])
    np.testing.assert_allclose(data.noise_ceiling[0], 100 * snr**2 / (snr**2 + 1 / n_eff),
                               rtol=1e-5)


def test_a_filled_data_dir_is_a_mirror_images_included(volume, tmp_path, monkeypatch):
    mirror, first = volume
    monkeypatch.setenv("AFO_DATA_MIRROR", str(mirror))
    data = fetch_nsd(subjects=[1], sessions=[1], accept_terms=True, data_dir=tmp_path,
                     verbose=0)
    np.testing.assert_array_equal(data.responses[0], first.responses[0])
    assert len(data.images) == len(first.images)
    assert all(p.startswith(str(tmp_path)) for p in data.images)


def test_encoders_fit_straight_from_the_bunch(volume):
    from afo_encoding import LinearProbeEncoder, TopyEncoder

    _, data = volume
    X, y, params = load_encoder_inputs(data, subject=1, split="train")
    assert len(X) == y.shape[0]
    assert params["coords"].shape == (y.shape[1], 3)
    probe = LinearProbeEncoder(n_components=4).fit(X, y, **params)
    assert probe.predict(X[:3]).shape == (3, y.shape[1])
    topy = TopyEncoder(d_model=4, max_epochs=1, batch_size=64, random_state=0,
                       backbone_params={"image_size": 16, "n_scales": 2})
    topy.fit(X[:120], y[:120], **params)
    assert topy.retina_map_.shape == (y.shape[1], 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subjects": [9]}, "NSD has subjects 1 to 8"),
        ({"subjects": [4], "sessions": [31]}, "Subject 4 has sessions 1 to 30"),
        ({"space": "MNI"}, "space must be one of"),
        ({"mask": "rois", "rois": None}, "mask='rois' needs at least one atlas"),
        ({"rois": ["Kastner2015"]}, "each of rois must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fetch_nsd(**{"subjects": [1], "sessions": [1], "accept_terms": True, **kwargs})
