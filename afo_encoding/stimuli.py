"""Image inputs: validation, lazy loading, stable ids, resizing and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects: image size (height, width) and per-channel normalisation.

    Images are resized to ``size``, scaled to [0, 1], then ``(x - mean) / std``.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
