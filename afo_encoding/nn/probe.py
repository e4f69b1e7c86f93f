"""The global branch of the ridge recipe: a linear probe's view of the whole image.

Every layer's feature map is average-pooled to a coarse grid and flattened, the layers'
global vectors appended (what :class:`~afo_encoding.encoders.LinearProbeEncoder` reads), and
the result standardised and projected onto its leading principal components. Each voxel's
head then weighs these scores next to the features sampled where its RetinaMapper looks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pooled_features(
    local_maps: Sequence[torch.Tensor],
    global_vectors: Sequence[torch.Tensor],
    pool_size: int | None = 4,
    use_global: bool = True,
) -> torch.Tensor:
    """Flat rows of a batch: every map pooled to a coarse grid, then its global vector.

    Parameters
    ----------
    local_maps : sequence of Tensor (B, C_l, h_l, w_l)
        One feature map per layer.
    global_vectors : sequence of Tensor (B, G_l)
        One global vector per layer.
    pool_size : int or None
        Each map is average-pooled (adaptively) to at most ``pool_size x pool_size``
        cells and flattened; ``None`` keeps it whole.
    use_global : bool
        Append each layer's global vector after its pooled map.

    Returns
    -------
    rows : Tensor of shape (B, n_features)
        Layers in order.
    """
    parts = []
    for layer, local in enumerate(local_maps):
        if pool_size is None:
            parts.append(local.flatten(1))
        else:
            size = (min(pool_size, local.shape[2]), min(pool_size, local.shape[3]))
            parts.append(F.adaptive_avg_pool2d(local, size).flatten(1))
        if use_global:
            parts.append(global_vectors[layer].to(local.dtype))
    return torch.cat(parts, dim=1)


class ProbeBranch(nn.Module):
    """Principal-component scores of the pooled features of an image, a fixed linear map.

    ``z = ((pooled(x) - mean) / scale) @ components.T`` with :func:`pooled_features`; the
    buffers are set by whoever fits them (:class:`~afo_encoding.encoders.TopyEncoder` fits
    them on its training images as :class:`~afo_encoding.encoders.LinearProbeEncoder`
    does). Nothing here trains.

    Parameters
    ----------
    n_features : int
        Length of the pooled rows.
    n_components : int
        Number of principal components ``k``.
    pool_size : int or None, default=4
        Grid of the pooling (see :func:`pooled_features`).
    """

    def __init__(self, n_features: int, n_components: int, pool_size: int | None = 4) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.register_buffer("components", torch.zeros(n_components, n_features))

    @property
    def n_components(self) -> int:
        """Number of scores ``k``."""
        return self.components.shape[0]

    def forward(
        self, local_maps: Sequence[torch.Tensor], global_vectors: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Scores of a batch: Tensor (B, k) in the dtype of the maps."""
        rows = pooled_features(local_maps, global_vectors, self.pool_size)
        dtype = rows.dtype
        z = (rows - self.mean.to(dtype)) / self.scale.to(dtype)
        return z @ self.components.to(dtype).T
