"""The stage fits of All-for-One: what each fit trains on, running them, resuming them.

:class:`~afo_encoding.encoders.AllForOneEncoder` describes every TopyEncoder fit of a
stage by a :class:`FitSpec`; :class:`StageRunner` runs the fits of a stage (in parallel
through joblib) and returns their :class:`FitOutput` (model, teacher predictions, scores)
and the stage's wall time. With a checkpoint folder, every finished fit is saved in the
recipe's run folder (:func:`recipe_folder`) and loaded instead of refitted.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._devices import assign_devices
from .._logging import logger, progress
from ..training.checkpoints import run_folder
from .topy import TopyEncoder

__all__ = ["FitOutput", "FitSpec", "StageRunner", "recipe_folder", "run_fit"]


@dataclass
class FitSpec:
    """One TopyEncoder fit of the recipe: what it trains on and which rows it predicts."""

    name: str  # the stage, and the ROI and fold of an ROI stage's fit (file names)
    train_index: list  # per subject: sample indices the fit trains (and validates) on
    predict_index: list  # per subject: sample indices whose predictions are the teacher
    loss_weight: list | None = None
    soft_weight: list | None = None
    monitor: list | None = None
    use_soft_targets: bool = False
    keep_model: bool = True


@dataclass
class FitOutput:
    """What a stage fit gives back."""

    encoder: TopyEncoder | None
    teacher: list  # per subject: predictions (n_predict, n_voxels) or None
    scores: list  # per subject: validation r of every voxel
    seconds: float = 0.0
    resumed: bool = False


def digest(*parts: Any) -> str:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(str((part.dtype, part.shape)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def subset(X: Any, index: np.ndarray) -> Any:
    """Rows of one subject's inputs: a FeatureStore or a 2D feature array."""
    if hasattr(X, "subset"):
        return X.subset(index)
    return X[index]


def run_fit(
    spec: FitSpec,
    params: dict,
    Xs: list,
    Ys: list,
    coords: list,
    soft_targets: list | None,
    multi: bool,
    seed: int | None,
    out_dir: str | None,
    frozen_readout: Any = None,
    device: Any = None,
) -> FitOutput:
    """Fit one stage model (in a joblib worker or in the parent) and predict its teacher rows.

    With ``out_dir``, a finished fit is saved there (``<name>.safetensors`` and
    ``<name>.npz``) and found again instead of refitted (with this run's ``memory``).
    ``frozen_readout`` goes to ``TopyEncoder.fit``. ``device`` (a GPU of its own among
    parallel fits, see :func:`~afo_encoding._devices.assign_devices`) replaces the
    ``device`` of ``params`` for the fit and its teacher predictions; the model keeps the
    one of ``params``.
    """
    import torch

    from .._workers import exit_with_parent
    from ..io import load, save
    from ..training.checkpoints import load_arrays

    exit_with_parent()  # in a joblib worker: do not outlive the fit that started it

    model_path = teacher_path = None
    if out_dir is not None:
        model_path = Path(out_dir) / f"{spec.name}.safetensors"
        teacher_path = Path(out_dir) / f"{spec.name}.npz"
        if teacher_path.exists() and (model_path.exists() or not spec.keep_model):
            stored = load_arrays(teacher_path, "Delete it; the next fit refits this stage.")
            n = len(Xs)
            teacher = [stored.get(f"teacher{s}") for s in range(n)]
            scores = [stored[f"scores{s}"] for s in range(n)]
            encoder = load(model_path) if spec.keep_model else None
            if encoder is not None:
                encoder.set_params(memory=params["memory"])
            return FitOutput(encoder, teacher, scores, float(stored["seconds"]), resumed=True)

    start = time.perf_counter()
    fit_dir = None if out_dir is None else str(Path(out_dir) / "fits")
    placed = params if device is None else {**params, "device": device}
    encoder = TopyEncoder(**placed, random_state=seed, checkpoint_dir=fit_dir)
    n = len(Xs)
    X_fit = [subset(Xs[s], spec.train_index[s]) for s in range(n)]
    y_fit = [Ys[s][spec.train_index[s]] for s in range(n)]
    kw: dict[str, Any] = {"coords": coords}
    if spec.loss_weight is not None:
        kw["loss_weight"] = spec.loss_weight
    if spec.monitor is not None:
        kw["monitor"] = spec.monitor
    if spec.use_soft_targets:
        if soft_targets is None:
            raise ValueError(f"{spec.name}: the teacher predictions are missing.")
        kw["soft_targets"] = [soft_targets[s][spec.train_index[s]] for s in range(n)]
        kw["soft_weight"] = spec.soft_weight

    def one(value):
        return value if multi else value[0]

    with torch.random.fork_rng(devices=[]):
        encoder.fit(
            one(X_fit),
            one(y_fit),
            **{k: one(v) for k, v in kw.items()},
            frozen_readout=frozen_readout,
        )
    teacher = []
    for s in range(n):
        rows = spec.predict_index[s]
        teacher.append(None if rows is None else encoder.predict(subset(Xs[s], rows), subject=s))
    encoder.set_params(device=params["device"])
    scores = encoder.validation_scores_ if multi else [encoder.validation_scores_]
    seconds = time.perf_counter() - start
    if out_dir is not None:
        if spec.keep_model:
            save(encoder, model_path)
        arrays = {f"scores{s}": np.asarray(scores[s]) for s in range(n)}
        arrays.update({f"teacher{s}": t for s, t in enumerate(teacher) if t is not None})
        tmp = teacher_path.with_name(teacher_path.name + ".tmp.npz")
        np.savez(tmp, seconds=seconds, **arrays)
        tmp.replace(teacher_path)
    return FitOutput(encoder if spec.keep_model else None, teacher, list(scores), seconds)


