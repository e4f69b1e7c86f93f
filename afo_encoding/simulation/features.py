"""Feature maps of the images: local oriented (Gabor) energy at three scales, sampled on
the grids that the voxels' population receptive fields pool."""

from __future__ import annotations

import numpy as np

N_ORIENT = 4
CYCLES_PER_IMAGE = (16, 8, 4)  # Gabor wavelengths: image_size / 16, / 8, / 4 pixels
POOL_GRID = (32, 16, 8)  # energy maps sampled on these grids before pRF pooling


def _luminance(images: np.ndarray) -> np.ndarray:
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lum /= 255.0
    return lum - lum.mean(axis=(1, 2), keepdims=True)


def energy_maps(images: np.ndarray) -> list[np.ndarray]:
    """Gabor energy at 3 scales x 4 orientations, sampled at the centres of the pooling grids.

    Each complex Gabor response is band-limited around its centre frequency, so its
    envelope (whose squared modulus is the energy) is computed on the coarse grid from the
    demodulated spectrum: cropping the spectrum around the centre frequency to the grid
    size (the Gaussian tails left out weigh below 1 %) and inverting costs a grid-sized FFT
    instead of an image-sized one.

    Returns one float32 array (n_images, 4, g, g) per scale, fine to coarse (rows = y).
    """
    from scipy import fft

    n, size = images.shape[:2]
    spectrum = fft.fft2(_luminance(images))  # axes (y, x), frequencies in cycles per image
    out = []
    for cycles, grid in zip(CYCLES_PER_IMAGE, POOL_GRID):
        grid = min(grid, size)
        sd = cycles * (1.0 / 3.0) / np.sqrt(2 * np.log(2))  # one-octave half-power bandwidth
        offsets = np.rint(np.fft.fftfreq(grid, 1.0 / grid)).astype(int)
        # cell centres, in pixel-index units: x = x0 + j * size / grid
        x0 = size / (2.0 * grid) - 0.5
        shift = np.exp(2j * np.pi * offsets * x0 / size)
        maps = np.empty((n, N_ORIENT, grid, grid), dtype=np.float32)
        for o in range(N_ORIENT):
            theta = np.pi * o / N_ORIENT
            k0 = cycles * np.array([np.cos(theta), np.sin(theta)])  # (kx, ky)
            kx, ky = np.rint(k0).astype(int)[:, None] + offsets[None]
            gain_x = np.exp(-((kx - k0[0]) ** 2) / (2 * sd**2)) * shift
            gain_y = np.exp(-((ky - k0[1]) ** 2) / (2 * sd**2)) * shift
            window = spectrum[:, (ky % size)[:, None], (kx % size)[None, :]]
            window *= (gain_y[:, None] * gain_x[None, :]).astype(np.complex64)
            response = fft.ifft2(window) * np.float32((grid / size) ** 2)
            maps[:, o] = response.real**2 + response.imag**2
        out.append(maps)
    return out
