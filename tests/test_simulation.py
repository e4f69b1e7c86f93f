"""The simulated brain: its contents, its planted truth, and that the truth is recoverable."""

import time

import numpy as np
import pytest

from afo_encoding.metrics import ncsnr, noise_ceiling, pearson_r
from afo_encoding.simulation import (
    AREAS,
    CATEGORIES,
    FEATURE_TYPES,
    make_retinotopic_dataset,
)
from afo_encoding.simulation.features import energy_maps


@pytest.fixture(scope="module")
def fmri():
    return make_retinotopic_dataset(
        n_images=400, n_voxels=600, n_repeats=3, random_state=0, return_features=True
    )


@pytest.fixture(scope="module", params=["eeg", "meg"])
def sensors(request):
    return make_retinotopic_dataset(
        n_images=200, n_voxels=800, modality=request.param, random_state=0
    )


def _hemi_areas(data):
    for area in AREAS:
        for side in (-1, 1):
            yield area, (data.rois == area) & (np.sign(data.coords[:, 0]) == side)


def test_fmri_contents(fmri):
    n, v = 400, 600
    assert fmri.images.shape == (n, 64, 64, 3)
    assert fmri.images.dtype == np.uint8
    assert fmri.images.std() > 20  # not blank
    assert fmri.Y.shape == (n, v)
    assert fmri.Y.dtype == np.float32
    assert fmri.repeats.shape == (n, 3, v)
    np.testing.assert_allclose(fmri.Y, fmri.repeats.mean(1), atol=1e-6)
    assert fmri.coords.shape == (v, 3)
    assert fmri.responses.shape[3] == n
    assert fmri.mask.get_fdata().sum() == v
    assert fmri.prf_center.shape == (v, 2)
    assert np.abs(fmri.prf_center).max() <= 1.0
    assert set(fmri.rois) == set(AREAS)
    for area in AREAS:
        assert set(fmri.feature_type[fmri.rois == area]) == {FEATURE_TYPES[area]}
    # the signal is z-scored over images
    np.testing.assert_allclose(fmri.signal.std(0, ddof=1), 1.0, atol=1e-4)
    # noise ceilings agree with the planted ncsnr and the metrics module
    np.testing.assert_allclose(fmri.noise_ceiling_percent, noise_ceiling(fmri.ncsnr, 3))
    np.testing.assert_allclose(fmri.noise_ceiling, noise_ceiling(fmri.ncsnr, 3, units="r"))
    assert fmri.object_category.shape == (n,)
    assert set(fmri.object_category) == set(range(len(CATEGORIES)))
    assert np.abs(fmri.object_position).max() <= 0.6
    assert "retinotopic" in fmri.description
    # the voxels are in occipital cortex, both hemispheres
    assert fmri.coords[:, 1].max() <= -60
    assert (fmri.coords[:, 0] < 0).sum() > 200
    assert (fmri.coords[:, 0] > 0).sum() > 200


def test_fmri_container_matches_Y(fmri):
    responses = pytest.importorskip("afo_encoding.responses")
    Y, space = responses.as_responses(fmri.responses, mask=fmri.mask)
    assert space.modality == "fmri"
    np.testing.assert_array_equal(Y, fmri.Y)
    np.testing.assert_allclose(space.coords, fmri.coords)


