"""The per-target ridge solver: exact against a direct solve, equal to himalaya, robust."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold, ShuffleSplit

from afo_encoding.encoders.ridge import ArrayBackend, get_backend, ridge_cv

ALPHAS = np.logspace(-3, 4, 8)


def brute_force(X, Y, alphas, splits, scoring="r2", fit_intercept=True):
    """Ridge per fold, alpha and target by ``np.linalg.solve``, in float64."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    n_features = X.shape[1]
    scores = np.zeros((len(alphas), Y.shape[1]))
    for train, test in splits:
        x_mean = X[train].mean(0) if fit_intercept else 0
        y_mean = Y[train].mean(0) if fit_intercept else 0
        x_train, x_test = X[train] - x_mean, X[test] - x_mean
        y_train, y_test = Y[train] - y_mean, Y[test] - y_mean
        for i, alpha in enumerate(alphas):
            gram = x_train.T @ x_train + alpha * np.eye(n_features)
            pred = x_test @ np.linalg.solve(gram, x_train.T @ y_train)
            if scoring == "r2":
                total = ((y_test - y_test.mean(0)) ** 2).sum(0)
                scores[i] += 1 - ((y_test - pred) ** 2).sum(0) / total
            elif scoring == "neg_mse":
                scores[i] -= ((y_test - pred) ** 2).mean(0)
            else:
                yc, pc = y_test - y_test.mean(0), pred - pred.mean(0)
                scores[i] += (yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
    scores /= len(splits)
    best = scores.argmax(0)
    x_mean = X.mean(0) if fit_intercept else 0
    y_mean = Y.mean(0) if fit_intercept else 0
    xc, yc = X - x_mean, Y - y_mean
    coef = np.stack(
        [
            np.linalg.solve(xc.T @ xc + alphas[b] * np.eye(n_features), xc.T @ yc[:, j])
            for j, b in enumerate(best)
        ],
        axis=1,
    )
    intercept = y_mean - x_mean @ coef if fit_intercept else np.zeros(Y.shape[1])
    return scores, alphas[best], coef, intercept


def make_problem(n_samples, n_features, n_targets=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features)) * np.logspace(0, -1.5, n_features) + 2
    W = rng.standard_normal((n_features, n_targets)) * rng.uniform(0, 1, n_targets)
    Y = X @ W + 2 * rng.standard_normal((n_samples, n_targets)) + 5
    return X, Y