def label_arrays(rois: Any) -> list:
    """Label arrays given as ``rois`` (for the run's key); an atlas image enters by name."""
    if isinstance(rois, np.ndarray):
        return [rois]
    if isinstance(rois, (list, tuple)):
        if rois and np.ndim(rois[0]) >= 1:
            return [np.asarray(r) for r in rois]
        return [np.asarray(rois)]
    return [] if isinstance(rois, str) else [repr(rois)]


def indexed(outputs: list, n_rois: int, n_folds: int):
    """``(output, roi, fold)`` of the fits of an ROI stage (specs are ROI-major)."""
    for i, out in enumerate(outputs):
        yield out, i // n_folds, i % n_folds


def recipe_folder(
    checkpoint_dir: Any, afo_params: dict, stage_params: dict, ids, Ys, coords, rois, seed
) -> tuple[Path | None, int | None]:
    """The run folder of a recipe under ``checkpoint_dir`` (``None`` without one) and the
    seed of its stage fits: a resumed run keeps the seed it started with.

    The folder's name is a digest of what the recipe computes: the meta-estimator's
    parameters (but those in :data:`RUN_NEUTRAL`), the stage fits' parameters, the
    sample ids, responses, coordinates and ROI labels.
    """
    if checkpoint_dir is None:
        return None, seed
    key = digest(
        {k: v for k, v in afo_params.items() if k not in RUN_NEUTRAL},
        {k: v for k, v in stage_params.items() if k != "memory"},
        [list(i) for i in ids],
        *Ys,
        *coords,
        *label_arrays(rois),
    )
    return run_folder(checkpoint_dir, f"afo-{key}", seed)


