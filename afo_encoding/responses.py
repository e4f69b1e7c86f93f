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

import warnings
from typing import Any, ClassVar

import numpy as np

from ._logging import logger

MODALITIES = ("fmri", "meg", "eeg", "other")
_FORMAT_VERSION = 1
# Elements per block when scanning responses for NaN/inf/constant columns (bounds memory).
_SCAN_ELEMENTS = 1 << 22


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
    Y: np.ndarray, sel: Any, block: np.ndarray, bad: np.ndarray, name, what: str
) -> ValueError:
    rows, cols = np.nonzero(bad)
    row, col = int(rows[0]), int(cols[0])
    raw = (np.arange(Y.shape[1])[sel])[col]
    value = block[row, col]
    return ValueError(
        f"{what} contain {int(bad.sum())} non-finite values in this block, e.g. {value} at "
        f"sample {row}, {name(int(raw))}. Only voxels that are NaN in every sample can be "
        "left out (they are dropped); impute or drop the samples with missing values."
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
            raise _nonfinite_error(Y, sel, block, bad, name, what)
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
            raise _nonfinite_error(Y, sel, block, bad, name_of_column, what)


def _take_columns(Y: np.ndarray, keep: np.ndarray, owned: bool) -> np.ndarray:
    """``Y[:, keep]``; when ``Y`` is ours, compacted in place to avoid a second full copy."""
    if keep.all():
        return Y
    if not owned:
        return Y[:, keep]
    n, k = Y.shape[0], int(keep.sum())
    flat = Y.reshape(-1)
    # row i moves to [i*k, (i+1)*k), which never overlaps a row not yet moved
    for i in range(n):
        flat[i * k : (i + 1) * k] = Y[i, keep]
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
            array is read as one sample.
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
            Y = Y[None]
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
            Flat dict; every value is a str, int, float, bool, None, a list of those, or a
            numeric :class:`numpy.ndarray` (no object arrays), so a save format can put the
            arrays in safetensors and the rest in JSON. :func:`space_from_dict` rebuilds
            the space from it.
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
        return f"column {raw_index} (index {np.unravel_index(raw_index, self.sample_shape)})"

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
        with ``NiftiMasker()`` (nilearn's ``"background"`` strategy). SurfaceImage: a
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
    if kind == "array":
        return _fit_array(y, mask, coords, modality)
    raise TypeError(f"Unsupported responses of type {type(y).__name__}.")


def _input_kind(y: Any) -> str:
    return "array"


_SPACES: dict[str, type[ResponseSpace]] = {"array": ArraySpace}


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
