"""TopyNeck readout: RetinaMapper, LayerSelector, global branch and fused bilinear sampling.

Conventions
-----------
Positions ``u = (x, y)`` are those of :func:`torch.nn.functional.grid_sample`: ``x`` runs
left to right and ``y`` top to bottom, both in ``[-1, 1]``, and ``-1``/``1`` are the outer
edges of the image (``align_corners=False``), so that a position names the same point of the
image in feature maps of any resolution (layers of a pyramid differ in size). Maps are
sampled bilinearly with border padding: in the outer half pixel of the image, beyond the
centres of the edge pixels, a point reads the edge pixels (zero padding would fade the
features to zero towards the border of the image). The planted pRF centres of
:mod:`afo_encoding.simulation` use the same convention.

Noise
-----
In training the RetinaMapper adds ``N(0, sigma)`` to every voxel's position, one draw per
voxel per forward call, shared by the images of the batch (as the authors do). With the
paper's sigma (0.01, a twelfth of a pixel of a 16 x 16 map) an independent draw per image
would reduce the gradient variance by an amount that is negligible next to the sampling of
images and voxels, while one point per voxel means that all images of the batch read the
same four pixels: this is what lets :func:`fused_readout` run as dense matrix products,
without ever forming the ``(B, n_voxels, D)`` tensor of sampled features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .heads import VoxelHead
from .positional import PositionalEncoding

# voxels whose positions and layer weights are computed at once (bounds memory at 400k voxels)
_VOXEL_CHUNK = 65536
# elements of the temporary matrices of one step of the fused readout ("cells": CPU caches;
# "sampling": the (B, D, chunk) tensors of one checkpointed chunk, on an accelerator)
_CHUNK_ELEMENTS = 2**22
_SAMPLING_CHUNK_ELEMENTS = 2**28


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast would run matrix products in on ``device_type``, or None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    except TypeError:  # torch < 2.4: per-device functions
        if device_type == "cpu":
            on = torch.is_autocast_cpu_enabled()
            return torch.get_autocast_cpu_dtype() if on else None
        on = torch.is_autocast_enabled()
        return torch.get_autocast_gpu_dtype() if on else None


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """``Linear-GELU-Linear-GELU-Linear`` with the last layer at zero (constant output)."""
    mlp = nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Linear(hidden, hidden),
        nn.GELU(),
        nn.Linear(hidden, out_features),
    )
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class RetinaMapper(nn.Module):
    """Map a voxel's positional code to a point of the image: ``u = tanh(MLP(PE(p)))``.

    The last layer starts at zero, so every voxel starts at the centre of the image. The MLP
    runs in the precision of its parameters (float32), not in autocast's: positions need
    the resolution, and it is cheap.

    Parameters
    ----------
    in_features : int
        Size of the positional code.
    hidden : int, default=128
        Width of the two hidden layers (GELU).
    sigma : float, default=0.01
        Standard deviation of the training noise added to the positions (a fixed buffer,
        not trained); see the module notes for why one draw per voxel per batch.
    frozen : bool, default=False
        The paper's FrozenRM ablation: no parameters, every voxel reads the centre of the
        image, no noise.

    Examples
    --------
    >>> mapper = RetinaMapper(12).eval()
    >>> mapper(torch.randn(3, 12)).detach()  # every voxel starts at the centre
    tensor([[0., 0.],
            [0., 0.],
            [0., 0.]])
    """

    def __init__(
        self, in_features: int, hidden: int = 128, sigma: float = 0.01, frozen: bool = False
    ) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}.")
        self.mlp = None if frozen else _mlp(in_features, hidden, 2)
        self.register_buffer("sigma", torch.tensor(float(sigma)))

    @property
    def frozen(self) -> bool:
        """Whether the mapper is the fixed centre (FrozenRM)."""
        return self.mlp is None

    def forward(self, code: torch.Tensor, sample: bool | None = None) -> torch.Tensor:
        """Positions of voxels in the image.

        Parameters
        ----------
        code : Tensor of shape (n, in_features)
            Positional codes of the voxels.
        sample : bool or None
            Add the training noise; None means ``self.training``.

        Returns
        -------
        u : Tensor of shape (n, 2)
            ``(x, y)`` in ``[-1, 1]`` (x right, y down), clamped to the image, in the
            dtype of the parameters.
        """
        if self.mlp is None:
            return code.new_zeros(code.shape[0], 2)
        with torch.autocast(code.device.type, enabled=False):
            u = torch.tanh(self.mlp(code.to(self.mlp[0].weight.dtype)))
        sample = self.training if sample is None else sample
        if sample:
            u = u + self.sigma * torch.randn_like(u)
        return u.clamp(-1.0, 1.0)


class LayerSelector(nn.Module):
    """Per-voxel mixing weights over layers: ``eta = softmax(MLP(PE(p)))``.

    The last layer starts at zero, so every voxel starts with uniform weights. The MLP runs
    in the precision of its parameters, not in autocast's.

    Parameters
    ----------
    in_features : int
        Size of the positional code.
    n_layers : int
        Number of backbone layers ``L``.
    hidden : int, default=128
        Width of the two hidden layers (GELU).
    uniform : bool, default=False
        The paper's FrozenLS ablation: no parameters, ``eta = 1 / L`` for every voxel.
    entropy_weight : float, default=3e-5
        ``lambda`` of the regulariser ``lambda * sum_l eta_l log eta_l`` (paper: 3e-5).
        Adding it to the loss raises the entropy of the mix, which keeps it from collapsing
        onto one layer; 0 is the NoRegLS ablation.
    """

    def __init__(
        self,
        in_features: int,
        n_layers: int,
        hidden: int = 128,
        uniform: bool = False,
        entropy_weight: float = 3e-5,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}.")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        self.n_layers = n_layers
        self.entropy_weight = float(entropy_weight)
        # one layer: softmax over one value is 1 whatever the MLP says
        self.mlp = None if uniform or n_layers == 1 else _mlp(in_features, hidden, n_layers)

    @property
    def uniform(self) -> bool:
        """Whether the weights are fixed at ``1 / L``."""
        return self.mlp is None

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        """Layer weights of voxels: Tensor (n, L), rows summing to 1."""
        if self.mlp is None:
            n = code.shape[0]
            return code.new_full((n, self.n_layers), 1.0 / self.n_layers)
        with torch.autocast(code.device.type, enabled=False):
            return torch.softmax(self.mlp(code.to(self.mlp[0].weight.dtype)), dim=-1)

    def regularization(self, eta: torch.Tensor) -> torch.Tensor:
        """``entropy_weight * mean_voxels(sum_l eta_l log eta_l)``, a scalar to add to the loss.

        Zero (a constant) when the weights are fixed or ``entropy_weight`` is 0.
        """
        if self.mlp is None or self.entropy_weight == 0 or eta.shape[0] == 0:
            return eta.new_zeros(())
        # not xlogy(eta, eta): its gradient with respect to the second eta is eta / eta, NaN
        # where a weight underflowed to 0 in the softmax (a voxel sure of its layer), which
        # poisoned the whole network within one step
        log_eta = eta.clamp_min(torch.finfo(eta.dtype).tiny).log()
        return self.entropy_weight * (eta * log_eta).sum(-1).mean()


class GlobalBranch(nn.Module):
    """One vector per image and layer from the layer as a whole.

    For layer ``l``: ``q_l = MLP_l([avgpool(M_l), maxpool(M_l), g_l])`` where ``M_l`` is the
    backbone's map (B, C_l, h, w) and ``g_l`` its global vector (B, G_l) (the CLS token of a
    ViT; ``G_l`` may be 0). The MLP is ``LayerNorm - Linear(D) - GELU - Linear(D)``; the input
    LayerNorm puts the pooled maps and the token on one scale. The pooled maps are those of
    the backbone, not of the adapters, as in the authors' code.

    Parameters
    ----------
    local_channels : list of int
        ``C_l`` per layer.
    global_dims : list of int
        ``G_l`` per layer.
    d_model : int, default=256
        Output width ``D``.
    """

    def __init__(
        self, local_channels: Sequence[int], global_dims: Sequence[int], d_model: int = 256
    ) -> None:
        super().__init__()
        if len(local_channels) != len(global_dims):
            raise ValueError(
                f"local_channels ({len(local_channels)} layers) and global_dims "
                f"({len(global_dims)} layers) must have one entry per layer."
            )
        self.mlps = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(2 * c + g),
                nn.Linear(2 * c + g, d_model),
                nn.GELU(),
                nn.Linear(d_model, d_model),
            )
            for c, g in zip(local_channels, global_dims)
        )

    def forward(
        self, local_maps: Sequence[torch.Tensor], global_vectors: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """Global vectors of a batch: Tensor (B, L, D)."""
        out = []
        for mlp, m, g in zip(self.mlps, local_maps, global_vectors):
            pooled = torch.cat([m.mean((2, 3)), m.amax((2, 3)), g.to(m.dtype)], dim=1)
            out.append(mlp(pooled))
        return torch.stack(out, dim=1)


def bilinear_corners(
    positions: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell and bilinear weights of points on an ``height x width`` map.

    Same arithmetic as ``grid_sample(mode="bilinear", padding_mode="border",
    align_corners=False)``: pixel ``i`` has its centre at ``(2 i + 1) / size - 1``; points
    beyond the centres of the edge pixels read the edge pixels.

    Parameters
    ----------
    positions : Tensor of shape (n, 2)
        ``(x, y)`` in ``[-1, 1]``.
    height, width : int
        Size of the map.

    Returns
    -------
    cell : LongTensor of shape (n,)
        Flat index ``row * width + col`` of the top-left pixel of the four that are read.
    weights : Tensor of shape (n, 4)
        Weights of the top-left, top-right, bottom-left and bottom-right pixels, i.e. of
        ``cell + [0, dx, dy, dx + dy]`` with ``dx = 1`` and ``dy = width`` (0 along an axis
        of size 1); differentiable with respect to ``positions``.
    """
    positions = positions.to(torch.promote_types(positions.dtype, torch.float32))
    x = ((positions[:, 0] + 1) * width - 1) / 2
    y = ((positions[:, 1] + 1) * height - 1) / 2
    x = x.clamp(0, width - 1)
    y = y.clamp(0, height - 1)
    x0 = x.detach().floor().clamp(max=max(width - 2, 0))
    y0 = y.detach().floor().clamp(max=max(height - 2, 0))
    fx, fy = x - x0, y - y0
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    cell = (y0 * width + x0).long()
    return cell, weights


