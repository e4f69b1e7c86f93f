"""Responses: one float32 array ``(n_samples, n_voxels)`` and the space it lives in.

:func:`as_responses` turns what a neuroscientist has -- an array, a 4D Niimg or a list of
3D Niimgs, a nilearn :class:`~nilearn.surface.SurfaceImage`, an :class:`mne.Epochs` --
into ``Y``, float32 ``(n_samples, n_voxels)``, and a :class:`ResponseSpace` that knows
where each column lives (``coords``), what was measured (``modality``), how to read new
data of the same kind (``transform``) and how to give predictions back in the container
the data came in (``inverse_transform``).

A "voxel" is a column of ``Y``: a voxel of a volume, a vertex of a surface, a (sensor,
time point) pair of an Epochs object, a column of an array.

Columns that are all-NaN or constant over the samples carry nothing to fit: they are
dropped with a warning (``space.keep`` says which were kept) and come back as NaN from
``inverse_transform``. Any other NaN or infinite value is an error.

Spaces are picklable, and :meth:`ResponseSpace.to_dict` / :func:`space_from_dict` turn
them into plain JSON values and numpy arrays (for the ``save`` format) and back.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import numpy as np

from ._logging import logger

MODALITIES = ("fmri", "meg", "eeg", "other")
_FORMAT_VERSION = 1
# Elements per block when scanning responses for NaN/inf/constant columns (bounds memory).
_SCAN_ELEMENTS = 1 << 18


# ----------------------------------------------------------------------------------------
# array helpers


def _short_repr(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_numeric(array: np.ndarray, what: str) -> None:
    if array.dtype.kind not in "biuf":
        example = _short_repr(array.flat[0]) if array.size else "none"
        raise TypeError(
            f"{what} must be numeric (int or float); got dtype {array.dtype} "
            f"(first value {example}). Convert them to floats first, e.g. "
            "np.asarray(y, dtype=np.float32)."
        )


def _as_float32(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return ``array`` as C-contiguous float32 and whether it is a new array (ours)."""
    if array.dtype == np.float32 and array.flags.c_contiguous:
        return array, False
    return np.ascontiguousarray(array, dtype=np.float32), True


