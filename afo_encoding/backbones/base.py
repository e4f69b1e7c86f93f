"""The frozen backbone interface, and helpers shared by every backbone.

A backbone maps normalised images ``(B, 3, H, W)`` to ``L`` local feature maps
``(B, C_l, h_l, w_l)`` and ``L`` global vectors ``(B, G_l)``. It is frozen (no parameter
takes a gradient, it always stays in eval mode), which is what makes its features
cacheable: :attr:`Backbone.name` identifies the features it computes and is part of every
cache key.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
import torch
from torch import nn

from ..stimuli import InputSpec

GLOBAL_POOLS = ("cls", "avg", "avgmax", "cls+avg")


class Backbone(nn.Module):
    """Base class of frozen feature extractors.

    Subclasses build their modules, then call :meth:`_finalize`, which freezes them and
    records the output shapes. ``forward`` must return ``(locals, globals)``.

    Attributes
    ----------
    name : str
        Stable identifier of the features: model, weights, layers, input size and
        normalisation. Two backbones with the same name must compute the same features.
    input_spec : InputSpec
        Image size ``(H, W)`` and normalisation the backbone expects.
    layer_names : list of str
        One name per layer, in the order of the outputs.
    local_channels : list of int
        ``C_l`` of each local map.
    local_shapes : list of tuple of int
        ``(h_l, w_l)`` of each local map at ``input_spec.size``.
    global_dims : list of int
        ``G_l`` of each global vector.
    """

    name: str
    input_spec: InputSpec
    layer_names: list[str]
    local_channels: list[int]
    local_shapes: list[tuple[int, int]]
    global_dims: list[int]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Compute the features of a batch of normalised images.

        Parameters
        ----------
        x : Tensor, shape (B, 3, H, W)
            Images resized to ``input_spec.size`` and normalised with its mean and std
            (what :meth:`afo_encoding.stimuli.StimulusSet.to_tensor` returns).

        Returns
        -------
        locals : list of Tensor, shape (B, C_l, h_l, w_l)
            One feature map per layer.
        globals : list of Tensor, shape (B, G_l)
            One global vector per layer.
        """
        raise NotImplementedError

    @property
    def n_layers(self) -> int:
        """Number of layers ``L``."""
        return len(self.layer_names)

    def train(self, mode: bool = True) -> Backbone:
        """Stay in eval mode whatever ``mode`` says: a backbone is frozen."""
        return super().train(False)

    def _finalize(self, name: str, input_spec: InputSpec, layer_names: list[str]) -> None:
        """Freeze the module and record name, input spec, layers and output shapes.

        Output shapes come from one forward pass of a blank image at ``input_spec.size``
        unless the subclass set ``local_channels``, ``local_shapes`` and ``global_dims``
        before calling this.
        """
        self.requires_grad_(False)
        self.eval()
        self.name = name
        self.input_spec = input_spec
        self.layer_names = list(layer_names)
        if not all(hasattr(self, a) for a in ("local_channels", "local_shapes", "global_dims")):
            device = next(
                itertools.chain(self.parameters(), self.buffers()), torch.empty(0)
            ).device
            with torch.no_grad():
                locals_, globals_ = self(torch.zeros((1, 3, *input_spec.size), device=device))
            self.local_channels = [int(t.shape[1]) for t in locals_]
            self.local_shapes = [(int(t.shape[2]), int(t.shape[3])) for t in locals_]
            self.global_dims = [int(t.shape[1]) for t in globals_]
        if not len(self.local_channels) == len(self.global_dims) == len(self.layer_names):
            raise RuntimeError(
                f"Backbone {name!r} returned {len(self.local_channels)} local maps and "
                f"{len(self.global_dims)} global vectors for {len(self.layer_names)} layers."
            )

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def spec_tag(spec: InputSpec) -> str:
    """Short text of an input spec for backbone names: size, mean and std."""
    fmt = ",".join
    return (
        f"size={spec.size[0]}x{spec.size[1]};"
        f"mean={fmt(f'{v:.4g}' for v in spec.mean)};std={fmt(f'{v:.4g}' for v in spec.std)}"
    )