def test_retinotopy_as_documented(fmri):
    x_mm, y_mm, z_mm = fmri.coords.T
    px, py = fmri.prf_center.T
    ecc = np.hypot(px, py)
    # contralateral: left hemisphere (x < 0) sees the right field (x > 0)
    assert np.all(px * x_mm <= 0)
    off_fovea = ecc > 0.01  # a few voxels per area sit exactly at the fovea
    assert off_fovea.mean() > 0.9
    np.testing.assert_array_equal(np.sign(px[off_fovea]), -np.sign(x_mm[off_fovea]))
    for area, sel in _hemi_areas(fmri):
        # eccentricity grows anteriorly; dorsal voxels see the lower field (y down > 0)
        assert np.corrcoef(ecc[sel], y_mm[sel])[0, 1] > 0.2, area
        assert np.corrcoef(py[sel], z_mm[sel])[0, 1] > 0.6, area
        # every area covers the hemifield out to the periphery, most of it near the fovea
        assert ecc[sel].max() > 0.8
        assert np.median(ecc[sel]) < 0.5
        # pRF size grows with eccentricity
        assert np.corrcoef(fmri.prf_size[sel], ecc[sel])[0, 1] > 0.99
    # the hierarchy runs posterior -> anterior and pRFs grow along it
    mean_y = [y_mm[fmri.rois == a].mean() for a in AREAS]
    assert mean_y[0] < mean_y[1] < mean_y[2]
    size = [np.median(fmri.prf_size[fmri.rois == a]) for a in AREAS]
    assert size[0] < size[1] < size[2]


def test_features_and_weights_make_the_signal(fmri):
    raw = np.einsum("nvf,vf->nv", fmri.features, fmri.weights)
    z = (raw - raw.mean(0)) / raw.std(0, ddof=1)
    np.testing.assert_allclose(z, fmri.signal, atol=1e-3)
    assert fmri.sources.coords is not None


def test_oracle_linear_model_reaches_the_planted_noise_ceiling(fmri):
    # OLS on each voxel's own features (<= 10 + intercept) from 250 images, tested on 150.
    # Sampling error of r with 150 test images is ~0.03-0.08 per voxel and fitting 11
    # parameters costs ~0.01, so: mean within 0.03, mean absolute deviation below 0.06,
    # per area within 0.05.
    train, test = slice(0, 250), slice(250, 400)
    r = np.empty(fmri.Y.shape[1])
    for v in range(len(r)):
        X = np.column_stack([fmri.features[:, v], np.ones(len(fmri.Y))])
        beta = np.linalg.lstsq(X[train], fmri.Y[train, v], rcond=None)[0]
        r[v] = pearson_r(fmri.Y[test, v], X[test] @ beta)
    nc = fmri.noise_ceiling
    assert abs(r.mean() - nc.mean()) < 0.03
    assert np.abs(r - nc).mean() < 0.06
    assert np.corrcoef(r, nc)[0, 1] > 0.95
    for area in AREAS:
        sel = fmri.rois == area
        assert abs(r[sel].mean() - nc[sel].mean()) < 0.05, area


def test_ncsnr_from_repeats_matches_planted(fmri):
    estimate = ncsnr(fmri.repeats)
    assert np.corrcoef(estimate, fmri.ncsnr)[0, 1] > 0.97
    # in NSD percent units, mean absolute error below 5 points, bias below 2
    error = noise_ceiling(estimate, 3) - fmri.noise_ceiling_percent
    assert np.abs(error).mean() < 5
    assert abs(error.mean()) < 2


def test_noise_ceilings_vary_realistically(fmri):
    nc = fmri.noise_ceiling
    assert np.mean(nc < 0.2) > 0.05  # some voxels have almost no signal
    assert np.mean(nc > 0.8) > 0.1
    by_area = [nc[fmri.rois == a].mean() for a in AREAS]
    assert by_area[0] > by_area[1] > by_area[2]


def test_each_area_reads_its_own_scale(fmri):
    # ridge on the energy at each scale (alpha chosen per voxel on a validation split):
    # early voxels are best predicted by the fine scale, mid by the middle one, late by
    # the coarse one (what a LayerSelector must find)
    from sklearn.linear_model import Ridge

    train, val, test = slice(0, 250), slice(250, 320), slice(320, 400)
    scores = []
    for maps in energy_maps(fmri.images):
        X = np.sqrt(maps.reshape(len(maps), -1))
        X = (X - X[train].mean(0)) / X[train].std(0)
        fits = [Ridge(alpha=a).fit(X[train], fmri.Y[train]) for a in (1e2, 1e3, 1e4)]
        best = np.argmax([pearson_r(fmri.Y[val], f.predict(X[val])) for f in fits], axis=0)
        pred = np.stack([f.predict(X[test]) for f in fits])
        scores.append(pearson_r(fmri.Y[test], pred[best, :, np.arange(len(best))].T))
    scores = np.stack(scores, 1)
    for scale, area in enumerate(AREAS):
        sel = fmri.rois == area
        assert scores[sel].mean(0).argmax() == scale, (area, scores[sel].mean(0))
        assert np.mean(scores[sel].argmax(1) == scale) > 0.6, area


