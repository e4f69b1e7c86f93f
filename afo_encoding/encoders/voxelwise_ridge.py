"""Ridge regression with a design matrix of its own for every voxel, alphas chosen by K-fold.

:func:`ridge_cv` solves many targets that share one design matrix (a linear probe). A
TopyNeck readout gives every voxel its own features (the backbone sampled where its
RetinaMapper looks), so each voxel is a separate ridge problem with ``p`` features.
:func:`voxelwise_ridge_cv` solves a batch of voxels at once:

- the Gram matrix ``X_v^T X_v`` of every voxel is formed once; each fold's training Gram is
  the total minus the fold's block, centred by a rank-one correction, and diagonalised
  once (batched ``eigh`` in float64), after which every alpha is a diagonal rescale;
- held-out predictions of every alpha are one batched product, scored per voxel; the
  out-of-fold predictions at each voxel's chosen alpha are kept (for stacking);
- the refit on all samples is a batched Cholesky solve.

Cost per voxel: ``n p^2`` for the Gram matrices, ``(K + 1) p^3`` for the factorisations and
``n p n_alphas`` for the scores; memory is bounded by batching voxels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import check_cv

#: ridge strengths for standardised features: from almost none to a model that predicts
#: the mean (the eigenvalues of a standardised Gram matrix sum to n * p)
DEFAULT_VOXELWISE_ALPHAS = np.logspace(-2, 8, 21)
_BATCH_ELEMENTS = 2**26  # float32 elements of one batch's features


@dataclass(frozen=True)
class VoxelwiseRidgeResult:
    """What :func:`voxelwise_ridge_cv` learned (numpy arrays).

    Attributes
    ----------
    coef : ndarray of shape (n_voxels, n_features)
        Weights of every voxel's features (in the units of the features given).
    intercept : ndarray of shape (n_voxels,)
    alpha : ndarray of shape (n_voxels,)
        The alpha each voxel chose.
    cv_scores : ndarray of shape (n_voxels,)
        Mean held-out score (over folds) of the chosen alpha.
    cv_predictions : ndarray of shape (n_samples, n_voxels)
        Every sample predicted by the fold that held it out, at the voxel's alpha.
    """

    coef: np.ndarray
    intercept: np.ndarray
    alpha: np.ndarray
    cv_scores: np.ndarray
    cv_predictions: np.ndarray


def _scores(y: torch.Tensor, pred: torch.Tensor, scoring: str) -> torch.Tensor:
    """Held-out score of predictions ``pred`` (v, n, a) of targets ``y`` (v, n): (v, a)."""
    yc = y - y.mean(1, keepdim=True)
    if scoring == "pearson":
        pc = pred - pred.mean(1, keepdim=True)
        num = (yc[:, :, None] * pc).sum(1)
        den = (yc.pow(2).sum(1)[:, None] * pc.pow(2).sum(1)).sqrt()
        return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))
    sse = (y[:, :, None] - pred).pow(2).sum(1)
    ss = yc.pow(2).sum(1)[:, None]
    return torch.where(ss > 0, 1 - sse / ss.clamp(min=1e-300), torch.zeros_like(sse))


def _choose(fold_scores: torch.Tensor, rule: str) -> torch.Tensor:
    """Alpha index per voxel from held-out scores (folds, v, a), alphas ascending."""
    mean = fold_scores.mean(0)
    best = mean.argmax(1)
    if rule == "best":
        return best
    # one-standard-error rule: the strongest alpha within one standard error of the best
    index = torch.arange(mean.shape[0], device=mean.device)
    error = fold_scores.std(0) / len(fold_scores) ** 0.5
    floor = mean[index, best] - error[index, best]
    ok = mean >= floor[:, None]
    positions = torch.arange(mean.shape[1], device=mean.device).expand_as(mean)
    return torch.where(ok, positions, -1).amax(1)


def _solve_batch(x, y, alphas, splits, fit_intercept, scoring, rule):
    """One batch of voxels: x (v, n, p) float64 standardised, y (v, n) float64."""
    n = x.shape[1]
    ones = torch.ones(n, dtype=x.dtype, device=x.device)
    mask = torch.zeros(len(splits), n, dtype=x.dtype, device=x.device)
    for f, (_, test) in enumerate(splits):
        mask[f, torch.as_tensor(test, device=x.device)] = 1
    gram = x.transpose(1, 2) @ x
    xty = (x.transpose(1, 2) @ y[:, :, None])[..., 0]
    fold_scores = []
    held_out = torch.empty(x.shape[0], n, len(alphas), dtype=x.dtype, device=x.device)
    for f, (_, test) in enumerate(splits):
        test_t = torch.as_tensor(test, device=x.device)
        x_test, y_test = x[:, test_t], y[:, test_t]
        n_train = n - len(test)
        keep = ones - mask[f]
        if fit_intercept:
            x_mean = (keep @ x) / n_train  # (v, p)
            y_mean = (y @ keep) / n_train  # (v,)
        else:
            x_mean = x.new_zeros(x.shape[0], x.shape[2])
            y_mean = y.new_zeros(x.shape[0])
        g = gram - x_test.transpose(1, 2) @ x_test
        g = g - n_train * x_mean[:, :, None] * x_mean[:, None, :]
        b = xty - (x_test.transpose(1, 2) @ y_test[:, :, None])[..., 0]
        b = b - n_train * x_mean * y_mean[:, None]
        s, w = torch.linalg.eigh(g)
        z = (w.transpose(1, 2) @ b[:, :, None])[..., 0]
        rotated = (x_test - x_mean[:, None, :]) @ w
        coef = z[:, :, None] / (s.clamp(min=0)[:, :, None] + alphas[None, None, :])
        pred = rotated @ coef + y_mean[:, None, None]
        held_out[:, test_t] = pred
        fold_scores.append(_scores(y_test, pred, scoring))
    fold_scores = torch.stack(fold_scores)
    scores = fold_scores.mean(0)
    best = _choose(fold_scores, rule)
    if fit_intercept:
        x_mean, y_mean = x.mean(1), y.mean(1)
    else:
        x_mean, y_mean = x.new_zeros(x.shape[0], x.shape[2]), y.new_zeros(x.shape[0])
    g = gram - n * x_mean[:, :, None] * x_mean[:, None, :]
    g = g + torch.diag_embed(alphas[best][:, None].expand(-1, x.shape[2]))
    b = xty - n * x_mean * y_mean[:, None]
    coef = torch.cholesky_solve(b[:, :, None], torch.linalg.cholesky(g))[..., 0]
    intercept = y_mean - (x_mean * coef).sum(1)
    index = torch.arange(x.shape[0], device=x.device)
    return coef, intercept, best, scores[index, best], held_out[index, :, best]


def voxelwise_ridge_cv(
    features: Callable[[slice], Any] | Any,
    Y: Any,
    alphas: Any = None,
    cv: Any = 5,
    *,
    fit_intercept: bool = True,
    standardize: bool = True,
    scoring: str = "r2",
    rule: str = "best",
    device: str | torch.device | None = None,
    voxel_batch: int | None = None,
) -> VoxelwiseRidgeResult:
    """Ridge regression of every voxel on its own features, each with its own alpha.

    Parameters
    ----------
    features : callable or array-like of shape (n_samples, n_voxels, n_features)
        The features of every voxel, or a function that returns those of a slice of
        voxels, ``features(slice) -> (n_samples, n_selected, n_features)`` (so that they
        are computed batch by batch, never all at once).
    Y : array-like of shape (n_samples, n_voxels)
        Targets.
    alphas : array-like or None
        Positive ridge strengths to try (``None``: :data:`DEFAULT_VOXELWISE_ALPHAS`, made
        for standardised features).
    cv : int, cross-validation splitter or iterable, default=5
        Folds (scikit-learn semantics; an int is an unshuffled K-fold). Every sample must be
        held out once (the out-of-fold predictions are returned).
    fit_intercept : bool, default=True
        An intercept per voxel.
    standardize : bool, default=True
        Scale every feature of every voxel to unit variance (over all samples) before
        the fit; the returned weights apply to the features as given.
    scoring : {"r2", "pearson"}, default="r2"
        What the alpha is chosen on (mean over folds).
    rule : {"best", "one_standard_error"}, default="best"
        ``"best"``: the alpha of the best mean score. ``"one_standard_error"``: the
        strongest alpha whose mean score is within one standard error (over folds) of the
        best (Breiman et al. 1984): features that only fit the noise of the folds are
        shrunk away, at the price of a little shrinkage where they help.
    device : str, torch.device or None
        Where the products run (default: the CPU).
    voxel_batch : int or None
        Voxels solved together (``None``: about 256 MiB of features per batch).

    Returns
    -------
    result : VoxelwiseRidgeResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3, 4))
    >>> Y = (X * rng.normal(size=(3, 4))).sum(-1) + rng.normal(size=(100, 3))
    >>> result = voxelwise_ridge_cv(X, Y, alphas=[0.1, 10.0])
    >>> result.coef.shape, result.cv_predictions.shape
    ((3, 4), (100, 3))
    """
    if scoring not in ("r2", "pearson"):
        raise ValueError(f"scoring must be 'r2' or 'pearson', got {scoring!r}.")
    if rule not in ("best", "one_standard_error"):
        raise ValueError(f"rule must be 'best' or 'one_standard_error', got {rule!r}.")
    alphas = DEFAULT_VOXELWISE_ALPHAS if alphas is None else alphas
    alphas = np.sort(np.asarray(alphas, dtype=np.float64).reshape(-1))
    if alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(
            f"alphas must be a non-empty list of positive finite numbers, got {alphas}."
        )
    Y = np.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"Y must be 2D (n_samples, n_voxels), got shape {Y.shape}.")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y contains NaN or infinite values.")
    n_samples, n_voxels = Y.shape
    get = features if callable(features) else (lambda cols, a=features: a[:, cols])
    splits = [(np.asarray(tr), np.asarray(te)) for tr, te in check_cv(cv).split(Y)]
    held = np.concatenate([te for _, te in splits])
    if len(held) != n_samples or len(np.unique(held)) != n_samples:
        raise ValueError("cv must hold every sample out exactly once (K-fold).")
    if min(len(te) for _, te in splits) < 2:
        raise ValueError(
            f"Every fold needs at least 2 held-out samples; {n_samples} samples make "
            f"{len(splits)} folds too many. Use fewer folds."
        )
    device = torch.device("cpu" if device is None else device)
    alphas_t = torch.as_tensor(alphas, device=device)
    coef = intercept = None
    alpha = np.empty(n_voxels)
    cv_scores = np.empty(n_voxels)
    cv_predictions = np.empty((n_samples, n_voxels), dtype=np.float32)
    start = 0
    while start < n_voxels:
        first = torch.as_tensor(np.asarray(get(slice(start, start + 1))))
        n_features = first.shape[2]
        if voxel_batch is None:
            per_voxel = n_samples * max(n_features, len(alphas))
            batch = max(1, _BATCH_ELEMENTS // max(per_voxel, 1))
        else:
            batch = int(voxel_batch)
        cols = slice(start, min(start + batch, n_voxels))
        x = torch.as_tensor(np.asarray(get(cols))).to(device=device, dtype=torch.float64)
        if x.shape[:2] != (n_samples, cols.stop - cols.start):
            raise ValueError(
                f"features of voxels {cols.start}-{cols.stop - 1} have shape "
                f"{tuple(x.shape)}; expected ({n_samples}, {cols.stop - cols.start}, p)."
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"The features of voxels {cols.start}-{cols.stop - 1} contain NaN or inf."
            )
        x = x.transpose(0, 1)  # (v, n, p)
        shift = x.mean(1, keepdim=True)
        scale = x.std(1, keepdim=True, correction=0) if standardize else torch.ones_like(shift)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        x = (x - shift) / scale
        y = torch.as_tensor(Y[:, cols].T, device=device, dtype=torch.float64)
        w, b, best, score, pred = _solve_batch(
            x, y, alphas_t, splits, fit_intercept, scoring, rule
        )
        w = w / scale[:, 0]
        b = b - (w * shift[:, 0]).sum(1)
        if coef is None:
            coef = np.empty((n_voxels, w.shape[1]), dtype=np.float32)
            intercept = np.empty(n_voxels, dtype=np.float32)
        coef[cols] = w.cpu().numpy()
        intercept[cols] = b.cpu().numpy()
        alpha[cols] = alphas[best.cpu().numpy()]
        cv_scores[cols] = score.cpu().numpy()
        cv_predictions[:, cols] = pred.T.cpu().numpy()
        start = cols.stop
    return VoxelwiseRidgeResult(coef, intercept, alpha, cv_scores, cv_predictions)
