"""Torch modules of the encoding model: positional encoding, adapters, TopyNeck readout, heads.

:class:`TopyNet` is the whole model on top of frozen backbone features; its parts are usable
alone.
"""

from .adapters import ConvAdapter, ConvBlock, LayerNorm2d
from .heads import VoxelHead
from .positional import PositionalEncoding
from .readout import (
    GlobalBranch,
    LayerSelector,
    RetinaMapper,
    SubjectReadout,
    bilinear_corners,
    fused_readout,
)
from .topynet import TopyNet

__all__ = [
    "ConvAdapter",
    "ConvBlock",
    "GlobalBranch",
    "LayerNorm2d",
    "LayerSelector",
    "PositionalEncoding",
    "RetinaMapper",
    "SubjectReadout",
    "TopyNet",
    "VoxelHead",
    "bilinear_corners",
    "fused_readout",
]
