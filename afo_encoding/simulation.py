"""Synthetic brains with known ground truth, for tests, examples and the ``demo`` command.

:func:`make_retinotopic_dataset` draws procedural images, places voxels in the occipital
gray matter of the MNI152 template that ships with nilearn, gives each voxel a population
receptive field (pRF) from a smooth retinotopic map and a feature type from its visual
area, and returns the responses as an fMRI volume, or as EEG / MEG epochs through a
documented forward model, together with everything that was planted.
"""

from __future__ import annotations

import functools
import numbers
import time
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.utils import Bunch

from ._logging import logger, use_log_level

__all__ = ["AREAS", "CATEGORIES", "FEATURE_TYPES", "make_retinotopic_dataset"]

AREAS: tuple[str, ...] = ("early", "mid", "late")
"""Visual areas, posterior to anterior (think V1-V2, V3-V4, lateral occipital)."""

FEATURE_TYPES: dict[str, str] = {
    "early": "oriented_energy",
    "mid": "texture",
    "late": "shape_category",
}
"""What the voxels of each area read (see :func:`make_retinotopic_dataset`)."""

CATEGORIES: tuple[str, ...] = ("disc", "square", "triangle", "cross", "star", "ring")
"""Object categories of the procedural images."""

# --- generative constants (documented in make_retinotopic_dataset) -----------------------
_AREA_FRACTIONS = (0.40, 0.35, 0.25)  # share of each hemisphere's voxels, posterior first
_ECC_MAX = 0.9  # largest pRF eccentricity, in grid units (image half-width = 1)
_MAGNIFICATION = 1.5  # ecc = ECC_MAX * (exp(k t) - 1) / (exp(k) - 1): more cortex for the fovea
_PRF_SIZE = {"early": (0.05, 0.12), "mid": (0.10, 0.30), "late": (0.35, 0.60)}  # a + b * ecc
_AREA_SNR_GAIN = {"early": 1.0, "mid": 0.8, "late": 0.6}
_DEAD_FRACTION = 0.1  # voxels whose signal is nearly absent (ncsnr below 0.1 * snr)
_N_ORIENT = 4
_CYCLES_PER_IMAGE = (16, 8, 4)  # Gabor wavelengths: image_size / 16, / 8, / 4 pixels
_POOL_GRID = (32, 16, 8)  # energy maps sampled on these grids before pRF pooling
_N_FEATURES = 10  # width of the per-voxel feature arrays (late: 4 energies + 6 categories)
_CATEGORY_PATCH_MM = 12.0
_CONTRAST_ENVELOPE_GAIN = 0.7  # background local contrast: exp(gain * smooth field)
_CONTRAST_ENVELOPE_CYCLES = 1.5  # low-pass sd of that field, cycles per image
_EXPONENT = 0.5  # compressive nonlinearity on pooled energy (Kay et al. 2013)
# EEG/MEG
_SFREQ = 100.0
_N_TIMES = 50  # 0 to 490 ms
_TIME_COURSE = {"early": (0.04, 0.020), "mid": (0.075, 0.025), "late": (0.11, 0.030)}
_GAMMA_ORDER = 3  # gamma time course (onset t0, scale tau): peak at t0 + 3 tau
_EVOKED_GAIN = 2.0  # source activity = EVOKED_GAIN + voxel signal (signal sd 1)
_SIGNAL_SCALE = {"eeg": 5e-6, "meg": 2e-13}  # peak |mean evoked| in V and T
_N_NOISE_DIPOLES = 40
_NOISE_SMOOTH = 1.0  # temporal smoothing of the noise, in samples (Gaussian sd)
_SPHERE_ORIGIN = np.array([0.0, 0.0, 0.04])  # head frame, metres
_MEG_RADIUS = 0.12
_EEG_ALIASES = ("T3", "T4", "T5", "T6")  # same positions as T7, T8, P7, P8 in standard_1020


