"""Trainable convolutional adapters between a frozen backbone layer and the readout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of every pixel of a ``(B, C, H, W)`` map.

    The statistics are taken over ``C`` alone, separately at each position, as
    :class:`torch.nn.LayerNorm` does for a token; :class:`torch.nn.GroupNorm` with one group
    would pool them over the whole map instead.

    Parameters
    ----------
    channels : int
        Number of channels ``C``.
    eps : float, default=1e-6
        Added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape (B, C, H, W) over C; same shape out."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """``skip(x) + SiLU(LayerNorm2d(conv(x)))`` with a zero-padded square convolution.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out; the skip is the identity when they are equal, else a 1x1
        convolution.
    kernel_size : int, default=5
        Odd kernel size; the padding keeps the spatial size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = LayerNorm2d(out_channels)
        self.act = nn.SiLU()
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``x`` of shape (B, C_in, H, W) -> (B, C_out, H, W)."""
        return self.skip(x) + self.act(self.norm(self.conv(x)))


class ConvAdapter(nn.Module):
    """Three zero-padded 5x5 convolution blocks from a backbone layer to ``d_model`` channels.

    The paper's adapter (section 4.6): three convolutions with skip connections and
    LayerNorm, the last one reducing to ``D``. The input is first normalised over channels
    (a LayerNorm2d), so that backbones whose activations differ in scale by orders of
    magnitude (a Gabor pyramid, the outlier channels of ViTs) start alike.

    Parameters
    ----------
    in_channels : int
        Channels of the backbone layer.
    out_channels : int, default=256
        ``D``, the width of the voxel feature vectors.
    width : int or None, default=None
        Channels of the first two blocks; ``None`` keeps ``in_channels`` (the paper). A
        smaller width makes the adapter much cheaper for wide backbones on a CPU.
    kernel_size : int, default=5
        Kernel size of the three convolutions.

    Examples
    --------
    >>> adapter = ConvAdapter(32, 16)
    >>> adapter(torch.zeros(2, 32, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        width: int | None = None,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        width = in_channels if width is None else width
        self.input_norm = LayerNorm2d(in_channels)
        self.blocks = nn.Sequential(
            ConvBlock(in_channels, width, kernel_size),
            ConvBlock(width, width, kernel_size),
            ConvBlock(width, out_channels, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (B, C_in, h, w) to (B, D, h, w) (channels-last memory)."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self.blocks(self.input_norm(x))


class LinearAdapter(nn.Module):
    """A fixed linear map of a backbone layer's channels: standardise, then project.

    ``out = P ((x - mean) / scale)`` at every pixel, i.e. a 1x1 convolution whose weights
    are buffers, not parameters: nothing here trains. :meth:`from_maps` sets them from
    sample feature maps so that the output channels are the layer's leading principal
    components (in units of standard deviations), the whole layer standardised when it has
    no more channels than asked for. The readout of the ridge recipe of
    :class:`~afo_encoding.encoders.TopyEncoder` samples these maps.

    Parameters
    ----------
    in_channels : int
        Channels ``C`` of the backbone layer.
    out_channels : int
        Channels kept, ``k <= C``.

    Examples
    --------
    >>> adapter = LinearAdapter.from_maps(torch.randn(10, 32, 8, 8), 4)
    >>> adapter(torch.randn(2, 32, 8, 8)).shape
    torch.Size([2, 4, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if not 1 <= out_channels <= in_channels:
            raise ValueError(
                f"out_channels must be in [1, in_channels={in_channels}], got {out_channels}."
            )
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("projection", torch.eye(out_channels, in_channels))

    @classmethod
    def from_maps(cls, maps: torch.Tensor, out_channels: int) -> LinearAdapter:
        """An adapter whose projection is fitted to sample maps ``(n, C, h, w)``.

        Every channel is standardised over all images and pixels; when ``out_channels <
        C`` the standardised channels are rotated onto their ``out_channels`` principal
        axes (the PCA of the pixels' channel vectors), else kept as they are.
        """
        n_channels = maps.shape[1]
        k = min(int(out_channels), n_channels)
        pixels = maps.detach().transpose(0, 1).reshape(n_channels, -1).to(torch.float64)
        mean = pixels.mean(1)
        scale = pixels.std(1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        projection = torch.diag(1 / scale)
        if k < n_channels:
            z = (pixels - mean[:, None]) / scale[:, None]
            _, vectors = torch.linalg.eigh(z @ z.T / z.shape[1])
            projection = vectors[:, -k:].flip(1).T / scale[None]
        adapter = cls(n_channels, k)
        adapter.mean.copy_(mean)
        adapter.projection.copy_(projection)
        return adapter

    @property
    def out_channels(self) -> int:
        """Number of output channels ``k``."""
        return self.projection.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` of shape (B, C, h, w) to (B, k, h, w)."""
        weight = self.projection.to(x.dtype)
        bias = -(weight @ self.mean.to(x.dtype))
        return F.conv2d(x, weight[:, :, None, None], bias)
