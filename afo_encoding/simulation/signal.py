"""The noiseless voxel signal: each area's feature maps pooled over the voxels' Gaussian
pRFs, compressed, weighted by voxel and z-scored; the features inherited along the
hierarchy."""

from __future__ import annotations

import numpy as np

from .images import CATEGORIES
from .retinotopy import AREAS

N_FEATURES = 10  # width of the per-voxel feature arrays (late: 4 energies + 6 categories)
_CATEGORY_PATCH_MM = 12.0
_EXPONENT = 0.5  # compressive nonlinearity on pooled energy (Kay et al. 2013)


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


def voxel_responses(maps, model, category, xyz, truth, rng, return_features):
    """Noiseless signal (n_images, n_voxels), z-scored, from each area's features."""
    n_images = maps[0].shape[0]
    n_voxels = len(xyz)
    rois = truth["rois"]
    signal = np.empty((n_images, n_voxels), dtype=np.float32)
    features = (
        np.zeros((n_images, n_voxels, N_FEATURES), dtype=np.float32) if return_features else None
    )
    weights = np.zeros((n_voxels, N_FEATURES), dtype=np.float64)
    onehot = _zscore(np.eye(len(CATEGORIES), dtype=np.float32)[category])
    # category patches: centres in the left late area, mirrored to the right hemisphere
    late = np.flatnonzero(rois == "late")
    left_late = late[xyz[late, 0] < 0] if np.any(xyz[late, 0] < 0) else late
    centres = xyz[rng.choice(left_late, size=len(CATEGORIES))]
    for scale, area in enumerate(AREAS):
        idx = np.flatnonzero(rois == area)
        if idx.size == 0:
            continue
        m = model.area_maps(area, maps[scale])
        grid = m.shape[-1]
        n_feat = m.shape[1]
        flat = m.reshape(n_images * n_feat, grid * grid)
        # area-specific weights (drawn for the whole area at once, so chunks do not matter)
        if area in ("early", "mid"):
            w = model.type_weights(area, truth["prf_center"][idx], n_feat, rng)
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


def inherit(signal, maps, model, truth, hierarchy, rng):
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
        m = model.area_maps(below, maps[scale - 1])
        n_feat, grid = m.shape[1], m.shape[-1]
        flat = m.reshape(n_images * n_feat, grid * grid)
        w = model.type_weights(below, truth["prf_center"][idx], n_feat, rng).astype(np.float32)
        for start in range(0, idx.size, 1024):
            sl = slice(start, start + 1024)
            vox = idx[sl]
            feat = _pooled_features(flat, truth, vox, n_images, grid)
            inherited = _zscore(np.einsum("nvf,vf->nv", feat, w[sl]))
            mixed = np.sqrt(1 - hierarchy) * signal[:, vox] + np.sqrt(hierarchy) * inherited
            signal[:, vox] = _zscore(mixed)
    return signal
