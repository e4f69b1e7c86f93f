"""What a fit trains on: one :class:`SubjectData` per subject, and the batch sampler.

A subject's data is a feature store (anything with ``batch(indices, device, dtype)`` as
:class:`afo_encoding.backbones.FeatureStore`; ``FeatureStore.from_arrays`` wraps precomputed
arrays), the targets ``(n_samples, n_voxels)`` and the All-for-One hooks: a per-voxel weight
on the ground truth, soft targets with their own per-voxel weight, and the voxels that
validation (early stopping, checkpoint choice, soup) looks at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _as_voxel_vector(value, n_voxels: int, name: str, signed: bool = False) -> np.ndarray | None:
    if value is None:
        return None
    vec = np.asarray(value, dtype=np.float32)
    if vec.ndim == 0:
        vec = np.full(n_voxels, float(vec), dtype=np.float32)
    if vec.shape != (n_voxels,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_voxels},), got {vec.shape}.")
    if not np.all(np.isfinite(vec)) or (not signed and np.any(vec < 0)):
        raise ValueError(f"{name} must be finite{'' if signed else ' and non-negative'}.")
    return vec


@dataclass
class SubjectData:
    """One subject's training material.

    Parameters
    ----------
    features : feature store
        ``len(features)`` samples; ``features.batch(indices, device=, dtype=)`` returns
        ``(locals, globals)``.
    targets : ndarray, shape (n_samples, n_voxels)
        Ground-truth responses (float32).
    train_index, val_index : ndarray of int
        Samples used for the gradient steps and for validation.
    loss_weight : float | ndarray, shape (n_voxels,) | None
        Weight of each voxel's ground-truth loss (0 masks it); ``None`` means 1.
    soft_targets : ndarray, shape (n_samples, n_voxels) | None
        Teacher predictions ("dark knowledge"); required when ``soft_weight`` is given.
    soft_weight : float | ndarray, shape (n_voxels,) | None
        Weight of each voxel's soft-target loss; required when ``soft_targets`` is given.
    monitor : ndarray of int or bool, shape (n_voxels,) | None
        Voxels whose mean validation Pearson r drives early stopping, checkpoint choice and
        the soup; ``None`` means all voxels. It may select none (an All-for-One ROI this
        subject lacks) when another subject of the fit has monitored voxels (see
        :func:`check_monitors`).
    target_mean, target_scale : ndarray, shape (n_voxels,) | None
        The loss sees ``(y - target_mean) / target_scale`` for the targets and the soft
        targets (z-scored voxels, whatever their units: volts, tesla, % signal); the model
        then predicts in these units. Validation (Pearson r) does not depend on them.
    """

    features: Any
    targets: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    loss_weight: Any = None
    soft_targets: np.ndarray | None = None
    soft_weight: Any = None
    monitor: np.ndarray | None = None
    target_mean: np.ndarray | None = None
    target_scale: np.ndarray | None = None
    monitor_index: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.targets = np.asarray(self.targets, dtype=np.float32)
        if self.targets.ndim != 2:
            raise ValueError(
                f"targets must be (n_samples, n_voxels), got shape {self.targets.shape}."
            )
        n_samples, n_voxels = self.targets.shape
        if len(self.features) != n_samples:
            raise ValueError(
                f"The features hold {len(self.features)} samples but the targets {n_samples}."
            )
        if not np.all(np.isfinite(self.targets)):
            raise ValueError("targets contain NaN or inf.")
        self.train_index = np.asarray(self.train_index, dtype=np.int64)
        self.val_index = np.asarray(self.val_index, dtype=np.int64)
        for name, idx in (("train_index", self.train_index), ("val_index", self.val_index)):
            if idx.ndim != 1 or len(idx) == 0:
                raise ValueError(f"{name} must be a non-empty 1D array of sample indices.")
            if idx.min() < 0 or idx.max() >= n_samples:
                raise ValueError(f"{name} has indices outside [0, {n_samples}).")
        if len(self.val_index) < 2:
            raise ValueError(
                "Validation needs at least 2 samples to compute a Pearson r, got "
                f"{len(self.val_index)}."
            )
        self.loss_weight = _as_voxel_vector(self.loss_weight, n_voxels, "loss_weight")
        self.soft_weight = _as_voxel_vector(self.soft_weight, n_voxels, "soft_weight")
        if (self.soft_targets is None) != (self.soft_weight is None):
            missing = "soft_targets" if self.soft_targets is None else "soft_weight"
            raise ValueError(
                f"soft targets need both soft_targets and soft_weight; {missing} is missing "
                "(a missing teacher is an error, never zeros)."
            )
        if self.soft_targets is not None:
            self.soft_targets = np.asarray(self.soft_targets, dtype=np.float32)
            if self.soft_targets.shape != self.targets.shape:
                raise ValueError(
                    f"soft_targets must have the shape of the targets {self.targets.shape}, "
                    f"got {self.soft_targets.shape}."
                )
            if not np.all(np.isfinite(self.soft_targets[self.train_index])):
                raise ValueError("soft_targets contain NaN or inf on training samples.")
        if (self.target_mean is None) != (self.target_scale is None):
            raise ValueError("target_mean and target_scale go together (or neither).")
        if self.target_mean is not None:
            self.target_mean = _as_voxel_vector(
                self.target_mean, n_voxels, "target_mean", signed=True
            )
            self.target_scale = _as_voxel_vector(self.target_scale, n_voxels, "target_scale")
            if np.any(self.target_scale == 0):
                raise ValueError("target_scale must be > 0 for every voxel.")
        if self.monitor is None:
            self.monitor_index = np.arange(n_voxels)
        else:
            mon = np.asarray(self.monitor)
            if mon.dtype == bool:
                if mon.shape != (n_voxels,):
                    raise ValueError(
                        f"A boolean monitor mask must have shape ({n_voxels},), got {mon.shape}."
                    )
                mon = np.flatnonzero(mon)
            mon = np.unique(mon.astype(np.int64))
            if len(mon) and (mon[0] < 0 or mon[-1] >= n_voxels):
                raise ValueError(
                    f"monitor must hold voxel indices in [0, {n_voxels}), got {mon!r}."
                )
            self.monitor_index = mon

    @property
    def n_voxels(self) -> int:
        """Number of voxels (columns of the targets)."""
        return self.targets.shape[1]


def check_monitors(subjects: list[SubjectData]) -> None:
    """Raise unless some subject monitors a voxel (validation averages over all of them)."""
    if all(len(data.monitor_index) == 0 for data in subjects):
        raise ValueError(
            f"monitor selects no voxel in any of the {len(subjects)} subject(s), so there is "
            "no validation score to stop on: monitor at least one voxel of one subject "
            "(None monitors all)."
        )


class MixedSubjectSampler:
    """Draws mini-batches that mix subjects, and the voxels each step trains.

    Every batch holds samples of every subject in proportion to its number of training
    samples (at least one each, so every subject's parameters take part in every step, which
    DDP needs), drawn without replacement from a per-subject stream reshuffled when
    exhausted. Up to ``n_voxels_per_step`` voxels are drawn per subject and step. With several
    processes every rank draws the same global batch and keeps its own slice, so all ranks
    stay in step from one seed.

    Parameters
    ----------
    train_sizes : list of int
        Training samples per subject.
    n_voxels : list of int
        Voxels per subject.
    batch_size : int
        Samples per step and process.
    n_voxels_per_step : int | None
        Voxels drawn per subject and step (``None``: all).
    seed : int
        Seed of the sampler's generator.
    world_size, rank : int
        Process layout.
    """

    def __init__(
        self,
        train_sizes: list[int],
        n_voxels: list[int],
        batch_size: int,
        n_voxels_per_step: int | None,
        seed: int,
        world_size: int = 1,
        rank: int = 0,
    ):
        self.train_sizes = list(train_sizes)
        self.n_voxels = list(n_voxels)
        self.world_size, self.rank = world_size, rank
        total = sum(self.train_sizes)
        batch_size = max(1, min(batch_size, total // world_size))
        shares = [n * batch_size / total for n in self.train_sizes]
        self.per_subject = [max(1, round(s)) for s in shares]
        self.batch_size = sum(self.per_subject)
        self.n_voxels_per_step = n_voxels_per_step
        self.rng = np.random.default_rng(seed)
        self._streams = [np.empty(0, dtype=np.int64) for _ in self.train_sizes]

    def steps_per_epoch(self, fraction: float, min_steps: int) -> int:
        """Steps that make an epoch of ``fraction`` of all training samples (at least
        ``min_steps``)."""
        per_step = self.batch_size * self.world_size
        return max(min_steps, math.ceil(fraction * sum(self.train_sizes) / per_step))

    def _draw(self, s: int, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if len(self._streams[s]) == 0:
                self._streams[s] = self.rng.permutation(self.train_sizes[s])
            take, self._streams[s] = self._streams[s][:k], self._streams[s][k:]
            out.append(take)
            k -= len(take)
        return np.concatenate(out)

    def next_step(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Positions in each subject's ``train_index`` for this rank, and the voxels to train
        (``None``: all)."""
        step = []
        for s, b in enumerate(self.per_subject):
            rows = self._draw(s, b * self.world_size)[self.rank :: self.world_size]
            k = self.n_voxels_per_step
            voxels = None
            if k is not None and k < self.n_voxels[s]:
                voxels = np.sort(self.rng.choice(self.n_voxels[s], size=k, replace=False))
            step.append((rows, voxels))
        return step

    def state_dict(self) -> dict:
        """Generator state and the remaining streams (for resuming)."""
        return {
            "rng": self.rng.bit_generator.state,
            "streams": [s.tolist() for s in self._streams],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rng.bit_generator.state = state["rng"]
        self._streams = [np.asarray(s, dtype=np.int64) for s in state["streams"]]
