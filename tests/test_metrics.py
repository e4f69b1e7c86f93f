"""Metrics against scipy, against hand-computed values, and against planted noise."""

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from afo_encoding.metrics import (
    explainable_variance,
    ncsnr,
    noise_ceiling,
    noise_normalized_score,
    pearson_r,
    pearson_scorer,
    split_half_reliability,
)


def _planted(n_images=400, n_repeats=4, n_voxels=300, seed=0):
    """Single trials y = s + e with a known ncsnr per voxel (signal sd / noise sd)."""
    rng = np.random.default_rng(seed)
    true_snr = np.linspace(0.0, 2.0, n_voxels)
    signal = rng.standard_normal((n_images, 1, n_voxels))
    signal = (signal - signal.mean(0)) / signal.std(0, ddof=1) * true_snr  # exact sd
    noise = rng.standard_normal((n_images, n_repeats, n_voxels))
    return (signal + noise).astype(np.float32), true_snr


def test_pearson_r_matches_scipy_and_chunks():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 37)).astype(np.float32)
    b = (a + rng.standard_normal((50, 37))).astype(np.float32)
    expected = [stats.pearsonr(a[:, j], b[:, j])[0] for j in range(37)]
    r = pearson_r(a, b)
    assert r.dtype == np.float64
    assert r.shape == (37,)
    np.testing.assert_allclose(r, expected, atol=1e-6)
    np.testing.assert_array_equal(pearson_r(a, b, chunk_size=5), r)
    assert isinstance(pearson_r(a[:, 0], b[:, 0]), float)
    assert pearson_r(a[:, 0], b[:, 0]) == pytest.approx(expected[0], abs=1e-6)


def test_pearson_r_hand_values_constant_and_nan():
    y = np.array([[1.0, 5.0, 1.0], [2.0, 5.0, np.nan], [3.0, 5.0, 2.0]])
    pred = np.array([[3.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 3.0, 3.0]])
    r = pearson_r(y, pred)
    assert r[0] == pytest.approx(-1.0)
    assert r[1] == 0.0  # constant measured column: defined as 0
    assert np.isnan(r[2])
    # a constant prediction scores 0, not nan
    assert pearson_r(pred, np.ones_like(pred))[0] == 0.0
    # large offsets: float64 accumulation keeps precision for float32 data
    big = (np.arange(10, dtype=np.float32)[:, None] + 1e4).repeat(2, 1)
    np.testing.assert_allclose(pearson_r(big, big[::-1]), -1.0)


def test_pearson_r_errors():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\).*\(3, 3\)"):
        pearson_r(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="at least 2 samples, got 1"):
        pearson_r(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="numeric"):
        pearson_r(np.array([["a"], ["b"]]), np.zeros((2, 1)))


def test_ncsnr_recovers_planted_and_noise_ceiling_formula():
    repeats, true_snr = _planted()
    est = ncsnr(repeats)
    assert est.shape == (300,)
    assert np.all(est >= 0)
    # compared in variance units (snr**2), where the estimate is unbiased: its sampling sd
    # with 400 images is ~0.02 + 7 % of the value
    np.testing.assert_allclose(est**2, true_snr**2, rtol=0.2, atol=0.06)
    assert np.corrcoef(est, true_snr)[0, 1] > 0.98
    np.testing.assert_array_equal(ncsnr(repeats, chunk_size=7), est)
    # NSD formula by hand: snr 1 averaged over 3 trials -> 1 / (1 + 1/3) = 75 %
    np.testing.assert_allclose(noise_ceiling([0.0, 1.0, np.inf], 3), [0.0, 75.0, 100.0])
    np.testing.assert_allclose(noise_ceiling([1.0], 3, units="r"), [np.sqrt(0.75)])


def test_ncsnr_with_missing_trials():
    repeats, true_snr = _planted(n_repeats=5, seed=1)
    holey = repeats.copy()
    holey[::3, 4] = np.nan  # a third of the images have 4 trials instead of 5
    np.testing.assert_allclose(ncsnr(holey) ** 2, true_snr**2, rtol=0.2, atol=0.06)


def _assert_estimates(estimate, planted):
    """Per-voxel estimates of a ceiling (percent) agree with the planted one.

    Single voxels are noisy near zero (the Spearman-Brown step-up doubles sampling error
    there), so the check is on the mean absolute error (< 3 points), the bias (< 1 point)
    and the agreement across voxels (r > 0.98).
    """
    error = estimate - planted
    assert np.abs(error).mean() < 3.0
    assert abs(error.mean()) < 1.0
    assert np.corrcoef(estimate, planted)[0, 1] > 0.98


