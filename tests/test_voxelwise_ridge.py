"""Ridge with a design matrix per voxel: exact against scikit-learn, memory by batches."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from afo_encoding.encoders.voxelwise_ridge import voxelwise_ridge_cv


def _problem(seed=0, n=80, n_voxels=4, p=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_voxels, p)) * rng.uniform(0.1, 10, size=p) + 3
    Y = np.einsum("nvp,vp->nv", X, rng.normal(size=(n_voxels, p)))
    return X, Y + 4 * rng.normal(size=Y.shape)


@pytest.mark.parametrize("standardize", [False, True])
def test_matches_scikit_learn_per_voxel(standardize):
    X, Y = _problem()
    alphas = np.logspace(-2, 3, 11)
    result = voxelwise_ridge_cv(X, Y, alphas, standardize=standardize)
    for v in range(Y.shape[1]):
        design = X[:, v]
        scale = design.std(0) if standardize else np.ones(design.shape[1])
        model = Ridge(alpha=result.alpha[v]).fit(design / scale, Y[:, v])
        np.testing.assert_allclose(result.coef[v], model.coef_ / scale, rtol=1e-4)
        assert result.intercept[v] == pytest.approx(model.intercept_, rel=1e-4, abs=1e-4)
        held = np.empty(len(Y))
        scores = []
        for alpha in alphas:
            for train, test in KFold(5).split(design):
                fold = Ridge(alpha=alpha).fit(design[train] / scale, Y[train, v])
                held[test] = fold.predict(design[test] / scale)
            scores.append(held.copy())
        best = int(np.flatnonzero(alphas == result.alpha[v])[0])
        np.testing.assert_allclose(result.cv_predictions[:, v], scores[best], rtol=1e-4,
                                   atol=1e-4)


def test_a_callable_in_batches_gives_the_same_result():
    X, Y = _problem(n_voxels=7)
    calls = []

    def features(cols):
        calls.append(cols)
        return X[:, cols]

    batched = voxelwise_ridge_cv(features, Y, voxel_batch=3)
    whole = voxelwise_ridge_cv(X, Y)
    assert [c.stop - c.start for c in calls[1::2]] == [3, 3, 1]
    np.testing.assert_allclose(batched.coef, whole.coef, rtol=1e-5)
    np.testing.assert_array_equal(batched.alpha, whole.alpha)


def test_one_standard_error_rule_shrinks_features_that_only_fit_noise():
    rng = np.random.default_rng(0)
    n, n_voxels = 100, 40
    X = rng.normal(size=(n, n_voxels, 10))  # features unrelated to the targets
    Y = rng.normal(size=(n, n_voxels))
    best = voxelwise_ridge_cv(X, Y, rule="best")
    one_se = voxelwise_ridge_cv(X, Y, rule="one_standard_error")
    assert np.all(one_se.alpha >= best.alpha)
    assert np.mean(one_se.alpha >= 1e6) > 0.9  # switched off
    assert np.median(np.abs(one_se.coef).max(1)) < 1e-3
    assert np.mean(best.alpha < 1e6) > np.mean(one_se.alpha < 1e6)  # chance fits, undone


def test_bad_inputs_are_named():
    X, Y = _problem()
    with pytest.raises(ValueError, match="alphas must be"):
        voxelwise_ridge_cv(X, Y, alphas=[-1.0])
    with pytest.raises(ValueError, match="Y contains NaN"):
        voxelwise_ridge_cv(X, np.where(Y > 0, np.nan, Y))
    bad = X.copy()
    bad[0, 2, 0] = np.inf
    with pytest.raises(ValueError, match="voxels 0-3 contain NaN or inf"):
        voxelwise_ridge_cv(bad, Y)
    with pytest.raises(ValueError, match="at least 2 held-out samples"):
        voxelwise_ridge_cv(X[:6], Y[:6], cv=5)
    with pytest.raises(ValueError, match="rule must be"):
        voxelwise_ridge_cv(X, Y, rule="smallest")
