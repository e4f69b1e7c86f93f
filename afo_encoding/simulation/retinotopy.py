"""Retinotopy: the visual areas, and each voxel's population receptive field (centre and
size) from a smooth map of the contralateral hemifield."""

from __future__ import annotations

import numpy as np

AREAS: tuple[str, ...] = ("early", "mid", "late")
"""Visual areas, posterior to anterior (think V1-V2, V3-V4, lateral occipital)."""

_AREA_FRACTIONS = (0.40, 0.35, 0.25)  # share of each hemisphere's voxels, posterior first
_ECC_MAX = 0.9  # largest pRF eccentricity, in grid units (image half-width = 1)
_MAGNIFICATION = 1.5  # ecc = ECC_MAX * (exp(k t) - 1) / (exp(k) - 1): more cortex for the fovea
_PRF_SIZE = {"early": (0.05, 0.12), "mid": (0.10, 0.30), "late": (0.35, 0.60)}  # a + b * ecc
_AREA_SNR_GAIN = {"early": 1.0, "mid": 0.8, "late": 0.6}
_DEAD_FRACTION = 0.1  # voxels whose signal is nearly absent (ncsnr below 0.1 * snr)


def plant_retinotopy(xyz: np.ndarray, rng: np.random.Generator) -> dict:
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
