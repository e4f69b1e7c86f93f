"""fMRI: single trials with independent Gaussian noise, their mean as a 4D volume."""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch


def noise_ceilings(ncsnr: np.ndarray, n_repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise ceilings of the mean of ``n_repeats`` trials: in r units and NSD percent."""
    frac = ncsnr**2 / (ncsnr**2 + 1.0 / n_repeats)
    return np.sqrt(frac), 100.0 * frac


def fmri(signal, sources, cortex, n_repeats, ncsnr, rng) -> Bunch:
    """fMRI recording of the voxels of ``cortex`` (their grid), with its truth."""
    import nibabel as nib

    ijk, affine, grid_shape = cortex.ijk, cortex.affine, cortex.grid_shape
    n_images, n_voxels = signal.shape
    repeats = rng.standard_normal((n_images, n_repeats, n_voxels), dtype=np.float32)
    repeats += (signal * ncsnr.astype(np.float32))[:, None, :]
    Y = repeats.mean(axis=1)
    volume = np.zeros((*grid_shape, n_images), dtype=np.float32)
    volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = Y.T
    mask = np.zeros(grid_shape, dtype=np.uint8)
    mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = 1
    nc_r, nc_pct = noise_ceilings(ncsnr, n_repeats)
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
