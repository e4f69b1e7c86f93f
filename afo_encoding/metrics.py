"""Evaluation metrics of encoding models: voxel-wise Pearson r, noise ceilings, scorers.

Conventions (those of the field, see the NSD and Algonauts papers):

- A *voxel* is a column: fMRI voxel, surface vertex, sensor x time point or neuron.
  Every function takes ``(n_samples, n_voxels)`` arrays, or single trials shaped
  ``(n_images, n_repeats, n_voxels)``, and returns one value per voxel.
- ``ncsnr`` (noise-ceiling signal-to-noise ratio, Allen et al. 2022) is the standard
  deviation of the signal across images divided by the standard deviation of the trial
  noise.
- The NSD noise ceiling for responses averaged over ``n`` trials is, in percent of
  variance, ``NC = 100 * ncsnr**2 / (ncsnr**2 + 1 / n)``; the largest Pearson r any model
  can reach against those averages is ``sqrt(NC / 100)``.
- The Algonauts noise-normalised score of a voxel is the squared r as a percentage of the
  ceiling, ``min(100, 100 * max(r, 0)**2 / (NC / 100))`` with ``NC`` in percent.

All computations accumulate in float64 and walk over voxels in chunks, so arrays of
400,000 float32 voxels are never copied whole (only one chunk at a time is converted).
This module imports nothing else of the package.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "explainable_variance",
    "ncsnr",
    "noise_ceiling",
    "noise_normalized_score",
    "pearson_r",
    "pearson_scorer",
    "split_half_reliability",
]

# float64 bytes converted per chunk: bounds the working memory whatever the voxel count
_CHUNK_BYTES = 64 * 2**20


def _chunks(n_voxels: int, n_rows: int, chunk_size: int | None):
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (8 * max(n_rows, 1)))
    elif int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    chunk_size = int(chunk_size)
    for start in range(0, n_voxels, chunk_size):
        yield slice(start, min(start + chunk_size, n_voxels))


def _as_array(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise TypeError(
            f"{name} must be a numeric array, got dtype {a.dtype}. Convert containers "
            "(Niimg, Epochs) with afo_encoding.as_responses first."
        )
    return a


def _check_repeats(repeats: Any, min_repeats: int = 2) -> np.ndarray:
    repeats = _as_array(repeats, "repeats")
    if repeats.ndim != 3:
        raise ValueError(
            "repeats must be shaped (n_images, n_repeats, n_voxels), got an array of shape "
            f"{repeats.shape}."
        )
    n_images, n_repeats, _ = repeats.shape
    if n_repeats < min_repeats:
        raise ValueError(
            f"repeats needs at least {min_repeats} repeats per image, got {n_repeats}."
        )
    if n_images < 2:
        raise ValueError(f"repeats needs at least 2 images, got {n_images}.")
    return repeats


def pearson_r(
    y_true: Any,
    y_pred: Any,
    *,
    chunk_size: int | None = None,
) -> np.ndarray | float:
    """Pearson correlation between measured and predicted responses, one per voxel.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_samples, n_voxels) or (n_samples,)
        Measured and predicted responses (any float or int dtype; torch tensors are
        accepted). Correlations are taken over samples (images), column by column.
    chunk_size : int | None
        Number of voxels converted to float64 at a time; ``None`` picks it so that a chunk
        holds about 64 MB.

    Returns
    -------
    r : ndarray of float64, shape (n_voxels,), or float
        Pearson r of each column, clipped to [-1, 1]; a float for 1D inputs.
        A column that is constant (all its values equal) in ``y_true`` or in ``y_pred``
        has no defined correlation: it gets **0.0**, so that a model that predicts
        nothing for a voxel scores as chance and the mean over voxels stays defined.
        A column with a NaN gets NaN (dropped voxels restored as NaN stay visible).

    Raises
    ------
    ValueError
        If the shapes differ, or there are fewer than 2 samples.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    >>> pearson_r(y, 2 * y + 1)
    array([1., 0.])
    """
    y_true = _as_array(y_true, "y_true")
    y_pred = _as_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}."
        )
    if y_true.ndim not in (1, 2):
        raise ValueError(
            f"y_true must be 1D or 2D (n_samples, n_voxels), got shape {y_true.shape}."
        )
    scalar = y_true.ndim == 1
    if scalar:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    n_samples, n_voxels = y_true.shape
    if n_samples < 2:
        raise ValueError(f"Pearson r needs at least 2 samples, got {n_samples}.")

    r = np.empty(n_voxels, dtype=np.float64)
    for sl in _chunks(n_voxels, 2 * n_samples, chunk_size):
        a = np.array(y_true[:, sl], dtype=np.float64)
        b = np.array(y_pred[:, sl], dtype=np.float64)
        constant = (a.max(0) == a.min(0)) | (b.max(0) == b.min(0))
        a -= a.mean(0)
        b -= b.mean(0)
        num = np.einsum("ij,ij->j", a, b)
        den = np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
        with np.errstate(invalid="ignore", divide="ignore"):
            chunk = num / den
        chunk[constant] = 0.0
        r[sl] = np.clip(chunk, -1.0, 1.0)
    return float(r[0]) if scalar else r


def ncsnr(repeats: Any, *, chunk_size: int | None = None) -> np.ndarray:
    """Noise-ceiling signal-to-noise ratio of each voxel, estimated from single trials.

    With ``y[i, k] = s[i] + e[i, k]`` (signal of image ``i`` plus trial noise of variance
    ``sigma_noise**2``), the noise variance is the pooled within-image variance of the
    trials and the signal variance is the variance of the image means minus the part the
    noise leaves in them: ``var_i(mean_k y[i, k]) - sigma_noise**2 * mean_i(1 / n_i)``,
    rectified at 0 (Allen et al. 2022, without assuming z-scored data).

    Parameters
    ----------
    repeats : array-like, shape (n_images, n_repeats, n_voxels)
        Single-trial responses. Missing trials may be NaN (images with unequal numbers of
        repeats); an image needs at least one trial, and two to count in the noise
        estimate.
    chunk_size : int | None
        Voxels converted to float64 at a time (``None``: about 64 MB).

    Returns
    -------
    ncsnr : ndarray of float64, shape (n_voxels,)
        ``sigma_signal / sigma_noise`` (0 where no signal is detected, ``inf`` where the
        trials of every image are identical but images differ).

    See Also
    --------
    noise_ceiling : the NSD noise ceiling from ``ncsnr``.
    """
    repeats = _check_repeats(repeats)
    n_images, n_repeats, n_voxels = repeats.shape
    out = np.empty(n_voxels, dtype=np.float64)
    for sl in _chunks(n_voxels, n_images * n_repeats, chunk_size):
        y = np.array(repeats[:, :, sl], dtype=np.float64)
        valid = ~np.isnan(y)
        n_trials = valid.sum(1)  # (n_images, n_vox)
        if np.any(n_trials == 0):
            raise ValueError(
                "Every image needs at least one non-NaN trial per voxel; found images with "
                "none. Remove those images first."
            )
        means = np.nansum(y, axis=1) / n_trials
        y -= means[:, None, :]
        y[~valid] = 0.0
        noise_var = (y**2).sum((0, 1)) / (n_trials - 1).sum(0)
        signal_var = means.var(0, ddof=1) - noise_var * (1.0 / n_trials).mean(0)
        signal_sd = np.sqrt(np.maximum(signal_var, 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sl] = np.where(signal_sd > 0, signal_sd / np.sqrt(noise_var), 0.0)
    return out


def noise_ceiling(
    ncsnr: Any,
    n_trials: int | float = 1,
    *,
    units: Literal["percent", "r"] = "percent",
) -> np.ndarray:
    """NSD noise ceiling of responses averaged over ``n_trials`` trials.

    Parameters
    ----------
    ncsnr : array-like, shape (n_voxels,)
        Noise-ceiling SNR of each voxel (see :func:`ncsnr`), non-negative.
    n_trials : int | float
        Number of trials averaged in the responses being predicted (NSD: 3; a data set
        with unequal repeats may pass the mean number).
    units : {"percent", "r"}
        ``"percent"``: percent of the variance of the averaged responses that a perfect
        model explains, ``100 * ncsnr**2 / (ncsnr**2 + 1 / n_trials)`` (NSD's unit, the
        one :func:`noise_normalized_score` expects). ``"r"``: the largest expected Pearson
        r, ``sqrt(percent / 100)``.

    Returns
    -------
    nc : ndarray of float64, shape (n_voxels,)

    Examples
    --------
    >>> noise_ceiling([0.0, 1.0], n_trials=3)
    array([ 0., 75.])
    """
    snr = np.asarray(_as_array(ncsnr, "ncsnr"), dtype=np.float64)
    if np.any(snr < 0):
        raise ValueError(f"ncsnr must be non-negative, got a minimum of {np.nanmin(snr)}.")
    if not n_trials > 0:
        raise ValueError(f"n_trials must be positive, got {n_trials!r}.")
    if units not in ("percent", "r"):
        raise ValueError(f"units must be 'percent' or 'r', got {units!r}.")
    snr2 = snr**2
    with np.errstate(invalid="ignore"):
        frac = np.where(np.isinf(snr2), 1.0, snr2 / (snr2 + 1.0 / n_trials))
    return np.sqrt(frac) if units == "r" else 100.0 * frac


def split_half_reliability(
    repeats: Any,
    *,
    n_splits: int = 10,
    spearman_brown: bool = True,
    random_state: int | np.random.RandomState | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Split-half reliability of each voxel (or sensor x time point), averaged over splits.

    For each random split of the repeats into two halves, the two half-averages are
    correlated over images; with ``spearman_brown`` the correlation ``r`` is stepped up to
    the reliability of the average of *all* repeats, ``2 r / (1 + r)``. The result
    estimates the correlation between two independent full-length averages, i.e. the
    noise ceiling in variance units (``noise_ceiling(..., units="percent") / 100``); its
    square root (of the positive part) is the ceiling on a model's Pearson r.

    Parameters
    ----------
    repeats : array-like, shape (n_images, n_repeats, n_voxels)
        Single trials (no NaN), ``n_repeats >= 2``; with an odd count the extra trial of
        each split is left out (the Spearman-Brown step-up then uses the half size actually used).
    n_splits : int
        Number of random splits averaged.
    spearman_brown : bool
        Step the half-split correlation up to the full number of repeats.
    random_state : int | RandomState | None
        Seeds the random splits (same order for every image, as in EEG practice).
    chunk_size : int | None
        Voxels converted to float64 at a time (``None``: about 64 MB).

    Returns
    -------
    reliability : ndarray of float64, shape (n_voxels,)
        Can be negative for voxels without signal.
    """
    repeats = _check_repeats(repeats)
    n_images, n_repeats, n_voxels = repeats.shape
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits!r}.")
    rng = check_random_state(random_state)
    half = n_repeats // 2
    perms = [rng.permutation(n_repeats) for _ in range(int(n_splits))]
    # reliability of the mean of n_repeats from that of the mean of `half` trials
    factor = n_repeats / half
    out = np.zeros(n_voxels, dtype=np.float64)
    for sl in _chunks(n_voxels, n_images * n_repeats, chunk_size):
        y = np.array(repeats[:, :, sl], dtype=np.float64)
        acc = np.zeros(y.shape[2])
        for perm in perms:
            a = y[:, perm[:half]].mean(1)
            b = y[:, perm[half : 2 * half]].mean(1)
            r = pearson_r(a, b)
            if spearman_brown:
                with np.errstate(invalid="ignore", divide="ignore"):
                    r = factor * r / (1.0 + (factor - 1.0) * r)
            acc += r
        out[sl] = acc / len(perms)
    return out


