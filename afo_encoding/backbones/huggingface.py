"""DINOv2 and other Hugging Face ``transformers`` vision models, read at their hidden states."""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..stimuli import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from .base import Backbone, evenly_spaced_layers, spec_tag, split_output, weights_fingerprint

# Architecture of the released DINOv2 checkpoints (their config.json on the Hub), so that
# pretrained=False builds the real network with no download.
_DINOV2_COMMON = {"patch_size": 14, "image_size": 518, "mlp_ratio": 4, "layerscale_value": 1.0}
DINOV2_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "dinov2-small": (
        "facebook/dinov2-small",
        {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6},
    ),
    "dinov2-base": (
        "facebook/dinov2-base",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12},
    ),
    "dinov2-large": (
        "facebook/dinov2-large",
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16},
    ),
    "dinov2-giant": (
        "facebook/dinov2-giant",
        {
            "hidden_size": 1536,
            "num_hidden_layers": 40,
            "num_attention_heads": 24,
            "use_swiglu_ffn": True,
        },
    ),
}


_HUB_OFFLINE = contextvars.ContextVar("afo_encoding_hub_offline", default=False)


@contextlib.contextmanager
def hub_offline():
    """Within this block, Hugging Face backbones are read from the local cache only (as
    with ``local_files_only=True``): :func:`afo_encoding.load` rebuilds backbones this way,
    so a model file never makes the library contact the network."""
    token = _HUB_OFFLINE.set(True)
    try:
        yield
    finally:
        _HUB_OFFLINE.reset(token)


