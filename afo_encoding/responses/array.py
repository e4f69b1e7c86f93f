"""Plain arrays ``(n_samples, *sample_shape)``: one voxel per column, in C order."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._arrays import as_float32, check_coords, check_numeric
from .base import ResponseSpace


def _grid_coords(shape: tuple[int, ...]) -> np.ndarray:
    """Evenly spaced grid: the index of each column along each axis of ``shape``."""
    if not shape:
        return np.zeros((1, 1))
    return np.indices(shape, dtype=np.float64).reshape(len(shape), -1).T



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
        return as_float32(y.reshape(y.shape[0], -1))

    def _from_raw(self, Y: np.ndarray) -> np.ndarray:
        return Y.reshape(Y.shape[0], *self.sample_shape)

    def _one_sample(self, container: np.ndarray) -> np.ndarray:
        return container[0]

    def _geometry(self) -> dict[str, Any]:
        return {"sample_shape": list(self.sample_shape)}

    @classmethod
    def _from_geometry(cls, geometry: dict[str, Any], **base: Any) -> ArraySpace:
        return cls(tuple(geometry["sample_shape"]), **base)


def _array_input(y: Any) -> np.ndarray:
    y = np.asarray(y)
    check_numeric(y, "Responses")
    if y.ndim == 0:
        raise ValueError(
            f"Responses must be an array (n_samples, n_voxels); got a scalar {y.item()!r}."
        )
    return y


def fit_array(
    y: Any, mask: Any, coords: Any, modality: str | None
) -> tuple[np.ndarray, ArraySpace]:
    """:func:`~afo_encoding.responses.as_responses` for arrays: ``(Y, space)``."""
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
        raw_coords = check_coords(coords, n_raw, "column")
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
    Y, owned = as_float32(y.reshape(y.shape[0], n_raw))
    return space._fit(Y, owned, raw_coords, candidates), space