def test_reliability_measures_agree_with_planted_ceiling():
    repeats, true_snr = _planted(n_repeats=4)
    shr = split_half_reliability(repeats, n_splits=5, random_state=0)
    _assert_estimates(100 * shr, noise_ceiling(true_snr, n_trials=4))
    np.testing.assert_array_equal(
        split_half_reliability(repeats, n_splits=5, random_state=0, chunk_size=11), shr
    )
    raw = split_half_reliability(repeats, n_splits=5, random_state=0, spearman_brown=False)
    _assert_estimates(100 * raw, noise_ceiling(true_snr, n_trials=2))
    _assert_estimates(100 * explainable_variance(repeats), noise_ceiling(true_snr, n_trials=1))
    _assert_estimates(noise_ceiling(ncsnr(repeats), 4), noise_ceiling(true_snr, n_trials=4))


def test_explainable_variance_hand_value():
    # two images, two repeats: image means 0 and 2, residuals +-1 around them
    repeats = np.array([[[-1.0], [1.0]], [[1.0], [3.0]]])
    # per repeat var over images = 1, residual var over images = 0 -> ev = 1 - 0 = 1
    np.testing.assert_allclose(explainable_variance(repeats, bias_correction=False), [1.0])
    repeats = np.array([[[-1.0], [1.0]], [[1.0], [-1.0]]])
    # repeat 0: values -1, 1 (var 1); residuals -1, 1 (var 1) -> ev = 0; corrected -1
    np.testing.assert_allclose(explainable_variance(repeats, bias_correction=False), [0.0])
    np.testing.assert_allclose(explainable_variance(repeats), [-1.0])


def test_noise_normalized_score_hand_values():
    score = noise_normalized_score([0.5, -0.2, 0.9, 0.1], [50.0, 50.0, 50.0, 0.0])
    # r = 0.5 explains 25 % of the variance, half of a 50 % ceiling; 0.81 > 50 % is capped
    np.testing.assert_allclose(score[:3], [50.0, 0.0, 100.0])
    assert np.isnan(score[3])
    with pytest.raises(ValueError, match="same shape"):
        noise_normalized_score([0.5], [50.0, 20.0])
    with pytest.raises(ValueError, match="non-negative"):
        noise_normalized_score([0.5], [-1.0])


def test_repeats_errors():
    with pytest.raises(ValueError, match=r"\(n_images, n_repeats, n_voxels\).*\(4, 3\)"):
        ncsnr(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="at least 2 repeats per image, got 1"):
        split_half_reliability(np.zeros((4, 1, 3)))
    with pytest.raises(ValueError, match="n_trials must be positive"):
        noise_ceiling([1.0], 0)


def test_pearson_scorer_in_sklearn_model_selection():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 10))
    Y = X @ rng.standard_normal((10, 6)) + 0.5 * rng.standard_normal((120, 6))
    scores = cross_val_score(Ridge(), X, Y, scoring=pearson_scorer, cv=KFold(3))
    assert scores.shape == (3,)
    assert np.all(scores > 0.8)
    model = Ridge().fit(X[:80], Y[:80])
    expected = pearson_r(Y[80:], model.predict(X[80:])).mean()
    assert pearson_scorer(model, X[80:], Y[80:]) == pytest.approx(expected)
    search = GridSearchCV(Ridge(), {"alpha": [1e-2, 1e6]}, scoring=pearson_scorer, cv=3)
    search.fit(X, Y)
    assert search.best_params_ == {"alpha": 1e-2}
    # single-target regressors (1D y) work too
    assert cross_val_score(Ridge(), X, Y[:, 0], scoring=pearson_scorer, cv=3).min() > 0.8


def test_pearson_scorer_converts_containers_with_space():
    class Space:
        def transform(self, y):
            return np.asarray(y.data)

    class Box:  # stands for a Niimg or Epochs the estimator knows how to read
        def __init__(self, data):
            self.data = data

    class Encoder:
        space_ = Space()

        def predict(self, X):
            return X * 2.0

    X = np.arange(12.0).reshape(6, 2)
    assert pearson_scorer(Encoder(), X, Box(X)) == pytest.approx(1.0)
