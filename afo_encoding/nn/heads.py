"""Per-voxel linear heads."""

from __future__ import annotations

import torch
from torch import nn


class VoxelHead(nn.Module):
    """One linear regression per voxel, nothing shared: ``y_n = mean_d(x_nd w_nd) + b_n``.

    The product is averaged over the ``D`` features rather than summed, as the authors do:
    with an adaptive optimiser (Adam, AdaBelief) every weight moves by about the learning
    rate per step, so a sum would change the prediction ``D`` times faster than a mean and
    the stable learning rate would depend on ``D``. Weights start as ``N(0, 1)``, so that the
    first predictions are small (about ``rms(x) / sqrt(D)``) yet every part of the model gets
    a gradient from the first step; biases start at zero (z-scored targets).

    Parameters
    ----------
    n_voxels : int
        Number of voxels (outputs).
    d_model : int, default=256
        Length ``D`` of the voxel feature vectors.

    Attributes
    ----------
    weight : Parameter of shape (n_voxels, d_model)
        Per-voxel weights (in "mean" units: ``y = x @ weight.T / D + bias``).
    bias : Parameter of shape (n_voxels,)
        Per-voxel intercepts.

    Examples
    --------
    >>> head = VoxelHead(10, 4)
    >>> head(torch.ones(2, 10, 4)).shape
    torch.Size([2, 10])
    """

    def __init__(self, n_voxels: int, d_model: int = 256) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_voxels, d_model))
        self.bias = nn.Parameter(torch.zeros(n_voxels))

    @property
    def n_voxels(self) -> int:
        """Number of voxels."""
        return self.weight.shape[0]

    def forward(
        self, x: torch.Tensor, voxel_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict from explicit voxel feature vectors.

        :class:`~afo_encoding.nn.TopyNet` does not call this: it fuses the head into the
        sampling (:func:`~afo_encoding.nn.readout.fused_readout`) to avoid the
        ``(B, n_voxels, D)`` tensor; the result is the same.

        Parameters
        ----------
        x : Tensor of shape (B, n, D)
            Feature vectors of the ``n`` voxels selected by ``voxel_index`` (all if None).
        voxel_index : LongTensor of shape (n,) or None
            Voxels whose weights to use.

        Returns
        -------
        y : Tensor of shape (B, n)
        """
        weight, bias = self.weight, self.bias
        if voxel_index is not None:
            weight, bias = weight[voxel_index], bias[voxel_index]
        return (x * weight).mean(-1) + bias

    def extra_repr(self) -> str:
        return f"n_voxels={self.weight.shape[0]}, d_model={self.weight.shape[1]}"