@pytest.mark.parametrize("scoring", ["r2", "pearson", "neg_mse"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize(("n_samples", "n_features"), [(80, 12), (30, 50)])
def test_matches_direct_solve(scoring, fit_intercept, n_samples, n_features):
    X, Y = make_problem(n_samples, n_features)
    result = ridge_cv(
        X, Y, ALPHAS, cv=3, scoring=scoring, fit_intercept=fit_intercept, dtype=np.float64,
        edge_warning=1,
    )  # fmt: skip
    splits = list(KFold(3).split(X))
    scores, alpha, coef, intercept = brute_force(X, Y, ALPHAS, splits, scoring, fit_intercept)
    assert result.solver == ("primal" if n_samples * 2 / 3 >= n_features else "dual")
    np.testing.assert_array_equal(result.alpha, alpha)
    np.testing.assert_allclose(result.alpha_scores, scores, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(result.cv_scores, scores.max(0), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(result.coef, coef, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(result.intercept, intercept, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("case", ["duplicate columns", "one-hot", "constant column"])
def test_degenerate_spectra_in_float32(case):
    # tied and zero eigenvalues, and directions a training fold never saw
    rng = np.random.default_rng(1)
    X = rng.standard_normal((96, 16))
    if case == "duplicate columns":
        X[:, 8:] = X[:, :8]
    elif case == "one-hot":
        X[:, :6] = np.repeat(np.eye(6), 16, axis=0)
    else:
        X[:, 3] = 7.0
    Y = X @ rng.standard_normal((16, 12)) + rng.standard_normal((96, 12))
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    result = ridge_cv(X, Y, ALPHAS, cv=4, edge_warning=1)
    scores, alpha, coef, intercept = brute_force(X, Y, ALPHAS, list(KFold(4).split(X)))
    np.testing.assert_array_equal(result.alpha, alpha)
    np.testing.assert_allclose(result.alpha_scores, scores, atol=1e-5)
    pred, expected = X @ result.coef + result.intercept, X @ coef + intercept
    np.testing.assert_allclose(pred, expected, atol=1e-4 * Y.std())


def test_splits_that_leave_samples_out():
    # ShuffleSplit: training sets are not the complements of the test sets
    X, Y = make_problem(60, 8)
    cv = ShuffleSplit(n_splits=3, train_size=30, test_size=20, random_state=0)
    result = ridge_cv(X, Y, ALPHAS, cv=cv, dtype=np.float64, edge_warning=1)
    scores, alpha, _, _ = brute_force(X, Y, ALPHAS, list(cv.split(X)))
    np.testing.assert_array_equal(result.alpha, alpha)
    np.testing.assert_allclose(result.alpha_scores, scores, rtol=1e-7, atol=1e-8)


def test_matches_himalaya():
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score

    X, Y = make_problem(150, 20, n_targets=50)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    set_backend("numpy")
    reference = RidgeCV(
        alphas=ALPHAS, fit_intercept=True, cv=KFold(3), solver_params={"score_func": r2_score}
    ).fit(X, Y)
    result = ridge_cv(X, Y, ALPHAS, cv=3, edge_warning=1)
    np.testing.assert_allclose(result.alpha, reference.best_alphas_, rtol=1e-6)  # float32
    np.testing.assert_allclose(result.cv_scores, reference.cv_scores_, atol=1e-4)
    np.testing.assert_allclose(
        X @ result.coef + result.intercept, reference.predict(X), atol=1e-4 * Y.std()
    )


def test_numpy_and_torch_backends_agree():
    X, Y = make_problem(90, 15, n_targets=30)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    on_numpy = ridge_cv(X, Y, ALPHAS, cv=3, backend="numpy", edge_warning=1)
    on_torch = ridge_cv(X, Y, ALPHAS, cv=3, backend="torch", device="cpu", edge_warning=1)
    np.testing.assert_array_equal(on_numpy.alpha, on_torch.alpha)
    np.testing.assert_allclose(on_numpy.alpha_scores, on_torch.alpha_scores, atol=1e-6)
    np.testing.assert_allclose(on_numpy.coef, on_torch.coef, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(on_numpy.intercept, on_torch.intercept, rtol=1e-4, atol=1e-4)
    assert isinstance(on_torch.coef, np.ndarray)
    assert on_torch.coef.dtype == np.float32


def test_torch_tensors_select_the_torch_backend():
    X, Y = make_problem(60, 6, n_targets=4)
    assert get_backend(like=torch.from_numpy(X)).name == "torch"
    assert get_backend(like=X).name == "numpy"
    result = ridge_cv(torch.from_numpy(X), torch.from_numpy(Y), ALPHAS, cv=3, edge_warning=1)
    reference = ridge_cv(X, Y, ALPHAS, cv=3, edge_warning=1)
    np.testing.assert_allclose(result.coef, reference.coef, rtol=1e-4, atol=1e-5)


def test_batches_of_targets_change_nothing():
    X, Y = make_problem(70, 10, n_targets=23)
    results = [
        ridge_cv(X, Y, ALPHAS, cv=3, n_targets_batch=batch, dtype=np.float64, edge_warning=1)
        for batch in (None, 1, 7)
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0].alpha, other.alpha)
        np.testing.assert_allclose(results[0].coef, other.coef, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(results[0].intercept, other.intercept, rtol=1e-12)


def test_constant_target_gets_its_mean():
    X, Y = make_problem(40, 5, n_targets=3)
    Y[:, 1] = 4.0
    result = ridge_cv(X, Y, ALPHAS, cv=4, dtype=np.float64, edge_warning=1)
    np.testing.assert_allclose(result.coef[:, 1], 0, atol=1e-10)
    assert result.intercept[1] == pytest.approx(4.0)
    assert result.cv_scores[1] == 0


@pytest.mark.parametrize(
    ("alphas", "snr", "edge"),
    [(np.logspace(-2, 0, 3), 0.3, "largest"), (np.logspace(1, 3, 3), 10.0, "smallest")],
)
def test_warns_when_alphas_pile_up_at_an_edge(alphas, snr, edge):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 40))
    Y = snr * X @ rng.standard_normal((40, 30)) + rng.standard_normal((60, 30))
    with pytest.warns(UserWarning, match=f"chose the {edge} alpha"):
        ridge_cv(X, Y, alphas, cv=3)


def test_no_edge_warning_where_the_score_is_flat():
    # alphas far below the eigenvalues all give least squares: many targets pick the
    # smallest by a hair, and widening the grid would change nothing
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    Y = X @ rng.standard_normal((3, 10)) + 0.1 * rng.standard_normal((200, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = ridge_cv(X, Y, np.logspace(-6, -2, 5), cv=3)
    assert np.mean(result.alpha == 1e-6) > 0.5  # at the edge, yet no warning


def test_no_edge_warning_with_a_wide_grid():
    X, Y = make_problem(90, 10, n_targets=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ridge_cv(X, Y, np.logspace(-3, 6, 19), cv=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alphas": [1.0, -1.0]}, "positive"),
        ({"alphas": []}, "positive"),
        ({"scoring": "mse"}, "scoring must be one of"),
        ({"solver": "cholesky"}, "solver must be"),
        ({"dtype": np.int32}, "dtype must be"),
        ({"n_targets_batch": 0}, "n_targets_batch"),
        ({"cv": 20}, "at least 2 test samples"),
        ({"backend": "jax"}, "backend must be"),
        ({"backend": "numpy", "device": "cuda"}, "CPU only"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    X, Y = make_problem(20, 3, n_targets=2)
    with pytest.raises(ValueError, match=match):
        ridge_cv(X, Y, **{"alphas": ALPHAS, **kwargs})


def test_bad_arrays_are_named():
    X, Y = make_problem(20, 3, n_targets=2)
    with pytest.raises(ValueError, match="different numbers of samples: 20 and 19"):
        ridge_cv(X, Y[:19], ALPHAS)
    with pytest.raises(ValueError, match="Y must be 2D"):
        ridge_cv(X, Y[:, 0], ALPHAS)
    with pytest.raises(ValueError, match="X must be 2D"):
        ridge_cv(X[:, 0], Y, ALPHAS)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        ridge_cv(X, Y, ALPHAS)
    Y[0, 1] = np.inf
    with pytest.raises(ValueError, match="Y contains NaN"):
        ridge_cv(np.nan_to_num(X), Y, ALPHAS)


def test_leave_one_out_with_mse():
    X, Y = make_problem(15, 3, n_targets=2)
    result = ridge_cv(X, Y, ALPHAS, cv=15, scoring="neg_mse", dtype=np.float64, edge_warning=1)
    scores, alpha, _, _ = brute_force(X, Y, ALPHAS, list(KFold(15).split(X)), "neg_mse")
    np.testing.assert_array_equal(result.alpha, alpha)
    np.testing.assert_allclose(result.alpha_scores, scores, rtol=1e-7)


def test_backend_repr_and_dtype():
    xb = ArrayBackend("torch", "cpu")
    assert "torch" in repr(xb)
    assert xb.dtype(np.float64) is torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_numpy():
    X, Y = make_problem(300, 40, n_targets=50)
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    on_numpy = ridge_cv(X, Y, ALPHAS, cv=3, backend="numpy", edge_warning=1)
    on_gpu = ridge_cv(X, Y, ALPHAS, cv=3, backend="torch", device="cuda", edge_warning=1)
    np.testing.assert_array_equal(on_numpy.alpha, on_gpu.alpha)
    np.testing.assert_allclose(on_numpy.coef, on_gpu.coef, rtol=1e-3, atol=1e-4)
    assert isinstance(on_gpu.coef, np.ndarray)


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_cv_predictions_are_the_folds_held_out_predictions(solver):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8)) + 3
    Y = X @ rng.normal(size=(8, 3)) + 2 * rng.normal(size=(60, 3)) + 5
    result = ridge_cv(X, Y, np.logspace(-2, 4, 13), 5, solver=solver, dtype=np.float64,
                      return_cv_predictions=True)
    expected = np.empty_like(Y)
    for train, test in KFold(5).split(X):
        for j in range(3):
            model = Ridge(alpha=result.alpha[j]).fit(X[train], Y[train, j])
            expected[test, j] = model.predict(X[test])
    np.testing.assert_allclose(result.cv_predictions, expected, rtol=1e-8, atol=1e-8)
    assert ridge_cv(X, Y, cv=5).cv_predictions is None
    with pytest.raises(ValueError, match="hold every sample out exactly once"):
        ridge_cv(X, Y, cv=ShuffleSplit(3, random_state=0), return_cv_predictions=True)
