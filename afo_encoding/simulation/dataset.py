"""The entry point, :func:`make_retinotopic_dataset`: images, anatomy, retinotopy, signal
and the recording, with everything that was planted."""

from __future__ import annotations

import numbers
import time
from typing import Literal

import numpy as np
from sklearn.utils import Bunch

from .._logging import logger, use_log_level
from .anatomy import occipital_grid
from .features import energy_maps
from .fmri import fmri
from .images import CATEGORIES, make_images
from .retinotopy import AREAS, plant_retinotopy
from .sensors import sensors
from .signal import FEATURE_TYPES, inherit, voxel_responses


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
        images, objects = make_images(n_images, image_size, rng_images)
        clock.log("images")
        maps = energy_maps(images)
        clock.log("Gabor energy maps")
        ijk, affine, grid_shape, voxel_size = occipital_grid(n_voxels)
        xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
        truth = plant_retinotopy(xyz, rng_voxels)
        clock.log(f"anatomy and retinotopy ({n_voxels} voxels, {voxel_size:.2f} mm)")
        signal, features, weights = voxel_responses(
            maps, objects["category"], xyz, truth, rng_voxels, return_features
        )
        if hierarchy > 0:
            signal = inherit(signal, maps, truth, hierarchy, rng_hierarchy)
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
            out = fmri(signal, sources, ijk, affine, grid_shape, n_repeats, ncsnr, rng_noise)
        else:
            out = sensors(modality, signal, sources, objects, n_repeats, snr, rng_noise)
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
