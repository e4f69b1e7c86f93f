"""Anatomy: voxels on a regular grid in the occipital gray matter of the MNI152 template
bundled with nilearn, and the two cortical axes along which the maps are laid out (distance
from the occipital pole, elevation seen from it)."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1)
def gray_matter() -> tuple[np.ndarray, np.ndarray]:
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

    gm, affine = gray_matter()
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


def regular_grid(sample, n_voxels: int, dimension: int, what: str, start: float = 1.0):
    """The ``n_voxels`` most posterior voxels of the coarsest grid ``sample`` fills enough.

    ``sample(spacing)`` gives the (i, j, k) of the voxels of a grid of that spacing (mm),
    its origin and shape. The voxel count grows about as ``spacing ** -dimension`` (3 for
    a volume, 2 for a sheet one voxel thick): start from ``start`` times the spacing that
    law predicts from the 2 mm count, shrink by 3 % until enough. Returns ijk (in the C
    order of nilearn's masks), affine, shape and spacing.
    """
    n2 = len(sample(2.0)[0])
    spacing = start * 2.0 * (n2 / n_voxels) ** (1.0 / dimension)
    for _ in range(60):
        ijk, origin, _shape = sample(spacing)
        if len(ijk) >= n_voxels:
            break
        spacing *= 0.97
        if spacing < 0.4:
            break
    if len(ijk) < n_voxels:
        raise ValueError(
            f"n_voxels={n_voxels} is more than {what} holds at 0.4 mm "
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


@functools.lru_cache(maxsize=16)
def _occipital_grid_cached(n_voxels: int):
    return regular_grid(_sample_gray, n_voxels, 3, "the occipital gray matter")


def occipital_grid(n_voxels: int):
    """ijk, affine, shape and spacing of ``n_voxels`` occipital gray-matter voxels."""
    ijk, affine, shape, spacing = _occipital_grid_cached(int(n_voxels))
    return ijk.copy(), affine.copy(), shape, spacing


def occipital_axes(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``d`` (mm) from the hemisphere's occipital pole and elevation (radians).

    The pole is the centre of the hemisphere's 2 % most posterior voxels; in ``d``,
    lateral and vertical offsets count half, so that areas cut by ``d`` are shells
    elongated across the lobe, stacked posterior to anterior.
    """
    d, elevation = np.zeros(len(xyz)), np.zeros(len(xyz))
    for hemi in (xyz[:, 0] < 0, xyz[:, 0] > 0):
        h = np.flatnonzero(hemi)
        if h.size == 0:
            continue
        p = xyz[h]
        tip = p[p[:, 1] <= np.quantile(p[:, 1], 0.02)]
        pole = np.array([np.median(tip[:, 0]), p[:, 1].min(), np.median(tip[:, 2])])
        d[h] = np.linalg.norm((p - pole) * [0.5, 1.0, 0.5], axis=1)
        horizontal = np.hypot(p[:, 0] - pole[0], p[:, 1] - pole[1])
        elevation[h] = np.arctan2(p[:, 2] - pole[2], horizontal)  # in (-pi/2, pi/2)
    return d, elevation
