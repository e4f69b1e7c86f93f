"""A folded cortical sheet, the other anatomy (``anatomy="folded"``).

Each hemisphere is a sheet one voxel thick at ``|x| = 30 + f(y, z)`` mm, folded like an
egg crate: ``f`` adds a sine of amplitude 10 mm and period 16 mm along y and another along
z. The maps are laid out along the sheet, through its arclength coordinates, so voxels
facing each other across a fold, a few mm apart in space, can be far apart on the maps.
"""

from __future__ import annotations

import functools

import numpy as np

from .anatomy import regular_grid

_Y = (-106.0, -62.0)  # posterior edge (the pole) to anterior edge, mm
_Z = (-16.0, 32.0)
_X0 = 30.0  # distance of the unfolded sheet from the midline, mm
_FOLD_AMPLITUDE = 10.0  # mm, in each direction
_FOLD_PERIOD = 16.0  # mm


def _fold(u: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray]:
    """The fold along one axis at positions ``u`` (mm): its offset and its slope."""
    k = 2 * np.pi / _FOLD_PERIOD
    return _FOLD_AMPLITUDE * np.sin(k * (u - start)), _FOLD_AMPLITUDE * k * np.cos(k * (u - start))


def _sample_sheet(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid of a given spacing (mm) over the sheet's box; returns ijk, origin, shape."""
    half_width = _X0 + 2 * _FOLD_AMPLITUDE + spacing
    nx = 2 * int(np.ceil(half_width / spacing))  # even: no voxel on the midline
    x = spacing * (np.arange(nx) - (nx - 1) / 2.0)
    y = np.arange(_Y[0], _Y[1] + 0.1, spacing)
    z = np.arange(_Z[0], _Z[1] + 0.1, spacing)
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    (fy, sy), (fz, sz) = _fold(Y, _Y[0]), _fold(Z, _Z[0])
    # within half a spacing of the surface along its normal: every line of the grid along
    # x that crosses the sheet holds at least one of its voxels, so the sheet has no holes
    keep = np.abs(np.abs(X) - (_X0 + fy + fz)) <= 0.5 * spacing * np.sqrt(1 + sy**2 + sz**2)
    return np.argwhere(keep), np.array([x[0], y[0], z[0]]), np.array(X.shape)


@functools.lru_cache(maxsize=16)
def _sheet_grid_cached(n_voxels: int):
    # grids coarser than the folds see a flatter, smaller sheet than the spacing^-2 law
    # says: start coarser, so that few voxels still span the whole sheet
    return regular_grid(_sample_sheet, n_voxels, 2, "the folded sheet", start=1.5)


def folded_sheet_grid(n_voxels: int):
    """ijk, affine, shape and spacing of ``n_voxels`` voxels of the folded sheet."""
    ijk, affine, shape, spacing = _sheet_grid_cached(int(n_voxels))
    return ijk.copy(), affine.copy(), shape, spacing


def sheet_axes(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from the pole and elevation along the sheet (arclengths, mm)."""
    return _arclength(xyz[:, 1], _Y), _arclength(xyz[:, 2], _Z)


def _arclength(u: np.ndarray, span: tuple[float, float]) -> np.ndarray:
    """Length of the folded curve along one axis, from the start of ``span`` to ``u`` (mm),
    by trapezoids on a 0.01 mm grid."""
    grid = np.arange(span[0] - 1.0, span[1] + 1.0, 0.01)
    step = np.sqrt(1 + _fold(grid, span[0])[1] ** 2)
    length = np.concatenate([[0.0], np.cumsum((step[1:] + step[:-1]) / 2 * np.diff(grid))])
    return np.interp(u, grid, length) - np.interp(span[0], grid, length)
