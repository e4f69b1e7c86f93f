"""Anatomy: a regular grid of voxels in the occipital gray matter of the MNI152 template
bundled with nilearn."""

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


def occipital_grid(n_voxels: int):
    ijk, affine, shape, spacing = _occipital_grid_cached(int(n_voxels))
    return ijk.copy(), affine.copy(), shape, spacing