def weights_fingerprint(module: nn.Module) -> str | None:
    """Fingerprint of the parameters and buffers of a module (12 hex digits).

    Hashes, for every tensor, its name, shape and dtype, an evenly strided sample of up to
    4096 of its values and the float64 sum of all of them. Cheap even for a billion
    parameters, and any change of the weights (fine-tuning, another checkpoint) changes
    it. Returns ``None`` for a module without parameters or buffers.
    """
    h = hashlib.sha1()
    n_tensors = 0
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        t = tensor.detach()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        if t.numel():
            flat = t.reshape(-1).cpu()
            if flat.dtype == torch.bfloat16:
                flat = flat.float()
            values = flat.numpy()
            step = max(1, values.size // 4096)
            h.update(values[::step][:4096].astype(np.float64).tobytes())
            # numpy's single-threaded pairwise sum: the same bits whatever the thread count
            h.update(np.float64(values.sum(dtype=np.float64)).tobytes())
        n_tensors += 1
    return h.hexdigest()[:12] if n_tensors else None


def pool_map(x: torch.Tensor, how: str) -> torch.Tensor:
    """Global vector of a feature map ``(B, C, h, w)``: ``"avg"`` or ``"avgmax"`` pooling."""
    if how == "avg":
        return x.mean(dim=(2, 3))
    if how == "avgmax":
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
    raise ValueError(
        f"Feature maps have no CLS token: use global_pool 'avg' or 'avgmax', not {how!r}."
    )


def split_output(
    output: torch.Tensor,
    layer: str,
    global_pool: str | None,
    grid: tuple[int, int] | None = None,
    n_prefix_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn one layer's output into a local map and a global vector.

    Parameters
    ----------
    output : Tensor
        ``(B, C, h, w)`` feature map, ``(B, N, C)`` tokens, or ``(B, C)`` vector (read as a
        1x1 map).
    layer : str
        Name of the layer, for error messages.
    global_pool : {"cls", "avg", "avgmax", "cls+avg"} or None
        How to make the global vector. ``None``: the first token (CLS) when tokens have a
        prefix, else average and max pooling of the map.
    grid : tuple of int, optional
        ``(h, w)`` patch grid of token outputs; the tokens before the last ``h * w`` are
        prefix tokens (CLS, registers).
    n_prefix_tokens : int, optional
        Number of prefix tokens when ``grid`` is unknown. By default inferred: ``N`` must
        be a square (no prefix) or one plus a square (a CLS token).

    Returns
    -------
    local : Tensor, shape (B, C, h, w)
    global_ : Tensor, shape (B, G)
    """
    if global_pool is not None and global_pool not in GLOBAL_POOLS:
        raise ValueError(
            f"global_pool must be one of {GLOBAL_POOLS} or None, got {global_pool!r}."
        )
    if output.ndim == 2:
        output = output[:, :, None, None]
    if output.ndim == 4:
        return output, pool_map(output, global_pool or "avgmax")
    if output.ndim != 3:
        raise ValueError(
            f"Layer {layer!r} gives an output of shape {tuple(output.shape)}; expected feature "
            "maps (B, C, h, w), tokens (B, N, C) or vectors (B, C)."
        )
    n_tokens = output.shape[1]
    if grid is None:
        if n_prefix_tokens is None:
            n_prefix_tokens = next(
                (
                    p
                    for p in (0, 1)
                    if n_tokens > p and math.isqrt(n_tokens - p) ** 2 == n_tokens - p
                ),
                None,
            )
            if n_prefix_tokens is None:
                raise ValueError(
                    f"Layer {layer!r} gives tokens of shape {tuple(output.shape)}: {n_tokens} "
                    "tokens is neither a square grid of patches nor one CLS token plus a "
                    "square grid. Pass n_prefix_tokens= (e.g. 1 + number of register tokens) "
                    "or choose another layer."
                )
        side = math.isqrt(n_tokens - n_prefix_tokens)
        if side * side != n_tokens - n_prefix_tokens:
            raise ValueError(
                f"Layer {layer!r} gives tokens of shape {tuple(output.shape)}: after "
                f"{n_prefix_tokens} prefix tokens, {n_tokens - n_prefix_tokens} patches do not "
                "make a square grid."
            )
        grid = (side, side)
    n_prefix = n_tokens - grid[0] * grid[1]
    if n_prefix < 0:
        raise ValueError(
            f"Layer {layer!r} gives {n_tokens} tokens, fewer than the {grid[0]}x{grid[1]} "
            "patch grid of the input."
        )
    patches = output[:, n_prefix:]
    local = patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], *grid)
    how = global_pool or ("cls" if n_prefix else "avgmax")
    if how in ("cls", "cls+avg") and not n_prefix:
        raise ValueError(
            f"Layer {layer!r} has no CLS token (tokens of shape {tuple(output.shape)}); use "
            "global_pool='avg' or 'avgmax'."
        )
    if how == "cls":
        return local, output[:, 0]
    if how == "cls+avg":
        return local, torch.cat([output[:, 0], patches.mean(dim=1)], dim=1)
    return local, pool_map(local, how)


def evenly_spaced_layers(n_blocks: int, n_layers: int = 4) -> list[int]:
    """``n_layers`` block indices (0-based) evenly spaced, ending at the last block.

    ``evenly_spaced_layers(12)`` is ``[2, 5, 8, 11]`` (the paper's DINOv2 ViT-B/14 layers);
    24 blocks give ``[5, 11, 17, 23]``; fewer blocks than ``n_layers`` give all of them.
    """
    if n_blocks <= n_layers:
        return list(range(n_blocks))
    return [int((k + 1) * n_blocks / n_layers + 0.5) - 1 for k in range(n_layers)]