def make_retinotopic_dataset(
    n_images: int = 1000,
    image_size: int = 64,
    modality: Literal["fmri", "eeg", "meg"] = "fmri",
    n_voxels: int = 2000,
    n_repeats: int = 3,
    snr: float = 1.0,
    *,
    hierarchy: float = 0.0,
    return_features: bool = False,
    random_state: int | np.random.RandomState | np.random.Generator | None = None,
    verbose: bool | int | str | None = None,
) -> Bunch:
    """Simulate a visual cortex seeing procedural images, with its ground truth.

    **Images.** Each image holds one object of a category in :data:`CATEGORIES` (disc,
    square, triangle, cross, star, ring) at a random position (centre uniform in
    [-0.6, 0.6]^2 grid units), radius (0.2-0.45 of the image half-width), orientation,
    luminance step (0.15-0.4, either polarity), colour and fill texture (a grating of
    random orientation and wavelength), on a naturalistic background: 1/f^alpha noise
    (alpha 0.9-1.3) whose local contrast varies smoothly across the image
    (``exp(0.7 G)``, ``G`` a Gaussian field low-passed at 1.5 cycles per image), with
    random mean luminance, contrast and colour tint. RGB uint8.

    **Anatomy.** Voxels lie in the occipital gray matter of the ICBM 2009a MNI152
    template bundled with nilearn (gray-matter probability > 0.5, y <= -60 mm, above a
    plane standing for the tentorium, z <= 40 mm), on a regular grid whose spacing is
    chosen so that ``n_voxels`` fill the occipital lobe (about 2.8 mm for 5000 voxels,
    3.7 mm for 2000); the most anterior extra voxels are dropped. Each hemisphere is cut
    into three areas (:data:`AREAS`) by the distance ``d`` from its occipital pole (the
    centre of its 2 % most posterior voxels; lateral and vertical offsets count half):
    early, the nearest 40 % of its voxels, then mid (35 %) and late (25 %), so the
    hierarchy runs posterior to anterior.

    **Retinotopy** (grid_sample convention: x to the right, y downward, both in
    [-1, 1]). Each area holds a complete map of the contralateral hemifield (the left
    hemisphere, x < 0, sees the right visual field), as V1, V2 and V3 each do.
    Eccentricity grows with ``d`` across the area (mostly anteriorly),
    ``ecc = 0.9 (exp(1.5 t) - 1) / (exp(1.5) - 1)`` with ``t`` the area-relative ``d`` in
    [0, 1] (cortical magnification: more cortex for the fovea).
    Polar angle follows the elevation ``e`` of the voxel seen from the pole,
    ``theta = pi/2 tanh(1.2 (e - median) / q80(|e - median|))``: dorsal voxels see the
    lower field (y > 0), ventral voxels the upper field. The maps restart at area
    borders (a simplification of the mirror reversals of real borders). pRF size
    (Gaussian sd, grid units) grows with eccentricity and along the hierarchy: early
    0.05 + 0.12 ecc, mid 0.10 + 0.30 ecc, late 0.35 + 0.60 ecc.

    **Features.** Luminance is filtered by quadrature Gabor filters (4 orientations,
    one-octave bandwidth) at three wavelengths, ``image_size / 16, / 8, / 4`` pixels
    (fine, middle, coarse); local energy is sampled at the cell centres of 32x32, 16x16
    and 8x8 grids over the image. A voxel's features are Gaussian-pRF-weighted means of
    these maps, raised to the power 0.5 (compressive spatial summation) and z-scored
    over images:

    - early (``"oriented_energy"``): fine-scale energy in 4 orientations; weights
      ``1 + 0.6 cos 2(theta_o - phi)`` with a preferred orientation ``phi`` near the
      polar angle of the pRF (radial bias);
    - mid (``"texture"``): middle-scale energy in 4 orientations plus 2 co-occurrence
      statistics (pooled geometric mean of orthogonal energies), random signed weights;
    - late (``"shape_category"``): coarse-scale energy in 4 orientations over the large
      pRF (global shape, nearly position invariant) plus the object category (one-hot),
      whose weights come from smooth category patches (12 mm) mirrored across
      hemispheres; the two parts share the variance (30-70 %).

    The noiseless ``signal`` of a voxel is its features times its weights, z-scored
    over the images (sd exactly 1 in this sample). The three scales are the first three
    layers of ``get_backbone("pyramid", image_size=image_size)`` (wavelength 4 pixels at
    pyramid level ``s``); a pyramid built for another input size sees them between its
    layers. Below 64 pixels, the finest scale nears the Nyquist limit.

    **Hierarchy** (``hierarchy=h > 0``; 0 by default). Higher areas also inherit the
    features of the area below, as V4 receives from V1 and V2: every mid voxel also reads
    fine-scale oriented energy (early type, with its own orientation weights) and every
    late voxel middle-scale texture (mid type, its own random weights), pooled over the
    voxel's own pRF. Its signal is ``sqrt(1 - h) own + sqrt(h) inherited`` (both
    z-scored), z-scored again: ``h`` is the inherited share of the variance when the two
    parts are uncorrelated (energies at neighbouring scales correlate, so less is new).
    Areas then share features that one of them reads weakly, the setting of the
    All-for-One recipe's stage 2 (:class:`~afo_encoding.encoders.afo.AllForOneEncoder`).
    Images, early voxels, noise and ``features``/``weights`` (the own part) do not change
    with ``h``.

    **Noise (fMRI).** Single trials are ``ncsnr * signal + N(0, 1)``, independent over
    voxels and trials, so the planted noise-ceiling SNR of a voxel is ``ncsnr``:
    ``snr * gain * exp(0.35 N(0, 1))`` with area gains early 1.0, mid 0.8, late 0.6, and
    10 % of the voxels nearly dead (ncsnr scaled by U(0, 0.1)). ``Y`` is the mean of the
    ``n_repeats`` trials, whose noise ceiling is, in NSD units,
    ``100 ncsnr^2 / (ncsnr^2 + 1 / n_repeats)`` percent, and in units of Pearson r the
    square root of that fraction.

    **EEG/MEG.** Every voxel is a current dipole, oriented between the radial direction
    and a random one, whose activity for an image is ``2 + signal`` (an evoked response
    common to all images plus the image-specific part) times the time course of its
    area: a gamma function (order 3) with onsets 40/75/110 ms and peaks at 100 ms
    (early), 150 ms (mid) and 200 ms (late), sampled at 100 Hz from 0 to 490 ms.
    Positions go from MNI to MNE's head frame through the fsaverage transform bundled
    with MNE. EEG: potential of a dipole in an infinite homogeneous medium (0.33 S/m)
    on the 90 distinct electrodes of the ``standard_1020`` montage, average reference.
    MEG: radial magnetometers at the 102 positions of the bundled ``Vectorview-mag``
    layout projected onto a 12 cm sphere around (0, 0, 4 cm), field of a dipole in a
    spherical conductor (Sarvas 1987; radial dipoles are silent). Data are scaled so
    that the largest mean evoked value is 5 uV (EEG) or 200 fT (MEG). Noise: 40 random
    gray-matter dipoles plus white sensor noise (equal variance), smoothed in time
    (Gaussian, 10 ms), scaled so that the root mean square over columns of the signal
    sd over images is ``snr`` times that of the noise sd. A column is a (channel, time)
    pair, channel-major; its ground truth is a summary over the sources that reach it:
    ``rois`` the area contributing most signal variance, ``prf_center``/``prf_size``
    the variance-weighted mean over sources (a sensor's population receptive field).
    The per-source truth is in ``sources``.

    Parameters
    ----------
    n_images : int
        Number of images (>= 10).
    image_size : int
        Height and width of the square images, in pixels (>= 32).
    modality : {"fmri", "eeg", "meg"}
        The recording: a 4D Niimg, or ``mne.EpochsArray`` for EEG and MEG.
    n_voxels : int
        Number of cortical voxels (fMRI columns; the dipoles of EEG/MEG), at least 30;
        the grid gets finer as it grows (0.4 mm holds over a million).
    n_repeats : int
        Single trials per image (>= 1).
    snr : float
        Overall signal-to-noise ratio (> 0). fMRI: the median ncsnr of early voxels
        (other areas and dead voxels lower, see Noise); EEG/MEG: the ratio of the RMS
        signal sd to the RMS noise sd over columns.
    hierarchy : float
        Share in [0, 1) of a mid or late voxel's signal inherited from the area below (see
        Hierarchy); 0, the default, keeps the areas' features apart.
    return_features : bool
        Also return ``features`` (n_images, n_voxels, 10) and ``weights`` (n_voxels, 10),
        the exact linear model behind ``signal`` (memory: 40 bytes per image and voxel).
    random_state : int | RandomState | Generator | None
        Seed. The images depend only on it, ``n_images`` and ``image_size``; the same
        arguments give identical outputs.
    verbose : bool | int | str | None
        Log the steps and their durations (INFO).

    Returns
    -------
    data : sklearn.utils.Bunch
        - ``images``: uint8 (n_images, image_size, image_size, 3).
        - ``responses``: 4D ``Nifti1Image`` (fMRI, one volume per image, zero outside
          ``mask``) or ``mne.EpochsArray`` (EEG/MEG, one epoch per image, with montage /
          sensor positions and ``metadata`` on the objects). Holds the same data as
          ``Y``: ``as_responses(responses, mask=mask)`` gives ``Y`` and ``coords``.
        - ``mask``: 3D ``Nifti1Image`` of the voxels (fMRI), else None.
        - ``Y``: float32 (n_images, n_columns), mean of the repeats. n_columns is
          ``n_voxels`` (fMRI) or n_channels x n_times.
        - ``coords``: float64 (n_columns, 3) MNI mm, or (n_columns, 4) sensor position
          in metres (head frame) and time in seconds.
        - ``repeats``: float32 (n_images, n_repeats, n_columns), the single trials.
        - ``signal``: float32 (n_images, n_columns), the noiseless response.
        - ``ncsnr``: (n_columns,) planted signal sd / noise sd of a single trial.
        - ``noise_ceiling``: (n_columns,) largest expected Pearson r of a model against
          ``Y`` (r units, directly comparable with ``score``).
        - ``noise_ceiling_percent``: (n_columns,) NSD noise ceiling of ``Y`` in percent
          of variance (:func:`afo_encoding.metrics.noise_ceiling`).
        - ``prf_center``: (n_columns, 2) grid_sample convention; ``prf_size``:
          (n_columns,) Gaussian sd in grid units.
        - ``rois``: str (n_columns,) in :data:`AREAS`; ``feature_type``: str
          (n_columns,) in :data:`FEATURE_TYPES` values.
        - ``sources``: Bunch of the cortical voxels (``coords`` MNI mm, ``prf_center``,
          ``prf_size``, ``rois``, ``feature_type``, ``ncsnr`` (fMRI) or ``signal``
          (EEG/MEG)); the same voxels as the columns for fMRI.
        - ``energy_map``: float32 (n_images, 32, 32), fine-scale Gabor energy summed
          over orientations on the early pooling grid (rows y): the low-level layout of
          each image, what early voxels read.
        - ``object_category`` int (n_images,) into ``category_names``;
          ``object_position`` (n_images, 2) grid convention; ``object_size`` radius in
          grid units; ``object_orientation`` radians.
        - ``times``, ``ch_names``, ``time_courses`` (3, n_times) (EEG/MEG only).
        - ``features``, ``weights`` (with ``return_features``): ``signal`` is
          ``features @ weights`` per voxel, z-scored over images (with ``hierarchy``, the
          own part of it).
        - ``modality``, ``area_names``, ``category_names``, ``voxel_size`` (mm),
          ``description``.

    Examples
    --------
    >>> from afo_encoding.simulation import make_retinotopic_dataset
    >>> data = make_retinotopic_dataset(n_images=50, n_voxels=300, random_state=0)
    >>> data.images.shape, data.Y.shape, data.repeats.shape
    ((50, 64, 64, 3), (50, 300), (50, 3, 300))
    >>> sorted(set(data.rois))
    ['early', 'late', 'mid']
    """
    _check_params(n_images, image_size, modality, n_voxels, n_repeats, snr)
    hierarchy = _check_hierarchy(hierarchy)
    rng_images, rng_voxels, rng_noise, rng_hierarchy = _generators(random_state)
    with use_log_level(verbose):
        clock = _Clock()
        images, objects = _make_images(n_images, image_size, rng_images)
        clock.log("images")
        maps = _energy_maps(images)
        clock.log("Gabor energy maps")
        ijk, affine, grid_shape, voxel_size = _occipital_grid(n_voxels)
        xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
        truth = _retinotopy(xyz, rng_voxels)
        clock.log(f"anatomy and retinotopy ({n_voxels} voxels, {voxel_size:.2f} mm)")
        signal, features, weights = _voxel_responses(
            maps, objects["category"], xyz, truth, rng_voxels, return_features
        )
        if hierarchy > 0:
            signal = _inherit(signal, maps, truth, hierarchy, rng_hierarchy)
        clock.log("voxel responses")
        sources = Bunch(
            coords=xyz,
            prf_center=truth["prf_center"],
            prf_size=truth["prf_size"],
            rois=truth["rois"],
            feature_type=np.array([FEATURE_TYPES[a] for a in truth["rois"]]),
        )
        if modality == "fmri":
            ncsnr = snr * truth["snr_gain"]
            out = _fmri(signal, sources, ijk, affine, grid_shape, n_repeats, ncsnr, rng_noise)
        else:
            out = _sensors(modality, signal, sources, objects, n_repeats, snr, rng_noise)
        clock.log(f"{modality} responses and noise")
    out.update(
        images=images,
        energy_map=maps[0].sum(axis=1),
        object_category=objects["category"],
        object_position=objects["position"],
        object_size=objects["size"],
        object_orientation=objects["orientation"],
        modality=modality,
        area_names=AREAS,
        category_names=CATEGORIES,
        voxel_size=voxel_size,
        description=_description(
            n_images, image_size, modality, n_voxels, n_repeats, snr, voxel_size, hierarchy
        ),
    )
    if return_features:
        out.update(features=features, weights=weights)
    return out


