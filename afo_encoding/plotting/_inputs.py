"""What the figures read: fitted attributes of an encoder (or plain arrays), its space,
the names of its layers, images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def fitted(source: Any, name: str, subject: int) -> np.ndarray:
    """A fitted attribute of an encoder (one subject's), or ``source`` itself as an array."""
    value = getattr(source, name, source)
    if isinstance(value, list | tuple):
        if not 0 <= subject < len(value):
            raise ValueError(
                f"subject must be in [0, {len(value)}) for this encoder, got {subject}."
            )
        value = value[subject]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def space_of(source: Any, space: Any, subject: int) -> Any:
    """``space``, else the ``space_`` of the encoder ``source`` (one subject's)."""
    if space is None:
        space = getattr(source, "space_", None)
        if isinstance(space, list | tuple):
            space = space[subject]
    if space is None or not hasattr(space, "inverse_transform"):
        raise ValueError(
            "Give the ResponseSpace of the voxels (space=, from afo_encoding.as_responses) "
            "or a fitted encoder with space_."
        )
    return space


def layer_names_of(source: Any, n_layers: int, layer_names: Sequence[str] | None) -> list[str]:
    """``layer_names``, else the backbone's, else "layer 0", "layer 1"..."""
    if layer_names is None:
        backbone = getattr(source, "backbone_", None)
        layer_names = getattr(backbone, "layer_names", None)
    if layer_names is None or len(layer_names) != n_layers:
        if layer_names is not None:
            raise ValueError(
                f"layer_names must name the {n_layers} layers, got {len(layer_names)}."
            )
        return [f"layer {i}" for i in range(n_layers)]
    return [str(n) for n in layer_names]


def as_rgb(image: Any) -> np.ndarray:
    """An image as (H, W) or (H, W, C) for ``imshow``, from (H, W), (H, W, C) or (C, H, W)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"An image must be (H, W), (H, W, 3) or (3, H, W), got {image.shape}.")
    return image