class StageRunner:
    """Runs the fits of a stage (in parallel through joblib, resuming from ``out_dir``).

    Parameters
    ----------
    params : dict
        TopyEncoder parameters of every stage fit.
    inputs, Ys, coords : list
        Per subject: FeatureStores or 2D features, responses, voxel coordinates.
    multi : bool
        Whether the stage fits get lists (several subjects).
    seed : int or None
        ``random_state`` of every stage fit.
    ids : list
        Per subject: the sample ids.
    n_jobs, verbose
        Of the meta-estimator (joblib's workers, a progress bar over the fits).
    out_dir : Path or None
        The recipe's run folder (see :func:`recipe_folder`).
    """

    def __init__(
        self, params, inputs, Ys, coords, multi, seed, ids, *, n_jobs=None, verbose=0,
        out_dir=None,
    ):  # fmt: skip
        self.params = params
        self.inputs = inputs
        self.Ys = Ys
        self.coords = coords
        self.multi = multi
        self.seed = seed
        self.ids = ids
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.out_dir = out_dir
        self.frozen_readout = None  # set once the first all-ROI model is fitted

    def stage(
        self, stage: str, specs: list[FitSpec], teacher: list | None = None
    ) -> tuple[list[FitOutput], float]:
        """Fit the models of one stage.

        Returns
        -------
        outputs : list of FitOutput
            In the order of ``specs``.
        seconds : float
            Wall time of the stage.
        """
        from joblib import Parallel, delayed
        from joblib.parallel import ThreadingBackend, get_active_backend

        backend, n_jobs = get_active_backend()
        if isinstance(backend, ThreadingBackend) and (self.n_jobs or n_jobs) != 1:
            warnings.warn(
                "Stage fits in threads share torch's random number generator, so they are not "
                "reproducible; use a process-based joblib backend (loky, the default, dask or "
                "ray) for repeatable fits.",
                UserWarning,
                stacklevel=4,
            )
        logger.info("All-for-One %s: %d fit(s).", stage, len(specs))
        start = time.perf_counter()
        out_dir = None if self.out_dir is None else str(self.out_dir)
        placements = self.fit_devices(backend, len(specs))
        jobs = (
            delayed(run_fit)(
                spec,
                self.params,
                self.inputs,
                self.Ys,
                self.coords,
                teacher,
                self.multi,
                self.seed,
                out_dir,
                self.frozen_readout,
                device,
            )  # fmt: skip
            for spec, device in zip(specs, placements)
        )
        from .._workers import parallel_options

        results = Parallel(n_jobs=self.n_jobs, return_as="generator",
                           **parallel_options(backend))(jobs)
        outputs = list(progress(results, self.verbose, desc=stage, total=len(specs), unit="fit"))
        seconds = time.perf_counter() - start
        resumed = sum(o.resumed for o in outputs)
        logger.info(
            "All-for-One %s done in %.1f s%s.",
            stage,
            seconds,
            f" ({resumed} fit(s) loaded from the checkpoint folder)" if resumed else "",
        )
        return outputs, seconds

    def fit_devices(self, backend: Any, n_fits: int) -> list:
        """The device of each fit of a stage (``None``: the stage fits' own ``device``).

        Fits that run side by side on this machine (loky, processes, threads) take one GPU
        each, round robin over ``devices`` (:func:`~afo_encoding._devices.assign_devices`);
        fits one after the other, on the CPU, or on a cluster (dask, ray: it gives its
        workers their GPUs) keep the stage fits' ``device``.
        """
        import torch
        from joblib import effective_n_jobs
        from joblib.parallel import LokyBackend, MultiprocessingBackend, ThreadingBackend

        local = isinstance(backend, (LokyBackend, MultiprocessingBackend, ThreadingBackend))
        side_by_side = local and n_fits > 1 and effective_n_jobs(self.n_jobs) > 1
        n_gpus = torch.cuda.device_count() if side_by_side else 0
        device = self.params["device"]
        assigned = assign_devices(n_fits, device, self.params.get("devices", 1), n_gpus)
        return [None if placed == device else placed for placed in assigned]


#: parameters that do not change what the recipe computes (left out of the run's key)
RUN_NEUTRAL = (
    "n_jobs",
    "verbose",
    "checkpoint_dir",
    "memory",
    "keep_stage_estimators",
    "estimator",
)