# --- parameters and randomness ----------------------------------------------------------


def _check_params(n_images, image_size, modality, n_voxels, n_repeats, snr) -> None:
    for name, value, low in (
        ("n_images", n_images, 10),
        ("image_size", image_size, 32),
        ("n_voxels", n_voxels, 30),
        ("n_repeats", n_repeats, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if modality not in ("fmri", "eeg", "meg"):
        raise ValueError(f"modality must be 'fmri', 'eeg' or 'meg', got {modality!r}.")
    if not np.isfinite(snr) or snr <= 0:
        raise ValueError(f"snr must be a positive number, got {snr!r}.")


def _check_hierarchy(hierarchy) -> float:
    if isinstance(hierarchy, bool) or not isinstance(hierarchy, numbers.Real):
        raise ValueError(f"hierarchy must be a number in [0, 1), got {hierarchy!r}.")
    if not 0.0 <= hierarchy < 1.0:
        raise ValueError(
            f"hierarchy must be in [0, 1), got {hierarchy!r}: it is the share of a mid or "
            "late voxel's signal variance inherited from the area below (0: none)."
        )
    return float(hierarchy)


def _generators(random_state) -> list[np.random.Generator]:
    """Independent streams for images, voxel properties, noise and inherited features."""
    if isinstance(random_state, np.random.Generator):
        entropy = int(random_state.integers(2**63))
    elif isinstance(random_state, np.random.RandomState):
        entropy = int(random_state.randint(2**31))
    elif random_state is None:
        entropy = None
    elif isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        entropy = int(random_state)
    else:
        raise ValueError(
            "random_state must be None, an int, a numpy RandomState or Generator, got "
            f"{random_state!r}."
        )
    # a fourth stream (the inherited features of ``hierarchy``) leaves the first three as
    # they were: children of a SeedSequence depend on their index only
    return [np.random.default_rng(s) for s in np.random.SeedSequence(entropy).spawn(4)]


class _Clock:
    def __init__(self):
        self.t = time.perf_counter()

    def log(self, what: str) -> None:
        now = time.perf_counter()
        logger.info("simulation: %s in %.2f s", what, now - self.t)
        self.t = now


# --- images -----------------------------------------------------------------------------


def _object_sdf(category: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, in object radii) to the outline of a unit object."""
    r = np.hypot(px, py)
    if category == "disc":
        return r - 1.0
    if category == "square":
        return np.maximum(np.abs(px), np.abs(py)) - 0.8
    if category == "triangle":
        angles = np.pi / 2 + np.array([0.0, 2.0, 4.0]) * np.pi / 3
        edges = [np.cos(a) * px + np.sin(a) * py for a in angles]
        return np.maximum.reduce(edges) - 0.5
    if category == "cross":
        bar1 = np.maximum(np.abs(px) - 1.0, np.abs(py) - 0.3)
        bar2 = np.maximum(np.abs(px) - 0.3, np.abs(py) - 1.0)
        return np.minimum(bar1, bar2)
    if category == "star":
        return r - (0.6 + 0.4 * np.cos(5 * np.arctan2(py, px)))
    if category == "ring":
        return np.abs(r - 0.72) - 0.28
    raise ValueError(category)


def _background(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd naturalistic textures: 1/f^alpha noise under a contrast envelope.

    The amplitude spectrum falls as 1/f^alpha (alpha per image in [0.9, 1.3]); the local
    contrast is modulated by ``exp(0.7 G)``, with ``G`` a smooth Gaussian field (low-pass,
    sd 1.5 cycles per image): as in natural images (a Gaussian scale mixture), contrast
    varies from place to place instead of being stationary.
    """
    from scipy import fft

    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    f = (f * size).astype(np.float32)  # cycles per image
    alpha = rng.uniform(0.9, 1.3, size=(n, 1, 1)).astype(np.float32)
    spectrum = fft.fft2(rng.standard_normal((n, size, size), dtype=np.float32))
    spectrum *= np.exp(-alpha * np.log(np.maximum(f, 1.0))[None])
    spectrum[:, 0, 0] = 0.0
    noise = fft.ifft2(spectrum).real
    envelope = fft.fft2(rng.standard_normal((n, size, size), dtype=np.float32))
    envelope *= np.exp(-(f**2) / (2 * _CONTRAST_ENVELOPE_CYCLES**2))[None]
    field = fft.ifft2(envelope).real
    field /= field.std(axis=(1, 2), keepdims=True)
    noise *= np.exp(_CONTRAST_ENVELOPE_GAIN * field)
    noise -= noise.mean(axis=(1, 2), keepdims=True)
    noise /= noise.std(axis=(1, 2), keepdims=True)
    return noise


def _make_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    category = rng.integers(len(CATEGORIES), size=n)
    position = rng.uniform(-0.6, 0.6, size=(n, 2))
    radius = rng.uniform(0.2, 0.45, size=n)
    orientation = rng.uniform(0, 2 * np.pi, size=n)
    polarity = rng.choice([-1.0, 1.0], size=n)
    contrast = rng.uniform(0.15, 0.4, size=n)
    bg_mean = rng.uniform(0.35, 0.65, size=n)
    bg_sd = rng.uniform(0.06, 0.16, size=n)
    # chromatic directions orthogonal to grey, for the tint and the object colour
    chroma = rng.standard_normal((n, 2, 3))
    chroma -= chroma.mean(axis=2, keepdims=True)
    chroma /= np.linalg.norm(chroma, axis=2, keepdims=True)
    tint = chroma[:, 0] * rng.uniform(0.0, 0.05, size=(n, 1))
    colour = chroma[:, 1] * rng.uniform(0.0, 0.15, size=(n, 1))
    tex_orient = rng.uniform(0, np.pi, size=n)
    tex_wavelength = rng.uniform(0.1, 0.4, size=n)  # grid units (image width = 2)
    tex_amplitude = rng.uniform(0.0, 0.25, size=n)
    background = _background(n, size, rng)

    def per_image(a):
        return np.asarray(a, dtype=np.float32)[:, None, None]

    # pixel centres in grid units, x to the right, y downward
    c = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1.0
    gx, gy = c[None, None, :], c[None, :, None]
    dx = gx - per_image(position[:, 0])
    dy = gy - per_image(position[:, 1])
    cos_o, sin_o, rad = (
        per_image(np.cos(orientation)),
        per_image(np.sin(orientation)),
        per_image(radius),
    )
    px = (cos_o * dx + sin_o * dy) / rad
    py = (cos_o * dy - sin_o * dx) / rad
    alpha = np.empty((n, size, size), dtype=np.float32)
    for k, name in enumerate(CATEGORIES):
        sel = category == k
        if sel.any():
            sdf = _object_sdf(name, px[sel], py[sel]) * (rad[sel] * (size / 2.0))
            alpha[sel] = np.clip(0.5 - sdf, 0.0, 1.0)
    phase = per_image(np.cos(tex_orient)) * gx + per_image(np.sin(tex_orient)) * gy
    obj_lum = per_image(bg_mean + polarity * contrast) + per_image(tex_amplitude) * np.sin(
        phase * per_image(2 * np.pi / tex_wavelength)
    )
    lum = per_image(bg_mean) + per_image(bg_sd) * background
    lum += alpha * (obj_lum - lum)
    rgb = np.empty((n, size, size, 3), dtype=np.float32)
    for ch in range(3):
        rgb[..., ch] = (
            lum + per_image(tint[:, ch]) + alpha * per_image(colour[:, ch] - tint[:, ch])
        )
    rgb *= 255.0
    np.clip(rgb, 0.0, 255.0, out=rgb)
    images = np.rint(rgb, out=rgb).astype(np.uint8)
    objects = {
        "category": category,
        "position": position,
        "size": radius,
        "orientation": orientation,
    }
    return images, objects


# --- features ---------------------------------------------------------------------------


def _luminance(images: np.ndarray) -> np.ndarray:
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lum /= 255.0
    return lum - lum.mean(axis=(1, 2), keepdims=True)


def _energy_maps(images: np.ndarray) -> list[np.ndarray]:
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
    for cycles, grid in zip(_CYCLES_PER_IMAGE, _POOL_GRID):
        grid = min(grid, size)
        sd = cycles * (1.0 / 3.0) / np.sqrt(2 * np.log(2))  # one-octave half-power bandwidth
        offsets = np.rint(np.fft.fftfreq(grid, 1.0 / grid)).astype(int)
        # cell centres, in pixel-index units: x = x0 + j * size / grid
        x0 = size / (2.0 * grid) - 0.5
        shift = np.exp(2j * np.pi * offsets * x0 / size)
        maps = np.empty((n, _N_ORIENT, grid, grid), dtype=np.float32)
        for o in range(_N_ORIENT):
            theta = np.pi * o / _N_ORIENT
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


def _prf_weights(center: np.ndarray, sigma: np.ndarray, grid: int) -> np.ndarray:
    """(n_voxels, grid * grid) Gaussian pRF weights on the cell centres (row = y).

    Normalised by the full Gaussian mass, so a pRF partly outside the image reads less.
    """
    c = (np.arange(grid) + 0.5) * (2.0 / grid) - 1.0
    s = sigma[:, None]
    wx = np.exp(-((c[None] - center[:, 0:1]) ** 2) / (2 * s**2))
    wy = np.exp(-((c[None] - center[:, 1:2]) ** 2) / (2 * s**2))
    norm = (2.0 / grid) ** 2 / (2 * np.pi * sigma**2)
    w = (wy[:, :, None] * wx[:, None, :]).reshape(len(sigma), -1) * norm[:, None]
    # beyond ~5 sd the weights are zero: float32 denormals would slow the products 10x
    w[w < 1e-6 * w.max(axis=1, keepdims=True)] = 0.0
    return w.astype(np.float32)


def _zscore(a: np.ndarray, axis: int = 0) -> np.ndarray:
    a = a - a.mean(axis=axis, keepdims=True)
    sd = a.std(axis=axis, ddof=1, keepdims=True)
    return a / np.where(sd > 0, sd, 1.0)


def _voxel_responses(maps, category, xyz, truth, rng, return_features):
    """Noiseless signal (n_images, n_voxels), z-scored, from each area's features."""
    n_images = maps[0].shape[0]
    n_voxels = len(xyz)
    rois = truth["rois"]
    signal = np.empty((n_images, n_voxels), dtype=np.float32)
    features = (
        np.zeros((n_images, n_voxels, _N_FEATURES), dtype=np.float32) if return_features else None
    )
    weights = np.zeros((n_voxels, _N_FEATURES), dtype=np.float64)
    onehot = _zscore(np.eye(len(CATEGORIES), dtype=np.float32)[category])
    # category patches: centres in the left late area, mirrored to the right hemisphere
    late = np.flatnonzero(rois == "late")
    left_late = late[xyz[late, 0] < 0] if np.any(xyz[late, 0] < 0) else late
    centres = xyz[rng.choice(left_late, size=len(CATEGORIES))]
    for scale, area in enumerate(AREAS):
        idx = np.flatnonzero(rois == area)
        if idx.size == 0:
            continue
        m = _area_maps(area, maps[scale])
        grid = m.shape[-1]
        n_feat = m.shape[1]
        flat = m.reshape(n_images * n_feat, grid * grid)
        # area-specific weights (drawn for the whole area at once, so chunks do not matter)
        if area in ("early", "mid"):
            w = _type_weights(area, truth["prf_center"][idx], n_feat, rng)
        else:
            w_energy = 0.5 + 0.5 * rng.standard_normal((idx.size, n_feat))
            d2 = np.minimum(
                ((xyz[idx, None, :] - centres[None]) ** 2).sum(-1),
                ((xyz[idx, None, :] * [-1, 1, 1] - centres[None]) ** 2).sum(-1),
            )
            w_cat = 1.5 * np.exp(-d2 / (2 * _CATEGORY_PATCH_MM**2))
            w_cat += 0.3 * rng.standard_normal(w_cat.shape)
            share = rng.uniform(0.3, 0.7, size=idx.size)
        for start in range(0, idx.size, 1024):
            sl = slice(start, start + 1024)
            vox = idx[sl]
            feat = _pooled_features(flat, truth, vox, n_images, grid)  # (n_images, n_vox, n_feat)
            if area == "late":
                # balance the energy and category parts: each has unit sd before mixing
                we, wc = w_energy[sl], w_cat[sl]
                s_e = np.einsum("nvf,vf->nv", feat, we).std(0, ddof=1)
                s_c = (onehot @ wc.T).std(0, ddof=1)
                we = we * (np.sqrt(share[sl]) / np.where(s_e > 0, s_e, 1.0))[:, None]
                wc = wc * (np.sqrt(1 - share[sl]) / np.where(s_c > 0, s_c, 1.0))[:, None]
                feat = np.concatenate(
                    [feat, np.broadcast_to(onehot[:, None, :], (n_images, vox.size, 6))],
                    axis=2,
                )
                wv = np.concatenate([we, wc], axis=1)
            else:
                wv = w[sl]
            raw = np.einsum("nvf,vf->nv", feat, wv.astype(np.float32))
            signal[:, vox] = _zscore(raw)
            weights[vox, : wv.shape[1]] = wv
            if features is not None:
                features[:, vox, : feat.shape[2]] = feat
    return signal, features, weights


def _pooled_features(flat, truth, vox, n_images, grid) -> np.ndarray:
    """(n_images, n_vox, n_feat): maps ``flat`` (n_images * n_feat, grid * grid) pooled
    over the Gaussian pRFs of voxels ``vox``, compressed (power 0.5) and z-scored."""
    pw = _prf_weights(truth["prf_center"][vox], truth["prf_size"][vox], grid)
    pooled = (flat @ pw.T).reshape(n_images, -1, len(vox)).transpose(0, 2, 1)
    return _zscore(np.maximum(pooled, 0.0) ** _EXPONENT)


def _area_maps(area: str, m: np.ndarray) -> np.ndarray:
    """The maps an area's voxels pool: the energies, plus for mid the co-occurrence of
    orthogonal orientations (geometric mean, before pooling)."""
    if area == "mid":
        return np.concatenate([m, np.sqrt(m[:, [0, 1]] * m[:, [2, 3]])], axis=1)
    return m


def _type_weights(area: str, prf_center: np.ndarray, n_feat: int, rng) -> np.ndarray:
    """Feature weights of early-type (radial orientation bias) or mid-type (random signed)
    voxels with these pRF centres."""
    if area == "early":
        theta_o = np.pi * np.arange(_N_ORIENT) / _N_ORIENT
        phi = np.arctan2(prf_center[:, 1], prf_center[:, 0])
        phi = phi + rng.normal(0.0, 0.4, size=len(prf_center))
        return 1.0 + 0.6 * np.cos(2 * (theta_o[None] - phi[:, None]))
    return 0.6 + rng.standard_normal((len(prf_center), n_feat))


def _inherit(signal, maps, truth, hierarchy, rng):
    """Mix into every mid and late voxel the features of the area below, over its own pRF.

    ``signal = sqrt(1 - h) own + sqrt(h) inherited``, both z-scored: a mid voxel also reads
    fine-scale oriented energy (early type), a late voxel middle-scale texture (mid type),
    each with its own weights and pooled over the voxel's (larger) pRF.
    """
    signal = signal.copy()
    n_images = signal.shape[0]
    for scale in (1, 2):
        idx = np.flatnonzero(truth["rois"] == AREAS[scale])
        if idx.size == 0:
            continue
        below = AREAS[scale - 1]
        m = _area_maps(below, maps[scale - 1])
        n_feat, grid = m.shape[1], m.shape[-1]
        flat = m.reshape(n_images * n_feat, grid * grid)
        w = _type_weights(below, truth["prf_center"][idx], n_feat, rng).astype(np.float32)
        for start in range(0, idx.size, 1024):
            sl = slice(start, start + 1024)
            vox = idx[sl]
            feat = _pooled_features(flat, truth, vox, n_images, grid)
            inherited = _zscore(np.einsum("nvf,vf->nv", feat, w[sl]))
            mixed = np.sqrt(1 - hierarchy) * signal[:, vox] + np.sqrt(hierarchy) * inherited
            signal[:, vox] = _zscore(mixed)
    return signal


# --- anatomy ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _gray_matter() -> tuple[np.ndarray, np.ndarray]:
    """Gray-matter probability of nilearn's bundled MNI152 template (1 mm) and its affine."""
    from nilearn.datasets import load_mni152_gm_template

    img = load_mni152_gm_template(resolution=1)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine.copy()


def _occipital(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Occipital lobe above the cerebellum (tentorium as a plane sloping down to the back)."""
    return (y <= -60.0) & (z >= -6.0 + 0.25 * (y + 60.0)) & (z <= 40.0) & (np.abs(x) <= 75.0)


def _sample_gray(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid of a given spacing (mm) over the occipital box; returns ijk, origin, inside."""
    from scipy.ndimage import map_coordinates

    gm, affine = _gray_matter()
    nx = 2 * int(np.ceil(75.0 / spacing))  # even: no voxel on the midline
    x = spacing * (np.arange(nx) - (nx - 1) / 2.0)
    y = np.arange(-112.0, -59.9, spacing)
    z = np.arange(-36.0, 40.1, spacing)
    origin = np.array([x[0], y[0], z[0]])
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    inside = _occipital(X, Y, Z)
    pts = np.stack([X[inside], Y[inside], Z[inside]])
    vox = np.linalg.solve(affine[:3, :3], pts - affine[:3, 3:4])
    prob = map_coordinates(gm, vox, order=1, mode="constant", cval=0.0)
    keep = np.zeros(X.shape, dtype=bool)
    keep[inside] = prob > 0.5
    return np.argwhere(keep), origin, np.array(X.shape)


@functools.lru_cache(maxsize=16)
def _occipital_grid_cached(n_voxels: int):
    # voxel count scales as spacing^-3: start from the 2 mm count, shrink until enough
    n2 = len(_sample_gray(2.0)[0])
    spacing = 2.0 * (n2 / n_voxels) ** (1.0 / 3.0)
    for _ in range(60):
        ijk, origin, _shape = _sample_gray(spacing)
        if len(ijk) >= n_voxels:
            break
        spacing *= 0.97
        if spacing < 0.4:
            break
    if len(ijk) < n_voxels:
        raise ValueError(
            f"n_voxels={n_voxels} is more than the occipital gray matter holds at 0.4 mm "
            f"({len(ijk)} voxels); ask for fewer voxels."
        )
    world_y = origin[1] + spacing * ijk[:, 1]
    order = np.lexsort((ijk[:, 2], ijk[:, 0], world_y))  # most posterior first
    ijk = ijk[order[:n_voxels]]
    lo = ijk.min(0)
    ijk = ijk - lo
    shape = tuple(int(s) for s in ijk.max(0) + 1)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin + spacing * lo
    # nilearn masks list voxels in C order of the array: use that order everywhere
    ijk = ijk[np.lexsort((ijk[:, 2], ijk[:, 1], ijk[:, 0]))]
    return ijk, affine, shape, float(spacing)


def _occipital_grid(n_voxels: int):
    ijk, affine, shape, spacing = _occipital_grid_cached(int(n_voxels))
    return ijk.copy(), affine.copy(), shape, spacing


def _retinotopy(xyz: np.ndarray, rng: np.random.Generator) -> dict:
    """Areas, pRF centres (grid_sample convention) and sizes from MNI positions."""
    n = len(xyz)
    rois = np.empty(n, dtype="<U5")
    center = np.zeros((n, 2))
    ecc = np.zeros(n)
    cuts = np.cumsum(_AREA_FRACTIONS)[:-1]
    for hemi in (xyz[:, 0] < 0, xyz[:, 0] > 0):
        h = np.flatnonzero(hemi)
        if h.size == 0:
            continue
        p = xyz[h]
        # the occipital pole of the hemisphere: centre of its 2 % most posterior voxels
        tip = p[p[:, 1] <= np.quantile(p[:, 1], 0.02)]
        pole = np.array([np.median(tip[:, 0]), p[:, 1].min(), np.median(tip[:, 2])])
        # distance from the pole, lateral and vertical offsets counting half: the areas
        # are shells elongated across the lobe, stacked posterior to anterior
        d = np.linalg.norm((p - pole) * [0.5, 1.0, 0.5], axis=1)
        horizontal = np.hypot(p[:, 0] - pole[0], p[:, 1] - pole[1])
        elevation = np.arctan2(p[:, 2] - pole[2], horizontal)  # in (-pi/2, pi/2)
        # areas: shells of distance from the pole (ties broken by position)
        ranked = np.lexsort((p[:, 2], p[:, 0], d))
        bounds = np.round(cuts * h.size).astype(int)
        for area, local in zip(AREAS, np.split(ranked, bounds)):
            if local.size == 0:
                continue
            members = h[local]
            rois[members] = area
            dd = d[local]
            span = dd.max() - dd.min()
            t = (dd - dd.min()) / span if span > 0 else np.zeros_like(dd)
            e = _ECC_MAX * np.expm1(_MAGNIFICATION * t) / np.expm1(_MAGNIFICATION)
            el = elevation[local]
            spread = max(np.quantile(np.abs(el - np.median(el)), 0.8), 1e-6)
            theta = (np.pi / 2) * np.tanh(1.2 * (el - np.median(el)) / spread)
            side = 1.0 if p[0, 0] < 0 else -1.0  # contralateral field
            center[members, 0] = side * e * np.cos(theta)
            center[members, 1] = e * np.sin(theta)  # dorsal (z up) -> lower field (y > 0)
            ecc[members] = e
    size = np.empty(n)
    for area in AREAS:
        a, b = _PRF_SIZE[area]
        sel = rois == area
        size[sel] = a + b * ecc[sel]
    gain = np.array([_AREA_SNR_GAIN[a] for a in rois])
    spread = np.exp(0.35 * rng.standard_normal(n))
    dead = rng.random(n) < _DEAD_FRACTION
    spread[dead] *= rng.uniform(0.0, 0.1, size=dead.sum())
    return {"rois": rois, "prf_center": center, "prf_size": size, "snr_gain": gain * spread}


# --- fMRI -------------------------------------------------------------------------------


def _noise_ceilings(ncsnr: np.ndarray, n_repeats: int) -> tuple[np.ndarray, np.ndarray]:
    frac = ncsnr**2 / (ncsnr**2 + 1.0 / n_repeats)
    return np.sqrt(frac), 100.0 * frac


def _fmri(signal, sources, ijk, affine, grid_shape, n_repeats, ncsnr, rng) -> Bunch:
    import nibabel as nib

    n_images, n_voxels = signal.shape
    repeats = rng.standard_normal((n_images, n_repeats, n_voxels), dtype=np.float32)
    repeats += (signal * ncsnr.astype(np.float32))[:, None, :]
    Y = repeats.mean(axis=1)
    volume = np.zeros((*grid_shape, n_images), dtype=np.float32)
    volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = Y.T
    mask = np.zeros(grid_shape, dtype=np.uint8)
    mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = 1
    nc_r, nc_pct = _noise_ceilings(ncsnr, n_repeats)
    sources.ncsnr = ncsnr
    return Bunch(
        responses=nib.Nifti1Image(volume, affine),
        mask=nib.Nifti1Image(mask, affine),
        Y=Y,
        coords=sources.coords.copy(),
        repeats=repeats,
        signal=signal,
        ncsnr=ncsnr,
        noise_ceiling=nc_r,
        noise_ceiling_percent=nc_pct,
        prf_center=sources.prf_center,
        prf_size=sources.prf_size,
        rois=sources.rois,
        feature_type=sources.feature_type,
        sources=sources,
    )


# --- EEG / MEG --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _mni_to_head() -> np.ndarray:
    """4x4 transform from MNI mm to MNE's head frame (metres), via bundled fsaverage."""
    import mne

    path = Path(mne.__file__).parent / "data" / "fsaverage" / "fsaverage-trans.fif"
    head_to_mri = mne.read_trans(path, verbose=False)["trans"]
    mm_to_m = np.diag([1e-3, 1e-3, 1e-3, 1.0])
    return np.linalg.inv(head_to_mri) @ mm_to_m


def _to_head(xyz_mm: np.ndarray) -> np.ndarray:
    t = _mni_to_head()
    return xyz_mm @ t[:3, :3].T + t[:3, 3]


def _sensor_info(modality: str):
    """``mne.Info`` with sensor positions, positions (n_ch, 3) and normals (head frame)."""
    import mne

    if modality == "eeg":
        # MNE 1.13 renamed the standard_1020 montage colin27_1020 (same positions)
        builtin = mne.channels.get_builtin_montages()
        name = "colin27_1020" if "colin27_1020" in builtin else "standard_1020"
        montage = mne.channels.make_standard_montage(name)
        names = [c for c in montage.ch_names if c not in _EEG_ALIASES]
        info = mne.create_info(names, _SFREQ, "eeg")
        info.set_montage(montage, verbose=False)
        pos = np.array([ch["loc"][:3] for ch in info["chs"]])
        return info, pos, None
    layout = mne.channels.read_layout("Vectorview-mag")
    centre = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    centre -= (centre.max(0) + centre.min(0)) / 2
    radius = np.linalg.norm(centre, axis=1)
    polar = np.deg2rad(100.0) * radius / radius.max()  # azimuthal equidistant, inverted
    azimuth = np.arctan2(centre[:, 1], centre[:, 0])
    normal = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], 1
    )
    pos = _SPHERE_ORIGIN + _MEG_RADIUS * normal
    info = mne.create_info(list(layout.names), _SFREQ, "mag")
    for ch, p, ez in zip(info["chs"], pos, normal):
        ex = np.cross([0.0, 0.0, 1.0], ez)
        ex = ex / np.linalg.norm(ex) if np.linalg.norm(ex) > 1e-9 else np.array([1.0, 0, 0])
        ch["loc"][:] = np.concatenate([p, ex, np.cross(ez, ex), ez])
    info["dev_head_t"] = mne.transforms.Transform("meg", "head")
    return info, pos, normal


def _lead_field(modality, sensors, normals, positions, moments) -> np.ndarray:
    """(n_sensors, n_dipoles) field of unit dipoles (metres, A m) at the sensors."""
    if modality == "eeg":
        # infinite homogeneous medium (0.33 S/m); distances regularised by 1 cm, a crude
        # stand-in for the blurring of the skull
        d = sensors[:, None, :] - positions[None]
        dist2 = (d**2).sum(-1) + 0.01**2
        lf = (d * moments[None]).sum(-1) / (4 * np.pi * 0.33 * dist2**1.5)
        return lf - lf.mean(axis=0, keepdims=True)  # average reference
    # Sarvas (1987): field outside a spherically symmetric conductor
    r = sensors - _SPHERE_ORIGIN
    r0 = positions - _SPHERE_ORIGIN
    a = r[:, None, :] - r0[None]
    an = np.linalg.norm(a, axis=-1)
    rn = np.linalg.norm(r, axis=-1)[:, None]
    a_dot_r = (a * r[:, None, :]).sum(-1)
    f = an * (rn * an + rn**2 - (r0[None] * r[:, None, :]).sum(-1))
    grad_f = (an**2 / rn + a_dot_r / an + 2 * an + 2 * rn)[..., None] * r[:, None, :] - (
        an + 2 * rn + a_dot_r / an
    )[..., None] * r0[None]
    q_x_r0 = np.cross(moments, r0)[None]
    b = (f[..., None] * q_x_r0 - (q_x_r0 * r[:, None, :]).sum(-1)[..., None] * grad_f) / (
        f[..., None] ** 2
    )
    return 1e-7 * (b * normals[:, None, :]).sum(-1)  # mu0 / (4 pi) = 1e-7


def _time_courses(times: np.ndarray) -> np.ndarray:
    """(3, n_times) gamma time courses of the areas, peak 1."""
    out = np.zeros((len(AREAS), len(times)))
    for i, area in enumerate(AREAS):
        onset, tau = _TIME_COURSE[area]
        u = np.clip((times - onset) / tau, 0.0, None)
        out[i] = (u / _GAMMA_ORDER) ** _GAMMA_ORDER * np.exp(_GAMMA_ORDER - u)
    return out


def _smooth_in_time(noise: np.ndarray, axis: int) -> np.ndarray:
    """Circular Gaussian smoothing with a unit-energy kernel: white noise keeps its variance."""
    from scipy.ndimage import convolve1d

    k = np.arange(-3, 4)
    kernel = np.exp(-(k**2) / (2 * _NOISE_SMOOTH**2))
    kernel /= np.sqrt((kernel**2).sum())
    return convolve1d(noise, kernel.astype(noise.dtype), axis=axis, mode="wrap")


def _random_units(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sensors(modality, signal, sources, objects, n_repeats, snr, rng) -> Bunch:
    import mne
    import pandas as pd

    n_images = signal.shape[0]
    info, sensor_pos, normals = _sensor_info(modality)
    n_ch = len(sensor_pos)
    times = np.arange(_N_TIMES) / _SFREQ
    tc = _time_courses(times)

    # cortical dipoles: between radial and random orientation
    pos = _to_head(sources.coords)
    radial = pos - _SPHERE_ORIGIN
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    moments = radial + 0.8 * _random_units(rng, len(pos))
    moments /= np.linalg.norm(moments, axis=1, keepdims=True)
    lf = _lead_field(modality, sensor_pos, normals, pos, moments)
    activity = _EVOKED_GAIN + signal.astype(np.float64)
    data = np.zeros((n_images, n_ch, _N_TIMES))
    per_area_var = np.zeros((len(AREAS), n_ch, _N_TIMES))
    for i, area in enumerate(AREAS):
        idx = np.flatnonzero(sources.rois == area)
        if idx.size:
            x = activity[:, idx] @ lf[:, idx].T  # (n_images, n_ch)
            data += x[:, :, None] * tc[i][None, None, :]
            per_area_var[i] = x.var(0, ddof=1)[:, None] * tc[i][None, :] ** 2
    scale = _SIGNAL_SCALE[modality] / np.abs(data.mean(0)).max()
    data *= scale
    lf *= scale
    signal_sd = data.std(0, ddof=1).reshape(-1)

    # noise: random gray-matter dipoles over the whole brain plus white sensor noise
    gm, gm_affine = _gray_matter()
    candidates = np.argwhere(gm > 0.5)
    picked = candidates[rng.choice(len(candidates), size=_N_NOISE_DIPOLES, replace=False)]
    noise_pos = _to_head(picked @ gm_affine[:3, :3].T + gm_affine[:3, 3])
    lf_noise = _lead_field(
        modality, sensor_pos, normals, noise_pos, _random_units(rng, _N_NOISE_DIPOLES)
    )
    brain_var = (lf_noise**2).sum(1)
    white_var = brain_var.mean()  # the two noise sources have the same mean variance
    # white noise is average-referenced with the EEG data
    white_var_ch = white_var * (1 - 1 / n_ch) if modality == "eeg" else white_var
    noise_var = brain_var + white_var_ch
    k = np.sqrt((signal_sd**2).mean()) / (snr * np.sqrt(noise_var.mean()))
    noise_sd = k * np.sqrt(noise_var)

    shape = (n_images, n_repeats, _N_TIMES)
    z_brain = _smooth_in_time(rng.standard_normal((*shape, _N_NOISE_DIPOLES)), axis=2)
    z_white = _smooth_in_time(rng.standard_normal((*shape, n_ch)), axis=2)
    if modality == "eeg":
        z_white -= z_white.mean(axis=-1, keepdims=True)
    noise = k * (z_brain @ lf_noise.T + np.sqrt(white_var) * z_white)
    repeats = (data[:, None] + noise.transpose(0, 1, 3, 2)).astype(np.float32)
    repeats = repeats.reshape(n_images, n_repeats, n_ch * _N_TIMES)
    Y = repeats.mean(axis=1)

    noise_sd_col = np.repeat(noise_sd, _N_TIMES)
    ncsnr = signal_sd / noise_sd_col
    nc_r, nc_pct = _noise_ceilings(ncsnr, n_repeats)

    # ground truth per column: dominant area; variance-weighted pRF of the sources
    rois = np.array(AREAS)[per_area_var.argmax(0).reshape(-1)]
    weight_num = np.zeros((n_ch, _N_TIMES, 3))
    weight_den = np.full((n_ch, _N_TIMES), 1e-300)
    for i, area in enumerate(AREAS):
        idx = np.flatnonzero(sources.rois == area)
        if idx.size:
            w = lf[:, idx] ** 2  # signal sd of every source is 1
            props = np.column_stack([sources.prf_center[idx], sources.prf_size[idx]])
            t2 = tc[i] ** 2 + 1e-12  # before the onsets, fall back on lead-field weights
            weight_num += (w @ props)[:, None, :] * t2[None, :, None]
            weight_den += w.sum(1)[:, None] * t2[None, :]
    summary = (weight_num / weight_den[..., None]).reshape(-1, 3)
    coords = np.column_stack([np.repeat(sensor_pos, _N_TIMES, axis=0), np.tile(times, n_ch)])

    metadata = pd.DataFrame(
        {
            "category": np.array(CATEGORIES)[objects["category"]],
            "x": objects["position"][:, 0],
            "y": objects["position"][:, 1],
            "size": objects["size"],
        }
    )
    epochs = mne.EpochsArray(
        Y.reshape(n_images, n_ch, _N_TIMES).astype(np.float64),
        info,
        tmin=0.0,
        metadata=metadata,
        verbose=False,
    )
    sources.signal = signal
    return Bunch(
        responses=epochs,
        mask=None,
        Y=Y,
        coords=coords,
        repeats=repeats,
        signal=(data.reshape(n_images, -1)).astype(np.float32),
        ncsnr=ncsnr,
        noise_ceiling=nc_r,
        noise_ceiling_percent=nc_pct,
        prf_center=summary[:, :2],
        prf_size=summary[:, 2],
        rois=rois,
        feature_type=np.array([FEATURE_TYPES[a] for a in rois]),
        sources=sources,
        times=times,
        ch_names=list(info.ch_names),
        time_courses=tc,
    )


def _description(
    n_images, image_size, modality, n_voxels, n_repeats, snr, voxel_size, hierarchy=0.0
) -> str:
    kind = {
        "fmri": f"an fMRI volume of {n_voxels} occipital voxels ({voxel_size:.2f} mm)",
        "eeg": f"EEG (standard_1020, 100 Hz, 0-490 ms) from {n_voxels} cortical dipoles",
        "meg": f"MEG (Vectorview magnetometers, 100 Hz, 0-490 ms) from {n_voxels} dipoles",
    }[modality]
    return (
        f"Simulated retinotopic visual cortex (afo_encoding.simulation): {n_images} "
        f"procedural {image_size}x{image_size} images (one object of "
        f"{len(CATEGORIES)} categories on 1/f noise), seen by {kind}; {n_repeats} "
        f"trials per image, snr={snr}. Voxels in the occipital gray matter of the MNI152 "
        "template; three areas posterior to anterior (early: local oriented energy at a "
        "fine scale in a small pRF; mid: texture energy and co-occurrence at a middle "
        "scale in larger pRFs; late: coarse global shape plus object category); "
        "contralateral retinotopy, eccentricity growing anteriorly within each area, "
        "polar angle with height, pRF size growing with eccentricity and area"
        + (
            f"; mid and late voxels inherit the features of the area below (hierarchy="
            f"{hierarchy:g})"
            if hierarchy
            else ""
        )
        + ". Ground "
        "truth: prf_center, prf_size, rois, feature_type, signal, ncsnr, noise ceilings. "
        "See help(afo_encoding.simulation.make_retinotopic_dataset) for the equations."
    )
