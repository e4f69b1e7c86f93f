"""Sinusoidal positional encoding of voxel coordinates.

The encoding normalises every axis with the low and high of the *whole* coordinate set of a
subject, taken once at construction and kept as buffers. The original implementation took
them from whatever subset it was given, so that the code of a voxel changed with the voxels
it was batched with (ROI models, voxel subsampling); here a voxel's code is a function of its
coordinates alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class PositionalEncoding(nn.Module):
    """Encode coordinates of any dimension with sines and cosines at log-spaced frequencies.

    Each axis ``i`` is mapped to ``t_i = (p_i - low_i) / (high_i - low_i)``, in ``[0, 1]`` for
    the coordinates seen at construction, then encoded as ``sin(f_k t_i)`` and
    ``cos(f_k t_i)`` for ``n_frequencies`` angular frequencies ``f_k`` spaced
    logarithmically from 1 to ``max_frequency`` (radians over the whole range of the axis):
    the slowest one turns by one radian across the brain, the fastest resolves about
    ``range / max_frequency``. An axis with a single value (zero range) encodes to
    ``sin 0 = 0`` and ``cos 0 = 1``.

    Parameters
    ----------
    coords : array-like of shape (n_voxels, d)
        The whole coordinate set of one subject (``d = 3`` for space, ``4`` for space and
        time). Its per-axis low and high are fixed here, as buffers.
    n_frequencies : int, default=32
        Frequencies per axis.
    max_frequency : float, default=100.0
        Highest angular frequency, in radians per axis range (the authors' ``max_steps``
        times their fastest frequency).

    Attributes
    ----------
    low : Tensor of shape (d,)
        Per-axis minimum of ``coords``.
    span : Tensor of shape (d,)
        Per-axis ``high - low``; 1 where the axis is constant.
    frequencies : Tensor of shape (n_frequencies,)
        Angular frequencies.
    n_features : int
        Size of the code, ``2 * d * n_frequencies``.

    Examples
    --------
    >>> import numpy as np
    >>> coords = np.random.default_rng(0).normal(size=(100, 3))
    >>> pe = PositionalEncoding(coords, n_frequencies=8)
    >>> pe(torch.as_tensor(coords[:5])).shape
    torch.Size([5, 48])
    """

    def __init__(
        self, coords: np.ndarray, n_frequencies: int = 32, max_frequency: float = 100.0
    ) -> None:
        super().__init__()
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[0] == 0 or coords.shape[1] == 0:
            raise ValueError(
                "coords must be a non-empty 2D array (n_voxels, d), got shape "
                f"{coords.shape}."
            )
        if not np.all(np.isfinite(coords)):
            bad = int((~np.isfinite(coords)).any(axis=1).sum())
            raise ValueError(f"coords contain NaN or inf values (in {bad} voxels).")
        if n_frequencies < 1:
            raise ValueError(f"n_frequencies must be >= 1, got {n_frequencies}.")
        if max_frequency < 1:
            raise ValueError(f"max_frequency must be >= 1, got {max_frequency}.")
        low = coords.min(axis=0)
        span = coords.max(axis=0) - low
        span[span == 0] = 1.0
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(span, dtype=torch.float32))
        freqs = torch.logspace(0.0, math.log10(max_frequency), n_frequencies)
        self.register_buffer("frequencies", freqs.float())
        self.n_dims = coords.shape[1]
        self.n_features = 2 * self.n_dims * n_frequencies

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coordinates.

        Parameters
        ----------
        coords : Tensor of shape (n, d)
            Any coordinates in the space of the construction set (a subset, or new points).

        Returns
        -------
        code : Tensor of shape (n, 2 * d * n_frequencies)
            float32 (float64 for float64 coordinates).
            ``[sin(f_k t_i) for i, k]`` followed by the cosines, axis-major.
        """
        if coords.ndim != 2 or coords.shape[1] != self.n_dims:
            raise ValueError(
                f"Expected coordinates of shape (n, {self.n_dims}), got {tuple(coords.shape)}."
            )
        # at least float32 whatever the ambient precision: the phases need the resolution
        dtype = torch.promote_types(coords.dtype, torch.float32)
        t = (coords.to(dtype) - self.low.to(dtype)) / self.span.to(dtype)
        angles = (t[:, :, None] * self.frequencies.to(dtype)).flatten(1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def extra_repr(self) -> str:
        return f"d={self.n_dims}, n_frequencies={self.frequencies.numel()}"