def test_images_identifiable_and_areas_carry_layout_and_category(fmri):
    # the noiseless early pattern identifies the measured image far above chance (1/400)
    early = fmri.rois == "early"
    late = fmri.rois == "late"
    corr = np.corrcoef(fmri.Y[:, early], fmri.signal[:, early])[:400, 400:]
    assert np.mean(corr.argmax(1) == np.arange(400)) > 0.5
    # nearest other image by the early signal: similar low-level layout (fine-scale
    # energy map), object somewhat closer than chance (the background texture is part of
    # the layout); by the late signal: same category far more often than chance (1/6)
    sim = np.corrcoef(fmri.signal[:, early])
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(1)
    layout = np.log(fmri.energy_map.reshape(400, -1))
    layout = (layout - layout.mean(1, keepdims=True)) / layout.std(1, keepdims=True)
    assert (layout * layout[nearest]).mean() > (layout * np.roll(layout, 1, 0)).mean() + 0.2
    pos = fmri.object_position
    near = np.linalg.norm(pos - pos[nearest], axis=1).mean()
    assert near < 0.95 * np.linalg.norm(pos - np.roll(pos, 1, axis=0), axis=1).mean()
    sim = np.corrcoef(fmri.signal[:, late])
    np.fill_diagonal(sim, -np.inf)
    assert np.mean(fmri.object_category == fmri.object_category[sim.argmax(1)]) > 0.5


def test_sensors_contents_and_timing(sensors):
    n = 200
    epochs = sensors.responses
    n_ch, n_t = len(sensors.ch_names), len(sensors.times)
    assert n_t == 50
    np.testing.assert_allclose(sensors.times, np.arange(50) / 100.0)
    assert n_ch == (90 if sensors.modality == "eeg" else 102)
    assert sensors.Y.shape == (n, n_ch * n_t)
    assert sensors.repeats.shape == (n, 3, n_ch * n_t)
    assert sensors.coords.shape == (n_ch * n_t, 4)
    assert epochs.get_data().shape == (n, n_ch, n_t)
    np.testing.assert_allclose(epochs.get_data().reshape(n, -1), sensors.Y, rtol=1e-6)
    positions = np.array([ch["loc"][:3] for ch in epochs.info["chs"]])
    assert np.all(np.isfinite(positions))
    assert np.ptp(positions, axis=0).min() > 0.05
    assert list(epochs.metadata.columns) == ["category", "x", "y", "size"]
    # channel-major columns: (channel position, time)
    np.testing.assert_allclose(sensors.coords[:n_t, 3], sensors.times)
    np.testing.assert_allclose(sensors.coords[n_t, :3], positions[1])
    # area time courses peak at 100 / 150 / 200 ms
    peaks = sensors.times[sensors.time_courses.argmax(1)]
    np.testing.assert_allclose(peaks, [0.10, 0.15, 0.20], atol=0.011)
    signal = sensors.signal.reshape(n, n_ch, n_t)
    sd = signal.std(0)
    assert np.all(sd[:, sensors.times < 0.04] == 0)  # nothing before the first onset
    assert np.all(sensors.ncsnr.reshape(n_ch, n_t)[:, sensors.times < 0.04] == 0)
    assert 0.09 <= sensors.times[sd.mean(0).argmax()] <= 0.25
    # the early area dominates at 100 ms, the late one from 300 ms
    rois = sensors.rois.reshape(n_ch, n_t)
    assert np.mean(rois[:, sensors.times == 0.1] == "early") > 0.8
    assert np.mean(rois[:, sensors.times == 0.3] == "late") > 0.8
    assert sensors.sources.prf_center.shape == (800, 2)
    assert np.all(np.isfinite(sensors.prf_center))


