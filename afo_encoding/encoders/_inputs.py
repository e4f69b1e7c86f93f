"""Reading an encoder's ``X`` and ``y``: subjects, features, per-voxel keywords, splits.

What an encoder's ``X`` may be:

- images: anything :func:`afo_encoding.stimuli.as_stimuli` takes (uint8 ``(n, H, W, 3)`` or
  ``(n, H, W)`` arrays, float ``(n, 3, H, W)`` arrays, lists of paths or PIL images, a
  StimulusSet); their features come from the frozen backbone through the feature cache;
- precomputed features: a 2D numeric array ``(n_samples, n_features)`` (or a
  :class:`~afo_encoding.backbones.FeatureStore`), used as they are. This is how the
  scikit-learn estimator checks, which pass 2D float arrays, see the encoders.

Several subjects are given as lists of the same length, ``X = [X1, X2]`` and
``y = [y1, y2]``, where each ``X_s`` is one subject's image collection (an array, a
StimulusSet, a FeatureStore or a list of paths) and ``y_s`` its responses.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from typing import Any

import numpy as np

from .._checks import is_one_sample, subject_length_error


def _is_single_image_item(item: Any) -> bool:
    if isinstance(item, (str, os.PathLike)):
        return True
    return type(item).__module__.startswith("PIL.")


def _n_rows(obj: Any) -> int | None:
    shape = getattr(obj, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    try:
        return len(obj)
    except TypeError:
        return None


def is_multi_subject(X: Any, y: Any) -> bool:
    """Whether ``(X, y)`` are per-subject lists (``[X1, X2]``, ``[y1, y2]``).

    Parameters
    ----------
    X, y : Any
        What ``fit`` received.

    Returns
    -------
    multi : bool
        True when both are lists or tuples of the same length whose items are collections
        (not single images, paths or numbers) with as many samples in ``X_s`` as in ``y_s``.

    Raises
    ------
    ValueError
        Lists of subjects where one subject's ``X_s`` and ``y_s`` differ in length.
    """
    if not (isinstance(X, (list, tuple)) and isinstance(y, (list, tuple))):
        return False
    if len(X) != len(y) or not X:
        return False
    for s, (xs, ys) in enumerate(zip(X, y)):
        if _is_single_image_item(xs) or isinstance(xs, numbers.Number) or is_one_sample(xs):
            return False
        if isinstance(ys, numbers.Number) or (isinstance(ys, np.ndarray) and ys.ndim == 0):
            return False
        if isinstance(xs, (list, tuple)) and xs and isinstance(xs[0], numbers.Number):
            return False  # a row of numbers: single-subject features given as nested lists
        n_x, n_y = _n_rows(xs), _n_rows(ys)
        if n_x is None:
            return False
        if n_y is not None and n_x != n_y and isinstance(ys, (np.ndarray, list, tuple)):
            raise subject_length_error(s, n_x, n_y)
    return True


def as_flat_features(X: Any) -> np.ndarray | None:
    """``X`` as a 2D numeric array when it is precomputed features, else ``None``.

    2D numeric arrays (and nested lists of numbers, DataFrames) are features; 3D and 4D
    arrays, lists of paths or images and StimulusSets are images.
    """
    if type(X).__module__.startswith("scipy.sparse"):
        return X  # refused by scikit-learn's validation with its usual message
    if isinstance(X, (list, tuple)):
        if not X or not isinstance(X[0], (list, tuple, numbers.Number, np.ndarray)):
            return None
        if isinstance(X[0], np.ndarray) and X[0].ndim != 1:
            return None
        X = np.asarray(X)
    elif not hasattr(X, "__array__") or type(X).__name__ == "StimulusSet":
        return None
    ndim = getattr(X, "ndim", None)
    if ndim is None:
        X = np.asarray(X)
        ndim = X.ndim
    if ndim != 2:
        return None
    dtype = getattr(X, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind not in "biufcO" and not hasattr(X, "iloc"):
        return None
    return X


def row_ids(X: np.ndarray) -> list[str]:
    """Content ids of the rows of a feature array (identical rows share an id)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return [hashlib.blake2b(row.tobytes(), digest_size=8).hexdigest() for row in X]