def _column_blocks(n_samples: int, columns: np.ndarray | None, n_columns: int):
    """Yield column selections (slices, or index arrays when ``columns`` is given)."""
    step = max(1, _SCAN_ELEMENTS // max(n_samples, 1))
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


def _usable_columns(
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


def _check_finite(Y: np.ndarray, name_of_column, what: str) -> None:
    """Raise if ``Y`` (kept columns) holds any NaN or inf."""
    for sel in _column_blocks(Y.shape[0], None, Y.shape[1]):
        block = Y[:, sel]
        bad = ~np.isfinite(block)
        if bad.any():
            raise _nonfinite_error(sel, block, bad, name_of_column, what)


def _take_columns(Y: np.ndarray, keep: np.ndarray, owned: bool) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------
# spaces


class ResponseSpace:
    """Where the columns of a response array live, and how to go back to the container.

    Do not build one directly: :func:`as_responses` returns the right subclass for the
    input; :func:`space_from_dict` rebuilds a saved one.

    Attributes
    ----------
    coords : ndarray of float64, shape (n_voxels, d)
        Position of each kept column (world mm for volumes, mesh units for surfaces,
        sensor metres and seconds for Epochs, grid indices for arrays).
    modality : {"fmri", "meg", "eeg", "other"}
        What was measured.
    keep : ndarray of bool, shape (n_raw_voxels,)
        Which of the raw columns (in-mask voxels, vertices, sensor x time points, array
        columns) are modelled; the others were all-NaN, constant or masked out.
    """

    kind: ClassVar[str] = ""

    def __init__(self, *, keep: np.ndarray, coords: np.ndarray, modality: str) -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}.")
        self.keep = np.asarray(keep, dtype=bool).reshape(-1)
        self.coords = np.ascontiguousarray(coords, dtype=np.float64)
        if self.coords.ndim != 2 or self.coords.shape[0] != self.n_voxels:
            raise ValueError(
                f"coords must have shape (n_voxels={self.n_voxels}, d); got "
                f"{self.coords.shape}."
            )
        self.modality = modality

    # -- what subclasses define -------------------------------------------------------

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        """Data of this space -> (float32 (n, n_raw_voxels), whether the array is ours)."""
        raise NotImplementedError

    def _from_raw(self, Y: np.ndarray, **kwargs: Any) -> Any:
        """float32 (n, n_raw_voxels) with NaN for left-out columns -> container."""
        raise NotImplementedError

    def _voxel_name(self, raw_index: int) -> str:
        return f"column {raw_index}"

    def _geometry(self) -> dict[str, Any]:
        """What to save besides keep/coords/modality: JSON values and numpy arrays."""
        raise NotImplementedError

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> ResponseSpace:
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------------

    @property
    def n_voxels(self) -> int:
        """Number of modelled columns (voxels kept)."""
        return int(self.keep.sum())

    @property
    def n_raw_voxels(self) -> int:
        """Number of columns before dropping all-NaN/constant ones."""
        return int(self.keep.size)

    def transform(self, y: Any) -> np.ndarray:
        """Read new data of this space (e.g. held-out trials) as float32 ``(n, n_voxels)``.

        Parameters
        ----------
        y : same kind as the data the space was made from
            Checked against the space (same mask and affine, same mesh, same channels and
            times, same array shape). A 2D array ``(n_samples, n_raw_voxels)`` in the
            space's raw column order (e.g. data already masked with the same mask) is
            accepted too.

        Returns
        -------
        Y : ndarray of float32, shape (n_samples, n_voxels)
            The kept columns, in the order of :attr:`coords`.

        Raises
        ------
        ValueError
            Data that do not match the space, or NaN/inf in a kept column.
        """
        if isinstance(y, np.ndarray) and self.kind != "array":
            Y, owned = self._raw_array(y)
        else:
            Y, owned = self._to_raw(y)
        Y = _take_columns(Y, self.keep, owned)
        _check_finite(Y, self._kept_name, "Responses")
        return Y

    def inverse_transform(self, Y: Any, **kwargs: Any) -> Any:
        """Give ``(n_samples, n_voxels)`` values back in the container of the space.

        Parameters
        ----------
        Y : array-like, shape (n_samples, n_voxels)
            One value per kept voxel, e.g. predictions or scores; a 1D ``(n_voxels,)``
            array is read as one sample (with a single voxel, as one value per sample).
        **kwargs
            Container-specific options (see the subclass).

        Returns
        -------
        container
            Same kind as the input of :func:`as_responses` (array, Niimg, SurfaceImage,
            EpochsArray). Left-out voxels are NaN. The round trip
            ``space.inverse_transform(space.transform(y))`` gives back ``y`` exactly (as
            float32).
        """
        Y = np.asarray(Y)
        _check_numeric(Y, "Values to inverse_transform")
        if Y.ndim == 1:
            Y = Y[:, None] if self.n_voxels == 1 else Y[None]
        if Y.ndim != 2 or Y.shape[1] != self.n_voxels:
            raise ValueError(
                f"inverse_transform needs an array (n_samples, n_voxels={self.n_voxels}); "
                f"got shape {Y.shape}."
            )
        if self.keep.all():
            full = np.ascontiguousarray(Y, dtype=np.float32)
        else:
            full = np.full((Y.shape[0], self.n_raw_voxels), np.nan, dtype=np.float32)
            full[:, self.keep] = Y
        return self._from_raw(full, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Describe the space with JSON values and numpy arrays only.

        Returns
        -------
        state : dict
            Flat dict with str keys; every value is either a numeric
            :class:`numpy.ndarray` (no object arrays; masks as uint8) or JSON-serialisable
            (str, int, float, bool, None, lists and str-keyed dicts of those), so a save
            format can put the arrays in safetensors and the rest in JSON.
            :func:`space_from_dict` rebuilds the space from it (arrays may come back as any
            array-like).
        """
        state: dict[str, Any] = {
            "kind": self.kind,
            "format_version": _FORMAT_VERSION,
            "modality": self.modality,
            "keep": self.keep.astype(np.uint8),
            "coords": self.coords,
        }
        for key, value in self._geometry().items():
            state[f"{self.kind}.{key}"] = value
        return state

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}: {self.modality}, {self.n_voxels} voxels kept of "
            f"{self.n_raw_voxels}, coords d={self.coords.shape[1]}>"
        )

    # -- shared machinery ---------------------------------------------------------------

    def _kept_name(self, kept_index: int) -> str:
        return self._voxel_name(int(np.flatnonzero(self.keep)[kept_index]))

    def _raw_array(self, y: np.ndarray) -> tuple[np.ndarray, bool]:
        _check_numeric(y, "Responses")
        if y.ndim != 2 or y.shape[1] != self.n_raw_voxels:
            raise ValueError(
                f"An array given to {type(self).__name__}.transform must be (n_samples, "
                f"{self.n_raw_voxels}) in the space's raw voxel order; got shape {y.shape}."
            )
        return _as_float32(y)

    def _fit(
        self,
        Y: np.ndarray,
        owned: bool,
        raw_coords: np.ndarray,
        candidates: np.ndarray | None = None,
    ) -> np.ndarray:
        """Choose the usable columns of ``Y`` (first data of the space); return ``Y[:, keep]``."""
        if Y.shape[0] == 0:
            raise ValueError("Responses have no samples (0 rows).")
        keep, all_nan, constant = _usable_columns(Y, candidates, self._voxel_name, "Responses")
        n_candidates = Y.shape[1] if candidates is None else len(candidates)
        dropped = np.flatnonzero(all_nan | constant)
        if not keep.any():
            hint = " (one sample: every voxel is constant)" if Y.shape[0] == 1 else ""
            raise ValueError(
                f"No usable voxel: all {n_candidates} are all-NaN or constant over the "
                f"{Y.shape[0]} samples{hint}. Encoding needs responses that vary across "
                "images."
            )
        if dropped.size:
            examples = ", ".join(self._voxel_name(int(i)) for i in dropped[:3])
            warnings.warn(
                f"Dropped {dropped.size} of {n_candidates} voxels that carry no signal "
                f"({int(all_nan[dropped].sum())} all-NaN, {int(constant[dropped].sum())} "
                f"constant; e.g. {examples}). They are not modelled and come back as NaN "
                "from inverse_transform.",
                UserWarning,
                stacklevel=4,
            )
        self.keep = keep
        self.coords = np.ascontiguousarray(raw_coords[keep], dtype=np.float64)
        logger.info("Responses: %d samples x %d voxels (%r)", Y.shape[0], keep.sum(), self)
        return _take_columns(Y, keep, owned)


def _grid_coords(shape: tuple[int, ...]) -> np.ndarray:
    """Evenly spaced grid: the index of each column along each axis of ``shape``."""
    if not shape:
        return np.zeros((1, 1))
    return np.indices(shape, dtype=np.float64).reshape(len(shape), -1).T


def _check_coords(coords: Any, n_raw: int, what: str) -> np.ndarray:
    coords = np.asarray(coords)
    _check_numeric(coords, "coords")
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


class ArraySpace(ResponseSpace):
    """Space of a plain array ``(n_samples, *sample_shape)``; columns in C order.

    ``coords`` are the ones given to :func:`as_responses`, else an evenly spaced grid: the
    index of the column along each axis of ``sample_shape`` (``(n, V)`` -> ``d = 1``,
    0 ... V-1; ``(n, C, T)`` -> ``d = 2``, channel and time indices), as the paper does
    for EEG; a warning says so.
    """

    kind = "array"

    def __init__(self, sample_shape: tuple[int, ...], **base: Any) -> None:
        self.sample_shape = tuple(int(s) for s in sample_shape)
        super().__init__(**base)

    def _voxel_name(self, raw_index: int) -> str:
        if len(self.sample_shape) <= 1:
            return f"column {raw_index}"
        index = tuple(int(i) for i in np.unravel_index(raw_index, self.sample_shape))
        return f"column {raw_index} (index {index})"

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        y = _array_input(y)
        if tuple(y.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"Responses must have shape (n_samples, {', '.join(map(str, self.sample_shape))})"
                f" like the ones the space was made from; got {y.shape}."
            )
        return _as_float32(y.reshape(y.shape[0], -1))

    def _from_raw(self, Y: np.ndarray) -> np.ndarray:
        return Y.reshape(Y.shape[0], *self.sample_shape)

    def _geometry(self) -> dict[str, Any]:
        return {"sample_shape": list(self.sample_shape)}

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> ArraySpace:
        return cls(tuple(geometry["sample_shape"]), **base)


def _array_input(y: Any) -> np.ndarray:
    y = np.asarray(y)
    _check_numeric(y, "Responses")
    if y.ndim == 0:
        raise ValueError(
            f"Responses must be an array (n_samples, n_voxels); got a scalar {y.item()!r}."
        )
    return y


def _fit_array(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, ArraySpace]:
    y = _array_input(y)
    sample_shape = tuple(y.shape[1:])
    n_raw = int(np.prod(sample_shape)) if sample_shape else 1
    if n_raw == 0:
        raise ValueError(f"Responses have no voxels: shape {y.shape}.")
    if coords is None:
        raw_coords = _grid_coords(sample_shape)
        warnings.warn(
            f"No coords given for responses of shape {y.shape}: using an evenly spaced grid "
            f"of column indices (d = {raw_coords.shape[1]}). Pass coords (n_voxels, d) with "
            "real positions when the voxels have them.",
            UserWarning,
            stacklevel=3,
        )
    else:
        raw_coords = _check_coords(coords, n_raw, "column")
    candidates = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.size != n_raw or (
            mask.ndim > 1 and mask.shape != sample_shape
        ):
            raise ValueError(
                f"For array responses, mask must be a boolean array of shape {sample_shape} "
                f"(True = keep the column); got {mask.dtype} array of shape {mask.shape}."
            )
        candidates = np.flatnonzero(mask.reshape(-1))
    space = ArraySpace(
        sample_shape,
        keep=np.ones(n_raw, dtype=bool),
        coords=raw_coords,
        modality=modality or "other",
    )
    Y, owned = _as_float32(y.reshape(y.shape[0], n_raw))
    return space._fit(Y, owned, raw_coords, candidates), space


# ----------------------------------------------------------------------------------------
# volumes (Niimg)


def _is_niimg(obj: Any) -> bool:
    return type(obj).__module__.startswith("nibabel") and hasattr(obj, "affine")


def _same_grid(shape_a, affine_a, shape_b, affine_b) -> bool:
    return tuple(shape_a[:3]) == tuple(shape_b[:3]) and np.allclose(affine_a, affine_b)


def _load_4d(y: Any, allow_3d: bool = False) -> Any:
    """Niimg-like (image, path, list of 3D images/paths) -> a 4D nibabel image (lazy data).

    A single 3D image is an error, unless ``allow_3d`` (then it is one sample).
    """
    import nibabel as nib
    from nilearn.image import load_img

    try:
        img = load_img(y)
    except Exception as err:  # nilearn raises several types; name the input either way
        raise ValueError(
            f"Cannot read the responses as Niimg ({_short_repr(y)}): {err}"
        ) from err
    if img.ndim == 3 and allow_3d:
        return nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine)
    if img.ndim == 3:
        raise ValueError(
            f"The responses are one 3D image of shape {img.shape}, i.e. a single sample. "
            "Encoding needs one volume per image: pass a 4D image (x, y, z, n_samples) or a "
            "list of 3D images, one per sample."
        )
    if img.ndim != 4:
        raise ValueError(
            f"Volume responses must be a 4D image (x, y, z, n_samples); got {img.ndim}D with "
            f"shape {img.shape}."
        )
    return img


def _volume_mask(mask: Any, img: Any) -> Any:
    """A boolean 3D mask image on the grid of ``img``, from ``mask`` (see as_responses)."""
    import nibabel as nib
    from nilearn.image import resample_to_img
    from nilearn.maskers import NiftiMasker
    from nilearn.masking import load_mask_img

    if mask is None:
        mask_img = NiftiMasker().fit(img).mask_img_
    elif isinstance(mask, NiftiMasker):
        if hasattr(mask, "mask_img_"):
            mask_img = mask.mask_img_
        else:
            from sklearn.base import clone

            mask_img = clone(mask).fit(img).mask_img_
    else:
        try:
            data, affine = load_mask_img(mask)
        except Exception as err:
            raise ValueError(
                f"mask must be a 3D binary mask image (path or Niimg) or a NiftiMasker; "
                f"{_short_repr(mask)} cannot be used: {err}"
            ) from err
        mask_img = nib.Nifti1Image(data.astype(np.uint8), affine)
    if not _same_grid(mask_img.shape, mask_img.affine, img.shape, img.affine):
        warnings.warn(
            f"The mask (shape {mask_img.shape[:3]}) is not on the grid of the responses "
            f"(shape {img.shape[:3]}); it is resampled to the responses' grid (nearest "
            "neighbour). The responses themselves are not resampled.",
            UserWarning,
            stacklevel=4,
        )
        mask_img = resample_to_img(
            mask_img, img, interpolation="nearest", force_resample=True, copy_header=True
        )
    data = np.asarray(mask_img.dataobj).astype(bool)
    if not data.any():
        raise ValueError("The mask selects no voxel of the responses' grid.")
    return nib.Nifti1Image(data.astype(np.uint8), img.affine)


def _extract_volume(img: Any, mask: np.ndarray) -> np.ndarray:
    """In-mask values of a 4D image as float32 ``(n_samples, n_in_mask)``, a block of
    volumes at a time (proxies are read lazily; one full-size allocation)."""
    n = int(img.shape[3])
    Y = np.empty((n, int(mask.sum())), dtype=np.float32)
    step = max(1, (1 << 25) // max(1, mask.size))
    for start in range(0, n, step):
        block = np.asarray(img.dataobj[..., start : start + step])
        _check_numeric(block, "Image data")
        Y[start : start + step] = block[mask].T
    return Y


class VolumeSpace(ResponseSpace):
    """Space of volumes (4D Niimg or lists of 3D Niimgs): one voxel per in-mask voxel.

    Voxels are in the order of ``mask[mask]`` (C order over i, j, k), as in nilearn's
    maskers. ``coords`` are world coordinates in mm, ``affine @ (i, j, k, 1)``.
    ``transform`` reads 4D images, lists of 3D images, or one 3D image as one sample.
    ``inverse_transform`` gives a 4D float32 Nifti1Image on the same grid: 0 outside the
    mask (as nilearn's ``unmask``), NaN at dropped voxels.

    Attributes
    ----------
    mask_img : nibabel.Nifti1Image
        The 3D mask, on the grid (shape, affine) of the responses.
    masker : nilearn.maskers.NiftiMasker
        A masker fitted with that mask, for nilearn's own tools (plotting, reports).
    """

    kind = "volume"

    def __init__(self, mask_img: Any, **base: Any) -> None:
        from nilearn.maskers import NiftiMasker

        self.mask_img = mask_img
        self._mask = np.asarray(mask_img.dataobj).astype(bool)
        self.masker = NiftiMasker(mask_img=mask_img).fit()
        super().__init__(**base)

    @property
    def affine(self) -> np.ndarray:
        """Affine of the voxel grid (voxel indices -> world mm)."""
        return np.asarray(self.mask_img.affine)

    @staticmethod
    def _world_coords(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
        from nibabel.affines import apply_affine

        return apply_affine(affine, np.argwhere(mask)).astype(np.float64)

    def _voxel_name(self, raw_index: int) -> str:
        ijk = np.argwhere(self._mask)[raw_index]
        xyz = self.affine[:3, :3] @ ijk + self.affine[:3, 3]
        return (
            f"voxel (i, j, k) = {tuple(int(v) for v in ijk)} at "
            f"({', '.join(f'{v:.1f}' for v in xyz)}) mm"
        )

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        # in transform, a 3D image is one sample (a test volume, an atlas, a weight map)
        img = _load_4d(y, allow_3d=True)
        if not _same_grid(img.shape, img.affine, self._mask.shape, self.affine):
            raise ValueError(
                f"These images are not on the grid of the space: shape {img.shape[:3]} with "
                f"affine\n{np.asarray(img.affine)}\nwhile the space has shape "
                f"{self._mask.shape} with affine\n{self.affine}\nResample them first, e.g. "
                "nilearn.image.resample_to_img(imgs, space.mask_img)."
            )
        return _extract_volume(img, self._mask), True

    def _from_raw(self, Y: np.ndarray) -> Any:
        from nilearn.masking import unmask

        return unmask(Y, self.mask_img)

    def _geometry(self) -> dict[str, Any]:
        return {"mask": self._mask.astype(np.uint8), "affine": self.affine.astype(np.float64)}

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> VolumeSpace:
        import nibabel as nib

        mask = np.asarray(geometry["mask"]).astype(np.uint8)
        return cls(nib.Nifti1Image(mask, np.asarray(geometry["affine"], dtype=np.float64)),
                   **base)


def _fit_volume(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, VolumeSpace]:
    img = _load_4d(y)
    mask_img = _volume_mask(mask, img)
    mask_data = np.asarray(mask_img.dataobj).astype(bool)
    n_raw = int(mask_data.sum())
    if coords is None:
        raw_coords = VolumeSpace._world_coords(mask_data, np.asarray(img.affine))
    else:
        raw_coords = _check_coords(coords, n_raw, "in-mask voxel")
    space = VolumeSpace(
        mask_img, keep=np.ones(n_raw, dtype=bool), coords=raw_coords, modality=modality or "fmri"
    )
    Y = _extract_volume(img, mask_data)
    return space._fit(Y, True, raw_coords), space


# ----------------------------------------------------------------------------------------
# surfaces (nilearn SurfaceImage)


def _is_surface_image(obj: Any) -> bool:
    return type(obj).__module__.startswith("nilearn") and type(obj).__name__ == "SurfaceImage"


def _mesh_arrays(mesh: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PolyMesh -> {part: (coordinates (n, 3), faces (m, 3))}, parts in mesh order."""
    return {
        part: (np.asarray(m.coordinates), np.asarray(m.faces)) for part, m in mesh.parts.items()
    }


def _same_mesh(a: Any, b: Any) -> bool:
    if a is b:
        return True
    arrays_a, arrays_b = _mesh_arrays(a), _mesh_arrays(b)
    if list(arrays_a) != list(arrays_b):
        return False
    return all(
        ca.shape == cb.shape and fa.shape == fb.shape and np.allclose(ca, cb)
        and np.array_equal(fa, fb)
        for (ca, fa), (cb, fb) in zip(arrays_a.values(), arrays_b.values())
    )


def _hemisphere_coords(mesh: Any) -> tuple[np.ndarray, list[float]]:
    """Vertex positions of all parts, later parts shifted along +x to stay apart.

    Each part after the first is moved by the smallest non-negative x shift that puts its
    leftmost vertex at least ``gap`` to the right of the rightmost vertex of the parts
    before it; ``gap`` is 10% of the widest part's x extent. Pial or white meshes (left
    hemisphere at x < 0) move by a few mm at most; inflated or spherical meshes, whose
    hemispheres overlap, are separated. Returns the coordinates and the shift of each part.
    """
    parts = [np.asarray(c, dtype=np.float64) for c, _ in _mesh_arrays(mesh).values()]
    gap = 0.1 * max(float(np.ptp(c[:, 0])) for c in parts)
    out, shifts = [parts[0]], [0.0]
    right_edge = float(parts[0][:, 0].max())
    for c in parts[1:]:
        shift = max(0.0, right_edge + gap - float(c[:, 0].min()))
        c = c.copy()
        c[:, 0] += shift
        out.append(c)
        shifts.append(shift)
        right_edge = max(right_edge, float(c[:, 0].max()))
    return np.concatenate(out), shifts


class SurfaceSpace(ResponseSpace):
    """Space of nilearn surface images: one voxel per mesh vertex, left then right.

    ``coords`` are the vertex positions of the mesh, with the right hemisphere shifted
    along +x when needed so that the two hemispheres never overlap (see
    :attr:`hemisphere_shifts`): on an inflated or spherical mesh a left and a right vertex
    can sit at the same place, and the model must still tell them apart.

    Attributes
    ----------
    mesh : nilearn.surface.PolyMesh
        The mesh; ``inverse_transform`` builds SurfaceImages on it.
    hemisphere_shifts : dict
        x shift applied to each part's coordinates in ``coords`` (mesh units).
    """

    kind = "surface"

    def __init__(self, mesh: Any, **base: Any) -> None:
        self.mesh = mesh
        self.parts = list(mesh.parts)
        self.n_vertices = [int(mesh.parts[p].n_vertices) for p in self.parts]
        _, shifts = _hemisphere_coords(mesh)
        self.hemisphere_shifts = dict(zip(self.parts, shifts))
        super().__init__(**base)

    def _voxel_name(self, raw_index: int) -> str:
        for part, n in zip(self.parts, self.n_vertices):
            if raw_index < n:
                return f"vertex {raw_index} of the {part} hemisphere"
            raw_index -= n
        return f"vertex {raw_index}"

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        images = [y] if _is_surface_image(y) else list(y)
        for k, image in enumerate(images):
            if not _is_surface_image(image):
                raise TypeError(
                    f"Expected SurfaceImages; item {k} is a {type(image).__name__}."
                )
            if not _same_mesh(image.mesh, self.mesh):
                raise ValueError(
                    f"Surface image {k} is not on the mesh of the space (parts "
                    f"{list(image.mesh.parts)} with {image.mesh.n_vertices} vertices; the "
                    f"space has {self.parts} with {sum(self.n_vertices)}, or the vertex "
                    "positions differ). Project the data on the same mesh first."
                )
        return _extract_surface(images, self.parts), True

    def _from_raw(self, Y: np.ndarray) -> Any:
        from nilearn.surface import SurfaceImage

        data, start = {}, 0
        for part, n in zip(self.parts, self.n_vertices):
            data[part] = np.ascontiguousarray(Y[:, start : start + n].T)
            start += n
        return SurfaceImage(mesh=self.mesh, data=data)

    def _geometry(self) -> dict[str, Any]:
        geometry: dict[str, Any] = {"parts": list(self.parts)}
        for part, (coordinates, faces) in _mesh_arrays(self.mesh).items():
            geometry[f"{part}.coordinates"] = np.asarray(coordinates)
            geometry[f"{part}.faces"] = np.asarray(faces, dtype=np.int64)
        return geometry

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> SurfaceSpace:
        from nilearn.surface import InMemoryMesh, PolyMesh

        meshes = {
            part: InMemoryMesh(
                np.asarray(geometry[f"{part}.coordinates"]), np.asarray(geometry[f"{part}.faces"])
            )
            for part in geometry["parts"]
        }
        return cls(PolyMesh(**meshes), **base)


def _extract_surface(images: list[Any], parts: list[str]) -> np.ndarray:
    """SurfaceImages -> float32 ``(n_samples, n_vertices)``, parts concatenated."""
    counts = []
    for k, image in enumerate(images):
        if list(image.data.parts) != parts:
            raise ValueError(
                f"Surface image {k} has data for {list(image.data.parts)}, expected {parts}."
            )
        first = image.data.parts[parts[0]]
        counts.append(1 if first.ndim == 1 else int(first.shape[1]))
    n_vertices = [int(images[0].mesh.parts[p].n_vertices) for p in parts]
    Y = np.empty((sum(counts), sum(n_vertices)), dtype=np.float32)
    row = 0
    for image, count in zip(images, counts):
        col = 0
        for part, n in zip(parts, n_vertices):
            data = np.asarray(image.data.parts[part])
            _check_numeric(data, "Surface data")
            Y[row : row + count, col : col + n] = data.reshape(n, count).T
            col += n
        row += count
    return Y


def _surface_candidates(mask: Any, mesh: Any) -> np.ndarray | None:
    from nilearn.maskers import SurfaceMasker

    if mask is None:
        return None
    if isinstance(mask, SurfaceMasker):
        fitted = getattr(mask, "mask_img_", None)
        mask = fitted if fitted is not None else mask.mask_img
        if mask is None:
            return None
    if not _is_surface_image(mask):
        raise TypeError(
            "For surface responses, mask must be a SurfaceImage of booleans on the same mesh "
            f"or a SurfaceMasker; got a {type(mask).__name__}."
        )
    if not _same_mesh(mask.mesh, mesh):
        raise ValueError("The mask is not on the mesh of the responses.")
    values = np.concatenate(
        [np.asarray(mask.data.parts[p]).reshape(-1) for p in mesh.parts]
    )
    if values.size != mesh.n_vertices:
        raise ValueError(
            f"The mask must have one value per vertex ({mesh.n_vertices}); got {values.size}."
        )
    selected = np.flatnonzero(values.astype(bool))
    if not selected.size:
        raise ValueError("The surface mask selects no vertex.")
    return selected


def _fit_surface(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, SurfaceSpace]:
    images = [y] if _is_surface_image(y) else list(y)
    if not images:
        raise ValueError("No surface images: the list is empty.")
    mesh = images[0].mesh
    for k, image in enumerate(images):
        if not _is_surface_image(image):
            raise TypeError(f"Expected SurfaceImages; item {k} is a {type(image).__name__}.")
        if not _same_mesh(image.mesh, mesh):
            raise ValueError(f"Surface image {k} is not on the mesh of surface image 0.")
    parts = list(mesh.parts)
    raw_coords = _hemisphere_coords(mesh)[0] if coords is None else _check_coords(
        coords, mesh.n_vertices, "vertex"
    )
    space = SurfaceSpace(
        mesh,
        keep=np.ones(mesh.n_vertices, dtype=bool),
        coords=raw_coords,
        modality=modality or "fmri",
    )
    candidates = _surface_candidates(mask, mesh)
    Y = _extract_surface(images, parts)
    return space._fit(Y, True, raw_coords, candidates), space


# ----------------------------------------------------------------------------------------
# sensors x time (mne.Epochs)


def _is_mne(obj: Any) -> bool:
    return type(obj).__module__.startswith("mne")


def _data_picks(info: Any) -> np.ndarray:
    import mne

    return mne.pick_types(
        info, meg=True, eeg=True, seeg=True, ecog=True, dbs=True, fnirs=True, csd=True,
        ref_meg=False, exclude="bads",
    )


def _sensor_positions(info: Any) -> tuple[np.ndarray, list[str]]:
    """Channel positions in head coordinates (m) and the names of channels without one."""
    from mne.io.constants import FIFF
    from mne.transforms import apply_trans

    positions, missing = np.zeros((len(info["chs"]), 3)), []
    dev_head_t = info.get("dev_head_t")
    for k, ch in enumerate(info["chs"]):
        pos = np.asarray(ch["loc"][:3], dtype=np.float64)
        if not np.isfinite(pos).all() or not pos.any():
            missing.append(ch["ch_name"])
            continue
        if ch["coord_frame"] == FIFF.FIFFV_COORD_DEVICE and dev_head_t is not None:
            pos = apply_trans(dev_head_t, pos)
        positions[k] = pos
    return positions, missing


def _epochs_modality(info: Any) -> str:
    types = set(info.get_channel_types())
    if types & {"mag", "grad"}:
        return "meg"
    if "eeg" in types:
        return "eeg"
    return "other"


class EpochsSpace(ResponseSpace):
    """Space of :class:`mne.Epochs`: one voxel per (channel, time point).

    The data channels (MEG, EEG, sEEG, ECoG, DBS, fNIRS, CSD; bad channels excluded) are
    used; column ``c * n_times + t`` holds channel ``c`` at time ``t``. ``coords`` are
    ``(x, y, z, t)``: the channel position in head coordinates (m; MEG sensors moved from
    device to head coordinates with ``dev_head_t``) and the time in s, so ``d = 4``.
    Channels without positions fall back, all together, to an evenly spaced grid
    ``(channel index, 0, 0, t)`` with a warning. MEG magnetometers and gradiometers at the
    same location share a position.

    Values stay in MNE's SI units (V, T): scale or standardise them before fitting.

    Attributes
    ----------
    info : mne.Info
        Measurement info of the modelled channels.
    times : ndarray
        Time points (s).
    events, event_id
        Events of the epochs the space was made from (reused by ``inverse_transform``
        when the number of samples matches).
    """

    kind = "epochs"

    def __init__(
        self, info: Any, times: np.ndarray, events: np.ndarray, event_id: dict, **base: Any
    ) -> None:
        self.info = info
        self.times = np.asarray(times, dtype=np.float64)
        self.events = np.asarray(events, dtype=np.int64).reshape(-1, 3)
        self.event_id = {str(k): int(v) for k, v in event_id.items()}
        super().__init__(**base)

    @property
    def ch_names(self) -> list[str]:
        """Names of the modelled channels, in column order."""
        return list(self.info["ch_names"])

    def _voxel_name(self, raw_index: int) -> str:
        c, t = divmod(raw_index, len(self.times))
        return f"channel {self.ch_names[c]!r} at t = {self.times[t]:.4f} s"

    def _to_raw(self, y: Any) -> tuple[np.ndarray, bool]:
        import mne

        if not isinstance(y, mne.BaseEpochs):
            raise TypeError(f"Expected mne.Epochs; got a {type(y).__name__}.")
        missing = [c for c in self.ch_names if c not in y.ch_names]
        if missing:
            raise ValueError(
                f"These Epochs lack {len(missing)} channels of the space, e.g. {missing[:5]}. "
                "Use Epochs with the same channels (interpolate bad ones with "
                "epochs.interpolate_bads())."
            )
        sfreq = float(self.info["sfreq"])
        if not np.isclose(y.info["sfreq"], sfreq) or len(y.times) != len(self.times) or not (
            np.allclose(y.times, self.times, atol=0.5 / sfreq)
        ):
            raise ValueError(
                f"These Epochs have {len(y.times)} times from {y.times[0]:.4f} to "
                f"{y.times[-1]:.4f} s at {y.info['sfreq']:g} Hz; the space has "
                f"{len(self.times)} from {self.times[0]:.4f} to {self.times[-1]:.4f} s at "
                f"{sfreq:g} Hz. Crop and resample them the same way."
            )
        return _epochs_data(y, self.ch_names), True

    def inverse_transform(
        self, Y: Any, events: np.ndarray | None = None, event_id: dict | None = None
    ) -> Any:
        """Give ``(n_samples, n_voxels)`` values back as an :class:`mne.EpochsArray`.

        Parameters
        ----------
        Y : array-like, shape (n_samples, n_voxels)
            One value per kept (channel, time) column; left-out columns come back NaN.
        events : ndarray of int, shape (n_samples, 3), optional
            Events of the new epochs. By default, the events of the Epochs the space was
            made from when ``n_samples`` matches, else MNE's default events.
        event_id : dict, optional
            Event names and codes going with ``events``.

        Returns
        -------
        epochs : mne.EpochsArray
            Same info (channels, positions, sampling rate), times and ``tmin``; data in
            float64, equal to ``Y`` (float32) exactly.
        """
        return super().inverse_transform(Y, events=events, event_id=event_id)

    def _from_raw(
        self, Y: np.ndarray, events: np.ndarray | None = None, event_id: dict | None = None
    ) -> Any:
        import mne

        data = Y.reshape(Y.shape[0], len(self.ch_names), len(self.times)).astype(np.float64)
        if events is None and Y.shape[0] == len(self.events):
            events, event_id = self.events, self.event_id or None
        return mne.EpochsArray(
            data, self.info.copy(), events=events, tmin=float(self.times[0]),
            event_id=event_id, baseline=None, verbose=False,
        )

    def _geometry(self) -> dict[str, Any]:
        import tempfile

        import mne

        with tempfile.TemporaryDirectory() as tmp:
            fname = os.path.join(tmp, "space-info.fif")
            mne.io.write_info(fname, self.info)
            with open(fname, "rb") as fid:
                fif = np.frombuffer(fid.read(), dtype=np.uint8).copy()
        return {
            "info_fif": fif,
            "times": self.times,
            "events": self.events,
            "event_id": dict(self.event_id),
        }

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> EpochsSpace:
        import tempfile

        import mne

        with tempfile.TemporaryDirectory() as tmp:
            fname = os.path.join(tmp, "space-info.fif")
            with open(fname, "wb") as fid:
                fid.write(np.asarray(geometry["info_fif"], dtype=np.uint8).tobytes())
            info = mne.io.read_info(fname, verbose=False)
        return cls(info, np.asarray(geometry["times"]), np.asarray(geometry["events"]),
                   dict(geometry["event_id"]), **base)


def _epochs_data(epochs: Any, ch_names: list[str]) -> np.ndarray:
    """float32 ``(n_epochs, n_channels * n_times)`` of the named channels."""
    picks = [epochs.ch_names.index(c) for c in ch_names]
    empty = ValueError(
        "The Epochs object has no epochs (all were dropped?); see epochs.drop_log."
    )
    if (epochs.preload and len(epochs) == 0) or len(epochs.events) == 0:
        raise empty
    if epochs.preload:
        data = epochs.get_data(picks=picks, copy=False)
    else:
        data = epochs.get_data(picks=picks)
    if data.shape[0] == 0:
        raise empty
    _check_numeric(data, "Epochs data")
    return np.ascontiguousarray(data.reshape(data.shape[0], -1), dtype=np.float32)


def _fit_epochs(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, EpochsSpace]:
    import mne

    if mask is not None:
        raise ValueError(
            "mask is not used for Epochs: select channels and times with MNE first, e.g. "
            "epochs.copy().pick(['O1', 'O2']).crop(0.05, 0.5)."
        )
    picks = _data_picks(y.info)
    if not len(picks):
        raise ValueError(
            f"The Epochs have no good data channel (types {sorted(set(y.get_channel_types()))}"
            f", bads {y.info['bads']}); encoding models need MEG/EEG/iEEG/fNIRS channels."
        )
    info = mne.pick_info(y.info, picks)
    times = np.asarray(y.times, dtype=np.float64)
    n_channels, n_times = len(picks), len(times)
    if coords is None:
        positions, missing = _sensor_positions(info)
        if missing:
            warnings.warn(
                f"{len(missing)} of {n_channels} channels have no position (e.g. "
                f"{missing[:5]}): using an evenly spaced grid (channel index, 0, 0) for all "
                "channels. Set a montage first (epochs.set_montage) to use real positions.",
                UserWarning,
                stacklevel=3,
            )
            positions = np.zeros((n_channels, 3))
            positions[:, 0] = np.arange(n_channels)
        raw_coords = np.column_stack(
            [np.repeat(positions, n_times, axis=0), np.tile(times, n_channels)]
        )
    else:
        raw_coords = _check_coords(coords, n_channels * n_times, "channel x time point")
    Y = _epochs_data(y, info["ch_names"])
    space = EpochsSpace(
        info,
        times,
        # events only when they surely match the rows read (MNE may drop bad epochs on read)
        y.events if len(y.events) == Y.shape[0] else np.zeros((0, 3)),
        y.event_id,
        keep=np.ones(n_channels * n_times, dtype=bool),
        coords=raw_coords,
        modality=modality or _epochs_modality(info),
    )
    return space._fit(Y, True, raw_coords), space


# ----------------------------------------------------------------------------------------
# entry points


def as_responses(
    y: Any,
    mask: Any = None,
    coords: Any = None,
    *,
    modality: str | None = None,
) -> tuple[np.ndarray, ResponseSpace]:
    """Turn responses into a float32 ``(n_samples, n_voxels)`` array and their space.

    Parameters
    ----------
    y : array-like, Niimg, SurfaceImage or mne.Epochs
        - array ``(n_samples, n_voxels)`` (or ``(n_samples, *shape)``, flattened in C
          order; 1D is one voxel);
        - 4D Niimg (image or path) or list of 3D Niimgs, one volume per sample;
        - :class:`nilearn.surface.SurfaceImage` (data ``(n_vertices, n_samples)`` per
          hemisphere) or a list of them;
        - :class:`mne.Epochs` / :class:`mne.EpochsArray`, one sample per epoch.
    mask : optional
        Which voxels to model. Niimg: a 3D mask image (path or image) or a
        :class:`~nilearn.maskers.NiftiMasker` (fitted or not); ``None`` computes a mask
        with ``NiftiMasker()`` (nilearn's ``"background"`` strategy; that reads the whole
        image, so pass a mask for data larger than memory). SurfaceImage: a
        SurfaceImage of booleans on the same mesh. Array: a boolean array over the
        columns. Not used for Epochs (pick channels and crop times with MNE first).
    coords : array-like, shape (n_raw_voxels, d), optional
        Positions of the raw voxels (before dropping), overriding the ones derived from
        the container; needed for arrays, else an evenly spaced grid is used.
    modality : {"fmri", "meg", "eeg", "other"}, optional
        Overrides the modality inferred from the container (arrays: "other").

    Returns
    -------
    Y : ndarray of float32, shape (n_samples, n_voxels)
        Kept voxels only (all-NaN and constant ones are dropped with a warning). Not a
        copy when ``y`` already is a C-contiguous float32 array with nothing to drop.
    space : ResponseSpace
        :class:`ArraySpace`, :class:`VolumeSpace`, :class:`SurfaceSpace` or
        :class:`EpochsSpace`.

    Raises
    ------
    TypeError
        Non-numeric data or an unsupported container.
    ValueError
        NaN/inf in voxels that are not all-NaN, a 3D image where a 4D one is needed,
        Epochs with no epochs, shapes that do not fit together.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).normal(size=(20, 5))
    >>> Y, space = as_responses(y, coords=np.arange(5.0))
    >>> Y.dtype, Y.shape, space.coords.shape
    (dtype('float32'), (20, 5), (5, 1))
    """
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}; got {modality!r}.")
    kind = _input_kind(y)
    if kind == "volume":
        return _fit_volume(y, mask, coords, modality)
    if kind == "surface":
        return _fit_surface(y, mask, coords, modality)
    if kind == "epochs":
        return _fit_epochs(y, mask, coords, modality)
    return _fit_array(y, mask, coords, modality)


def _input_kind(y: Any) -> str:
    """"volume", "surface", "epochs" or "array" (or raise for what cannot be responses)."""
    first = y[0] if isinstance(y, (list, tuple)) and len(y) else y
    if isinstance(first, (str, os.PathLike)) and str(first).endswith((".fif", ".fif.gz")):
        raise TypeError(
            f"{str(first)!r} looks like an MNE file: read it first, e.g. "
            "mne.read_epochs(path), and pass the Epochs."
        )
    if _is_niimg(first) or isinstance(first, (str, os.PathLike)):
        return "volume"
    if _is_surface_image(first):
        return "surface"
    if _is_mne(y):
        import mne

        if isinstance(y, mne.BaseEpochs):
            return "epochs"
        raise TypeError(
            f"Responses from MNE must be Epochs (one sample per image); got a "
            f"{type(y).__name__}. Epoch the recording around the image onsets first "
            "(mne.Epochs(raw, events, ...)); for an Evoked, stack the evoked responses of "
            "each image into an mne.EpochsArray."
        )
    if isinstance(y, dict):
        raise TypeError(
            "Responses must be an array, a Niimg, a SurfaceImage or mne.Epochs; got a dict."
        )
    return "array"


_SPACES: dict[str, type[ResponseSpace]] = {
    space.kind: space for space in (ArraySpace, VolumeSpace, SurfaceSpace, EpochsSpace)
}


def space_from_dict(state: dict[str, Any]) -> ResponseSpace:
    """Rebuild a space from :meth:`ResponseSpace.to_dict` output.

    Parameters
    ----------
    state : dict
        As returned by ``to_dict``; arrays may come back as any array-like.

    Returns
    -------
    space : ResponseSpace
        Equivalent to the saved one (same coords, kept voxels and container geometry).
    """
    kind = state.get("kind")
    if kind not in _SPACES:
        raise ValueError(f"Unknown response space kind {kind!r}; known: {sorted(_SPACES)}.")
    if int(state.get("format_version", 0)) > _FORMAT_VERSION:
        raise ValueError(
            f"This space was saved by a newer afo-encoding (format "
            f"{state['format_version']}); upgrade afo-encoding to load it."
        )
    prefix = f"{kind}."
    geometry = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return _SPACES[kind]._from_geometry(
        geometry,
        keep=np.asarray(state["keep"]).astype(bool),
        coords=np.asarray(state["coords"], dtype=np.float64),
        modality=str(state["modality"]),
    )
