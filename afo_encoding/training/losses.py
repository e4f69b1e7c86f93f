"""Per-voxel losses: smooth-L1 on the ground truth and on soft ("dark knowledge") targets."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def voxel_loss_sum(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    soft_target: torch.Tensor | None = None,
    soft_weight: torch.Tensor | None = None,
    beta: float = 0.01,
) -> torch.Tensor:
    """Sum over samples and voxels of the weighted smooth-L1 loss.

    The loss of one (sample, voxel) element is
    ``weight[v] * smooth_l1(pred, target) + soft_weight[v] * smooth_l1(pred, soft_target)``;
    a weight of 0 masks the ground truth of a voxel (the All-for-One helpers learn only
    their soft targets). The caller divides by the element count it wants each element
    to weigh (see :func:`afo_encoding.training.fit_model`).

    Parameters
    ----------
    pred, target : Tensor, shape (n_samples, n_voxels)
        Predictions and ground truth (computed in float32 whatever the precision).
    weight : Tensor, shape (n_voxels,) | None
        Weight of the ground-truth term per voxel; ``None`` means 1.
    soft_target : Tensor, shape (n_samples, n_voxels) | None
        Teacher predictions for the same samples and voxels.
    soft_weight : Tensor, shape (n_voxels,) | None
        Weight of the soft term per voxel; required with ``soft_target``.
    beta : float
        Smooth-L1 transition point (paper: 0.01).

    Returns
    -------
    loss : Tensor, scalar
        The summed loss.
    """
    pred = pred.float()
    elementwise = F.smooth_l1_loss(pred, target.float(), beta=beta, reduction="none")
    total = (elementwise * weight).sum() if weight is not None else elementwise.sum()
    if soft_target is not None:
        if soft_weight is None:
            raise ValueError("soft_target needs a soft_weight (one weight per voxel).")
        soft = F.smooth_l1_loss(pred, soft_target.float(), beta=beta, reduction="none")
        total = total + (soft * soft_weight).sum()
    return total
