"""The base class of response spaces: kept columns, coordinates, modality, the round trip."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from .._logging import logger
from ._arrays import as_float32, check_finite, check_numeric, take_columns, usable_columns

MODALITIES = ("fmri", "meg", "eeg", "other")
FORMAT_VERSION = 1


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
        from .samples import unwrap_samples

        y = unwrap_samples(y)
        if isinstance(y, np.ndarray) and self.kind != "array":
            Y, owned = self._raw_array(y)
        else:
            Y, owned = self._to_raw(y)
        Y = take_columns(Y, self.keep, owned)
        check_finite(Y, self._kept_name, "Responses")
        return Y

    def inverse_transform(self, Y: Any, **kwargs: Any) -> Any:
        """Give ``(n_samples, n_voxels)`` values back in the container of the space.

        Parameters
        ----------
        Y : array-like, shape (n_samples, n_voxels)
            One value per kept voxel, e.g. predictions or scores; a 1D ``(n_voxels,)``
            array is read as one sample (with a single voxel, as one value per sample)
            and comes back without a sample axis, as nilearn's maskers give it: a 3D
            Niimg, a SurfaceImage with 1D data, an array of the sample's shape (Epochs
            keep one epoch).
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
        check_numeric(Y, "Values to inverse_transform")
        # one sample given as 1D comes back as one sample (3D Niimg, 1D array), as
        # NiftiMasker gives it
        one_sample = Y.ndim == 1 and self.n_voxels > 1
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
        out = self._from_raw(full, **kwargs)
        return self._one_sample(out) if one_sample else out

    def _one_sample(self, container: Any) -> Any:
        """``container`` of one sample without its sample axis (where the kind has one)."""
        return container

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
            "format_version": FORMAT_VERSION,
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
        check_numeric(y, "Responses")
        if y.ndim != 2 or y.shape[1] != self.n_raw_voxels:
            raise ValueError(
                f"An array given to {type(self).__name__}.transform must be (n_samples, "
                f"{self.n_raw_voxels}) in the space's raw voxel order; got shape {y.shape}."
            )
        return as_float32(y)

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
        keep, all_nan, constant = usable_columns(Y, candidates, self._voxel_name, "Responses")
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
        return take_columns(Y, keep, owned)

