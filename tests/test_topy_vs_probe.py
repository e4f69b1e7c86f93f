"""TopyEncoder with its defaults against the linear probe, on planted truth and real neurons.

The claim of the paper that the library makes good at a laptop's budget: reading each voxel
where its receptive field is (the RetinaMapper) predicts at least as well as a linear probe
of the same frozen features, and better where the responses are retinotopic; and the
RetinaMapper recovers a 2-D map of the visual field from the responses, whatever the
simulated brain (our feature model or another, a flat or folded cortex, mirrored or
rotated maps). Both models are scored against the planted noiseless responses of unseen
images (the truth, not the noisy measurement), with the backbone the simulator's feature
scales match (a Gabor pyramid at 32 px, as the demo).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from afo_encoding.backbones import extract_features, get_backbone
from afo_encoding.encoders.linear import LinearProbeEncoder
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.simulation import make_retinotopic_dataset

pytestmark = pytest.mark.slow

N_IMAGES, N_TEST = 1000, 200
PYRAMID = {"image_size": 32, "wavelength": 2.0}


def _simulate(seed=0, n_voxels=400, **variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_retinotopic_dataset(
            n_images=N_IMAGES, image_size=32, n_voxels=n_voxels, random_state=seed, **variant
        )


def _stores(data):
    backbone = get_backbone("pyramid", **PYRAMID)
    n = len(data.images)
    train, test = np.arange(n - N_TEST), np.arange(n - N_TEST, n)
    return extract_features(backbone, data.images[train]), extract_features(
        backbone, data.images[test]
    )


def _retina_r(encoder, data):
    """Correlation of the learned and planted pRF centres of living early voxels, per axis."""
    early = (np.asarray(data.rois) == "early") & (data.ncsnr > 0.2 * np.median(data.ncsnr))
    return [
        float(np.corrcoef(encoder.retina_map_[early, a], data.prf_center[early, a])[0, 1])
        for a in (0, 1)
    ]


@pytest.fixture(scope="module")
def fitted():
    data = _simulate()
    train, test = _stores(data)
    n_train = len(data.images) - N_TEST
    topy = TopyEncoder(random_state=0).fit(train, data.Y[:n_train], coords=data.coords)
    probe = LinearProbeEncoder().fit(train, data.Y[:n_train])
    truth = data.signal[n_train:]
    return data, pearson_r(truth, topy.predict(test)), pearson_r(truth, probe.predict(test)), topy


def test_defaults_beat_the_linear_probe_in_every_area(fitted):
    data, r_topy, r_probe, _ = fitted
    rois = np.asarray(data.rois)
    table = {a: (r_topy[rois == a].mean(), r_probe[rois == a].mean()) for a in np.unique(rois)}
    message = ", ".join(f"{a} {t:.3f} vs {p:.3f}" for a, (t, p) in table.items())
    for area, (topy, probe) in table.items():
        # a voxel whose local readout earns no weight is the linear probe computed along
        # another path: equal up to float32 rounding
        assert topy >= probe - 1e-4, f"{area}: {message}"
    # where responses are retinotopic, reading each voxel at its place is worth a lot
    assert table["early"][0] > table["early"][1] + 0.03, message
    assert table["mid"][0] > table["mid"][1] + 0.01, message


def test_defaults_recover_the_planted_retinotopy(fitted):
    data, _, _, topy = fitted
    assert min(_retina_r(topy, data)) >= 0.8, _retina_r(topy, data)


@pytest.mark.parametrize(
    "variant",
    [
        {"feature_model": "contrast"},  # not what the pyramid computes
        {"retinotopy": "mirrored"},
        {"map_rotation": 60.0},
        {"anatomy": "folded"},
    ],
    ids=["contrast-energy", "mirrored", "rotated-60", "folded-sheet"],
)
def test_a_two_dimensional_map_comes_out_of_other_brains(variant):
    data = _simulate(seed=1, n_voxels=300, **variant)
    train, _ = _stores(data)
    n_train = len(data.images) - N_TEST
    topy = TopyEncoder(random_state=0).fit(train, data.Y[:n_train], coords=data.coords)
    r_x, r_y = _retina_r(topy, data)
    # both axes of the visual field, not one folded onto the other
    assert min(r_x, r_y) >= 0.8, (r_x, r_y)


def test_on_real_v4_neurons_the_defaults_are_not_below_the_probe(realdata):
    import io
    import zipfile

    from PIL import Image

    pytest.importorskip("efficientnet_lite_pytorch")
    folder = realdata / "cowley2023_v4"
    session = "210305"  # 400 images, 70 neurons: the shortest session
    Y = np.load(folder / "responses_repeat_averaged" / f"responses_{session}.npy").T
    with zipfile.ZipFile(folder / "images" / f"images_{session}.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        images = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB"))
                           for n in names])
    test = np.random.default_rng(0).permutation(len(images))[:80]
    train = np.setdiff1d(np.arange(len(images)), test)
    backbone = get_backbone("efficientnet-lite0", image_size=112)
    store_train = extract_features(backbone, images[train])
    store_test = extract_features(backbone, images[test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # neurons have no positions
        topy = TopyEncoder(random_state=0).fit(store_train, Y[train])
    probe = LinearProbeEncoder().fit(store_train, Y[train])
    r_topy = pearson_r(Y[test], topy.predict(store_test)).mean()
    r_probe = pearson_r(Y[test], probe.predict(store_test)).mean()
    assert r_probe > 0.5  # a real, pretrained backbone on real neurons
    # where no neuron's local readout earns a weight, TopyEncoder is the linear probe
    # computed along another path: equal up to float32 rounding
    assert r_topy >= r_probe - 1e-4, (r_topy, r_probe)