def _cell_groups(cell: torch.Tensor, chunk: int) -> tuple[torch.Tensor, list[tuple[int, list]]]:
    """Voxels sorted by cell: the permutation and, per cell, its (start, stop) chunks."""
    perm = torch.argsort(cell)
    values, counts = torch.unique_consecutive(cell[perm], return_counts=True)
    groups = []
    start = 0
    for value, count in zip(values.tolist(), counts.tolist()):
        stops = list(range(start + chunk, start + count, chunk)) + [start + count]
        groups.append((value, list(zip([start, *stops[:-1]], stops))))
        start += count
    return perm, groups


class _FusedReadout(torch.autograd.Function):
    """``y[b, n] = sum_{k, l} coef[k l, n] <rows[k, l, b], weight[n]>``, cell by cell.

    ``maps`` is pixel-major, ``(P, L, B, D)``, on a grid ``width`` pixels wide and at least
    2 x 2. ``rows[k]`` are the four pixels of the voxel's cell (``k < 4``: ``cell``,
    ``cell + 1``, ``cell + width``, ``cell + width + 1``) and, when given, the global vectors
    ``glob`` (``(L, B, D)``, ``k = 4``). Voxels of one cell read the same rows for every
    image, and in this layout two horizontally adjacent pixels are one ``(2 L B, D)``
    matrix: each cell is two or three matrix products on views of the inputs (the backward
    pass: six), with no gather, no scatter and nothing of size ``B x n_voxels x D``. Voxels
    are put in cell order once on the way in and back once on the way out.
    """

    @staticmethod
    def forward(ctx, maps, glob, weight, coef, cell, width, chunk_elements):
        _, n_layers, batch, dim = maps.shape
        n_rows = coef.shape[0] // n_layers
        n_voxels = coef.shape[1]
        pair = 2 * n_layers * batch
        chunk = max(1, chunk_elements // (max(batch, dim) * n_rows * n_layers))
        perm, groups = _cell_groups(cell, chunk)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(n_voxels, device=perm.device)
        weight_s = weight.index_select(0, perm)
        coef_s = coef.index_select(1, perm)
        y_s = maps.new_empty(batch, n_voxels)
        with torch.autocast(maps.device.type, enabled=False):
            for value, chunks in groups:
                top = maps[value:value + 2].view(pair, dim)
                bottom = maps[value + width:value + width + 2].view(pair, dim)
                for start, stop in chunks:
                    w_t = weight_s[start:stop].t()
                    z = maps.new_empty(n_rows * n_layers, batch, stop - start)
                    torch.mm(top, w_t, out=z[:2 * n_layers].view(pair, -1))
                    torch.mm(bottom, w_t, out=z[2 * n_layers:4 * n_layers].view(pair, -1))
                    if glob is not None:
                        torch.mm(glob.view(pair // 2, dim), w_t, out=z[4 * n_layers:].view(
                            pair // 2, -1))
                    z.mul_(coef_s[:, None, start:stop])
                    torch.sum(z, 0, out=y_s[:, start:stop])
        ctx.save_for_backward(maps, glob, weight_s, coef_s, inverse)
        ctx.groups, ctx.width = groups, width
        return y_s.index_select(1, inverse)

    @staticmethod
    def backward(ctx, grad_y):
        maps, glob, weight_s, coef_s, inverse = ctx.saved_tensors
        need_maps, need_glob, need_weight, need_coef = ctx.needs_input_grad[:4]
        _, n_layers, batch, dim = maps.shape
        kl, n_voxels = coef_s.shape
        width, two_l = ctx.width, 2 * n_layers
        perm = torch.empty_like(inverse)
        perm[inverse] = torch.arange(n_voxels, device=inverse.device)
        grad_s = grad_y.to(maps.dtype).index_select(1, perm)
        g_maps = torch.zeros_like(maps) if need_maps else None
        g_glob = torch.zeros_like(glob) if need_glob else None
        g_weight_s = weight_s.new_empty(weight_s.shape) if need_weight else None
        g_coef_s = coef_s.new_empty(coef_s.shape) if need_coef else None
        with torch.autocast(maps.device.type, enabled=False):
            for value, chunks in ctx.groups:
                # rows k l = 0 .. 2L - 1 (top pixels), 2L .. 4L - 1 (bottom), then global
                blocks = [maps[value:value + 2].view(two_l, batch, dim),
                          maps[value + width:value + width + 2].view(two_l, batch, dim)]
                g_blocks = None
                if need_maps:
                    g_blocks = [g_maps[value:value + 2].view(two_l * batch, dim),
                                g_maps[value + width:value + width + 2].view(two_l * batch, dim)]
                for start, stop in chunks:
                    n = stop - start
                    g = grad_s[:, start:stop]
                    w = weight_s[start:stop]
                    cf = coef_s[:, start:stop]
                    if need_weight or need_coef:
                        # h[k l, n, :] = sum_b g[b, n] rows[k l, b, :]
                        h = maps.new_empty(kl, n, dim)
                        g_t = g.t()
                        for i, block in enumerate(blocks):
                            torch.matmul(g_t, block, out=h[i * two_l:(i + 1) * two_l])
                        if glob is not None:
                            torch.matmul(g_t, glob, out=h[2 * two_l:])
                        if need_coef:
                            torch.sum(h * w, -1, out=g_coef_s[:, start:stop])
                        if need_weight:
                            torch.sum(h.mul_(cf[:, :, None]), 0, out=g_weight_s[start:stop])
                    if need_maps or need_glob:
                        # t[k l, b, n] = g[b, n] coef[k l, n]
                        t = (g[None] * cf[:, None, :]).view(kl * batch, n)
                        rows_per_block = two_l * batch
                        if need_maps:
                            for i, g_block in enumerate(g_blocks):
                                g_block.addmm_(t[i * rows_per_block:(i + 1) * rows_per_block], w)
                        if need_glob:
                            g_glob.view(-1, dim).addmm_(t[2 * rows_per_block:], w)
        g_weight = g_weight_s.index_select(0, inverse) if need_weight else None
        g_coef = g_coef_s.index_select(1, inverse) if need_coef else None
        return g_maps, g_glob, g_weight, g_coef, None, None, None


def fused_readout(
    maps: Sequence[torch.Tensor],
    positions: torch.Tensor,
    weight: torch.Tensor,
    layer_weights: torch.Tensor,
    global_features: torch.Tensor | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """Sample every layer at each voxel's point, mix the layers, and apply the voxel weights.

    Computes, for every image ``b`` and voxel ``n``::

        y[b, n] = sum_l eta[n, l] * < bilinear(maps[l][b], u[n]) + g[b, l], w[n] >

    i.e. the dot product of the voxel's weights with its layer-mixed feature vector.

    Two strategies give the same result:

    - ``"cells"`` (the default on CPUs) never forms the sampled features: voxels are grouped
      by the cell of four pixels they read, and each cell is a few dense matrix products
      (see the module notes on why all images of the batch share the point of a voxel).
      Memory is ``O(B n + n D)`` beyond the inputs. It issues a few small operations per
      occupied cell, which suits a CPU but leaves an accelerator waiting on kernel launches.
    - ``"sampling"`` (the default on other devices) runs ``grid_sample`` per layer on
      chunks of voxels, accumulating the ``eta``-weighted layers into one ``(B, D, chunk)``
      tensor; under autograd each chunk is checkpointed (recomputed in the backward pass),
      so memory stays ``O(B D chunk)`` whatever the number of voxels.

    Parameters
    ----------
    maps : sequence of L Tensors of shape (B, D, h_l, w_l)
        Feature maps (the conv adapters' outputs).
    positions : Tensor of shape (n, 2)
        ``u = (x, y)`` in ``[-1, 1]``, the convention of ``grid_sample`` with
        ``align_corners=False`` and border padding (see :func:`bilinear_corners`).
    weight : Tensor of shape (n, D)
        Per-voxel weights ``w``.
    layer_weights : Tensor of shape (n, L)
        ``eta``.
    global_features : Tensor of shape (B, L, D) or None
        Per-image, per-layer vectors ``g`` added to the sampled ones; None for none.
    method : {"auto", "cells", "sampling", "gather"}, default="auto"
        Strategy; ``"auto"`` is ``"gather"`` when the voxels read few of the maps' pixels
        (four each, at most half of every map: a few neurons on large maps), else
        ``"cells"`` on a CPU and ``"sampling"`` elsewhere. ``"gather"`` indexes the four
        pixels of every voxel in every image (memory ``O(B D n)``), touching nothing else
        of the maps.

    Returns
    -------
    y : Tensor of shape (B, n)
        In the autocast dtype when autocast is on, else in the dtype of ``maps`` (the
        ``"sampling"`` strategy follows ``grid_sample``'s autocast rule: float32 on CUDA).
        Differentiable with respect to every tensor argument.
    """
    n_layers = len(maps)
    if layer_weights.shape != (positions.shape[0], n_layers):
        raise ValueError(
            f"layer_weights must be (n_voxels, L) = ({positions.shape[0]}, {n_layers}), "
            f"got {tuple(layer_weights.shape)}."
        )
    if method not in ("auto", "cells", "sampling", "gather"):
        raise ValueError(
            f"method must be 'auto', 'cells', 'sampling' or 'gather', got {method!r}."
        )
    batch, dim = maps[0].shape[:2]
    device = maps[0].device
    if method == "auto" and _few_voxels(maps, positions.shape[0]):
        method = "gather"
    if method == "sampling" or (method == "auto" and device.type != "cpu"):
        return _readout_by_sampling(maps, positions, weight, layer_weights, global_features)
    if not bool(torch.isfinite(positions).all()):
        raise ValueError(
            "Voxel positions contain NaN or inf: the RetinaMapper diverged (lower the "
            "learning rate or clip gradients)."
        )
    if method == "gather":
        return _readout_by_gather(maps, positions, weight, layer_weights, global_features)
    dtype = _autocast_dtype(device.type) or maps[0].dtype
    weight = weight.to(dtype)
    shapes: dict[tuple[int, int], list[int]] = {}
    for layer, m in enumerate(maps):
        shapes.setdefault(tuple(m.shape[2:]), []).append(layer)
    y = None
    for (height, width), layers in shapes.items():
        cell, corner_weights = bilinear_corners(positions, height, width)
        # pixel-major (h w, L_group, B, D): a pixel's vectors of all layers and images as
        # one matrix; maps one pixel wide or high get a copy of their pixels alongside so
        # that every cell is 2 x 2 (the extra pixels have zero weight)
        stacked = torch.stack([maps[i].to(dtype).permute(2, 3, 0, 1) for i in layers], 2)
        if width == 1:
            stacked = stacked.expand(height, 2, *stacked.shape[2:])
            cell = cell * 2
        if height == 1:
            stacked = stacked.expand(2, *stacked.shape[1:])
        grid_width = stacked.shape[1]
        stacked = stacked.reshape(-1, len(layers), batch, dim).contiguous()
        rows = [corner_weights]
        glob = None
        if global_features is not None:
            glob = global_features[:, layers].to(dtype).transpose(0, 1).contiguous()
            rows.append(corner_weights.new_ones(corner_weights.shape[0], 1))
        eta = layer_weights[:, layers]
        # coef[k l, n]: corner (or global) k, layer l, voxel n
        coef = (torch.cat(rows, dim=1).t()[:, None, :] * eta.t()[None]).to(dtype)
        coef = coef.reshape(coef.shape[0] * coef.shape[1], -1).contiguous()
        part = _FusedReadout.apply(stacked, glob, weight, coef, cell, grid_width,
                                   _CHUNK_ELEMENTS)
        y = part if y is None else y + part
    return y


def _few_voxels(maps: Sequence[torch.Tensor], n_voxels: int) -> bool:
    """Whether four pixels per voxel are at most half of every map's pixels.

    Measured on a 2-core CPU (70 V4 neurons, EfficientNet-Lite0 maps of 56, 28, 14 and 7
    pixels, one call per layer): gathering where ``8 n <= h w`` made the ridge recipe's
    SGD placement 1.5x faster than ``32 n <= h w``; gathering every layer (the 7 x 7 one
    too) was slower than the cells there.
    """
    return all(8 * n_voxels <= m.shape[2] * m.shape[3] for m in maps)


def _readout_by_gather(maps, positions, weight, layer_weights, global_features):
    """``fused_readout`` by indexing each voxel's four pixels: (B, n)."""
    y = None
    weight_t = weight.t()
    for layer, m in enumerate(maps):
        height, width = m.shape[2:]
        cell, corners = bilinear_corners(positions, height, width)
        dx, dy = (1 if width > 1 else 0), (width if height > 1 else 0)
        index = cell[:, None] + cell.new_tensor([0, dx, dy, dx + dy])  # (n, 4)
        values = m.flatten(2)[:, :, index.reshape(-1)].unflatten(2, index.shape)
        sampled = (values * corners.to(m.dtype)).sum(-1)  # (B, D, n)
        if global_features is not None:
            sampled = sampled + global_features[:, layer, :, None].to(sampled.dtype)
        part = (sampled * weight_t.to(sampled.dtype)).sum(1) * layer_weights[:, layer].to(
            sampled.dtype
        )
        y = part if y is None else y + part
    return y


def _sampled_chunk(positions, weight, layer_weights, global_features, *maps):
    """``fused_readout`` of a chunk of voxels through ``grid_sample``: (B, n)."""
    batch = maps[0].shape[0]
    grid = positions[None, :, None, :].expand(batch, -1, -1, -1)
    mixed = None
    for layer, m in enumerate(maps):
        sampled = F.grid_sample(m, grid.to(m.dtype), mode="bilinear", padding_mode="border",
                                align_corners=False)[..., 0]  # (B, D, n)
        if global_features is not None:
            sampled = sampled + global_features[:, layer, :, None].to(sampled.dtype)
        sampled = sampled * layer_weights[:, layer].to(sampled.dtype)
        mixed = sampled if mixed is None else mixed + sampled
    return (mixed * weight.t().to(mixed.dtype)).sum(1)


def _readout_by_sampling(maps, positions, weight, layer_weights, global_features):
    batch, dim = maps[0].shape[:2]
    chunk = max(1, _SAMPLING_CHUNK_ELEMENTS // (batch * dim * (len(maps) + 2)))
    parts = []
    for start in range(0, max(positions.shape[0], 1), chunk):
        args = (positions[start:start + chunk], weight[start:start + chunk],
                layer_weights[start:start + chunk], global_features, *maps)
        if torch.is_grad_enabled():
            parts.append(checkpoint(_sampled_chunk, *args, use_reentrant=False))
        else:
            parts.append(_sampled_chunk(*args))
    return torch.cat(parts, dim=1)



def sample_layers(maps: Sequence[torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """The feature vectors of every layer at each voxel's point, side by side.

    Bilinear sampling with the convention of :func:`fused_readout` (``grid_sample``,
    ``align_corners=False``, border padding).

    Parameters
    ----------
    maps : sequence of L Tensors of shape (B, C_l, h_l, w_l)
    positions : Tensor of shape (n, 2)
        ``u = (x, y)`` in ``[-1, 1]``.

    Returns
    -------
    features : Tensor of shape (B, n, sum_l C_l)
        Layers in order.
    """
    batch = maps[0].shape[0]
    parts = []
    for m in maps:
        grid = positions.to(m.dtype)[None, :, None, :].expand(batch, -1, -1, -1)
        sampled = F.grid_sample(m, grid, mode="bilinear", padding_mode="border",
                                align_corners=False)
        parts.append(sampled[..., 0].transpose(1, 2))
    return torch.cat(parts, dim=2)


class SubjectReadout(nn.Module):
    """The TopyNeck and the voxel heads of one subject: maps of a batch -> voxel responses.

    Holds the subject's coordinates, their positional encoding (normalised over all of
    them), the RetinaMapper, the LayerSelector and the :class:`VoxelHead`. Shared parts (the
    conv adapters, the global branch) live in :class:`~afo_encoding.nn.TopyNet`.

    Parameters
    ----------
    coords : array-like of shape (n_voxels, d)
        All voxel coordinates of the subject.
    n_layers : int
        Number of layers ``L``.
    d_model : int, default=256
        Width ``D`` of the voxel vectors.
    n_frequencies : int, default=32
        Positional-encoding frequencies per axis.
    max_frequency : float, default=100.0
        Highest positional-encoding frequency (radians over an axis' range).
    hidden : int, default=128
        Width of the RetinaMapper and LayerSelector MLPs.
    sigma : float, default=0.01
        Training noise on the positions.
    entropy_weight : float, default=3e-5
        Weight of the LayerSelector's entropy regulariser.
    freeze_retina : bool, default=False
        FrozenRM: every voxel reads the centre.
    uniform_layers : bool, default=False
        FrozenLS: ``eta = 1 / L``.
    layer_mixing : {"selector", "concat"}, default="selector"
        ``"selector"`` (the paper): the voxel's vector is ``sum_l eta_l (m_l + g_l)``, all
        layers in the same ``D`` dimensions, read by one head of width ``D``.
        ``"concat"``: the samples of every layer side by side (``layer_channels``), then
        the ``n_probe`` global scores, read by one head of width
        ``sum(layer_channels) + n_probe``; no LayerSelector (the head weighs the layers).
    layer_channels : list of int or None
        Channels of every layer's adapted map (``"concat"`` only).
    n_probe : int, default=0
        Global scores per image (``"concat"`` only; see
        :class:`~afo_encoding.nn.probe.ProbeBranch`).
    """

    def __init__(
        self,
        coords: np.ndarray,
        n_layers: int,
        d_model: int = 256,
        n_frequencies: int = 32,
        max_frequency: float = 100.0,
        hidden: int = 128,
        sigma: float = 0.01,
        entropy_weight: float = 3e-5,
        freeze_retina: bool = False,
        uniform_layers: bool = False,
        layer_mixing: str = "selector",
        layer_channels: Sequence[int] | None = None,
        n_probe: int = 0,
    ) -> None:
        super().__init__()
        if layer_mixing not in ("selector", "concat"):
            raise ValueError(
                f"layer_mixing must be 'selector' or 'concat', got {layer_mixing!r}."
            )
        self.layer_mixing = layer_mixing
        self.layer_channels = None if layer_channels is None else [int(c) for c in layer_channels]
        self.n_probe = int(n_probe)
        if layer_mixing == "concat":
            if self.layer_channels is None or len(self.layer_channels) != n_layers:
                raise ValueError(
                    f"layer_mixing='concat' needs layer_channels, one per layer ({n_layers}), "
                    f"got {layer_channels!r}."
                )
            uniform_layers = True  # the head weighs the layers
            d_model = sum(self.layer_channels) + self.n_probe
        self.encoding = PositionalEncoding(coords, n_frequencies, max_frequency)
        # the coordinates are configuration (TopyNet.config), not state: not in state_dict
        self.register_buffer(
            "coords", torch.as_tensor(np.asarray(coords), dtype=torch.float32), persistent=False
        )
        n_code = self.encoding.n_features
        self.retina_mapper = RetinaMapper(n_code, hidden, sigma, frozen=freeze_retina)
        self.layer_selector = LayerSelector(
            n_code, n_layers, hidden, uniform=uniform_layers, entropy_weight=entropy_weight
        )
        self.head = VoxelHead(self.coords.shape[0], d_model)
        self.d_model = d_model

    @property
    def n_voxels(self) -> int:
        """Number of voxels of the subject."""
        return self.coords.shape[0]

    def _voxel_index(self, voxel_index) -> torch.Tensor | None:
        if voxel_index is None:
            return None
        index = torch.as_tensor(voxel_index, device=self.coords.device)
        if index.dtype == torch.bool:
            if index.shape != (self.n_voxels,):
                raise ValueError(
                    f"A boolean voxel_index must have shape ({self.n_voxels},), got "
                    f"{tuple(index.shape)}."
                )
            return index.nonzero().squeeze(1)
        if index.is_floating_point() or index.ndim != 1:
            raise ValueError(
                "voxel_index must be a 1D integer (or boolean) index of voxels, got dtype "
                f"{index.dtype} and shape {tuple(index.shape)}."
            )
        n = self.n_voxels
        if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
            raise IndexError(
                f"voxel_index out of range for a subject with {self.n_voxels} voxels "
                f"(min {int(index.min())}, max {int(index.max())})."
            )
        return index.long()

    def positions_and_layer_weights(
        self, voxel_index: torch.Tensor | None = None, sample: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RetinaMapper points ``u`` (n, 2) and LayerSelector weights ``eta`` (n, L).

        Computed in chunks of voxels so that the positional codes of 400k voxels are never
        all in memory at once. ``sample`` adds the training noise (None: in training).
        """
        voxel_index = self._voxel_index(voxel_index)
        coords = self.coords if voxel_index is None else self.coords[voxel_index]
        us, etas = [], []
        for start in range(0, max(coords.shape[0], 1), _VOXEL_CHUNK):
            code = self.encoding(coords[start:start + _VOXEL_CHUNK])
            us.append(self.retina_mapper(code, sample=sample))
            etas.append(self.layer_selector(code))
        return torch.cat(us), torch.cat(etas)

    def forward(
        self,
        maps: Sequence[torch.Tensor],
        global_features: torch.Tensor | None = None,
        voxel_index: torch.Tensor | None = None,
        return_regularization: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict the voxels' responses to a batch.

        Parameters
        ----------
        maps : sequence of L Tensors of shape (B, D, h_l, w_l)
            Adapted feature maps.
        global_features : Tensor of shape (B, L, D) or None
            Output of the global branch, or None.
        voxel_index : LongTensor of shape (n,) or None
            Voxels to predict (all if None).
        return_regularization : bool, default=False
            Also return the LayerSelector's entropy regulariser over these voxels.

        Returns
        -------
        y : Tensor of shape (B, n), float32
        regularization : Tensor of shape (), float32
            Only with ``return_regularization``.
        """
        voxel_index = self._voxel_index(voxel_index)
        u, eta = self.positions_and_layer_weights(voxel_index)
        weight, bias = self.head.weight, self.head.bias
        if voxel_index is not None:
            weight, bias = weight[voxel_index], bias[voxel_index]
        if self.layer_mixing == "concat":
            y = self._concat_readout(maps, global_features, u, weight)
        else:
            y = fused_readout(maps, u, weight, eta, global_features)
        y = y / self.d_model + bias
        if return_regularization:
            return y, self.layer_selector.regularization(eta)
        return y

    def _concat_readout(self, maps, probe_scores, u, weight) -> torch.Tensor:
        """``sum_l <m_l(u), w_l> + <z, w_probe>`` for the layer and probe slices of ``w``."""
        ones = weight.new_ones(weight.shape[0], 1)
        y, start = None, 0
        for m in maps:
            stop = start + m.shape[1]
            part = fused_readout([m], u, weight[:, start:stop], ones)
            y = part if y is None else y + part
            start = stop
        if self.n_probe:
            if probe_scores is None:
                raise ValueError(
                    f"This readout weighs {self.n_probe} global scores but none were given."
                )
            y = y + probe_scores.to(y.dtype) @ weight[:, start:].to(y.dtype).T
        return y

    def sampled_features(
        self, maps: Sequence[torch.Tensor], voxel_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """What the head of a ``"concat"`` readout weighs, before the global scores: every
        layer sampled at each voxel's mean point (no noise), Tensor (B, n, sum C_l)."""
        voxel_index = self._voxel_index(voxel_index)
        u, _ = self.positions_and_layer_weights(voxel_index, sample=False)
        return sample_layers(maps, u)

    def retina_map(self) -> torch.Tensor:
        """Mean RetinaMapper point of every voxel: Tensor (n_voxels, 2), no noise, detached."""
        with torch.no_grad():
            return self.positions_and_layer_weights(sample=False)[0]

    def layer_weights(self) -> torch.Tensor:
        """LayerSelector weights of every voxel: Tensor (n_voxels, L), detached."""
        with torch.no_grad():
            return self.positions_and_layer_weights(sample=False)[1]
