"""What the voxels of each area read, under each feature model: feature maps of the images
at three scales (fine, middle, coarse), sampled on the grids that the voxels' population
receptive fields pool, and how a voxel of each area weights them.

- ``"gabor"`` (the default): local oriented energy of quadrature Gabor filters, what the
  ``"pyramid"`` backbone computes;
- ``"contrast"``: divisively normalised ON and OFF contrast energy of centre-surround
  (difference-of-Gaussians) filters, isotropic and broadband, which no channel of the
  pyramid computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

N_ORIENT = 4
CYCLES_PER_IMAGE = (16, 8, 4)  # Gabor wavelengths: image_size / 16, / 8, / 4 pixels
POOL_GRID = (32, 16, 8)  # energy maps sampled on these grids before pRF pooling
_DOG_SURROUND = 2.0  # surround sd / centre sd of the difference of Gaussians
_C50 = 0.02  # semi-saturation contrast of the normalisation (luminance units)


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


def contrast_maps(images: np.ndarray) -> list[np.ndarray]:
    """Normalised ON and OFF contrast energy at 3 scales, averaged over the pooling grids.

    At each scale the luminance is filtered by a difference of Gaussians (surround twice
    as wide as the centre) whose peak frequency is the Gabor frequency of that scale; its
    positive and negative parts, squared, are the ON and OFF energies, each divided by
    ``0.02**2`` plus the local energy (the squared response blurred by a Gaussian of one
    wavelength), then averaged over the cells of the grid.

    Returns one float32 array (n_images, 2, g, g) per scale, fine to coarse (rows = y).
    """
    from scipy import fft

    size = images.shape[1]
    spectrum = fft.fft2(_luminance(images))
    f = size * np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    k = _DOG_SURROUND
    peak = np.sqrt(2 * np.log(k**2) / (k**2 - 1))  # peak frequency / centre's frequency sd
    out = []
    for cycles, grid in zip(CYCLES_PER_IMAGE, POOL_GRID):
        sd = cycles / peak
        dog = np.exp(-(f**2) / (2 * sd**2)) - np.exp(-(f**2) / (2 * (sd / k) ** 2))
        response = fft.ifft2(spectrum * dog.astype(np.float32)).real
        energy = response**2
        blur = np.exp(-2 * (np.pi * f / cycles) ** 2)  # Gaussian of sd one wavelength
        local = fft.ifft2(fft.fft2(energy) * blur.astype(np.float32)).real
        gain = 1.0 / (_C50**2 + np.maximum(local, 0.0))
        on = np.maximum(response, 0.0) ** 2 * gain
        off = np.maximum(-response, 0.0) ** 2 * gain
        maps = np.stack([_cell_means(on, grid), _cell_means(off, grid)], axis=1)
        out.append(maps.astype(np.float32))
    return out


def _cell_means(maps: np.ndarray, grid: int) -> np.ndarray:
    """Means of (n, size, size) maps over the cells of a ``grid x grid`` partition."""
    size = maps.shape[-1]
    grid = min(grid, size)
    edges = np.rint(np.linspace(0, size, grid + 1)).astype(int)
    sums = np.add.reduceat(np.add.reduceat(maps, edges[:-1], axis=1), edges[:-1], axis=2)
    counts = np.diff(edges)
    return sums / (counts[:, None] * counts[None, :])


# --- how a voxel of each area weights the maps --------------------------------------------


def _gabor_area_maps(area: str, m: np.ndarray) -> np.ndarray:
    """The maps an area's voxels pool: the energies, plus for mid the co-occurrence of
    orthogonal orientations (geometric mean, before pooling)."""
    if area == "mid":
        return np.concatenate([m, np.sqrt(m[:, [0, 1]] * m[:, [2, 3]])], axis=1)
    return m


def _gabor_weights(area: str, prf_center: np.ndarray, n_feat: int, rng) -> np.ndarray:
    """Feature weights of early-type (radial orientation bias) or mid-type (random signed)
    voxels with these pRF centres."""
    if area == "early":
        theta_o = np.pi * np.arange(N_ORIENT) / N_ORIENT
        phi = np.arctan2(prf_center[:, 1], prf_center[:, 0])
        phi = phi + rng.normal(0.0, 0.4, size=len(prf_center))
        return 1.0 + 0.6 * np.cos(2 * (theta_o[None] - phi[:, None]))
    return 0.6 + rng.standard_normal((len(prf_center), n_feat))


def _contrast_weights(area: str, prf_center: np.ndarray, n_feat: int, rng) -> np.ndarray:
    """Positive weights of the ON and OFF energies, log-normal (sd 0.5 in log units)."""
    return np.exp(0.5 * rng.standard_normal((len(prf_center), n_feat)))


@dataclass(frozen=True)
class FeatureModel:
    """Feature maps of the images and how the voxels of each area read them.

    ``maps(images)`` gives one array (n_images, n_channels, g, g) per scale (early, mid,
    late); ``area_maps(area, maps)`` the channels an area pools; ``type_weights(area,
    prf_center, n_feat, rng)`` the weights of early- or mid-type voxels (late voxels mix
    random positive weights with the object category, whatever the model).
    """

    maps: Callable[[np.ndarray], list[np.ndarray]]
    area_maps: Callable[[str, np.ndarray], np.ndarray]
    type_weights: Callable[..., np.ndarray]
    feature_types: dict[str, str]
    label: str


FEATURE_MODELS: dict[str, FeatureModel] = {
    "gabor": FeatureModel(
        energy_maps,
        _gabor_area_maps,
        _gabor_weights,
        {"early": "oriented_energy", "mid": "texture", "late": "shape_category"},
        "Gabor energy maps",
    ),
    "contrast": FeatureModel(
        contrast_maps,
        lambda area, maps: maps,
        _contrast_weights,
        {"early": "contrast_energy", "mid": "contrast_energy", "late": "contrast_category"},
        "contrast energy maps",
    ),
}

FEATURE_TYPES: dict[str, str] = FEATURE_MODELS["gabor"].feature_types
"""What the voxels of each area read (see :func:`make_retinotopic_dataset`)."""
