"""Prediction and validation chunked over samples and voxels (memory flat in the voxel count).

A TopyNet-like model is called as ``model(features, subject, voxel_index)``; here it is
called on batches of samples and chunks of voxels, and either the predictions are written
into one output array (:func:`predict_array`) or only running sums are kept to compute each
voxel's Pearson r (:class:`PearsonAccumulator`, :func:`validation_scores`), so validation
costs five float64 numbers per voxel whatever the number of samples.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .data import SubjectData, check_monitors

#: default number of voxels predicted per forward call
VOXEL_CHUNK = 32768


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def iter_predictions(
    model: torch.nn.Module,
    features,
    subject: int,
    sample_index: np.ndarray,
    voxel_index: np.ndarray | None,
    n_voxels: int,
    batch_size: int = 256,
    voxel_chunk: int = VOXEL_CHUNK,
    device: torch.device | str = "cpu",
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    dtype: torch.dtype = torch.float32,
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield predictions batch by batch and chunk by chunk, in eval mode without gradients.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(features, subject, voxel_index=...)``; a model with
        ``encode_images(features)`` and ``readout(encoded, subject, voxel_index=...)`` (as
        :class:`~afo_encoding.nn.TopyNet`) encodes each batch once for all voxel chunks.
    features : feature store
        Source of the samples' features.
    subject : int
        Subject index passed to the model.
    sample_index : ndarray of int
        Samples to predict, in this order.
    voxel_index : ndarray of int | None
        Voxels to predict, in this order (``None``: all ``n_voxels``).
    n_voxels : int
        The subject's number of voxels.
    batch_size, voxel_chunk : int
        Samples and voxels per forward call.
    device : torch.device | str
        Where the features go.
    autocast : callable
        Returns the mixed-precision context of the forward pass.
    dtype : torch.dtype
        Dtype of the features given to the model.

    Yields
    ------
    rows : slice
        Positions in ``sample_index``.
    cols : slice
        Positions in ``voxel_index`` (or voxel numbers when it is ``None``).
    pred : Tensor, shape (rows, cols), float32
        Predictions.
    """
    n_cols = n_voxels if voxel_index is None else len(voxel_index)
    full = voxel_index is None and n_cols <= voxel_chunk
    # a TopyNet runs its shared adapters once per batch, then reads out chunk by chunk
    split = hasattr(model, "encode_images") and hasattr(model, "readout")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for rows in _chunks(len(sample_index), batch_size):
                feats = features.batch(sample_index[rows], device=device, dtype=dtype)
                if split:
                    with autocast():
                        encoded = model.encode_images(feats)
                for cols in _chunks(n_cols, voxel_chunk):
                    if full:
                        index = None
                    else:
                        chosen = (
                            np.arange(cols.start, cols.stop)
                            if voxel_index is None
                            else (voxel_index[cols])
                        )
                        index = torch.as_tensor(chosen, dtype=torch.long, device=device)
                    with autocast():
                        if split:
                            pred = model.readout(encoded, subject, voxel_index=index)
                        else:
                            pred = model(feats, subject, voxel_index=index)
                    yield rows, cols, pred.float()
    finally:
        model.train(was_training)


def predict_array(model, features, subject, sample_index, n_voxels, **kwargs) -> np.ndarray:
    """Predictions ``(len(sample_index), n_voxels)`` float32, chunked (see
    :func:`iter_predictions` for the keyword arguments)."""
    out = np.empty((len(sample_index), n_voxels), dtype=np.float32)
    for rows, cols, pred in iter_predictions(
        model, features, subject, np.asarray(sample_index), None, n_voxels, **kwargs
    ):
        out[rows, cols] = pred.cpu().numpy()
    return out


class PearsonAccumulator:
    """Running sums for a per-column Pearson r over rows that arrive in batches.

    Sums are float64 and live on ``device``; :meth:`merge_` adds another accumulator's sums
    (or an all-reduce does it across processes, see :attr:`sums`).

    Parameters
    ----------
    n_columns : int
        Number of voxels.
    device : torch.device | str
        Where the sums live.
    """

    def __init__(self, n_columns: int, device="cpu"):
        self.sums = torch.zeros(6, n_columns, dtype=torch.float64, device=device)

    def update(self, cols: slice, y_true: torch.Tensor, y_pred: torch.Tensor) -> None:
        """Add rows of ``y_true`` and ``y_pred`` (same shape) for the columns ``cols``."""
        t = y_true.to(self.sums)
        p = y_pred.to(self.sums)
        s = self.sums[:, cols]
        s[0] += t.shape[0]
        s[1] += t.sum(0)
        s[2] += p.sum(0)
        s[3] += (t * t).sum(0)
        s[4] += (p * p).sum(0)
        s[5] += (t * p).sum(0)

    def merge_(self, other: PearsonAccumulator) -> None:
        """Add the sums of ``other`` in place."""
        self.sums += other.sums

    def pearson_r(self) -> np.ndarray:
        """Per-column Pearson r (0 where either side is constant)."""
        n, st, sp, stt, spp, stp = self.sums
        cov = stp - st * sp / n
        var_t = stt - st * st / n
        var_p = spp - sp * sp / n
        denom = torch.sqrt(var_t.clamp(min=0) * var_p.clamp(min=0))
        r = torch.where(denom > 0, cov / denom.clamp(min=1e-300), torch.zeros_like(cov))
        return r.clamp(-1, 1).cpu().numpy()


def validation_scores(
    model: torch.nn.Module,
    subjects: list[SubjectData],
    device="cpu",
    autocast=contextlib.nullcontext,
    dtype: torch.dtype = torch.float32,
    batch_size: int = 256,
    voxel_chunk: int = VOXEL_CHUNK,
    shard: tuple[int, int] = (0, 1),
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, list[np.ndarray]]:
    """Mean validation Pearson r over the monitored voxels of all subjects.

    Parameters
    ----------
    model : torch.nn.Module
        The model to evaluate.
    subjects : list of SubjectData
        Validation samples and monitored voxels come from each.
    device, autocast, dtype, batch_size, voxel_chunk
        See :func:`iter_predictions`.
    shard : (rank, world_size)
        This process evaluates every ``world_size``-th validation sample from ``rank``.
    all_reduce : callable | None
        Sums the running sums across processes (``None``: one process).

    Returns
    -------
    score : float
        Mean r over all monitored voxels, every voxel weighing the same across subjects.
    per_voxel : list of ndarray
        The r of each monitored voxel, per subject (empty for a subject that monitors
        none).
    """
    check_monitors(subjects)
    rank, world = shard
    per_voxel = []
    for s, data in enumerate(subjects):
        if len(data.monitor_index) == 0:
            per_voxel.append(np.empty(0))
            continue
        rows_index = data.val_index[rank::world]
        acc = PearsonAccumulator(len(data.monitor_index), device=device)
        for rows, cols, pred in iter_predictions(
            model,
            data.features,
            s,
            rows_index,
            data.monitor_index,
            data.n_voxels,
            batch_size=batch_size,
            voxel_chunk=voxel_chunk,
            device=device,
            autocast=autocast,
            dtype=dtype,
        ):
            target = data.targets[np.ix_(rows_index[rows], data.monitor_index[cols])]
            acc.update(cols, torch.from_numpy(target), pred)
        if all_reduce is not None:
            acc.sums = all_reduce(acc.sums)
        per_voxel.append(acc.pearson_r())
    score = float(np.mean(np.concatenate(per_voxel)))
    return score, per_voxel
