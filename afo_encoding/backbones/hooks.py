"""Any torch module as a backbone, read through forward hooks on named layers."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn

from ..stimuli import InputSpec
from .base import Backbone, spec_tag, split_output, weights_fingerprint


class _StopForward(Exception):
    """Raised by the hook of the last layer needed: the rest of the network is skipped."""


class HookBackbone(Backbone):
    """A user's ``torch.nn.Module`` read at some of its layers through forward hooks.

    Each layer's output becomes a local map and a global vector:

    - a feature map ``(B, C, h, w)`` is used as is; its global vector is the average and
      maximum over space (``global_pool="avgmax"``) or the average (``"avg"``);
    - tokens ``(B, N, C)`` of a vision transformer are reshaped to a square grid of
      patches; prefix tokens (CLS, registers) are dropped from the map and the first one
      is the global vector by default. ``N`` must be a square, or one plus a square (a CLS
      token), unless ``n_prefix_tokens`` says otherwise; other shapes are an error that
      names the layer;
    - a vector ``(B, C)`` is read as a 1x1 map (only its global part is informative).

    The forward pass stops after the last layer needed. The module is frozen in place
    (``requires_grad_(False)``, eval mode).

    Parameters
    ----------
    module : torch.nn.Module
        Takes a batch of normalised images ``(B, 3, H, W)``.
    layers : list of str
        Names from ``module.named_modules()``, in the order of the outputs.
    input_spec : InputSpec, optional
        Input size and normalisation (default 224 x 224, ImageNet mean and std).
    name : str, optional
        Identifier of the features, part of every cache key. By default made of the
        class name, a fingerprint of the weights (:func:`weights_fingerprint`), the layers,
        ``global_pool`` and the input spec. **Give a name** when the module has no
        weights, or when its code changed but not its weights, or the cache will return
        the features of the old code.
    global_pool : {"cls", "avg", "avgmax", "cls+avg"} or None
        Global vector of each layer; ``None``: CLS token for tokens with a prefix, else
        ``"avgmax"``.
    n_prefix_tokens : int, optional
        Tokens before the patch grid in token outputs (e.g. 1 + 4 registers).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from afo_encoding.backbones import get_backbone
    >>> from afo_encoding.stimuli import InputSpec
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
    >>> bb = get_backbone(net, layers=["1", "2"], input_spec=InputSpec(size=(64, 64)))
    >>> bb.local_channels, bb.local_shapes
    ([8, 16], [(31, 31), (15, 15)])
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[str],
        *,
        input_spec: InputSpec | None = None,
        name: str | None = None,
        global_pool: str | None = None,
        n_prefix_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty list of module names, got {layers!r}.")
        modules = dict(module.named_modules())
        for layer in layers:
            if layer not in modules:
                close = difflib.get_close_matches(layer, list(modules), n=5)
                hint = f" Close names: {close}." if close else ""
                raise ValueError(
                    f"{type(module).__name__} has no submodule named {layer!r}.{hint} "
                    "See dict(module.named_modules()) for the names."
                )
        self.module = module
        self.global_pool = global_pool
        self.n_prefix_tokens = n_prefix_tokens
        self._layers = list(layers)
        self._captured: dict[str, torch.Tensor] = {}
        self._active = False
        for layer in self._layers:
            modules[layer].register_forward_hook(self._hook(layer))
        spec = input_spec or InputSpec()
        if name is None:
            fingerprint = weights_fingerprint(module)
            if fingerprint is None:
                raise ValueError(
                    f"{type(module).__name__} has no parameters or buffers to identify its "
                    "features by: pass name='...' (a name unique to what it computes)."
                )
            name = (
                f"module:{type(module).__qualname__}@{fingerprint}(layers={','.join(layers)};"
                f"global={global_pool or 'auto'};{spec_tag(spec)})"
            )
        self._finalize(name, spec, self._layers)

    def _hook(self, layer: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if not self._active:
                return
            if isinstance(output, tuple | list):
                output = output[0]
            self._captured.setdefault(layer, output)
            if len(self._captured) == len(self._layers):
                raise _StopForward

        return hook

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the module until every layer has produced its output."""
        self._captured = {}
        self._active = True
        try:
            self.module(x)
        except _StopForward:
            pass
        finally:
            self._active = False
        captured, self._captured = self._captured, {}
        missing = [layer for layer in self._layers if layer not in captured]
        if missing:
            raise RuntimeError(
                f"Layers {missing} of {type(self.module).__name__} did not run in its forward "
                "pass; choose layers that it calls."
            )
        locals_, globals_ = [], []
        for layer in self._layers:
            output = captured[layer]
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {layer!r} returns {type(output).__name__}, not a tensor; choose a "
                    "layer that returns a tensor."
                )
            local, global_ = split_output(
                output, layer, self.global_pool, n_prefix_tokens=self.n_prefix_tokens
            )
            locals_.append(local)
            globals_.append(global_)
        return locals_, globals_
