"""Ridge regression with one alpha per target, chosen by K-fold cross-validation.

:func:`ridge_cv` is the solver behind :class:`~afo_encoding.encoders.linear.LinearProbeEncoder`.
It is fast by construction:

- **One eigendecomposition per fold.** With ``n_train >= n_features`` (the primal form) the
  training Gram matrix ``X_c^T X_c = W diag(s) W^T`` is diagonalised once; with fewer
  samples than features (the dual form) the kernel ``X_c X_c^T`` is, and ``W`` is the
  matching thin basis of right singular vectors. Every alpha is then a diagonal rescale:
  ``coef(alpha) = W diag(1 / (s + alpha)) W^T X_c^T y``.
- **Scores of every alpha without predictions.** The held-out squared error of every alpha
  and every target comes from a few ``(rank, n_targets)`` arrays: with ``A = X_test W``,
  ``Z = W^T X_train^T y`` and ``d_k = 1 / (s_k + alpha)``, the prediction norm
  ``sum_kl d_k d_l Z_k (A^T A)_kl Z_l`` is split by partial fractions,
  ``d_k d_l = (d_k - d_l) / (s_l - s_k)``, into terms linear in ``d`` and ``d^2`` whose
  coefficients do not depend on alpha. A fold therefore costs one ``n x rank x n_targets``
  product with the targets and one ``rank x rank x n_targets`` product (in float64, where
  the partial fractions cancel), and all alphas together cost ``n_alphas x rank x
  n_targets``: the alpha grid is almost free. Eigenvalues closer than a relative ``1e-5``
  (ties, rank deficiency) are paired through ``(d_k^2 + d_l^2) / 2`` instead, an error of
  order ``1e-10``.
- **Batches of targets** bound the memory; **one code path** runs on numpy or torch (CPU or
  GPU) through a few-line backend shim.

The intercept is fitted by centering ``X`` and ``Y`` on the training part of each fold (and
on all the data for the final refit). Arrays are float32 by default; means, Gram matrices,
eigendecompositions and scores are accumulated in float64.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import check_cv

from .._devices import ArrayBackend, get_backend
from .._logging import logger, progress

SCORINGS = ("r2", "pearson", "neg_mse")
#: ridge strengths tried by default: half-decade steps from below the smallest to above the
#: largest eigenvalue a standardised, PCA-reduced design can have (about 1 to
#: n_samples * n_features: 1e10 for 10,000 images and a million features), so the grid runs
#: from no shrinkage to full shrinkage; the search costs almost nothing per alpha
DEFAULT_ALPHAS = np.logspace(-2, 10, 25)

# eigenvalues closer than this (relative to the larger one plus the smallest alpha) are
# treated as tied by the partial-fraction scoring; see the module docstring
_TIE_TOLERANCE = 1e-5
# working-memory budget used to choose the default batch of targets
_BATCH_MEMORY = 512 * 2**20


@dataclass(frozen=True)
class RidgeCVResult:
    """What :func:`ridge_cv` learned (numpy arrays on the CPU).

    Attributes
    ----------
    coef : ndarray of shape (n_features, n_targets)
        Ridge weights refitted on all the data, each target with its own alpha.
    intercept : ndarray of shape (n_targets,)
        Intercepts (zeros when ``fit_intercept=False``).
    alpha : ndarray of shape (n_targets,)
        The alpha chosen for each target.
    cv_scores : ndarray of shape (n_targets,)
        Cross-validated score of the chosen alpha (mean over folds).
    alpha_scores : ndarray of shape (n_alphas, n_targets)
        Cross-validated score of every alpha (mean over folds).
    alphas : ndarray of shape (n_alphas,)
        The grid that was searched.
    scoring : str
        The score used to choose alphas.
    solver : str
        ``"primal"`` or ``"dual"``.
    cv_predictions : ndarray of shape (n_samples, n_targets) or None
        With ``return_cv_predictions``: every sample predicted by the fold that held it
        out, each target at its chosen alpha (out-of-fold predictions, for stacking).
    """

    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    cv_scores: np.ndarray
    alpha_scores: np.ndarray
    alphas: np.ndarray
    scoring: str
    solver: str
    cv_predictions: np.ndarray | None = None


@dataclass
class _Fold:
    """Eigenbasis of one training set and the alpha-independent parts of its test scores.

    With ``W`` the eigenbasis (primal: eigenvectors of ``X_train_c^T X_train_c``; dual:
    ``X_train_c^T U diag(s^-1/2)`` from the kernel's eigenvectors ``U``, never formed),
    the training and test rows are rotated once, in float64, into ``A = X_c W``; the
    targets only ever meet ``A``, so each direction keeps its own relative precision.
    """

    train: Any  # backend row indices
    test: Any  # backend row indices; None for the final refit on all samples
    fit_intercept: bool
    x_mean: Any  # (n_features,) float64 mean of the training rows
    s: Any  # (rank,) float64 eigenvalues of the centred training Gram matrix
    a_train: Any  # (n_train, rank) X_train_c W
    a_train_sum: Any  # (rank,) float64
    w: Any = None  # primal, refit: (n_features, rank) W
    x_train: Any = None  # dual, refit: (n_train, n_features) centred training rows
    u_scaled: Any = None  # dual, refit: (n_train, rank) U diag(s^-1/2)
    a_test: Any = None  # (n_test, rank) X_test_c W
    a_test_sum: Any = None  # (rank,) float64
    pair: Any = None  # (rank, rank) float64, 2 G_kl / (s_l - s_k) off ties, 0 on ties
    g_diag: Any = None  # (rank,) float64, diagonal of G = A_test^T A_test
    ties: Any = None  # (indices, G among them off the diagonal), or None

    def project(self, xb: ArrayBackend, y: Any) -> tuple[Any, Any, Any]:
        """``Z = A_train^T y_train_c``, ``B = A_test^T (y_test - mean_train)`` and that mean."""
        f64 = xb.float64
        y_train = y[self.train]
        y_mean = xb.mean64(y_train) if self.fit_intercept else xb.zeros((y.shape[1],), f64)
        z = xb.astype(self.a_train.T @ y_train, f64) - self.a_train_sum[:, None] * y_mean
        b = None
        if self.test is not None:
            b = xb.astype(self.a_test.T @ y[self.test], f64) - self.a_test_sum[:, None] * y_mean
        return z, b, y_mean

    def coef(self, dz: Any) -> Any:
        """Feature weights ``W dz`` for ``dz = diag(1 / (s + alpha)) Z`` (rank, n_targets)."""
        if self.w is not None:
            return self.w @ dz
        return self.x_train.T @ (self.u_scaled @ dz)


def _make_fold(
    xb: ArrayBackend,
    x: Any,
    train: np.ndarray,
    test: np.ndarray | None,
    *,
    primal: bool,
    fit_intercept: bool,
    alpha_min: float,
    work_dtype: Any,
) -> _Fold:
    f64 = xb.float64
    train, test = xb.index(train), None if test is None else xb.index(test)
    x_train = xb.astype(x[train], f64)
    x_mean = x_train.mean(0) if fit_intercept else xb.zeros((x.shape[1],), f64)
    x_train = x_train - x_mean
    if primal:
        s, w = xb.eigh(x_train.T @ x_train)
        s = s.clip(min=0)
        a_train = x_train @ w
    else:
        s, u = xb.eigh(x_train @ x_train.T)
        # centering removes one dimension; drop the null space (it carries no signal)
        keep = s > s[-1] * 1e-10
        s, u = s[keep], u[:, keep]
        a_train = u * s**0.5
        u_scaled = u * s**-0.5
    fold = _Fold(
        train=train,
        test=test,
        fit_intercept=fit_intercept,
        x_mean=x_mean,
        s=s,
        a_train=xb.astype(a_train, work_dtype),
        a_train_sum=a_train.sum(0),
    )
    if test is None:
        if primal:
            fold.w = xb.astype(w, work_dtype)
        else:
            fold.x_train = xb.astype(x_train, work_dtype)
            fold.u_scaled = xb.astype(u_scaled, work_dtype)
        return fold

    x_test = xb.astype(x[test], f64) - x_mean
    a_test = x_test @ w if primal else (x_test @ x_train.T) @ u_scaled
    g = a_test.T @ a_test
    gap = s[None, :] - s[:, None]
    tied = abs(gap) <= _TIE_TOLERANCE * ((s[None, :] + s[:, None] + abs(gap)) / 2 + alpha_min)
    gap[tied] = float("inf")
    fold.pair = 2 * g / gap
    fold.g_diag = (a_test * a_test).sum(0)
    fold.a_test = xb.astype(a_test, work_dtype)
    fold.a_test_sum = a_test.sum(0)
    off_diagonal = xb.to_numpy(tied)
    np.fill_diagonal(off_diagonal, False)
    if off_diagonal.any():
        idx = np.flatnonzero(off_diagonal.any(0))
        g_tied = (g * xb.asarray(off_diagonal, f64))[xb.index(idx)][:, xb.index(idx)]
        fold.ties = (xb.index(idx), g_tied)
    return fold


def _alpha_scores(
    xb: ArrayBackend,
    fold: _Fold,
    z: Any,
    b: Any,
    y_mean_train: Any,
    y_test: Any,
    d: Any,
    scoring: str,
) -> Any:
    """Held-out score of every alpha (rows of ``d = 1 / (s + alpha)``) for every target."""
    n_test = y_test.shape[0]
    y_mean_test = xb.mean64(y_test)
    var_test = xb.sum64((y_test - xb.astype(y_mean_test, y_test.dtype)) ** 2)
    # squared norm of the predictions: sum_k d_k h1_k + d_k^2 h2_k
    h1 = z * (fold.pair @ z)
    h2 = fold.g_diag[:, None] * z * z
    if fold.ties is not None:
        idx, g_tied = fold.ties
        z_tied = z[idx]
        h2[idx] += z_tied * (g_tied @ z_tied)
    cross = d @ (b * z)
    norm = d @ h1 + (d * d) @ h2
    offset = y_mean_test - y_mean_train
    if scoring == "pearson":
        pred_mean = d @ (fold.a_test_sum[:, None] * z) / n_test
        cov = cross - n_test * offset * pred_mean
        var_pred = (norm - n_test * pred_mean**2).clip(min=0)
        denom = (var_test * var_pred) ** 0.5
        return cov / (denom + (denom == 0)) * (denom > 0)
    sse = var_test + n_test * offset**2 - 2 * cross + norm
    if scoring == "neg_mse":
        return -sse / n_test
    valid = var_test > 0
    return (1 - sse / (var_test + ~valid)) * valid


def _check_2d(name: str, a: Any, columns: str) -> tuple[int, int]:
    shape = tuple(getattr(a, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"{name} must be 2D (n_samples, {columns}), got shape {shape}.")
    return shape


def _edge_warning(alpha_scores: np.ndarray, alphas: np.ndarray, share: float) -> None:
    """Warn when many informative targets still improve at an end of the alpha grid."""
    if share >= 1 or len(alphas) < 2:
        return
    best = alpha_scores.max(0)
    informative = best > 0
    n_informative = int(informative.sum())
    if n_informative == 0:
        return
    order = np.argsort(alphas)
    chosen = alpha_scores.argmax(0)
    for edge, neighbour, position, direction in (
        (order[0], order[1], "smallest", "down"),
        (order[-1], order[-2], "largest", "up"),
    ):
        # a target counts when its score is still rising at the edge, not merely flat
        # there (small alphas converge to least squares, large ones to the mean)
        rising = best - alpha_scores[neighbour] > 1e-3 * np.abs(best)
        fraction = float(np.mean((chosen == edge) & rising & informative)) * (
            len(best) / n_informative
        )
        if fraction > share:
            warnings.warn(
                f"{fraction:.0%} of the {n_informative} targets with a positive cross-validated "
                f"score chose the {position} alpha of the grid ({alphas[edge]:.3g}) and were "
                f"still improving there; their best alpha lies outside the grid. Extend "
                f"`alphas` {direction}wards.",
                UserWarning,
                stacklevel=3,
            )


def ridge_cv(
    X: Any,
    Y: Any,
    alphas: Any = DEFAULT_ALPHAS,
    cv: Any = 5,
    *,
    fit_intercept: bool = True,
    scoring: str = "r2",
    solver: str = "auto",
    backend: str = "auto",
    device: str | None = None,
    dtype: Any = np.float32,
    n_targets_batch: int | None = None,
    edge_warning: float = 0.1,
    return_cv_predictions: bool = False,
    verbose: bool | int | str | None = None,
) -> RidgeCVResult:
    """Ridge regression for many targets, each with its own alpha chosen by K-fold CV.

    For every target ``y`` and every alpha of the grid, ridge regression
    ``min_w ||y - X w - b||^2 + alpha ||w||^2`` is fitted on the training part of each
    fold and scored on its test part; each target keeps the alpha with the best mean
    score over folds, and is refitted on all the data with it.

    Parameters
    ----------
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        Features.
    Y : array-like or torch.Tensor of shape (n_samples, n_targets)
        Targets. Only one batch of targets at a time is copied to the backend, so ``Y``
        may be a memory map.
    alphas : array-like of shape (n_alphas,)
        Positive regularisation strengths to try.
    cv : int, cross-validation splitter or iterable
        As in scikit-learn: an int is :class:`~sklearn.model_selection.KFold` with that
        many folds, without shuffling.
    fit_intercept : bool
        Fit an intercept per target (``X`` and ``Y`` centred on each training set).
    scoring : {"r2", "pearson", "neg_mse"}
        What the alpha is chosen on, per fold then averaged over folds. ``"r2"`` (the
        default) penalises predictions of the wrong scale, which the Pearson correlation
        ignores (it is nearly flat over large alphas); ``"neg_mse"`` is himalaya's default.
        To reproduce himalaya's ``RidgeCV``, use its ``solver_params=dict(score_func=
        himalaya.scoring.r2_score)`` with ``"r2"`` here.
    solver : {"auto", "primal", "dual"}
        ``"primal"`` diagonalises ``X^T X`` (cheaper when samples outnumber features),
        ``"dual"`` the kernel ``X X^T``; ``"auto"`` picks by the size of the training sets.
    backend : {"auto", "numpy", "torch"}
        Array library; see :func:`get_backend`.
    device : str or None
        ``"cpu"``, ``"cuda"``, ``"auto"``... (torch backend).
    dtype : {np.float32, np.float64}
        Working precision of the large products; float64 is used for accumulations,
        eigendecompositions and scores either way.
    n_targets_batch : int or None
        Targets processed together; ``None`` picks a batch that needs about 512 MiB.
    edge_warning : float
        Warn when more than this share of the targets with a positive cross-validated
        score chose the smallest or the largest alpha while their score was still rising
        there (by more than 0.1 % over the neighbouring alpha). ``1`` disables the warning.
    return_cv_predictions : bool
        Also return the out-of-fold predictions at the chosen alphas (``cv`` must then
        hold every sample out exactly once, as K-fold does).
    verbose : bool, int, str or None
        Progress bar over batches of targets when INFO or lower.

    Returns
    -------
    result : RidgeCVResult
        Weights, intercepts, chosen alphas and scores, as numpy arrays.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 20))
    >>> Y = X @ rng.standard_normal((20, 5)) + rng.standard_normal((200, 5))
    >>> result = ridge_cv(X, Y, alphas=np.logspace(-2, 4, 13), cv=3)
    >>> result.coef.shape, result.alpha.shape
    ((20, 5), (5,))
    """
    alphas = _check_ridge_arguments(scoring, solver, dtype, n_targets_batch, alphas)
    n_samples, n_features = _check_2d("X", X, "n_features")
    n_rows, n_targets = _check_2d("Y", Y, "n_targets")
    if n_rows != n_samples:
        raise ValueError(f"X and Y have different numbers of samples: {n_samples} and {n_rows}.")

    xb = get_backend(backend, device, like=X)
    work = xb.dtype(dtype)
    x = xb.asarray(X, work)
    if not xb.all_finite(x):
        raise ValueError("X contains NaN or infinite values.")
    x_offset = xb.mean64(x) if fit_intercept else xb.zeros((n_features,), xb.float64)
    if fit_intercept:
        # centre once in float64 so that float32 products see no large offsets
        x = xb.astype(xb.astype(x, xb.float64) - x_offset, work)

    splits = _check_splits(cv, n_samples, scoring, return_cv_predictions)
    min_train = min(len(train) for train, _ in splits)
    primal = {"primal": True, "dual": False, "auto": min_train >= n_features}[solver]
    logger.debug(
        "ridge_cv: %d samples x %d features x %d targets, %d alphas, %d folds, %s form, %r",
        n_samples,
        n_features,
        n_targets,
        len(alphas),
        len(splits),
        "primal" if primal else "dual",
        xb,
    )

    common = {
        "primal": primal,
        "fit_intercept": fit_intercept,
        "alpha_min": alphas.min(),
        "work_dtype": work,
    }
    folds = [_make_fold(xb, x, tr, te, **common) for tr, te in splits]
    full = _make_fold(xb, x, np.arange(n_samples), None, **common)
    alphas_b = xb.asarray(alphas, xb.float64)
    inverse = [1 / (fold.s[None, :] + alphas_b[:, None]) for fold in folds]
    np_dtype = np.dtype(dtype).type

    if n_targets_batch is None:
        rank = int(full.s.shape[0])
        per_target = 12 * n_samples + 56 * rank + 40 * len(alphas) + 8 * n_features
        n_targets_batch = max(1, _BATCH_MEMORY // per_target)
    coef = np.empty((n_features, n_targets), dtype=np_dtype)
    intercept = np.zeros(n_targets, dtype=np_dtype)
    alpha_scores = np.empty((len(alphas), n_targets))
    cv_predictions = (
        np.empty((n_samples, n_targets), dtype=np_dtype) if return_cv_predictions else None
    )
    starts = range(0, n_targets, n_targets_batch)
    for start in progress(starts, verbose, desc="ridge", total=len(starts), unit="batch"):
        batch = slice(start, min(start + n_targets_batch, n_targets))
        fitted = _fit_batch(
            xb, xb.asarray(Y[:, batch], work), batch, folds, inverse, full, splits, alphas,
            scoring, fit_intercept, x_offset, return_cv_predictions,
        )  # fmt: skip
        alpha_scores[:, batch], coef[:, batch], intercept[batch], predictions = fitted
        if return_cv_predictions:
            cv_predictions[:, batch] = predictions

    alpha_index = alpha_scores.argmax(0)
    cv_scores = alpha_scores[alpha_index, np.arange(n_targets)]
    _edge_warning(alpha_scores, alphas, edge_warning)
    return RidgeCVResult(
        coef=coef,
        intercept=intercept,
        alpha=alphas[alpha_index],
        cv_scores=cv_scores,
        alpha_scores=alpha_scores,
        alphas=alphas,
        scoring=scoring,
        solver="primal" if primal else "dual",
        cv_predictions=cv_predictions,
    )


def _check_ridge_arguments(scoring, solver, dtype, n_targets_batch, alphas) -> np.ndarray:
    """Check the options of :func:`ridge_cv`; returns the alphas as float64."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}.")
    if solver not in ("auto", "primal", "dual"):
        raise ValueError(f"solver must be 'auto', 'primal' or 'dual', got {solver!r}.")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}.")
    if n_targets_batch is not None and (
        not isinstance(n_targets_batch, numbers.Integral) or n_targets_batch < 1
    ):
        raise ValueError(
            f"n_targets_batch must be a positive int or None, got {n_targets_batch!r}."
        )
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(
            f"alphas must be a non-empty list of positive finite numbers, got {alphas}."
        )
    return alphas


