"""Float32 response arrays: numeric and shape checks, scans for unusable columns, selection.

Shared by every response space: the scans go through the data a block of columns at a
time, so checking a large recording for NaN, inf and constant columns costs little memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Elements per block when scanning responses for NaN/inf/constant columns (bounds memory).
SCAN_ELEMENTS = 1 << 18


def short_repr(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_numeric(array: np.ndarray, what: str) -> None:
    if array.dtype.kind not in "biuf":
        example = short_repr(array.flat[0]) if array.size else "none"
        raise TypeError(
            f"{what} must be numeric (int or float); got dtype {array.dtype} "
            f"(first value {example}). Convert them to floats first, e.g. "
            "np.asarray(y, dtype=np.float32)."
        )


def as_float32(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``array`` as C-contiguous float32 and whether it is a new array (ours)."""
    if array.dtype == np.float32 and array.flags.c_contiguous:
        return array, False
    return np.ascontiguousarray(array, dtype=np.float32), True


def _column_blocks(n_samples: int, columns: np.ndarray | None, n_columns: int):
    """Yield column selections (slices, or index arrays when ``columns`` is given)."""
    step = max(1, SCAN_ELEMENTS // max(n_samples, 1))
    if columns is None:
        for start in range(0, n_columns, step):
            yield slice(start, min(start + step, n_columns))
    else:
        for start in range(0, len(columns), step):
            yield columns[start : start + step]


def _nonfinite_error(
    sel: Any, block: np.ndarray, bad: np.ndarray, name, what: str
) -> ValueError:
    """The error for the first NaN/inf of ``block`` (the columns ``sel`` of the data)."""
    rows, cols = np.nonzero(bad)
    row, col = int(rows[0]), int(cols[0])
    raw = sel.start + col if isinstance(sel, slice) else sel[col]
    value = block[row, col]
    return ValueError(
        f"{what} contain NaN or inf: {value} at sample {row}, {name(int(raw))}. Only voxels "
        "that are NaN in every sample of the training data are left out (dropped); impute "
        "the missing values or drop the samples that have them."
    )


def usable_columns(
    Y: np.ndarray, candidates: np.ndarray | None, name, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan ``Y`` block by block; return (keep, all_nan, constant) boolean masks.

    Raises on inf anywhere, or NaN in a column that is not NaN everywhere. Columns outside
    ``candidates`` (indices, or None for all) are not looked at and not kept.
    """
    n, n_columns = Y.shape
    all_nan = np.zeros(n_columns, dtype=bool)
    constant = np.zeros(n_columns, dtype=bool)
    for sel in _column_blocks(n, candidates, n_columns):
        block = Y[:, sel]
        nan = np.isnan(block)
        n_nan = nan.sum(axis=0)
        partial = (n_nan > 0) & (n_nan < n)
        inf = np.isinf(block)
        if inf.any() or partial.any():
            bad = inf | (nan & partial)
            raise _nonfinite_error(sel, block, bad, name, what)
        all_nan[sel] = n_nan == n
        constant[sel] = (block.max(axis=0) == block.min(axis=0)) & (n_nan == 0)
    keep = ~(all_nan | constant)
    if candidates is not None:
        selected = np.zeros(n_columns, dtype=bool)
        selected[candidates] = True
        keep &= selected
    return keep, all_nan, constant


def check_finite(Y: np.ndarray, name_of_column, what: str) -> None:
    """Raise if ``Y`` (kept columns) holds any NaN or inf."""
    for sel in _column_blocks(Y.shape[0], None, Y.shape[1]):
        block = Y[:, sel]
        bad = ~np.isfinite(block)
        if bad.any():
            raise _nonfinite_error(sel, block, bad, name_of_column, what)


def take_columns(Y: np.ndarray, keep: np.ndarray, owned: bool) -> np.ndarray:
    """``Y[:, keep]``; when ``Y`` is ours, compacted in place to avoid a second full copy."""
    if keep.all():
        return Y
    if not owned:
        return Y[:, keep]
    n, k = Y.shape[0], int(keep.sum())
    columns = np.flatnonzero(keep)
    flat = Y.reshape(-1)
    # row i moves to [i*k, (i+1)*k), which never overlaps a row not yet moved; take() with
    # mode="raise" buffers its output, so the overlap with row i itself is safe
    for i in range(n):
        np.take(Y[i], columns, out=flat[i * k : (i + 1) * k])
    return flat[: n * k].reshape(n, k)


def check_n_samples(n_images: int, Y: Any, what: str = "responses") -> None:
    """Raise a clear error when images and responses have different sample counts.

    Parameters
    ----------
    n_images : int
        Number of images (stimuli).
    Y : array-like or int
        Responses, one row per image (or their number of rows).
    what : str
        How to call ``Y`` in the message.

    Raises
    ------
    ValueError
        When the counts differ; the message gives both.

    Examples
    --------
    >>> import numpy as np
    >>> check_n_samples(10, np.zeros((10, 3)))
    """
    n_samples = int(Y) if isinstance(Y, (int, np.integer)) else int(np.shape(Y)[0])
    if n_samples != int(n_images):
        raise ValueError(
            f"Found {int(n_images)} images but {n_samples} samples (rows) of {what}. Row i "
            f"of the {what} must be the response to image i: pass the images and "
            f"{what} of the same trials, in the same order."
        )



def check_coords(coords: Any, n_raw: int, what: str) -> np.ndarray:
    coords = np.asarray(coords)
    check_numeric(coords, "coords")
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 1:
        coords = coords[:, None]
    if coords.ndim != 2 or coords.shape[0] != n_raw:
        raise ValueError(
            f"coords must have one row per {what} ({n_raw}), shape ({n_raw}, d); got shape "
            f"{coords.shape}."
        )
    if not np.isfinite(coords).all():
        row = int(np.flatnonzero(~np.isfinite(coords).all(axis=1))[0])
        raise ValueError(f"coords must be finite; row {row} is {coords[row]}.")
    return coords

