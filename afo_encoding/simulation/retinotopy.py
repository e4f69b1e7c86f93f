"""Retinotopy: the visual areas, and each voxel's population receptive field (centre and
size) from a smooth map of the contralateral hemifield, optionally mirrored, rotated or
moved by a function of the user's."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

AREAS: tuple[str, ...] = ("early", "mid", "late")
"""Visual areas, posterior to anterior (think V1-V2, V3-V4, lateral occipital)."""

_AREA_FRACTIONS = (0.40, 0.35, 0.25)  # share of each hemisphere's voxels, posterior first
_ECC_MAX = 0.9  # largest pRF eccentricity, in grid units (image half-width = 1)
_MAGNIFICATION = 1.5  # ecc = ECC_MAX * (exp(k t) - 1) / (exp(k) - 1): more cortex for the fovea
_PRF_SIZE = {"early": (0.05, 0.12), "mid": (0.10, 0.30), "late": (0.35, 0.60)}  # a + b * ecc
_AREA_SNR_GAIN = {"early": 1.0, "mid": 0.8, "late": 0.6}
_DEAD_FRACTION = 0.1  # voxels whose signal is nearly absent (ncsnr below 0.1 * snr)


def plant_retinotopy(
    xyz: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray],
    rng: np.random.Generator,
    transform: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Areas, pRF centres (grid_sample convention), sizes and SNR gains of the voxels.

    ``axes`` are each voxel's distance from the pole and elevation along the cortex (see
    :func:`~afo_encoding.simulation.anatomy.occipital_axes`); ``transform(prf_center,
    xyz)``, when given, moves the centres of the contralateral map (see
    :func:`map_transform`), and the sizes follow the new eccentricities.
    """
    rois, center, ecc = _hemifield_maps(xyz, *axes)
    if transform is not None:
        center = transform(center, xyz)
        ecc = np.hypot(center[:, 0], center[:, 1])
    size = np.empty(len(xyz))
    for area in AREAS:
        a, b = _PRF_SIZE[area]
        sel = rois == area
        size[sel] = a + b * ecc[sel]
    gain = np.array([_AREA_SNR_GAIN[a] for a in rois])
    spread = np.exp(0.35 * rng.standard_normal(len(xyz)))
    dead = rng.random(len(xyz)) < _DEAD_FRACTION
    spread[dead] *= rng.uniform(0.0, 0.1, size=dead.sum())
    return {"rois": rois, "prf_center": center, "prf_size": size, "snr_gain": gain * spread}


def _hemifield_maps(
    xyz: np.ndarray, d: np.ndarray, elevation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Areas (shells of ``d``), pRF centres and eccentricities of the contralateral maps."""
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
        # areas: shells of distance from the pole (ties broken by position)
        ranked = np.lexsort((p[:, 2], p[:, 0], d[h]))
        bounds = np.round(cuts * h.size).astype(int)
        for area, local in zip(AREAS, np.split(ranked, bounds)):
            if local.size == 0:
                continue
            members = h[local]
            rois[members] = area
            dd = d[members]
            span = dd.max() - dd.min()
            t = (dd - dd.min()) / span if span > 0 else np.zeros_like(dd)
            e = _ECC_MAX * np.expm1(_MAGNIFICATION * t) / np.expm1(_MAGNIFICATION)
            el = elevation[members]
            spread = max(np.quantile(np.abs(el - np.median(el)), 0.8), 1e-6)
            theta = (np.pi / 2) * np.tanh(1.2 * (el - np.median(el)) / spread)
            side = 1.0 if p[0, 0] < 0 else -1.0  # contralateral field
            center[members, 0] = side * e * np.cos(theta)
            center[members, 1] = e * np.sin(theta)  # dorsal (z up) -> lower field (y > 0)
            ecc[members] = e
    return rois, center, ecc


def map_transform(
    retinotopy: str | Callable, map_rotation: float
) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The transform of the contralateral map asked for; None for the map itself.

    ``"mirrored"`` flips x (each hemisphere then sees its own side), a callable
    ``f(prf_center, xyz)`` gives new centres, and ``map_rotation`` (degrees) then turns the
    map counter-clockwise on the screen about the fovea.
    """
    named = isinstance(retinotopy, str) and retinotopy in ("contralateral", "mirrored")
    if not named and not callable(retinotopy):
        raise ValueError(
            "retinotopy must be 'contralateral', 'mirrored' or a callable "
            f"f(prf_center, xyz) -> prf_center, got {retinotopy!r}."
        )
    if isinstance(map_rotation, bool) or not isinstance(map_rotation, numbers.Real) or (
        not np.isfinite(map_rotation)
    ):
        raise ValueError(f"map_rotation must be a number of degrees, got {map_rotation!r}.")
    if retinotopy == "contralateral" and map_rotation == 0:
        return None
    angle = np.deg2rad(float(map_rotation))
    # counter-clockwise on the screen, whose y points up: grid y (down) turns the other way
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])

    def transform(center: np.ndarray, xyz: np.ndarray) -> np.ndarray:
        if retinotopy == "mirrored":
            center = center * [-1.0, 1.0]
        elif callable(retinotopy):
            center = _checked_centres(retinotopy(center.copy(), xyz.copy()), len(center))
        return center @ rotation.T if map_rotation else center

    return transform


def _checked_centres(center: object, n: int) -> np.ndarray:
    center = np.asarray(center, dtype=np.float64)
    if center.shape != (n, 2):
        raise ValueError(
            f"The retinotopy callable must return pRF centres of shape ({n}, 2), got "
            f"{center.shape}."
        )
    if not np.isfinite(center).all() or np.abs(center).max() > 1.0:
        raise ValueError(
            "The retinotopy callable must return finite pRF centres inside the image "
            f"([-1, 1] in x and y), got values from {np.nanmin(center)} to "
            f"{np.nanmax(center)}."
        )
    return center
