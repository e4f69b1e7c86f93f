"""The entry point, :func:`make_retinotopic_dataset`: images, anatomy, retinotopy, signal
and the recording, with everything that was planted."""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
from sklearn.utils import Bunch

from .._docs import fill_doc
from .._logging import logger, use_log_level
from ._docs import DOCS
from .anatomy import occipital_axes, occipital_grid
from .features import FEATURE_MODELS
from .fmri import fmri
from .images import CATEGORIES, make_images
from .retinotopy import AREAS, map_transform, plant_retinotopy
from .sensors import sensors
from .sheet import folded_sheet_grid, sheet_axes
from .signal import inherit, voxel_responses


@fill_doc(DOCS)
def make_retinotopic_dataset(
    n_images: int = 1000,
    image_size: int = 64,
    modality: Literal["fmri", "eeg", "meg"] = "fmri",
    n_voxels: int = 2000,
    n_repeats: int = 3,
    snr: float = 1.0,
    *,
    hierarchy: float = 0.0,
    feature_model: Literal["gabor", "contrast"] = "gabor",
    retinotopy: Literal["contralateral", "mirrored"] | Callable = "contralateral",
    map_rotation: float = 0.0,
    anatomy: Literal["occipital", "folded"] = "occipital",
    return_features: bool = False,
    random_state: int | np.random.RandomState | np.random.Generator | None = None,
    verbose: bool | int | str | None = None,
) -> Bunch:
    """Simulate a visual cortex seeing procedural images, with its ground truth.

    %(images)s

    %(anatomy)s

    %(retinotopy)s

    %(features)s

    %(hierarchy)s

    %(variants)s

    %(noise)s

    %(sensors)s

    %(parameters)s

    %(returns)s

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
    model = _check_choice("feature_model", feature_model, FEATURE_MODELS)
    transform = map_transform(retinotopy, map_rotation)
    place = _check_choice("anatomy", anatomy, _ANATOMIES)
    rng_images, rng_voxels, rng_noise, rng_hierarchy = _generators(random_state)
    with use_log_level(verbose):
        clock = _Clock()
        images, objects = make_images(n_images, image_size, rng_images)
        clock.log("images")
        maps = model.maps(images)
        clock.log(model.label)
        cortex = place(n_voxels)
        truth = plant_retinotopy(cortex.xyz, cortex.axes, rng_voxels, transform)
        clock.log(f"anatomy and retinotopy ({n_voxels} voxels, {cortex.voxel_size:.2f} mm)")
        signal, features, weights = voxel_responses(
            maps, model, objects["category"], cortex.xyz, truth, rng_voxels, return_features
        )
        if hierarchy > 0:
            signal = inherit(signal, maps, model, truth, hierarchy, rng_hierarchy)
        clock.log("voxel responses")
        sources = _sources(cortex, truth, model, anatomy)
        if modality == "fmri":
            ncsnr = snr * truth["snr_gain"]
            out = fmri(signal, sources, cortex, n_repeats, ncsnr, rng_noise)
        else:
            out = sensors(modality, signal, sources, objects, n_repeats, snr, rng_noise,
                          model.feature_types)
        clock.log(f"{modality} responses and noise")
    variants = _variants(feature_model, retinotopy, map_rotation, anatomy)
    description = _description(n_images, image_size, modality, n_voxels, n_repeats, snr,
                               cortex.voxel_size, hierarchy, variants)
    out.update(_stimulus_outputs(images, maps, objects), modality=modality, area_names=AREAS,
               category_names=CATEGORIES, voxel_size=cortex.voxel_size,
               description=description)
    if return_features:
        out.update(features=features, weights=weights)
    return out


def _stimulus_outputs(images, maps, objects) -> dict:
    """The images, the early area's feature layout and the objects shown."""
    return {
        "images": images,
        "energy_map": maps[0].sum(axis=1),
        "object_category": objects["category"],
        "object_position": objects["position"],
        "object_size": objects["size"],
        "object_orientation": objects["orientation"],
    }


# --- anatomy and sources ----------------------------------------------------------------


def _cortex(grid, axes):
    """An anatomy: the voxel grid ``grid(n_voxels)`` and the map axes ``axes(xyz)``."""

    def place(n_voxels: int) -> Bunch:
        ijk, affine, grid_shape, voxel_size = grid(n_voxels)
        xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
        return Bunch(ijk=ijk, affine=affine, grid_shape=grid_shape, voxel_size=voxel_size,
                     xyz=xyz, axes=axes(xyz))

    return place


_ANATOMIES = {
    "occipital": _cortex(occipital_grid, occipital_axes),
    "folded": _cortex(folded_sheet_grid, sheet_axes),
}


def _sources(cortex: Bunch, truth: dict, model, anatomy: str) -> Bunch:
    """The cortical voxels and what was planted in them."""
    sources = Bunch(
        coords=cortex.xyz,
        prf_center=truth["prf_center"],
        prf_size=truth["prf_size"],
        rois=truth["rois"],
        feature_type=np.array([model.feature_types[a] for a in truth["rois"]]),
    )
    if anatomy == "folded":
        sources.sheet_coords = np.column_stack(cortex.axes)
    return sources


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


def _check_choice(name: str, value, choices: dict):
    """``choices[value]``, or an error that names the parameter and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}."
        )
    return choices[value]


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



def _variants(feature_model, retinotopy, map_rotation, anatomy) -> list[str]:
    """Clauses of the description for the options that differ from the defaults."""
    clauses = []
    if feature_model == "contrast":
        clauses.append("voxels read normalised ON/OFF contrast energy of centre-surround "
                       "filters instead of Gabor energy (feature_model='contrast')")
    if retinotopy == "mirrored":
        clauses.append("maps mirrored left-right, each hemisphere sees its own side "
                       "(retinotopy='mirrored')")
    elif callable(retinotopy):
        clauses.append("pRF centres moved by a user function (retinotopy=callable)")
    if map_rotation:
        clauses.append(f"maps rotated by {map_rotation:g} degrees counter-clockwise")
    if anatomy == "folded":
        clauses.append("voxels on a folded cortical sheet instead of the gray matter, maps "
                       "laid out along the sheet (anatomy='folded')")
    return clauses


def _description(
    n_images, image_size, modality, n_voxels, n_repeats, snr, voxel_size, hierarchy, variants
) -> str:
    kind = {
        "fmri": f"an fMRI volume of {n_voxels} occipital voxels ({voxel_size:.2f} mm)",
        "eeg": f"EEG (standard_1020, 100 Hz, 0-490 ms) from {n_voxels} cortical dipoles",
        "meg": f"MEG (Vectorview magnetometers, 100 Hz, 0-490 ms) from {n_voxels} dipoles",
    }[modality]
    if hierarchy:
        variants = [f"mid and late voxels inherit the features of the area below "
                    f"(hierarchy={hierarchy:g})", *variants]
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
        + "".join(f"; {clause}" for clause in variants)
        + ". Ground truth: prf_center, prf_size, rois, feature_type, signal, ncsnr, noise "
        "ceilings. See help(afo_encoding.simulation.make_retinotopic_dataset) for the "
        "equations."
    )
