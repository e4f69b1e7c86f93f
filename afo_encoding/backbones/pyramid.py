"""A Gabor pyramid: the classic model of early visual cortex, with no learned weights."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..stimuli import InputSpec
from .base import Backbone, spec_tag

# Incremented whenever the computation changes, so old cached features are not reused.
_VERSION = 1
# 5-tap binomial low-pass of the Burt & Adelson Gaussian pyramid.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


class PyramidBackbone(Backbone):
    """Gabor pyramid: one layer per spatial scale, layer 0 the finest.

    The image is decomposed into a Gaussian pyramid (binomial blur, then subsampling by
    2). At each level, the luminance (mean of the normalised colour channels) is filtered
    by ``n_orientations`` quadrature pairs of Gabor filters of fixed wavelength (in pixels
    of that level, so the preferred spatial frequency halves from one layer to the next).
    Channels of a layer, in this order:

    - ``n_orientations`` even (cosine) responses, signed: position and polarity of edges
      and bars, what coarse scales need for shape;
    - ``n_orientations`` odd (sine) responses, signed;
    - ``n_orientations`` energies ``sqrt(even**2 + odd**2)``: phase-invariant local
      oriented contrast (complex cells);
    - the 3 normalised colour channels of the pyramid level: local luminance and colour.

    All channels are average-pooled by 2, so layer ``s`` has shape
    ``(3 * n_orientations + 3, H / 2**(s+1), W / 2**(s+1))``; the global vector of a
    layer is the average and the maximum of each channel over space.

    Parameters
    ----------
    image_size : int or tuple of int
        Input size ``(H, W)`` (an int means square); images of another size are resized
        to it. Each side must be at least ``2 ** (n_scales + 1)``. The default, 64, is the
        image size of :func:`afo_encoding.simulation.make_retinotopic_dataset`, whose
        early, mid and late areas then read exactly the scales of layers 0, 1 and 2.
    n_scales : int
        Number of layers.
    n_orientations : int
        Orientations ``k * pi / n_orientations`` of the Gabor carriers (0: vertical
        stripes, the carrier varies along x).
    wavelength : float
        Wavelength of the Gabor carriers in pixels of each pyramid level (4: the finest
        layer prefers 1/4 cycle per input pixel, half the Nyquist frequency).
    bandwidth : float
        Spatial-frequency bandwidth in octaves (sets the Gaussian envelope).

    Examples
    --------
    >>> import torch
    >>> from afo_encoding.backbones import get_backbone
    >>> bb = get_backbone("pyramid", image_size=64)
    >>> locals_, globals_ = bb(torch.zeros(2, 3, 64, 64))
    >>> [tuple(t.shape) for t in locals_]
    [(2, 15, 32, 32), (2, 15, 16, 16), (2, 15, 8, 8), (2, 15, 4, 4)]
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 64,
        n_scales: int = 4,
        n_orientations: int = 4,
        wavelength: float = 4.0,
        bandwidth: float = 1.0,
    ) -> None:
        super().__init__()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if n_scales < 1 or n_orientations < 1:
            raise ValueError(
                f"n_scales and n_orientations must be >= 1, got {n_scales} and {n_orientations}."
            )
        if min(size) < 2 ** (n_scales + 1):
            raise ValueError(
                f"image_size {size} is too small for {n_scales} scales: each side must be at "
                f"least {2 ** (n_scales + 1)} pixels."
            )
        if wavelength < 2.0 or bandwidth <= 0:
            raise ValueError(
                f"wavelength must be >= 2 pixels and bandwidth > 0, got {wavelength} and "
                f"{bandwidth}."
            )
        self.n_scales = n_scales
        self.n_orientations = n_orientations
        self.wavelength = float(wavelength)
        self.bandwidth = float(bandwidth)
        self.register_buffer("gabors", _gabor_bank(n_orientations, wavelength, bandwidth))
        self.register_buffer("blur", (_BINOMIAL[:, None] * _BINOMIAL[None, :]).expand(3, 1, 5, 5))
        spec = InputSpec(size=size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        channels = 3 * n_orientations + 3
        self.local_channels = [channels] * n_scales
        self.local_shapes = [
            (size[0] // 2 ** (s + 1), size[1] // 2 ** (s + 1)) for s in range(n_scales)
        ]
        self.global_dims = [2 * channels] * n_scales
        name = (
            f"pyramid-v{_VERSION}(scales={n_scales};orientations={n_orientations};"
            f"wavelength={self.wavelength:g};bandwidth={self.bandwidth:g};{spec_tag(spec)})"
        )
        self._finalize(name, spec, [f"scale{s}" for s in range(n_scales)])

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Gabor responses, energies and colour at each scale; see the class docstring."""
        k = self.n_orientations
        pad = self.gabors.shape[-1] // 2
        locals_, globals_ = [], []
        level = x
        for s in range(self.n_scales):
            if s:
                blurred = F.conv2d(
                    F.pad(level, (2, 2, 2, 2), mode="replicate"), self.blur, groups=3
                )
                level = blurred[:, :, ::2, ::2]
            gray = level.mean(dim=1, keepdim=True)
            resp = F.conv2d(F.pad(gray, (pad, pad, pad, pad), mode="replicate"), self.gabors)
            energy = torch.sqrt(resp[:, :k] ** 2 + resp[:, k:] ** 2 + 1e-8)
            feats = F.avg_pool2d(torch.cat([resp, energy, level], dim=1), 2)
            locals_.append(feats)
            globals_.append(torch.cat([feats.mean(dim=(2, 3)), feats.amax(dim=(2, 3))], dim=1))
        return locals_, globals_


def _gabor_bank(n_orientations: int, wavelength: float, bandwidth: float) -> torch.Tensor:
    """Even then odd Gabor filters, zero mean and unit norm: ``(2 * n_orientations, 1, k, k)``."""
    # Envelope width giving the requested bandwidth in octaves (Daugman's relation).
    sigma = (
        wavelength / math.pi * math.sqrt(math.log(2) / 2) * (2**bandwidth + 1) / (2**bandwidth - 1)
    )
    half = math.ceil(2.5 * sigma)
    coords = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    envelope = torch.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    filters = []
    for phase in (torch.cos, torch.sin):
        for k in range(n_orientations):
            theta = k * math.pi / n_orientations
            carrier = phase(
                2 * math.pi / wavelength * (xx * math.cos(theta) + yy * math.sin(theta))
            )
            g = envelope * carrier
            g = g - envelope * (g.sum() / envelope.sum())  # no response to uniform luminance
            filters.append(g / g.norm())
    return torch.stack(filters)[:, None].to(torch.float32)