class HuggingFaceBackbone(Backbone):
    """A ``transformers`` vision model read at some of its hidden states.

    Layers are the outputs of the model's blocks, **0-based**: layer ``i`` is
    ``hidden_states[i + 1]`` (``hidden_states[0]`` is the patch embedding). Transformer
    tokens ``(B, N, C)`` become maps ``(B, C, H / patch, W / patch)`` (16 x 16 for DINOv2
    at 224 px; the CLS and register tokens are dropped from the map); the global vector is
    the CLS token of the layer by default. Models whose hidden states are already maps
    (ConvNeXt, ResNet...) give them as they are, with average and max pooling as globals.
    Hidden states are the raw block outputs (before the model's final LayerNorm).

    Parameters
    ----------
    model : str or transformers.PreTrainedModel
        ``"dinov2-small"``, ``"dinov2-base"``, ``"dinov2-large"``, ``"dinov2-giant"``
        (the ``facebook/dinov2-*`` checkpoints), any Hugging Face model id, a local folder
        saved with ``save_pretrained``, or a model instance. For a multimodal model (CLIP,
        SigLIP) its ``vision_model`` is used.
    layers : list of int, optional
        Blocks to read, 0-based (negative counts from the end). Default: four evenly
        spaced, ending at the last block (``[2, 5, 8, 11]`` for 12 blocks, as in the
        paper; ``[5, 11, 17, 23]`` for 24; ``[9, 19, 29, 39]`` for 40).
    pretrained : bool
        Load the trained weights. ``False`` builds the same architecture with random
        weights (seeded by ``random_state``): DINOv2 configurations are built in, other
        models download only their ``config.json``.
    image_size : int or tuple of int, optional
        Input size. Default: 224 for the DINOv2 names; else the crop size (or fixed size)
        of the model's ``preprocessor_config.json``, else ``config.image_size``, else
        224. ViTs need sizes divisible by their patch size (the position embeddings are
        interpolated to any such size).
    global_pool : {"cls", "avg", "avgmax", "cls+avg"} or None
        Global vector of each layer; ``None``: the CLS token for transformers, average
        and max pooling for maps.
    cache_dir : str or path, optional
        Where downloaded files are kept (default the Hugging Face cache).
    local_files_only : bool
        Never use the network (also implied by ``HF_HUB_OFFLINE=1``).
    revision : str, optional
        Branch, tag or commit of the Hub repository.
    random_state : int
        Seed of the random weights when ``pretrained=False``.
    name : str, optional
        Identifier of the features (cache key). Default: model id or path, a fingerprint
        of the weights, the layers, ``global_pool`` and the input spec.

    Examples
    --------
    >>> from afo_encoding.backbones import get_backbone
    >>> bb = get_backbone("dinov2-small", pretrained=False)  # doctest: +SKIP
    >>> bb.local_shapes, bb.layer_names  # doctest: +SKIP
    ([(16, 16), (16, 16), (16, 16), (16, 16)], ['block2', 'block5', 'block8', 'block11'])
    """

    def __init__(
        self,
        model: str | os.PathLike | nn.Module,
        layers: Sequence[int] | None = None,
        *,
        pretrained: bool = True,
        image_size: int | tuple[int, int] | None = None,
        global_pool: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        random_state: int = 0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        local_files_only = local_files_only or _HUB_OFFLINE.get()
        hub = {"cache_dir": cache_dir, "local_files_only": local_files_only, "revision": revision}
        if isinstance(model, nn.Module):
            source = getattr(getattr(model, "config", None), "name_or_path", "")
            net = model
        else:
            source = str(model)
            net = _load_model(source, pretrained, random_state, hub)
        net = getattr(net, "vision_model", net)
        config = net.config
        self.model = net
        self.global_pool = global_pool
        self.patch_size = _as_pair(getattr(config, "patch_size", None))
        alias = source.lower() in DINOV2_MODELS
        if alias:
            mean, std, processor_size = IMAGENET_MEAN, IMAGENET_STD, (224, 224)
        elif not source:  # a model built in memory: nothing to read its preprocessing from
            mean, std, processor_size = IMAGENET_MEAN, IMAGENET_STD, None
        else:
            mean, std, processor_size = _preprocessing(source, hub)
        size = _as_pair(image_size or processor_size or getattr(config, "image_size", None) or 224)
        if self.patch_size is not None and (
            size[0] % self.patch_size[0] or size[1] % self.patch_size[1]
        ):
            raise ValueError(
                f"image_size {size} is not a multiple of the patch size {self.patch_size} of "
                f"{source or type(net).__name__}."
            )
        spec = InputSpec(size=size, mean=mean, std=std)
        n_blocks = getattr(config, "num_hidden_layers", None)
        if n_blocks is None:
            n_blocks = self._count_blocks(size)
        chosen = evenly_spaced_layers(n_blocks) if layers is None else list(layers)
        bad = [v for v in chosen if not isinstance(v, int) or not -n_blocks <= v < n_blocks]
        if bad or not chosen:
            raise ValueError(
                f"layers must be block indices in [0, {n_blocks}) (0-based, negative from "
                f"the end) of {source or type(net).__name__}, which has {n_blocks} blocks; "
                f"got {layers!r}."
            )
        self.layers = [v % n_blocks for v in chosen]
        token_model = self.patch_size is not None and hasattr(config, "hidden_size")
        if token_model:
            # ViT-like: shapes follow from the config, no need for a trial forward pass
            grid = (size[0] // self.patch_size[0], size[1] // self.patch_size[1])
            width = int(config.hidden_size)
            self.local_channels = [width] * len(self.layers)
            self.local_shapes = [grid] * len(self.layers)
            pool = global_pool or "cls"
            self.global_dims = [width * {"avgmax": 2, "cls+avg": 2}.get(pool, 1)] * len(
                self.layers
            )
        if name is None:
            source_tag = source or type(net).__name__
            if not alias and Path(source_tag).exists():
                source_tag = str(Path(source_tag).resolve())
            name = (
                f"hf:{source_tag}@{weights_fingerprint(net)}"
                f"(layers={','.join(map(str, self.layers))};global={global_pool or 'auto'};"
                f"{spec_tag(spec)})"
            )
        self._finalize(name, spec, [f"block{v}" for v in self.layers])

    def _count_blocks(self, size: tuple[int, int]) -> int:
        with torch.no_grad():
            out = self.model(pixel_values=torch.zeros(1, 3, *size), output_hidden_states=True)
        return len(out.hidden_states) - 1

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Hidden states of the chosen blocks as maps, and their global vectors."""
        hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
        grid = None
        if self.patch_size is not None:
            grid = (x.shape[2] // self.patch_size[0], x.shape[3] // self.patch_size[1])
        locals_, globals_ = [], []
        for block, layer in zip(self.layers, self.layer_names):
            local, global_ = split_output(hidden[block + 1], layer, self.global_pool, grid=grid)
            locals_.append(local)
            globals_.append(global_)
        return locals_, globals_


def _as_pair(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _load_model(source: str, pretrained: bool, random_state: int, hub: dict) -> nn.Module:
    """Load ``source`` with its weights, or build it with seeded random weights."""
    from transformers import AutoConfig, AutoModel, Dinov2Config

    model_id, dinov2_config = DINOV2_MODELS.get(source.lower(), (source, None))
    if pretrained:
        try:
            return AutoModel.from_pretrained(model_id, **hub)
        except OSError as err:
            raise OSError(
                f"Could not load {model_id!r} ({err}). Check the id or folder; offline, "
                "download it once with network access (or give its local folder); for random "
                "weights of the same architecture, pass pretrained=False."
            ) from err
    if dinov2_config is not None:
        config = Dinov2Config(**_DINOV2_COMMON, **dinov2_config)
    else:
        config = AutoConfig.from_pretrained(model_id, **hub)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        return AutoModel.from_config(config)


def _preprocessing(
    source: str, hub: dict
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[int, int] | None]:
    """Mean, std and input size from the model's ``preprocessor_config.json``.

    ImageNet mean and std and no size when the file is missing or says nothing usable.
    The size is the crop size when there is one (DINOv2: 224), else a fixed size.
    """
    from transformers.utils import cached_file

    try:
        path = cached_file(
            source,
            "preprocessor_config.json",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub,
        )
    except OSError:
        path = None
    config = json.loads(Path(path).read_text()) if path else {}
    mean, std = config.get("image_mean"), config.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    size = None
    for entry in (config.get("crop_size"), config.get("size")):
        if isinstance(entry, int):
            size = (entry, entry)
        elif isinstance(entry, dict) and {"height", "width"} <= set(entry):
            size = (int(entry["height"]), int(entry["width"]))
        if size is not None:
            break
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), size