def validation_split(ids: list[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split samples into training and validation by unique image.

    Repeats of an image (same id) stay on the same side, so validation never scores an
    image the model trained on.

    Parameters
    ----------
    ids : list of str
        Image (or feature row) id of every sample.
    fraction : float
        Fraction of the unique images held out, in (0, 1).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train_index, val_index : ndarray of int
        Sorted sample indices; validation has at least 2 samples and training at least 1.
    """
    n = len(ids)
    if n < 3:
        raise ValueError(
            f"Fitting needs at least 3 samples (training + 2 for validation), got n_samples={n}."
        )
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction!r}.")
    uniques, inverse = np.unique(np.asarray(ids), return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(uniques))
    counts = np.bincount(inverse, minlength=len(uniques))
    n_val_images = max(1, round(fraction * len(uniques)))
    # hold out whole images until both sides are usable
    while counts[order[:n_val_images]].sum() < 2 and n_val_images < len(uniques) - 1:
        n_val_images += 1
    val_images = np.zeros(len(uniques), dtype=bool)
    val_images[order[:n_val_images]] = True
    is_val = val_images[inverse]
    if is_val.sum() < 2 or (~is_val).sum() < 1:
        raise ValueError(
            f"Cannot hold out validation images: {len(uniques)} distinct images for "
            f"{n} samples. Give more distinct images."
        )
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def per_subject(value: Any, n_subjects: int, multi: bool, name: str) -> list:
    """A fit keyword given once per subject (lists when several subjects)."""
    if not multi:
        return [value]
    if value is None:
        return [None] * n_subjects
    if not isinstance(value, (list, tuple)) or len(value) != n_subjects:
        raise ValueError(
            f"With {n_subjects} subjects, {name} must be a list of {n_subjects} entries "
            f"(None for none), got {type(value).__name__}."
        )
    return list(value)


def to_kept_voxels(value: Any, space, name: str) -> Any:
    """Per-voxel values given over the raw voxels are reduced to the kept ones."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim >= 1 and arr.shape[-1] == space.n_raw_voxels != space.n_voxels:
        arr = arr[..., space.keep]
    if arr.ndim >= 1 and arr.shape[-1] != space.n_voxels:
        raise ValueError(
            f"{name} must have one value per voxel ({space.n_voxels} kept, or "
            f"{space.n_raw_voxels} before dropping), got shape {arr.shape}."
        )
    return arr


def voxel_mean_scale(Y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every column over ``rows`` (float64, in chunks of
    columns so that no copy of ``Y`` is made); a zero deviation becomes 1."""
    mean = np.empty(Y.shape[1])
    scale = np.empty(Y.shape[1])
    step = max(1, 2**24 // max(len(rows), 1))
    for start in range(0, Y.shape[1], step):
        block = Y[:, start : start + step][rows].astype(np.float64)
        mean[start : start + step] = block.mean(0)
        scale[start : start + step] = block.std(0)
    scale[scale == 0] = 1.0
    return mean, scale


def numbers_not_in_an_array(y: Any) -> bool:
    """Numeric responses given as nested lists, an object array or an array-like."""
    if isinstance(y, (list, tuple)):
        return bool(y) and isinstance(y[0], (numbers.Number, list, tuple))
    if isinstance(y, np.ndarray):
        return y.dtype == object
    return hasattr(y, "__array__") and not hasattr(y, "ndim")


def monitor_to_kept(monitor: Any, space) -> Any:
    """A boolean mask over the raw voxels becomes one over the kept voxels; indices are
    indices of kept voxels."""
    if monitor is None or np.asarray(monitor).dtype != bool:
        return monitor
    return to_kept_voxels(monitor, space, "monitor")


def ids_digest(ids: list[str]) -> str:
    """A short digest of a sequence of ids."""
    h = hashlib.blake2b(digest_size=8)
    for i in ids:
        h.update(i.encode())
    return h.hexdigest()