def test_sensors_noise_ceiling_and_container(sensors):
    estimate = ncsnr(sensors.repeats)
    assert np.corrcoef(estimate, sensors.ncsnr)[0, 1] > 0.95
    responses = pytest.importorskip("afo_encoding.responses")
    Y, space = responses.as_responses(sensors.responses)
    assert space.modality == sensors.modality
    np.testing.assert_array_equal(Y, sensors.Y)
    np.testing.assert_allclose(space.coords, sensors.coords)


def test_deterministic():
    a = make_retinotopic_dataset(n_images=30, n_voxels=100, random_state=3)
    b = make_retinotopic_dataset(n_images=30, n_voxels=100, random_state=3)
    for key in ("images", "Y", "repeats", "prf_center", "ncsnr", "object_position"):
        np.testing.assert_array_equal(a[key], b[key])
    c = make_retinotopic_dataset(n_images=30, n_voxels=100, random_state=4)
    assert not np.array_equal(a.images, c.images)
    # the images depend only on the seed, the number of images and their size
    d = make_retinotopic_dataset(n_images=30, n_voxels=300, modality="eeg", random_state=3)
    np.testing.assert_array_equal(a.images, d.images)
    e = make_retinotopic_dataset(n_images=30, n_voxels=100, random_state=np.random.RandomState(0))
    assert e.Y.shape == (30, 100)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_images": 5}, "n_images must be an integer >= 10, got 5"),
        ({"image_size": 16}, "image_size must be an integer >= 32, got 16"),
        ({"modality": "pet"}, "modality must be 'fmri', 'eeg' or 'meg', got 'pet'"),
        ({"n_voxels": 2.5}, "n_voxels must be an integer >= 30, got 2.5"),
        ({"n_repeats": 0}, "n_repeats must be an integer >= 1, got 0"),
        ({"snr": -1.0}, "snr must be a positive number, got -1.0"),
        ({"random_state": "x"}, "random_state must be None, an int"),
        ({"hierarchy": 1.0}, r"hierarchy must be in \[0, 1\), got 1.0"),
        ({"hierarchy": "x"}, r"hierarchy must be a number in \[0, 1\), got 'x'"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_retinotopic_dataset(**kwargs)


@pytest.mark.slow
def test_speed_1000_images_5000_voxels():
    wall, cpu = time.perf_counter(), time.process_time()
    data = make_retinotopic_dataset(n_images=1000, n_voxels=5000, random_state=0)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert data.Y.shape == (1000, 5000)
    # the machine is shared: wall time suffers from other processes, CPU time from BLAS
    # threads; on two free cores both are below 20 s (about 5 s measured)
    assert min(wall, cpu) < 20.0


def test_hierarchy_mixes_the_area_below_into_mid_and_late():
    from sklearn.linear_model import RidgeCV

    kw = {"n_images": 300, "n_voxels": 300, "random_state": 0, "return_features": True}
    base = make_retinotopic_dataset(**kw)
    mixed = make_retinotopic_dataset(**kw, hierarchy=0.5)
    # images, early voxels and the own part of every voxel do not change
    np.testing.assert_array_equal(mixed.images, base.images)
    early = base.rois == "early"
    np.testing.assert_array_equal(mixed.signal[:, early], base.signal[:, early])
    np.testing.assert_array_equal(mixed.features, base.features)
    np.testing.assert_array_equal(mixed.ncsnr, base.ncsnr)
    maps = energy_maps(base.images)
    train, test = slice(0, 200), slice(200, 300)
    for scale, area in ((1, "mid"), (2, "late")):
        sel = base.rois == area
        own, signal = base.signal[:, sel], mixed.signal[:, sel]
        # signal = sqrt(1 - h) own + sqrt(h) inherited (both sd 1): the regression on the own
        # part takes sqrt(1 - h) + sqrt(h) corr(own, inherited) and leaves the rest
        beta = (own * signal).sum(0) / (own * own).sum(0)
        residual = signal - beta * own
        share = residual.var(0) / signal.var(0)
        assert 0.02 < np.median(share) < 0.5, (area, np.median(share))
        # what is left is read from the scale below, not the area's own scale
        scores = []
        for s in (scale - 1, scale):
            X = np.sqrt(maps[s].reshape(len(maps[s]), -1))
            X = (X - X[train].mean(0)) / X[train].std(0)
            ridge = RidgeCV(alphas=(1e1, 1e2, 1e3, 1e4)).fit(X[train], residual[train])
            scores.append(np.mean(pearson_r(residual[test], ridge.predict(X[test]))))
        assert scores[0] > scores[1] + 0.1, (area, scores)


# --- variants: other feature models, transformed maps, a folded sheet ----------------------


@pytest.fixture(scope="module")
def small():
    return make_retinotopic_dataset(n_images=40, n_voxels=600, random_state=0)


def test_mirrored_map_flips_x_only(small):
    mirrored = make_retinotopic_dataset(n_images=40, n_voxels=600, random_state=0,
                                        retinotopy="mirrored")
    np.testing.assert_array_equal(mirrored.images, small.images)
    np.testing.assert_array_equal(mirrored.rois, small.rois)
    np.testing.assert_array_equal(mirrored.prf_center[:, 0], -small.prf_center[:, 0])
    np.testing.assert_array_equal(mirrored.prf_center[:, 1], small.prf_center[:, 1])
    np.testing.assert_allclose(mirrored.prf_size, small.prf_size)
    # each hemisphere now sees its own side of the field
    assert np.all(mirrored.prf_center[:, 0] * mirrored.coords[:, 0] >= 0)
    assert not np.allclose(mirrored.signal, small.signal)
    assert "mirrored" in mirrored.description


@pytest.mark.parametrize("degrees", [30.0, -90.0])
def test_rotated_map_shifts_the_polar_angle(small, degrees):
    rotated = make_retinotopic_dataset(n_images=40, n_voxels=600, random_state=0,
                                       map_rotation=degrees)
    ecc = np.hypot(*small.prf_center.T)
    np.testing.assert_allclose(np.hypot(*rotated.prf_center.T), ecc, atol=1e-12)
    np.testing.assert_allclose(rotated.prf_size, small.prf_size, atol=1e-12)
    # polar angle on the screen (y up), counter-clockwise: grows by the rotation
    angle = np.arctan2(-small.prf_center[:, 1], small.prf_center[:, 0])
    turned = np.arctan2(-rotated.prf_center[:, 1], rotated.prf_center[:, 0])
    shift = np.angle(np.exp(1j * (turned - angle)))
    off_fovea = ecc > 0.01
    np.testing.assert_allclose(shift[off_fovea], np.deg2rad(degrees), atol=1e-9)


def test_map_from_a_callable_and_sizes_follow_eccentricity(small):
    halved = make_retinotopic_dataset(n_images=40, n_voxels=600, random_state=0,
                                      retinotopy=lambda center, xyz: 0.5 * center)
    np.testing.assert_allclose(halved.prf_center, 0.5 * small.prf_center)
    ecc = np.hypot(*halved.prf_center.T)
    for area, (a, b) in {"early": (0.05, 0.12), "late": (0.35, 0.60)}.items():
        sel = halved.rois == area
        np.testing.assert_allclose(halved.prf_size[sel], a + b * ecc[sel])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retinotopy": "upside-down"}, "retinotopy must be 'contralateral', 'mirrored' or a"),
        ({"retinotopy": lambda c, xyz: c[:5]}, r"must return pRF centres of shape \(100, 2\)"),
        ({"retinotopy": lambda c, xyz: 2 * c + 1}, r"inside the image \(\[-1, 1\]"),
        ({"map_rotation": "90"}, "map_rotation must be a number of degrees, got '90'"),
        ({"feature_model": "dog"}, "feature_model must be one of 'gabor', 'contrast'; got 'dog'"),
        ({"anatomy": "sphere"}, "anatomy must be one of 'occipital', 'folded'; got 'sphere'"),
    ],
)
def test_bad_variants(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_retinotopic_dataset(n_images=10, n_voxels=100, **kwargs)


def test_contrast_feature_model_is_not_the_pyramids_energy():
    # A ridge readout of the fine-scale Gabor energy (the pyramid backbone's layer 0)
    # predicts the noiseless early signal almost perfectly when voxels read Gabor energy,
    # clearly less well when they read normalised ON/OFF contrast energy. The planted map,
    # the images and the exact linear model behind the signal stay.
    from sklearn.linear_model import RidgeCV

    kw = {"n_images": 400, "n_voxels": 300, "random_state": 0, "return_features": True}
    gabor = make_retinotopic_dataset(**kw)
    contrast = make_retinotopic_dataset(**kw, feature_model="contrast")
    np.testing.assert_array_equal(contrast.images, gabor.images)
    np.testing.assert_array_equal(contrast.prf_center, gabor.prf_center)
    assert set(contrast.feature_type) == {"contrast_energy", "contrast_category"}
    raw = np.einsum("nvf,vf->nv", contrast.features, contrast.weights)
    np.testing.assert_allclose((raw - raw.mean(0)) / raw.std(0, ddof=1), contrast.signal,
                               atol=1e-3)
    X = np.sqrt(energy_maps(gabor.images)[0].reshape(400, -1))
    train, test = slice(0, 300), slice(300, 400)
    X = (X - X[train].mean(0)) / X[train].std(0)
    r = {}
    for name, data in (("gabor", gabor), ("contrast", contrast)):
        y = data.signal[:, data.rois == "early"]
        ridge = RidgeCV(alphas=(1e0, 1e1, 1e2, 1e3, 1e4)).fit(X[train], y[train])
        r[name] = np.mean(pearson_r(y[test], ridge.predict(X[test])))
    assert r["gabor"] > 0.95, r
    assert r["contrast"] < r["gabor"] - 0.1, r


def test_folded_sheet_lays_the_maps_along_the_sheet():
    from scipy.spatial import cKDTree
    from scipy.stats import spearmanr

    from afo_encoding.responses import as_responses

    data = make_retinotopic_dataset(n_images=20, n_voxels=1000, random_state=0,
                                    anatomy="folded")
    Y, _ = as_responses(data.responses, mask=data.mask)
    np.testing.assert_array_equal(Y, data.Y)
    along, up = data.sources.sheet_coords.T
    ecc = np.hypot(*data.prf_center.T)
    assert np.all(data.prf_center[:, 0] * data.coords[:, 0] <= 0)  # contralateral
    for area, sel in _hemi_areas(data):
        # eccentricity grows along the sheet; dorsal (up the sheet) sees the lower field
        assert spearmanr(ecc[sel], along[sel])[0] > 0.95, area
        assert np.corrcoef(data.prf_center[sel, 1], up[sel])[0, 1] > 0.5, area
    # folded: some voxels a few mm apart in space are far apart along the sheet, and so
    # on the maps
    pairs = cKDTree(data.coords).query_pairs(r=8.0, output_type="ndarray")
    pairs = pairs[data.rois[pairs[:, 0]] == data.rois[pairs[:, 1]]]
    on_sheet = np.linalg.norm(np.subtract(*data.sources.sheet_coords[pairs.T]), axis=1)
    on_map = np.linalg.norm(np.subtract(*data.prf_center[pairs.T]), axis=1)
    far = on_sheet > 20.0
    assert far.mean() > 0.02
    assert np.median(on_map[far]) > 2 * np.median(on_map[~far])