def explainable_variance(
    repeats: Any,
    *,
    bias_correction: bool = True,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Fraction of single-trial variance that is repeatable across trials.

    ``ev = 1 - mean_k var_i(y[i, k] - mean_k y[i, k]) / mean_k var_i(y[i, k])`` (Hsu,
    Borst & Theunissen 2004; the definition used by the Gallant lab), with the optional
    bias correction ``ev - (1 - ev) / (n_repeats - 1)``. Equal in expectation to
    ``noise_ceiling(ncsnr, n_trials=1) / 100``.

    Parameters
    ----------
    repeats : array-like, shape (n_images, n_repeats, n_voxels)
        Single trials (no NaN).
    bias_correction : bool
        Remove the positive bias of the estimate with few repeats.
    chunk_size : int | None
        Voxels converted to float64 at a time (``None``: about 64 MB).

    Returns
    -------
    ev : ndarray of float64, shape (n_voxels,)
        NaN for voxels whose single trials do not vary.
    """
    repeats = _check_repeats(repeats)
    n_images, n_repeats, n_voxels = repeats.shape
    out = np.empty(n_voxels, dtype=np.float64)
    for sl in _chunks(n_voxels, n_images * n_repeats, chunk_size):
        y = np.array(repeats[:, :, sl], dtype=np.float64)
        total = y.var(0).mean(0)
        residual = (y - y.mean(1, keepdims=True)).var(0).mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ev = 1.0 - residual / total
        if bias_correction:
            ev = ev - (1.0 - ev) / (n_repeats - 1)
        out[sl] = ev
    return out


def noise_normalized_score(r: Any, noise_ceiling: Any) -> np.ndarray:
    """Algonauts noise-normalised score of each voxel, in percent of the noise ceiling.

    ``score = min(100, 100 * max(r, 0)**2 / (NC / 100))``, the variance a model explains
    as a percentage of the explainable variance; take the mean (Algonauts) or the
    median (the paper's NSD(NC)) over voxels yourself.

    Parameters
    ----------
    r : array-like, shape (n_voxels,)
        Pearson r of a model on held-out images (:func:`pearson_r`).
    noise_ceiling : array-like, shape (n_voxels,)
        NSD noise ceiling in **percent** of variance (:func:`noise_ceiling` with
        ``units="percent"``) for the number of trials averaged in the test responses.

    Returns
    -------
    score : ndarray of float64, shape (n_voxels,)
        In [0, 100]; NaN where the noise ceiling is 0 (nothing to explain), so that
        ``np.nanmean`` skips those voxels.
    """
    r = np.asarray(_as_array(r, "r"), dtype=np.float64)
    nc = np.asarray(_as_array(noise_ceiling, "noise_ceiling"), dtype=np.float64)
    if r.shape != nc.shape:
        raise ValueError(
            f"r and noise_ceiling must have the same shape, got {r.shape} and {nc.shape}."
        )
    if np.any(nc < 0):
        raise ValueError(f"noise_ceiling must be non-negative, got a minimum of {np.nanmin(nc)}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        score = 1e4 * np.maximum(r, 0.0) ** 2 / nc
    score = np.minimum(score, 100.0)
    score[nc == 0] = np.nan
    return score


def _responses_matrix(estimator: Any, y: Any) -> np.ndarray:
    """``y`` as an (n_samples, n_voxels) array in the estimator's voxel space."""
    if isinstance(y, np.ndarray) or hasattr(y, "detach"):
        return _as_array(y, "y")
    space = getattr(estimator, "space_", None)
    if space is not None and hasattr(space, "transform"):
        return space.transform(y)
    return _as_array(y, "y")


def pearson_scorer(estimator: Any, X: Any, y: Any) -> float:
    """Scikit-learn scorer: the mean voxel Pearson r of ``estimator`` on ``(X, y)``.

    Usable wherever scikit-learn takes ``scoring=`` (``cross_val_score``,
    ``GridSearchCV``, ``permutation_test_score``): ``scoring=pearson_scorer``. Greater is
    better. Works with any regressor whose ``predict(X)`` gives ``(n_samples, n_voxels)``.

    When ``y`` (or the prediction) is not an array but the container responses came in
    (a Niimg, ``mne.Epochs``, a ``SurfaceImage``), it is converted with the fitted
    estimator's ``space_.transform`` (the voxel selection made at fit time). To
    cross-validate on a container, wrap it in
    :class:`~afo_encoding.responses.ResponseSamples` (scikit-learn cannot split a Niimg,
    a SurfaceImage or Epochs by sample itself):
    ``cross_val_score(enc, images, ResponseSamples(bold_img), scoring=pearson_scorer)``.

    Parameters
    ----------
    estimator : fitted estimator
        Has ``predict``; ``space_`` (a ResponseSpace) when ``y`` is a container.
    X : array-like or stimuli
        Test inputs passed to ``estimator.predict``.
    y : array-like, shape (n_samples, n_voxels), or a response container
        Measured test responses.

    Returns
    -------
    score : float
        Mean over voxels of :func:`pearson_r` (constant voxels count as 0).
    """
    y_pred = _responses_matrix(estimator, estimator.predict(X))
    y_true = _responses_matrix(estimator, y)
    if y_true.ndim == 2 and y_pred.ndim == 1 and y_true.shape[1] == 1:
        y_pred = y_pred[:, None]
    return float(np.mean(pearson_r(y_true, y_pred)))
