"""LinearProbeEncoder: scikit-learn estimator, features -> PCA -> per-voxel ridge.

Most tests fit 2D feature arrays (the "precomputed features" mode); the images path is
tested on the simulator with the pyramid backbone.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from afo_encoding.encoders.linear import LinearProbeEncoder, pool_features, principal_axes
from afo_encoding.encoders.ridge import ArrayBackend, ridge_cv
from afo_encoding.metrics import pearson_r, pearson_scorer


def linear_problem(n=150, n_features=20, n_voxels=6, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)) * rng.uniform(0.5, 5, n_features) + 3
    y = X @ rng.standard_normal((n_features, n_voxels)) + noise * rng.standard_normal(
        (n, n_voxels)
    )
    return X, y


@pytest.fixture(scope="module")
def simulated():
    from afo_encoding.simulation import make_retinotopic_dataset

    return make_retinotopic_dataset(n_images=300, n_voxels=150, image_size=64, random_state=0)


PYRAMID = {"backbone_params": {"image_size": 64}, "device": "cpu"}

# ------------------------------------------------------------- scikit-learn's checks

EXPECTED_FAILURES = {
    "check_regressor_multioutput": (
        "predictions are float32 like TopyEncoder's: float64 would double the memory of "
        "predictions over 400,000 voxels for no gain in a model fitted in float32"
    ),
    "check_methods_sample_order_invariance": (
        "float32 matrix products round the last bit (~6e-8) differently with the number of "
        "rows the BLAS blocks together, above the check's atol of 1e-9 (passes or not with "
        "the thread count)"
    ),
    "check_methods_subset_invariance": (
        "same as check_methods_sample_order_invariance: batch-dependent float32 rounding"
    ),
}


@parametrize_with_checks(
    [LinearProbeEncoder(random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_scikit_learn_estimator_checks(estimator, check):
    # X in these checks is a 2D float array: it is read as precomputed flat features
    # (no backbone), see the class notes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # edges of the alpha grid on toy data
        check(estimator)


# ------------------------------------------------------------------ fit / predict


def test_fit_predict_score_on_features():
    X, y = linear_problem()
    enc = LinearProbeEncoder(n_components=8)
    assert enc.fit(X[:120], y[:120]) is enc
    pred = enc.predict(X[120:])
    assert pred.shape == (30, 6)
    assert pred.dtype == np.float32
    score = enc.score(X[120:], y[120:])
    assert score == pytest.approx(np.mean(pearson_r(y[120:], pred)), abs=1e-6)
    assert score > 0.5
    assert enc.n_features_in_ == 20
    assert enc.n_components_ == 8
    assert LinearProbeEncoder(n_components=50).fit(X[:12, :], y[:12]).n_components_ == 11
    assert enc.components_.shape == (8, 20)
    assert enc.coef_.shape == (6, 8)
    assert enc.intercept_.shape == enc.alpha_.shape == enc.cv_scores_.shape == (6,)
    assert enc.alpha_scores_.shape == (25, 6)
    assert set(enc.alpha_) <= set(enc.alphas_)
    pcs = enc.transform_features(X[120:])
    np.testing.assert_allclose(pred, pcs @ enc.coef_.T + enc.intercept_, rtol=1e-5, atol=1e-5)


def test_it_is_ridge_on_standardised_principal_components():
    X, y = linear_problem()
    enc = LinearProbeEncoder(n_components=8, cv=4, alphas=np.logspace(-2, 4, 7)).fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    pca = PCA(8).fit(Z)
    # the same subspace as scikit-learn's PCA, with signs fixed the same way
    np.testing.assert_allclose(np.abs(enc.components_), np.abs(pca.components_), atol=1e-4)
    reference = ridge_cv(pca.transform(Z), y, np.logspace(-2, 4, 7), cv=4, edge_warning=1)
    np.testing.assert_array_equal(enc.alpha_, reference.alpha)
    np.testing.assert_allclose(
        enc.predict(X), pca.transform(Z) @ reference.coef + reference.intercept, atol=1e-3
    )


@pytest.mark.parametrize(("n", "p", "k"), [(300, 800, 20), (200, 60, 50), (50, 900, 45)])
def test_principal_axes_exact_and_randomized(n, p, k):
    rng = np.random.default_rng(0)
    F = (rng.standard_normal((n, 30)) * np.logspace(1, -1, 30)) @ rng.standard_normal((30, p))
    F = (F + 0.01 * rng.standard_normal((n, p))).astype(np.float32)
    F -= F.mean(0)
    xb = ArrayBackend("numpy")
    ours = principal_axes(xb, F, k, random_state=0)
    reference = PCA(k, svd_solver="full").fit(F).components_
    assert ours.shape == (k, p)
    strong = 25  # well-separated axes agree one by one (the rest span the noise)
    cosines = np.abs(np.sum(ours[:strong] * reference[:strong], axis=1))
    np.testing.assert_allclose(cosines, 1, atol=1e-3)
    assert np.all(ours[np.arange(k), np.abs(ours).argmax(1)] > 0)
    on_torch = principal_axes(ArrayBackend("torch"), torch.from_numpy(F), k, random_state=0)
    np.testing.assert_allclose(np.abs(on_torch[:strong]), np.abs(ours[:strong]), atol=1e-3)


def test_no_pca_when_it_would_not_reduce():
    X, y = linear_problem(n_features=5)
    enc = LinearProbeEncoder().fit(X, y)  # 1000 components > 5 features
    assert enc.components_ is None
    assert enc.n_components_ == 5
    enc = LinearProbeEncoder(n_components=None, standardize=False).fit(X, y)
    assert enc.components_ is None
    np.testing.assert_array_equal(enc.feature_scale_, 1)


def test_constant_features_predict_the_mean():
    _, y = linear_problem(n=20)
    enc = LinearProbeEncoder(n_components=5, cv=4).fit(np.ones((20, 30)), y)
    np.testing.assert_allclose(
        enc.predict(np.ones((3, 30))), np.tile(y.mean(0), (3, 1)), rtol=1e-5
    )


def test_numpy_and_torch_backends_agree():
    X, y = linear_problem()
    on_numpy = LinearProbeEncoder(n_components=10, backend="numpy").fit(X, y)
    on_torch = LinearProbeEncoder(n_components=10, backend="torch", device="cpu").fit(X, y)
    np.testing.assert_array_equal(on_numpy.alpha_, on_torch.alpha_)
    np.testing.assert_allclose(on_numpy.predict(X), on_torch.predict(X), rtol=1e-4, atol=1e-4)


def test_one_dimensional_y_gives_one_dimensional_predictions():
    X, y = linear_problem()
    enc = LinearProbeEncoder(n_components=5).fit(X, y[:, 0])
    assert enc.predict(X).shape == (150,)
    assert enc.score(X, y[:, 0]) > 0.5


def test_edge_of_the_grid_warning_reaches_the_user():
    X, y = linear_problem(noise=10)  # best alphas 10-30
    with pytest.warns(UserWarning, match="chose the largest alpha"):
        LinearProbeEncoder(n_components=10, alphas=[1, 10]).fit(X, y)


# ------------------------------------------------------------------------ images


@pytest.mark.slow
def test_beats_chance_in_every_area_of_the_simulator(simulated):
    data = simulated
    enc = LinearProbeEncoder(
        **PYRAMID, n_components=100, cv=KFold(5, shuffle=True, random_state=0)
    )
    enc.fit(data.images[:240], data.responses.slicer[..., :240])
    assert enc.space_.modality == "fmri"
    pred = enc.predict(data.images[240:])
    r = pearson_r(data.Y[240:], pred)
    rois = np.asarray(data.rois)
    # 60 test images: chance r has sd ~0.13; every area is far above it and below its
    # planted ceiling
    for area in ("early", "mid", "late"):
        assert 0.25 < r[rois == area].mean() < data.noise_ceiling[rois == area].mean()
    # scoring through the container and mapping scores back on the brain
    test_img = data.responses.slicer[..., 240:]
    assert enc.score(data.images[240:], test_img) == pytest.approx(r.mean(), abs=1e-5)
    img = enc.inverse_transform(pred)
    assert img.shape == (*data.mask.shape, 60)
    assert enc.inverse_transform(enc.cv_scores_).shape[:3] == data.mask.shape


@pytest.mark.slow
def test_images_use_the_feature_cache_and_pooling(simulated, monkeypatch):
    from afo_encoding.backbones import cache, extract_features, get_backbone

    data = simulated
    images = data.images[:40]
    enc = LinearProbeEncoder(**PYRAMID, n_components=20, pool_size=2, cv=3)
    enc.fit(images, data.Y[:40])
    backbone = get_backbone("pyramid", image_size=64)
    store = extract_features(backbone, images)
    # 4 layers: 15 channels x 2 x 2 cells + 30 global values each
    assert pool_features(store, pool_size=2).shape == (40, 4 * (15 * 4 + 30))
    assert enc.feature_mean_.shape == (4 * (15 * 4 + 30),)
    calls = []
    original = cache._compute
    monkeypatch.setattr(cache, "_compute", lambda *a, **k: calls.append(1) or original(*a, **k))
    np.testing.assert_allclose(enc.predict(store), enc.predict(images), rtol=1e-6)
    assert calls == []  # features of seen images come from the cache


def test_epochs_responses_fit_and_score():
    from afo_encoding.simulation import make_retinotopic_dataset

    data = make_retinotopic_dataset(
        n_images=40, n_voxels=40, image_size=32, modality="eeg", random_state=0
    )
    enc = LinearProbeEncoder(
        backbone_params={"image_size": 32, "n_scales": 2}, device="cpu", n_components=10, cv=3
    ).fit(data.images, data.responses)
    assert enc.space_.coords.shape[1] == 4
    out = enc.inverse_transform(enc.predict(data.images[:5]))
    assert type(out).__name__ == "EpochsArray"
    assert len(out) == 5
    assert np.isfinite(enc.score(data.images, data.responses))


# ---------------------------------------------------------------- bad input


def test_bad_input_gets_clear_errors():
    X, y = linear_problem()
    with pytest.raises(ValueError, match="150 images but 100 samples"):
        LinearProbeEncoder().fit(X, y[:100])
    with pytest.raises(ValueError, match="n_samples=3"):
        LinearProbeEncoder().fit(X[:3], y[:3])
    with pytest.raises(ValueError, match="requires y"):
        LinearProbeEncoder().fit(X, None)
    with pytest.raises(ValueError, match="n_components must be a positive int"):
        LinearProbeEncoder(n_components=0).fit(X, y)
    with pytest.raises(ValueError, match="pool_size must be a positive int"):
        LinearProbeEncoder(pool_size=2.5).fit(X, y)
    with pytest.raises(ValueError, match="scoring must be one of"):
        LinearProbeEncoder(scoring="mse").fit(X, y)
    with pytest.raises(ValueError, match="alphas must be"):
        LinearProbeEncoder(alphas=[-1.0]).fit(X, y)
    y_nan = y.copy()
    y_nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        LinearProbeEncoder().fit(X, y_nan)
    with pytest.raises(ValueError, match="one encoder per subject"):
        LinearProbeEncoder().fit([X, X], [y, y])
    enc = LinearProbeEncoder(n_components=5).fit(X, y)
    with pytest.raises(ValueError, match="20 features"):
        enc.predict(X[:, :4])


# ------------------------------------------------------ scikit-learn machinery


def test_pipeline_cross_val_score_and_grid_search():
    X, y = linear_problem(n=120)
    base = LinearProbeEncoder(n_components=15, cv=3)
    pipe = make_pipeline(StandardScaler(), base).fit(X, y)
    assert pipe.predict(X).shape == (120, 6)
    scores = cross_val_score(base, X, y, cv=KFold(3), scoring=pearson_scorer)
    assert scores.shape == (3,)
    assert np.all(scores > 0.3)
    grid = GridSearchCV(base, {"n_components": [2, 15], "scoring": ["r2", "pearson"]}, cv=3)
    grid.fit(X, y)
    assert grid.best_params_["n_components"] == 15  # more components explain more here
    assert len(grid.cv_results_["mean_test_score"]) == 4
    assert not hasattr(clone(grid.best_estimator_), "coef_")


def test_save_load_and_pickle_round_trip(tmp_path):
    from afo_encoding.io import load

    X, y = linear_problem()
    enc = LinearProbeEncoder(n_components=6).fit(X, y)
    path = enc.save(tmp_path / "probe.safetensors")
    back = load(path)
    np.testing.assert_array_equal(back.predict(X), enc.predict(X))
    np.testing.assert_array_equal(back.alpha_, enc.alpha_)
    assert back.get_params() == enc.get_params()
    again = pickle.loads(pickle.dumps(enc))
    np.testing.assert_array_equal(again.predict(X), enc.predict(X))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fit_matches_cpu():
    X, y = linear_problem()
    on_cpu = LinearProbeEncoder(n_components=10, device="cpu").fit(X, y)
    on_gpu = LinearProbeEncoder(n_components=10, device="cuda").fit(X, y)
    np.testing.assert_array_equal(on_cpu.alpha_, on_gpu.alpha_)
    np.testing.assert_allclose(on_cpu.predict(X), on_gpu.predict(X), rtol=1e-3, atol=1e-3)


def test_predicted_epochs_keep_the_events_and_metadata_of_the_test_epochs():
    # MNE users select conditions on predictions as on measured epochs
    import pandas as pd

    from afo_encoding.simulation import make_retinotopic_dataset

    data = make_retinotopic_dataset(n_images=60, n_voxels=30, image_size=32, modality="eeg",
                                    random_state=0)
    epochs = data.responses
    epochs.metadata = pd.DataFrame({"category": np.where(np.arange(60) % 3, "object",
                                                         "face"), "image": np.arange(60)})
    enc = LinearProbeEncoder(backbone_params={"image_size": 32, "n_scales": 2}).fit(
        data.images[:40], epochs[:40])
    test = epochs[40:]
    pred = enc.inverse_transform(enc.predict(data.images[40:]), like=test)
    np.testing.assert_array_equal(pred.events, test.events)
    assert pred.metadata["image"].tolist() == list(range(40, 60))
    assert len(pred["category == 'face'"]) == int((test.metadata["category"] == "face").sum())
