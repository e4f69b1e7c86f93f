"""The ridge recipe of :class:`~afo_encoding.encoders.TopyEncoder` (``head_solver="ridge"``).

The paper trains everything by SGD for many thousands of steps on a GPU. At the budgets of
a laptop (hundreds of steps, a few thousand images) its per-voxel heads stay far from their
optimum and the model loses to a linear probe of the same features. The ridge recipe keeps
what SGD is needed for, finding where every voxel looks, and solves the rest exactly:

1. **Readout maps.** Every backbone layer is standardised and reduced to its leading
   principal components (:class:`~afo_encoding.nn.adapters.LinearAdapter`, fixed).
2. **Where to look.** A short SGD fit of the RetinaMapper (with throw-away heads) on these
   maps, with early stopping on validation images.
3. **Global branch.** The linear probe's view of the whole image: every layer pooled to a
   4 x 4 grid, standardised, projected on its principal components
   (:class:`~afo_encoding.nn.probe.ProbeBranch`), and a ridge per voxel on these scores,
   alpha by cross-validation (:func:`~afo_encoding.encoders.ridge.ridge_cv`).
4. **Local heads.** Every voxel's features sampled where its RetinaMapper looks, in every
   layer, and a ridge per voxel on what the global branch left unexplained (its
   out-of-fold residuals), alpha by cross-validation
   (:func:`~afo_encoding.encoders.voxelwise_ridge.voxelwise_ridge_cv`, the
   one-standard-error rule), then weighed against the global branch by a non-negative
   stacking weight fitted to the out-of-fold predictions (:func:`stacking_weight`): where
   the local readout predicts nothing the global branch missed, its weight is 0 and the
   voxel is exactly the linear probe.

The result is an ordinary :class:`~afo_encoding.nn.TopyNet` (``layer_mixing="concat"``)
whose head weighs, for every voxel, the layers sampled at its point and the global scores.
Cross-validation folds hold out whole images (repeats of an image stay together).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._logging import logger
from .ridge import DEFAULT_ALPHAS, ridge_cv
from .voxelwise_ridge import voxelwise_ridge_cv

#: images whose feature maps set the readout maps' principal axes
_ADAPTER_IMAGES = 256


@dataclass
class RidgeHeads:
    """The closed-form heads of one subject.

    Attributes
    ----------
    weight : ndarray of shape (n_voxels, n_local + n_probe)
        Weights of the sampled layers, then of the global scores (in feature units).
    bias : ndarray of shape (n_voxels,)
    cv_r : ndarray of shape (n_voxels,)
        Pearson r of the out-of-fold predictions of the whole readout and the measured
        responses: what the fit expects on new images.
    layer_share : ndarray of shape (n_voxels, n_layers)
        Each layer's share of the variance of the voxel's local readout.
    alpha_local, alpha_probe : ndarray of shape (n_voxels,)
        The ridge strengths chosen.
    local_weight : ndarray of shape (n_voxels,)
        The stacking weight of the local readout (0: the voxel is the global branch alone).
    """

    weight: np.ndarray
    bias: np.ndarray
    cv_r: np.ndarray
    layer_share: np.ndarray
    alpha_local: np.ndarray
    alpha_probe: np.ndarray
    local_weight: np.ndarray

    @property
    def local_on(self) -> np.ndarray:
        """Voxels whose prediction uses the local readout."""
        return (self.alpha_local < 1e6) & (self.local_weight > 0)


def image_folds(ids: Sequence[str], cv: Any = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds of samples that hold out whole images.

    The distinct images, in the order they first appear, are split by ``cv`` (an int is
    an unshuffled K-fold, as in scikit-learn and
    :class:`~afo_encoding.encoders.LinearProbeEncoder`: without repeated images the folds
    are the same as the linear probe's); every sample goes with its image, so repeats of
    an image are never on both sides.

    Parameters
    ----------
    ids : sequence of str
        Image id of every sample.
    cv : int or cross-validation splitter
        Folds over the distinct images; an int is capped so that every fold holds at least
        2 images. Pass ``KFold(5, shuffle=True, random_state=0)`` when the images are
        ordered (by category, say).

    Returns
    -------
    folds : list of (train, test) arrays of sample indices
    """
    from sklearn.model_selection import check_cv

    ids = np.asarray(ids)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=int)
    rank[np.argsort(first)] = np.arange(len(first))
    image = rank[inverse]  # image number of every sample, in order of appearance
    n_images = len(first)
    if n_images < 4:
        raise ValueError(
            f"The ridge heads need at least 4 distinct images for their cross-validation, "
            f"got {n_images}. Give more images or use head_solver='sgd'."
        )
    if isinstance(cv, numbers.Integral):
        cv = max(2, min(int(cv), n_images // 2))
    samples = np.arange(len(ids))
    folds = []
    for _, test_images in check_cv(cv).split(np.zeros((n_images, 1))):
        held = np.isin(image, test_images)
        folds.append((samples[~held], samples[held]))
    return folds


def fit_linear_adapters(stores, rows: Sequence[np.ndarray], channels: int, seed: int):
    """Readout maps: every layer standardised and reduced to ``channels`` principal axes.

    Parameters
    ----------
    stores : list of FeatureStore
        One per subject.
    rows : list of ndarray
        Training samples of each subject (the axes are fitted on up to 256 of them).
    channels : int
        Channels kept per layer (all when a layer has fewer).
    seed : int
        Seed of the choice of images.

    Returns
    -------
    adapters : list of LinearAdapter
    """
    from ..nn.adapters import LinearAdapter

    rng = np.random.default_rng(seed)
    per_subject = max(1, _ADAPTER_IMAGES // len(stores))
    batches = []
    for store, idx in zip(stores, rows):
        chosen = np.sort(rng.choice(idx, size=min(per_subject, len(idx)), replace=False))
        batches.append(store.batch(chosen)[0])
    n_layers = len(batches[0])
    return [
        LinearAdapter.from_maps(torch.cat([b[layer] for b in batches]), channels)
        for layer in range(n_layers)
    ]


def adapted_store(store, adapters, batch_size: int = 256):
    """A store of the readout maps (the adapters applied once to every sample), in float16:
    the SGD fit reads them many times."""
    from ..backbones import FeatureStore

    parts: list[list[torch.Tensor]] = [[] for _ in adapters]
    with torch.no_grad():
        for start in range(0, len(store), batch_size):
            locals_, _ = store.batch(np.arange(start, min(start + batch_size, len(store))))
            for layer, (adapter, m) in enumerate(zip(adapters, locals_)):
                parts[layer].append(adapter(m).to(torch.float16))
    maps = [torch.cat(p) for p in parts]
    empty = [torch.zeros(len(store), 0) for _ in maps]
    return FeatureStore.from_arrays(
        maps, empty, ids=store.ids, dtype="float16", name=f"readout maps of {store.backbone_name}"
    )


def fit_probe_branch(stores, rows, n_components: int, pool_size, random_state, verbose=None):
    """The global branch: principal axes of the pooled features of the training images.

    Returns
    -------
    probe : ProbeBranch
        With its buffers set.
    scores : list of ndarray of shape (n_samples_s, k)
        Every subject's samples projected (all of them, not only ``rows``).
    """
    from ..nn.probe import ProbeBranch
    from .linear import pool_features, principal_axes
    from .ridge import get_backend

    pooled = [pool_features(store, pool_size, True, verbose=verbose) for store in stores]
    train = np.concatenate([p[idx] for p, idx in zip(pooled, rows)]).astype(np.float64)
    mean = train.mean(0)
    scale = train.std(0)
    scale[scale == 0] = 1.0
    z = ((train - mean) / scale).astype(np.float32)
    k = min(int(n_components), z.shape[0] - 1, z.shape[1])
    components = principal_axes(get_backend("numpy"), z, k, random_state)
    probe = ProbeBranch(z.shape[1], k, pool_size)
    probe.mean.copy_(torch.from_numpy(mean))
    probe.scale.copy_(torch.from_numpy(scale))
    probe.components.copy_(torch.from_numpy(components))
    scores = [
        (((p - mean) / scale).astype(np.float32) @ components.T).astype(np.float32)
        for p in pooled
    ]
    return probe, scores


def transferred_adapters(states: Sequence[dict]):
    """The readout maps of another fit (a warm start): LinearAdapters with its buffers."""
    from ..nn.adapters import LinearAdapter

    adapters = []
    for state in states:
        out_channels, in_channels = state["projection"].shape
        adapter = LinearAdapter(in_channels, out_channels)
        adapter.load_state_dict(state)
        adapters.append(adapter)
    return adapters


def _local_features(model, store, subject: int, batch_size: int, device):
    """``features(cols)``: every layer sampled at the points of voxels ``cols``, all samples."""
    readout = model.subjects[subject]

    def features(cols: slice) -> np.ndarray:
        index = torch.arange(cols.start, cols.stop, device=device)
        out = []
        with torch.no_grad():
            for start in range(0, len(store), batch_size):
                idx = np.arange(start, min(start + batch_size, len(store)))
                locals_, _ = store.batch(idx, device=device)
                maps = [adapter(m) for adapter, m in zip(model.adapters, locals_)]
                out.append(readout.sampled_features(maps, index).float().cpu())
        return torch.cat(out).numpy()

    return features


def _layer_share(features, coef: np.ndarray, channels: Sequence[int], n_voxels: int, batch: int):
    """Each layer's share of the variance of every voxel's local readout."""
    bounds = np.cumsum([0, *channels])
    share = np.zeros((n_voxels, len(channels)))
    for start in range(0, n_voxels, batch):
        cols = slice(start, min(start + batch, n_voxels))
        x = features(cols)  # (n, v, p)
        w = coef[cols]
        for layer in range(len(channels)):
            part = slice(bounds[layer], bounds[layer + 1])
            share[cols, layer] = np.einsum("nvp,vp->nv", x[:, :, part], w[:, part]).var(0)
    total = share.sum(1, keepdims=True)
    uniform = np.full_like(share, 1 / len(channels))
    return np.where(total > 0, share / np.where(total > 0, total, 1), uniform)


def blended_targets(Y, loss_weight=None, soft_targets=None, soft_weight=None) -> np.ndarray:
    """What a least-squares head should fit when a voxel's loss mixes the ground truth
    (weight ``loss_weight``) and a teacher's predictions (weight ``soft_weight``): their
    weighted mean (All-for-One's dark knowledge in closed form)."""
    if soft_targets is None:
        return Y
    lw = np.ones(Y.shape[1]) if loss_weight is None else np.broadcast_to(loss_weight, Y.shape[1:])
    sw = np.broadcast_to(soft_weight, Y.shape[1:]).astype(np.float64)
    total = lw + sw
    safe = np.where(total > 0, total, 1.0)
    blended = (Y * lw + np.asarray(soft_targets) * sw) / safe
    return np.where(total > 0, blended, Y).astype(np.float32)


def stacking_weight(residual: np.ndarray, local_oof: np.ndarray) -> np.ndarray:
    """Each voxel's non-negative weight of the local branch (Breiman's stacked regression).

    The least-squares weight ``w >= 0`` of the local branch's out-of-fold predictions of the
    global branch's residuals: 0 where the local readout predicts nothing the global branch
    missed (position-free voxels: the voxel is then exactly the linear probe), about 1 where
    it does, above 1 where the one-standard-error rule shrank it more than it needed.
    """
    r = residual - residual.mean(0)
    p = local_oof - local_oof.mean(0)
    den = (p * p).sum(0)
    w = np.where(den > 0, (r * p).sum(0) / np.maximum(den, 1e-300), 0.0)
    return np.clip(w, 0.0, None)


def solve_heads(
    model,
    store,
    subject: int,
    Y: np.ndarray,
    targets: np.ndarray,
    probe_scores: np.ndarray | None,
    folds,
    *,
    alphas=None,
    probe_alphas=None,
    device="cpu",
    batch_size: int = 128,
) -> RidgeHeads:
    """Closed-form heads of one subject: the global branch's ridge, then the local ridge on
    its out-of-fold residuals (see the module notes).

    Parameters
    ----------
    model : TopyNet
        With ``layer_mixing="concat"``, its readout placed.
    store : FeatureStore
        The subject's samples.
    subject : int
    Y : ndarray (n_samples, n_voxels)
        Measured responses (for the cross-validated r).
    targets : ndarray (n_samples, n_voxels)
        What the heads fit (``Y``, or a blend with soft targets).
    probe_scores : ndarray (n_samples, k) or None
        The global branch's scores of the samples (None: no global branch).
    folds : list of (train, test)
        Cross-validation folds (whole images).
    alphas, probe_alphas : array-like or None
        Ridge strengths of the local and the global heads.
    device : str or torch.device
        Where the local features and solves run.
    batch_size : int
        Images per forward pass of the readout maps.
    """
    from ..metrics import pearson_r

    n_voxels = Y.shape[1]
    residual = targets
    probe_weight = np.zeros((n_voxels, 0), dtype=np.float32)
    bias = np.zeros(n_voxels, dtype=np.float64)
    oof = np.zeros(Y.shape, dtype=np.float64)
    alpha_probe = np.full(n_voxels, np.nan)
    if probe_scores is not None:
        fit = ridge_cv(
            probe_scores,
            targets,
            DEFAULT_ALPHAS if probe_alphas is None else probe_alphas,
            folds,
            return_cv_predictions=True,
            edge_warning=1.0,
        )
        probe_weight = fit.coef.T
        bias += fit.intercept
        oof += fit.cv_predictions
        residual = targets - fit.cv_predictions
        alpha_probe = fit.alpha
    features = _local_features(model, store, subject, batch_size, device)
    local = voxelwise_ridge_cv(
        features, residual, alphas, folds, rule="one_standard_error", device=device
    )
    weight = stacking_weight(residual, local.cv_predictions)
    mean_residual = residual.mean(0)
    local_coef = local.coef * weight[:, None]
    bias += weight * local.intercept + (1 - weight) * mean_residual
    oof += mean_residual + weight * (local.cv_predictions - mean_residual)
    channels = [adapter.out_channels for adapter in model.adapters]
    batch = max(1, 2**25 // (len(Y) * sum(channels)))
    share = _layer_share(features, local_coef, channels, n_voxels, batch)
    logger.info(
        "Ridge heads: %d voxels, local readout on for %.0f%% of them.",
        n_voxels,
        100 * np.mean((local.alpha < 1e6) & (weight > 0)),
    )
    return RidgeHeads(
        weight=np.concatenate([local_coef, probe_weight], axis=1),
        bias=bias.astype(np.float32),
        cv_r=pearson_r(Y, oof.astype(np.float32)),
        layer_share=share.astype(np.float32),
        alpha_local=local.alpha,
        alpha_probe=alpha_probe,
        local_weight=weight,
    )


def set_heads(model, heads: Sequence[RidgeHeads]) -> None:
    """Write closed-form heads into a concat TopyNet (its heads average over their width)."""
    with torch.no_grad():
        for head, solved in zip(model.heads, heads):
            width = head.weight.shape[1]
            head.weight.copy_(torch.from_numpy(solved.weight * width))
            head.bias.copy_(torch.from_numpy(solved.bias))


def copy_readout(source, target) -> None:
    """Copy the placed readout (positional codes, RetinaMapper, LayerSelector) of every
    subject of the SGD model into the final one; adapters, heads and the probe branch are
    the final model's."""
    def readout(key: str) -> bool:
        return key.startswith("subjects.") and ".head." not in key

    state = {k: v for k, v in source.state_dict().items() if readout(k)}
    missing, unexpected = target.load_state_dict(state, strict=False)
    left = [k for k in missing if readout(k)]
    if left or unexpected:
        raise RuntimeError(f"Readout copy mismatch: missing {left}, unexpected {unexpected}.")


def summary(heads: Sequence[RidgeHeads]) -> dict[str, Any]:
    """Numbers for the fit history: cross-validated r and how often the local readout is on."""
    return {
        "final_score": float(np.mean(np.concatenate([h.cv_r for h in heads]))),
        "local_readout_on": float(np.mean(np.concatenate([h.local_on for h in heads]))),
    }
