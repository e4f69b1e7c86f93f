"""A fitted encoder as a backbone: its frozen backbone followed by its trained adapters.

Figure 1 of the paper: the pre-trained encoding model as a drop-in replacement for a
vision backbone. :class:`EncoderBackbone` (what :func:`get_backbone` returns for a fitted
:class:`~afo_encoding.encoders.TopyEncoder`) gives, per layer of the encoder's backbone, the
map its adapter made of it, and optionally every voxel's predicted response, so that a
:class:`~afo_encoding.encoders.LinearProbeEncoder` or another ``TopyEncoder`` reads them
like the maps of any backbone.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import torch
from sklearn.exceptions import NotFittedError

from .base import Backbone

#: name of the layer of the voxels' predicted responses
RESPONSES = "responses"


def encoder_digest(module: torch.nn.Module) -> str:
    """Digest of every value of a module's parameters and buffers (16 hex digits).

    Exact, not sampled (unlike :func:`~afo_encoding.backbones.base.weights_fingerprint`):
    two encoders fitted on different data differ in some weight, and the feature cache
    must never hand one the features of the other.
    """
    h = hashlib.blake2b(digest_size=8)
    for name, t in itertools.chain(module.named_parameters(), module.named_buffers()):
        t = t.detach().to("cpu").reshape(-1).contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class EncoderBackbone(Backbone):
    """The frozen backbone of a fitted encoder followed by its adapters, as a backbone.

    Layer ``l`` is the map the encoder's adapter ``l`` makes of its backbone's layer ``l``:
    the trained convolutional adapter (``head_solver="sgd"``, ``d_model`` channels) or the
    fixed principal-component projection (``head_solver="ridge"``, ``readout_channels``
    channels), at the backbone's resolution; its global vector is the map averaged over
    space. With ``responses=True`` a last layer, ``"responses"``, holds every voxel's
    predicted response (all subjects, in order) as a 1 x 1 map.

    Its :attr:`name`, part of every feature-cache key, holds the backbone's name and a
    digest of every adapter weight (and of the whole network with ``responses``), so two
    encoders never share cached features, and a saved and reloaded encoder finds the
    features it computed before.

    Parameters
    ----------
    encoder : TopyEncoder or AllForOneEncoder
        Fitted on images (not on precomputed features). Its network is copied: refitting
        the encoder later does not change this backbone.
    layers : list of str or int, optional
        Which layers to give (names from :attr:`layer_names` of the full backbone, or
        indices); default all of them.
    responses : bool, default=False
        Add the ``"responses"`` layer.

    Examples
    --------
    >>> from afo_encoding.backbones import get_backbone
    >>> from afo_encoding.encoders import LinearProbeEncoder
    >>> backbone = get_backbone(fitted_encoder)                       # doctest: +SKIP
    >>> probe = LinearProbeEncoder(backbone=backbone).fit(images, y)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: Any,
        layers: Sequence[str | int] | None = None,
        responses: bool = False,
    ) -> None:
        super().__init__()
        model, backbone = encoder_parts(encoder)
        self.backbone = backbone
        self.responses = bool(responses)
        self.model = copy.deepcopy(model) if self.responses else None
        all_names = [f"adapted.{n}" for n in backbone.layer_names]
        self._maps = _chosen_layers(layers, all_names, self.responses)
        self.adapters = torch.nn.ModuleList(
            copy.deepcopy(model.adapters[i]) for i in self._maps
        )
        names = [all_names[i] for i in self._maps] + ([RESPONSES] if self.responses else [])
        digest = encoder_digest(self.model if self.responses else self.adapters)
        self._finalize(
            f"encoder({type(encoder).__name__};backbone={backbone.name};weights={digest};"
            f"layers={','.join(names)})",
            backbone.input_spec,
            names,
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The adapted maps (and responses) of a batch of normalised images; see
        :meth:`Backbone.forward`."""
        locals_, globals_ = self.backbone(x)
        maps = [adapter(locals_[i]) for adapter, i in zip(self.adapters, self._maps)]
        vectors = [m.mean(dim=(2, 3)) for m in maps]
        if self.model is not None:
            encoded = self.model.encode_images((locals_, globals_))
            y = torch.cat(
                [self.model.readout(encoded, s) for s in range(self.model.n_subjects)], dim=1
            )
            maps.append(y[:, :, None, None])
            vectors.append(y)
        return maps, vectors


def encoder_parts(encoder: Any) -> tuple[Any, Backbone]:
    """The fitted network and frozen backbone of an encoder, or a clear error."""
    from ..nn import TopyNet

    name = type(encoder).__name__
    if not hasattr(encoder, "fit") or not hasattr(type(encoder), "_fitted_attribute"):
        raise TypeError(f"Expected a fitted TopyEncoder or AllForOneEncoder, got {name}.")
    try:
        model = getattr(encoder, "model_", None)
    except AttributeError:
        model = None
    if model is None:
        if getattr(encoder, type(encoder)._fitted_attribute, None) is None:
            raise NotFittedError(
                f"This {name} is not fitted: fit it on images first, then use it as a "
                "backbone or a warm start."
            )
        raise TypeError(
            f"A {name} has no adapters to serve as a backbone or a warm start: use a fitted "
            "TopyEncoder or AllForOneEncoder."
        )
    if not isinstance(model, TopyNet):
        raise TypeError(f"{name}.model_ is a {type(model).__name__}, not a TopyNet.")
    backbone = getattr(encoder, "backbone_", None)
    if backbone is None:
        raise ValueError(
            f"This {name} was fitted on precomputed features, so it has no backbone whose "
            "maps its adapters read: fit it on images."
        )
    if model.config["adapter"] == "identity":
        raise ValueError(f"This {name}'s network has no adapters (adapter='identity').")
    return model, backbone


def _chosen_layers(layers, names: list[str], responses: bool) -> list[int]:
    """Indices of the adapted maps asked for (``"responses"`` is set by its flag)."""
    if layers is None:
        return list(range(len(names)))
    if isinstance(layers, (str, int)):
        layers = [layers]
    chosen = []
    for layer in layers:
        if isinstance(layer, int) and not isinstance(layer, bool) and -len(names) <= layer < len(
            names
        ):
            chosen.append(layer % len(names))
        elif layer in names:
            chosen.append(names.index(layer))
        elif layer == RESPONSES:
            raise ValueError(
                "Ask for the predicted responses with responses=True, not in layers."
            )
        else:
            raise ValueError(
                f"Unknown layer {layer!r} of this encoder: its layers are {names} (or their "
                f"indices, 0 to {len(names) - 1})."
            )
    if not chosen and not responses:
        raise ValueError("layers is empty: choose at least one layer, or responses=True.")
    return chosen