def _check_splits(cv, n_samples: int, scoring: str, return_cv_predictions: bool) -> list:
    """The ``(train, test)`` index arrays of ``cv``, checked for what ridge_cv needs."""
    splitter = check_cv(cv)
    splits = [
        (np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.zeros((n_samples, 1)))
    ]
    for train, test in splits:
        if len(train) == 0 or len(test) == 0:
            raise ValueError(
                "A cross-validation fold has an empty training or test set; check `cv`."
            )
        if len(test) < 2 and scoring != "neg_mse":
            raise ValueError(
                f"scoring={scoring!r} needs at least 2 test samples per fold, got {len(test)} "
                "(leave-one-out?); use fewer folds or scoring='neg_mse'."
            )
    if return_cv_predictions:
        held_out = np.concatenate([test for _, test in splits])
        if len(held_out) != n_samples or len(np.unique(held_out)) != n_samples:
            raise ValueError(
                "return_cv_predictions needs folds that hold every sample out exactly once "
                "(K-fold); this `cv` does not."
            )
    return splits


def _fit_batch(
    xb,
    y,
    batch,
    folds,
    inverse,
    full,
    splits,
    alphas,
    scoring,
    fit_intercept,
    x_offset,
    return_cv_predictions,
) -> tuple:
    """Score every alpha on a batch of targets ``y`` and refit each at its best alpha.

    Returns the alpha scores (n_alphas, n_batch), the weights, the intercepts and the
    out-of-fold predictions (``None`` unless ``return_cv_predictions``), as numpy arrays.
    """
    work = y.dtype
    intercept = np.zeros(y.shape[1])  # float64, cast by the caller's arrays
    cv_predictions = np.empty(y.shape) if return_cv_predictions else None
    if not xb.all_finite(y):
        raise ValueError(
            f"Y contains NaN or infinite values (in targets {batch.start}-{batch.stop - 1})."
        )
    y_offset = xb.mean64(y) if fit_intercept else xb.zeros((y.shape[1],), xb.float64)
    if fit_intercept:
        y = y - xb.astype(y_offset, work)
    scores = 0
    projections = []
    for fold, d in zip(folds, inverse):
        z, b, y_mean_train = fold.project(xb, y)
        scores = scores + _alpha_scores(xb, fold, z, b, y_mean_train, y[fold.test], d, scoring)
        if return_cv_predictions:
            projections.append((z, y_mean_train))
    scores = xb.to_numpy(scores) / len(folds)
    best = xb.asarray(alphas[scores.argmax(0)], xb.float64)
    for fold, (z, y_mean_train), (_, test) in zip(folds, projections, splits):
        dz = xb.astype(z / (fold.s[:, None] + best[None, :]), work)
        pred = xb.astype(fold.a_test @ dz, xb.float64) + y_mean_train + y_offset
        cv_predictions[test] = xb.to_numpy(pred)
    z, _, y_mean = full.project(xb, y)
    weights = full.coef(xb.astype(z / (full.s[:, None] + best[None, :]), work))
    if fit_intercept:
        means = y_offset + y_mean
        offset = means - (x_offset + full.x_mean) @ xb.astype(weights, xb.float64)
        intercept = xb.to_numpy(offset)
    return scores, xb.to_numpy(weights), intercept, cv_predictions
