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
from torch import nn

from .heads import VoxelHead
from .positional import PositionalEncoding

# voxels whose positions and layer weights are computed at once (bounds memory at 400k voxels)
_VOXEL_CHUNK = 65536
# elements of the temporary matrices of one step of the fused readout
_CHUNK_ELEMENTS = 2**22


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
    runs in float32 even under autocast (positions need the resolution; it is cheap).

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
    >>> mapper(torch.randn(5, 12))
    tensor([[0., 0.],
            [0., 0.],
            [0., 0.],
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
        u : Tensor of shape (n, 2), float32
            ``(x, y)`` in ``[-1, 1]`` (x right, y down), clamped to the image.
        """
        if self.mlp is None:
            return code.new_zeros(code.shape[0], 2, dtype=torch.float32)
        with torch.autocast(code.device.type, enabled=False):
            u = torch.tanh(self.mlp(code.float()))
        sample = self.training if sample is None else sample
        if sample:
            u = u + self.sigma * torch.randn_like(u)
        return u.clamp(-1.0, 1.0)


class LayerSelector(nn.Module):
    """Per-voxel mixing weights over layers: ``eta = softmax(MLP(PE(p)))``.

    The last layer starts at zero, so every voxel starts with uniform weights. The MLP runs
    in float32 even under autocast.

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
        """Layer weights of voxels: Tensor (n, L), float32, rows summing to 1."""
        if self.mlp is None:
            n = code.shape[0]
            return code.new_full((n, self.n_layers), 1.0 / self.n_layers, dtype=torch.float32)
        with torch.autocast(code.device.type, enabled=False):
            return torch.softmax(self.mlp(code.float()), dim=-1)

    def regularization(self, eta: torch.Tensor) -> torch.Tensor:
        """``entropy_weight * mean_voxels(sum_l eta_l log eta_l)``, a scalar to add to the loss.

        Zero (a constant) when the weights are fixed or ``entropy_weight`` is 0.
        """
        if self.mlp is None or self.entropy_weight == 0 or eta.shape[0] == 0:
            return eta.new_zeros(())
        return self.entropy_weight * torch.special.xlogy(eta, eta).sum(-1).mean()


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
    """``y[b, n] = sum_{k, l} coef[n, k, l] <rows_k[b, l], weight[n]>`` grouped by cell.

    ``rows_k`` are the four pixels of the voxel's cell (``k < 4``) and, when given, the
    global vector (``k = 4``). Voxels of one cell read the same rows for every image, so
    each cell is a matrix product ``(B K L, D) @ (D, n_cell)``; the backward pass is two
    more per cell. Nothing of size ``B x n_voxels x D`` is ever formed, and only the inputs
    are saved for the backward pass.
    """

    @staticmethod
    def forward(ctx, maps, glob, weight, coef, cell, offsets, chunk_elements):
        batch, _, n_layers, dim = maps.shape
        n_voxels, n_rows, _ = coef.shape
        kl = n_rows * n_layers
        chunk = max(1, chunk_elements // (max(batch, dim) * kl))
        perm, groups = _cell_groups(cell, chunk)
        y = maps.new_empty(batch, n_voxels)
        with torch.autocast(maps.device.type, enabled=False):
            for value, chunks in groups:
                rows = _rows(maps, glob, value, offsets).view(batch * kl, dim)
                for start, stop in chunks:
                    idx = perm[start:stop]
                    z = torch.mm(rows, weight.index_select(0, idx).t())
                    cf = coef.index_select(0, idx).view(-1, kl).t()
                    y.index_copy_(1, idx, z.view(batch, kl, -1).mul_(cf).sum(1))
        ctx.save_for_backward(maps, glob, weight, coef)
        ctx.perm, ctx.groups, ctx.offsets = perm, groups, offsets
        return y

    @staticmethod
    def backward(ctx, grad_y):
        maps, glob, weight, coef = ctx.saved_tensors
        need_maps, need_glob, need_weight, need_coef = ctx.needs_input_grad[:4]
        batch, _, n_layers, dim = maps.shape
        n_voxels, n_rows, _ = coef.shape
        kl = n_rows * n_layers
        grad_y = grad_y.to(maps.dtype)
        g_maps = torch.zeros_like(maps) if need_maps else None
        g_glob = torch.zeros_like(glob) if need_glob else None
        g_weight = torch.zeros_like(weight) if need_weight else None
        g_coef = torch.zeros_like(coef) if need_coef else None
        with torch.autocast(maps.device.type, enabled=False):
            for value, chunks in ctx.groups:
                rows = _rows(maps, glob, value, ctx.offsets)
                g_rows = torch.zeros_like(rows) if need_maps or need_glob else None
                for start, stop in chunks:
                    idx = ctx.perm[start:stop]
                    g = grad_y.index_select(1, idx)
                    w = weight.index_select(0, idx)
                    cf = coef.index_select(0, idx).view(-1, kl)
                    if need_weight or need_coef:
                        # h[n, kl, :] = sum_b g[b, n] rows[b, kl, :]
                        h = torch.mm(g.t(), rows.view(batch, kl * dim)).view(-1, kl, dim)
                        if need_coef:
                            g_cf = torch.bmm(h, w.unsqueeze(2)).view(-1, n_rows, n_layers)
                            g_coef.index_copy_(0, idx, g_cf)
                        if need_weight:
                            g_weight.index_copy_(0, idx, torch.bmm(cf.unsqueeze(1), h).squeeze(1))
                    if g_rows is not None:
                        t = (g.unsqueeze(1) * cf.t().unsqueeze(0)).reshape(batch * kl, -1)
                        g_rows.view(batch * kl, dim).addmm_(t, w)
                if need_maps:
                    g_maps.index_add_(1, ctx.offsets + value, g_rows[:, :4])
                if need_glob:
                    g_glob += g_rows[:, 4]
        return g_maps, g_glob, g_weight, g_coef, None, None, None


def _rows(maps, glob, cell, offsets):
    """The four pixels of a cell, then the global vector: (B, 4 or 5, L, D)."""
    rows = maps.index_select(1, offsets + cell)
    if glob is not None:
        rows = torch.cat([rows, glob.unsqueeze(1)], dim=1)
    return rows


def fused_readout(
    maps: Sequence[torch.Tensor],
    positions: torch.Tensor,
    weight: torch.Tensor,
    layer_weights: torch.Tensor,
    global_features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample every layer at each voxel's point, mix the layers, and apply the voxel weights.

    Computes, for every image ``b`` and voxel ``n``::

        y[b, n] = sum_l eta[n, l] * < bilinear(maps[l][b], u[n]) + g[b, l], w[n] >

    i.e. the dot product of the voxel's weights with its layer-mixed feature vector, without
    forming the sampled features: memory is ``O(B n + n D)`` beyond the inputs, and the work
    is dense matrix products (see the module notes on why all images of the batch share the
    point of a voxel). Layers of equal size are processed together.

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

    Returns
    -------
    y : Tensor of shape (B, n)
        In the autocast dtype when autocast is on, else in the dtype of ``maps``.
        Differentiable with respect to every tensor argument.
    """
    n_layers = len(maps)
    if layer_weights.shape != (positions.shape[0], n_layers):
        raise ValueError(
            f"layer_weights must be (n_voxels, L) = ({positions.shape[0]}, {n_layers}), "
            f"got {tuple(layer_weights.shape)}."
        )
    batch, dim = maps[0].shape[:2]
    device = maps[0].device
    dtype = _autocast_dtype(device.type) or maps[0].dtype
    weight = weight.to(dtype)
    shapes: dict[tuple[int, int], list[int]] = {}
    for layer, m in enumerate(maps):
        shapes.setdefault(tuple(m.shape[2:]), []).append(layer)
    y = None
    for (height, width), layers in shapes.items():
        # (B, h w, L_group, D): a pixel's vectors of all layers side by side
        stacked = torch.stack([maps[i].to(dtype).permute(0, 2, 3, 1) for i in layers], dim=3)
        stacked = stacked.reshape(batch, height * width, len(layers), dim)
        cell, corner_weights = bilinear_corners(positions, height, width)
        rows = [corner_weights]
        glob = None
        if global_features is not None:
            glob = global_features[:, layers].to(dtype).contiguous()
            rows.append(corner_weights.new_ones(corner_weights.shape[0], 1))
        eta = layer_weights[:, layers]
        coef = (torch.cat(rows, dim=1).unsqueeze(2) * eta.unsqueeze(1)).to(dtype)
        dx = 1 if width > 1 else 0
        dy = width if height > 1 else 0
        offsets = torch.tensor([0, dx, dy, dx + dy], device=device)
        part = _FusedReadout.apply(stacked, glob, weight, coef, cell, offsets, _CHUNK_ELEMENTS)
        y = part if y is None else y + part
    return y


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
    ) -> None:
        super().__init__()
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
        y = fused_readout(maps, u, weight, eta, global_features) / self.d_model + bias
        if return_regularization:
            return y, self.layer_selector.regularization(eta)
        return y

    def retina_map(self) -> torch.Tensor:
        """Mean RetinaMapper point of every voxel: Tensor (n_voxels, 2), no noise, detached."""
        with torch.no_grad():
            return self.positions_and_layer_weights(sample=False)[0]

    def layer_weights(self) -> torch.Tensor:
        """LayerSelector weights of every voxel: Tensor (n_voxels, L), detached."""
        with torch.no_grad():
            return self.positions_and_layer_weights(sample=False)[1]
