"""The training loop: one code path on Lightning Fabric for a CPU, a GPU or many.

:func:`fit_model` trains a TopyNet-like model (``model(features, subject, voxel_index,
return_regularization=True) -> (prediction, regulariser)``) on one or several subjects
with the paper's recipe (section 4.6): smooth-L1 (beta 0.01) plus the model's regulariser,
AdaBelief (lr 3e-3, weight decay 1e-4, betas 0.9/0.999), batches of 128 mixing subjects,
up to 8000 voxels per subject and step, an epoch of 10% of the training samples, early
stopping on the mean validation Pearson r with patience 20, the top 10 checkpoints and a
greedy model soup chosen on the same validation data.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._logging import logger, progress, use_log_level
from .checkpoints import (
    RESUME_FROM_SCRATCH,
    TopKCheckpoints,
    atomic_save,
    cpu_state_dict,
    load_checkpoint,
    precision_key,
    run_fingerprint,
    run_folder,
)
from .data import MixedSubjectSampler, SubjectData, check_monitors
from .distributed import DEFAULT_TIMEOUT, with_timeout
from .evaluation import VOXEL_CHUNK, validation_scores
from .losses import voxel_loss_sum
from .soup import greedy_soup


@dataclass
class TrainingConfig:
    """The training recipe (defaults: the paper's, section 4.6).

    Parameters
    ----------
    max_epochs : int
        Upper bound on epochs.
    batch_size : int
        Samples per step and process (split among subjects in proportion to their training
        samples); capped at the number of training samples.
    learning_rate, weight_decay : float
        AdaBelief's learning rate and decoupled weight decay.
    betas : tuple of float
        AdaBelief's betas.
    smooth_l1_beta : float
        Transition point of the smooth-L1 loss.
    n_voxels_per_step : int | None
        Voxels drawn per subject and step (``None``: all).
    epoch_fraction : float
        Fraction of all training samples that makes an epoch.
    min_steps_per_epoch : int
        Lower bound on steps per epoch (small data sets).
    n_iter_no_change : int
        Early-stopping patience, in epochs without a better validation score.
    top_k : int
        Checkpoints kept (the soup's candidates).
    soup : bool
        Whether to build a greedy soup of the top checkpoints (else: the best one).
    eval_batch_size : int
        Samples per forward call in validation.
    voxel_chunk : int
        Voxels per forward call in validation.
    lr_scales : sequence of (str, float)
        Per-parameter learning rates: a parameter whose name contains ``name`` trains at
        ``learning_rate * scale`` (the first matching pair wins). TopyEncoder slows its
        RetinaMapper this way.
    """

    max_epochs: int = 200
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    smooth_l1_beta: float = 0.01
    n_voxels_per_step: int | None = 8000
    epoch_fraction: float = 0.1
    min_steps_per_epoch: int = 4
    n_iter_no_change: int = 20
    top_k: int = 10
    soup: bool = True
    eval_batch_size: int = 256
    voxel_chunk: int = VOXEL_CHUNK
    lr_scales: tuple = ()

    def __post_init__(self):
        for name in (
            "max_epochs",
            "batch_size",
            "n_iter_no_change",
            "top_k",
            "min_steps_per_epoch",
            "eval_batch_size",
            "voxel_chunk",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.n_voxels_per_step is not None and self.n_voxels_per_step < 1:
            raise ValueError(
                f"n_voxels_per_step must be a positive integer or None, got "
                f"{self.n_voxels_per_step!r}."
            )
        if not 0 < self.epoch_fraction <= 1:
            raise ValueError(f"epoch_fraction must be in (0, 1], got {self.epoch_fraction!r}.")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"learning_rate must be > 0 and weight_decay >= 0, got "
                f"{self.learning_rate!r} and {self.weight_decay!r}."
            )
        self.betas = tuple(self.betas)
        pairs = []
        for pair in self.lr_scales:
            name, scale = pair
            if not isinstance(name, str) or not (isinstance(scale, (int, float)) and scale > 0):
                raise ValueError(
                    f"lr_scales must be pairs (parameter name part, scale > 0), got {pair!r}."
                )
            pairs.append((name, float(scale)))
        self.lr_scales = tuple(pairs)


@dataclass
class EngineConfig:
    """Where and how the loop runs (passed to :class:`lightning.fabric.Fabric`).

    Parameters
    ----------
    accelerator : str
        ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"cuda"``, ``"gpu"``, ``"mps"``.
    devices : int | str | list of int
        Devices per node (``"auto"``, a count or indices).
    precision : str
        ``"32-true"``, ``"bf16-mixed"`` (CPU and GPU), ``"16-mixed"`` (GPU) ...
    strategy : str
        ``"auto"``, ``"ddp"`` (script launched by torchrun / SLURM / ``fabric run``),
        ``"ddp_spawn"`` (processes started from Python, e.g. in a notebook or a test) ...
    num_nodes : int
        Number of machines.
    timeout : float or None
        Seconds a DDP process waits for the others in one collective operation (a process
        that died, or never joined) before it fails with an error instead of hanging;
        ``None``: torch's default (30 minutes).
    """

    accelerator: str = "auto"
    devices: Any = 1
    precision: str = "32-true"
    strategy: str = "auto"
    num_nodes: int = 1
    timeout: float | None = DEFAULT_TIMEOUT

    def fabric(self, **overrides):
        """A :class:`~lightning.fabric.Fabric` with these settings (and ``overrides``)."""
        from lightning.fabric import Fabric

        kwargs = asdict(self) | overrides
        kwargs["strategy"] = with_timeout(kwargs["strategy"], kwargs.pop("timeout"))
        return Fabric(**kwargs)


@dataclass
class FitResult:
    """What :func:`fit_model` returns.

    Attributes
    ----------
    state_dict : dict
        Final weights (the soup, or the best checkpoint), on the CPU.
    history : dict
        Per epoch: ``epoch``, ``train_loss``, ``val_score`` (mean r over the monitored
        voxels of all subjects), ``val_score_subjects`` (per subject; NaN for a subject
        that monitors no voxel), ``seconds``; then
        ``best_epoch``, ``best_score``, ``soup_epochs`` (the checkpoints averaged),
        ``final_score`` (validation score of the returned weights), ``stopped_early``.
    run_dir : str | None
        The run folder when checkpointing.
    """

    state_dict: dict
    history: dict
    run_dir: str | None = None
    per_voxel_scores: list = field(default_factory=list)


def _new_history() -> dict:
    return {
        "epoch": [],
        "train_loss": [],
        "val_score": [],
        "val_score_subjects": [],
        "seconds": [],
    }


@dataclass
class _Job:
    model: torch.nn.Module
    subjects: list[SubjectData]
    config: TrainingConfig
    seed: int
    run_dir: str | None
    verbose: Any
    callbacks: Sequence[Callable[[dict], None]]
    result_path: str | None = None


class _AllSubjects(torch.nn.Module):
    """One forward over every subject's part of a step, so DDP sees one forward per
    backward."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, parts):
        return [
            self.net(feats, s, voxel_index=voxels, return_regularization=True)
            for s, feats, voxels in parts
        ]


def _feature_dtype(module: torch.nn.Module) -> torch.dtype:
    param = next(module.parameters(), None)
    return torch.float32 if param is None else param.dtype


def _take(arr, samples, cols, device, standardize: SubjectData | None = None):
    """Rows ``samples`` and columns ``cols`` of a (samples, voxels) array, or entries ``cols``
    of a per-voxel vector, as a tensor; z-scored with ``standardize``'s target mean and
    scale when given."""
    if arr is None:
        return None
    sub = arr[samples][:, cols] if arr.ndim == 2 else arr[cols]
    if standardize is not None and standardize.target_mean is not None:
        sub = (sub - standardize.target_mean[cols]) / standardize.target_scale[cols]
    return torch.from_numpy(np.ascontiguousarray(sub, dtype=np.float32)).to(device)


def _parameter_groups(net: torch.nn.Module, config: TrainingConfig) -> list[dict]:
    """The trainable parameters, grouped by learning rate (``config.lr_scales``)."""
    groups: dict[float, list] = {}
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((sc for part, sc in config.lr_scales if part in name), 1.0)
        groups.setdefault(scale, []).append(param)
    return [
        {"params": params, "lr": config.learning_rate * scale}
        for scale, params in sorted(groups.items(), reverse=True)
    ]


def _train_step(fabric, wrapped, optimizer, subjects, sampler, config, dtype) -> float:
    step = sampler.next_step()
    parts, extras = [], []
    elements = 0.0
    for s, (rows, voxels) in enumerate(step):
        data = subjects[s]
        samples = data.train_index[rows]
        feats = data.features.batch(samples, device=fabric.device, dtype=dtype)
        index = None if voxels is None else torch.as_tensor(voxels, device=fabric.device)
        parts.append((s, feats, index))
        extras.append((samples, voxels))
        elements += len(samples) * data.n_voxels
    outputs = wrapped(parts)
    loss = 0.0
    for s, ((pred, reg), (samples, voxels)) in enumerate(zip(outputs, extras)):
        data = subjects[s]
        cols = slice(None) if voxels is None else voxels
        n_sel = data.n_voxels if voxels is None else len(voxels)

        # each sampled voxel stands for n_voxels / n_sel voxels of its subject, so every
        # voxel of every subject weighs the same in expectation
        scale = data.n_voxels / n_sel
        fit = voxel_loss_sum(
            pred,
            _take(data.targets, samples, cols, fabric.device, data),
            weight=_take(data.loss_weight, samples, cols, fabric.device),
            soft_target=_take(data.soft_targets, samples, cols, fabric.device, data),
            soft_weight=_take(data.soft_weight, samples, cols, fabric.device),
            beta=config.smooth_l1_beta,
        )
        loss = (
            loss + scale * fit / elements + reg.float() * (len(samples) * data.n_voxels / elements)
        )
    optimizer.zero_grad(set_to_none=True)
    fabric.backward(loss)
    optimizer.step()
    return float(loss.detach())


def _train(fabric, job: _Job) -> FitResult | str:
    """The loop of one fit on one process (see :func:`fit_model`): set up, resume, train
    epoch by epoch until early stopping, then the soup; rank 0 of several processes hands
    its result back as a file."""
    cuda = fabric.device.type == "cuda"
    devices = [fabric.device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices), use_log_level(job.verbose):
        torch.manual_seed(job.seed)
        loop = _Loop(fabric, job)
        loop.resume()
        loop.run()
        result = loop.finish()
        # the DDP wrapper (its Reducer holds the process group) goes while the group is
        # still registered, so that the group is never destroyed with it (see _hand_back)
        del loop
        if fabric.world_size > 1:
            gc.collect()
        return _hand_back(fabric, job, result)


class _Loop:
    """The state of a fit on one process and its steps."""

    def __init__(self, fabric, job: _Job):
        from pytorch_optimizer import AdaBelief

        config = job.config
        self.fabric, self.job, self.config = fabric, job, config
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.cuda = fabric.device.type == "cuda"
        self.acc_device = fabric.device if self.cuda else torch.device("cpu")
        run_dir = None if job.run_dir is None else Path(job.run_dir)
        self.run_dir = run_dir
        self.last_path = None if run_dir is None else run_dir / "last.pt"
        self.net = job.model
        # frozen parameters (a pre-fitted readout) neither train nor decay
        optimizer = AdaBelief(
            _parameter_groups(self.net, config),
            lr=config.learning_rate,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.wrapped, self.optimizer = fabric.setup(_AllSubjects(self.net), optimizer)
        self.dtype = _feature_dtype(self.net)
        self.sampler = MixedSubjectSampler(
            [len(d.train_index) for d in job.subjects],
            [d.n_voxels for d in job.subjects],
            config.batch_size,
            config.n_voxels_per_step,
            job.seed,
            world_size=self.world,
            rank=self.rank,
        )
        self.steps = self.sampler.steps_per_epoch(
            config.epoch_fraction, config.min_steps_per_epoch
        )
        self.topk = TopKCheckpoints(config.top_k, run_dir, writer=fabric.is_global_zero)
        self.history = _new_history()
        self.state = {"epoch": 0, "best": -np.inf, "wait": 0, "finished": False}

    def resume(self) -> None:
        """Load the state after the last finished epoch, when the run folder has one."""
        if self.last_path is None or not self.last_path.exists():
            return
        ckpt = load_checkpoint(self.last_path, RESUME_FROM_SCRATCH)
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.sampler.load_state_dict(ckpt["sampler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if self.cuda and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], self.fabric.device)
        self.topk.load_state_dict(ckpt["topk"])
        self.history = ckpt["history"]
        self.state = ckpt["state"]
        logger.info(
            "Resuming the fit from %s after epoch %d (best validation r %.4f).",
            self.run_dir,
            self.state["epoch"],
            self.state["best"],
        )

    def validate(self):
        """Mean validation r over the monitored voxels, and every voxel's r per subject."""
        fabric, world = self.fabric, self.world
        return validation_scores(
            self.net,
            self.job.subjects,
            device=fabric.device,
            autocast=fabric.autocast,
            dtype=self.dtype,
            batch_size=self.config.eval_batch_size,
            voxel_chunk=self.config.voxel_chunk,
            shard=(self.rank, world),
            all_reduce=None
            if world == 1
            else (lambda t: fabric.all_reduce(t.to(self.acc_device), reduce_op="sum")),
        )

    def run(self) -> None:
        """Epochs until early stopping or ``max_epochs`` (none when already finished)."""
        state, config = self.state, self.config
        epochs = range(state["epoch"], 0 if state["finished"] else config.max_epochs)
        bar = progress(
            epochs,
            self.job.verbose if self.fabric.is_global_zero else False,
            desc="fit",
            unit="epoch",
            total=config.max_epochs,
            initial=state["epoch"],
        )
        for epoch in bar:
            train_loss, score, stop = self.epoch(epoch + 1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{train_loss:.4f}", val_r=f"{score:.4f}")
            info = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "val_score": score,
                "model": self.net,
                "rank": self.rank,
            }
            for callback in self.job.callbacks:
                callback(info)
            if stop:
                logger.info(
                    "Early stopping after epoch %d: no better validation r for %d epochs.",
                    epoch + 1,
                    config.n_iter_no_change,
                )
                break
        if hasattr(bar, "close"):
            bar.close()

    def epoch(self, number: int) -> tuple[float, float, bool]:
        """Train one epoch, validate, offer the checkpoint, save the resume state; returns
        the training loss, the validation score and whether to stop."""
        start = time.perf_counter()
        self.wrapped.train()
        losses = [
            _train_step(
                self.fabric,
                self.wrapped,
                self.optimizer,
                self.job.subjects,
                self.sampler,
                self.config,
                self.dtype,
            )  # fmt: skip
            for _ in range(self.steps)
        ]
        train_loss = float(np.mean(losses))
        if self.world > 1:
            train_loss = float(self.fabric.all_reduce(torch.tensor(train_loss), reduce_op="mean"))
        score, per_voxel = self.validate()
        history, state = self.history, self.state
        history["epoch"].append(number)
        history["train_loss"].append(train_loss)
        history["val_score"].append(score)
        history["val_score_subjects"].append(
            [float(np.mean(r)) if len(r) else float("nan") for r in per_voxel]
        )
        history["seconds"].append(time.perf_counter() - start)
        self.topk.offer(score, number, self.net)
        if score > state["best"]:
            state["best"], state["wait"] = score, 0
        else:
            state["wait"] += 1
        state["epoch"] = number
        stop = state["wait"] >= self.config.n_iter_no_change
        state["finished"] = stop or number == self.config.max_epochs
        self.save_last()
        logger.debug("epoch %d: train loss %.5f, validation r %.4f", number, train_loss, score)
        return train_loss, score, stop

    def save_last(self) -> None:
        """The whole training state after this epoch (``last.pt``), when checkpointing."""
        if self.last_path is None:
            return
        fabric = self.fabric
        if fabric.is_global_zero:
            atomic_save(
                {
                    "model": cpu_state_dict(self.net),
                    "optimizer": self.optimizer.state_dict(),
                    "sampler": self.sampler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(fabric.device) if self.cuda else None,
                    "topk": self.topk.state_dict(),
                    "history": self.history,
                    "state": self.state,
                },
                self.last_path,
            )
        fabric.barrier()

    def finish(self) -> FitResult:
        """The final weights (greedy soup of the top checkpoints, or the best one) loaded
        into the model, the history completed and every voxel's validation r."""
        net, topk = self.net, self.topk

        def evaluate(weights):
            net.load_state_dict(weights)
            return self.validate()[0]

        if self.config.soup and len(topk.entries) > 1:
            final, final_score, used = greedy_soup(topk.candidates(), evaluate)
            soup_epochs = [topk.entries[i]["epoch"] for i in used]
        else:
            final, final_score = topk.load(topk.entries[0]["epoch"]), topk.entries[0]["score"]
            soup_epochs = [topk.entries[0]["epoch"]]
        net.load_state_dict(final)
        self.history.update(
            best_epoch=topk.entries[0]["epoch"],
            best_score=topk.entries[0]["score"],
            soup_epochs=soup_epochs,
            final_score=final_score,
            stopped_early=self.state["wait"] >= self.config.n_iter_no_change,
        )
        per_voxel = self.validate()[1]
        return FitResult(cpu_state_dict(net), self.history, self.job.run_dir, per_voxel)


#: seconds the GIL is left to gloo's worker threads before the process group is destroyed
_GLOO_CLEANUP_SECONDS = 0.2


def _hand_back(fabric, job: _Job, result: FitResult) -> FitResult | str:
    """``result``, or with several processes the file rank 0 wrote it to."""
    world = fabric.world_size
    if world > 1:
        # tear the process group down on every rank together: a gloo thread still
        # alive when a spawned worker exits aborts it ("terminate called without an
        # active exception"), which failed the 2-process test now and then
        fabric.barrier()
        # gloo's worker threads destroy every finished collective, whose tensors need the
        # GIL to go, and the group's destructor joins those threads while holding the
        # GIL: a worker still cleaning up then waits for ever (2 torchrun launches in 5
        # beside two busy processes on 2 cores; py-spy: ~ProcessGroupGloo in
        # thread::join, the worker in ~AsyncBarrierWork waiting for the GIL). Sleeping
        # releases the GIL so that the workers finish first.
        time.sleep(_GLOO_CLEANUP_SECONDS)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if world > 1 and fabric.is_global_zero:
        # spawned workers hand their result to the parent through a pipe that is read
        # only once they have exited: anything larger than the pipe's buffer would
        # block, so rank 0 writes a file and returns its name
        torch.save(
            {
                "state_dict": result.state_dict,
                "history": result.history,
                "per_voxel_scores": [torch.from_numpy(r) for r in result.per_voxel_scores],
            },
            job.result_path,
        )
        return job.result_path
    return result


def fit_model(
    model: torch.nn.Module,
    subjects: Sequence[SubjectData],
    config: TrainingConfig | None = None,
    engine: EngineConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    run_key: str = "",
    random_state: int | np.random.RandomState | None = None,
    verbose: bool | int | str | None = None,
    callbacks: Sequence[Callable[[dict], None]] = (),
) -> FitResult:
    """Train ``model`` on ``subjects`` and load the final weights into it.

    Parameters
    ----------
    model : torch.nn.Module
        Called as ``model(features, subject, voxel_index=..., return_regularization=True)``
        and returning ``(prediction (B, n_selected), regulariser scalar)``. Parameters
        with ``requires_grad=False`` stay as they are: the optimiser does not get them (no
        weight decay) and the soup keeps them (see :func:`greedy_soup`).
    subjects : sequence of SubjectData
        One per subject, in the model's subject order. A subject may monitor no voxel (its
        validation score is then NaN) as long as another one monitors some.
    config : TrainingConfig | None
        The recipe (default: the paper's).
    engine : EngineConfig | None
        Accelerator, devices, precision, strategy, nodes (default: one device, "auto").
    checkpoint_dir : str | Path | None
        Where top-k checkpoints and the resume state go (one run folder per fit, see
        :mod:`afo_encoding.training.checkpoints`). A fit whose run folder exists resumes
        after its last finished epoch; a finished one only rebuilds its soup.
    run_key : str
        What else tells this fit apart for the run folder's name (model options that do
        not change parameter shapes, voxel coordinates...).
    random_state : int | RandomState | None
        Seeds the batch and voxel sampling and the model's training noise.
    verbose : bool | int | str | None
        A progress bar over epochs when INFO or more (see
        :func:`afo_encoding._logging.verbose_level`).
    callbacks : sequence of callable
        Each called after every epoch with a dict (``epoch``, ``train_loss``, ``val_score``,
        ``model``, ``rank``), after the epoch's checkpoint is written.

    Returns
    -------
    result : FitResult
        Final weights (also loaded into ``model``), history and run folder.
    """
    from sklearn.utils import check_random_state

    config = TrainingConfig() if config is None else config
    engine = EngineConfig() if engine is None else engine
    subjects = list(subjects)
    if not subjects:
        raise ValueError("fit_model needs at least one subject.")
    check_monitors(subjects)
    seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    run_dir = None
    if checkpoint_dir is not None:
        # an unseeded fit (random_state=None) finds its run folder again and continues with
        # the seed it started with; a seeded one has a folder per seed
        seeded = random_state is not None
        key = run_fingerprint(
            model,
            subjects,
            asdict(config),
            f"{run_key}|seed={seed if seeded else None}{precision_key(engine.precision)}",
        )
        run_dir, seed = run_folder(
            checkpoint_dir,
            f"run-{key}",
            seed,
            config=asdict(config),
            run_key=run_key,
            model=type(model).__qualname__,
        )
    fabric = engine.fabric()
    job = _Job(
        model,
        subjects,
        config,
        seed,
        None if run_dir is None else str(run_dir),
        verbose,
        tuple(callbacks),
    )
    with tempfile.TemporaryDirectory() as tmp:
        job.result_path = str(Path(tmp) / "result.pt")
        result = fabric.launch(_train, job)
        if isinstance(result, str):
            saved = torch.load(result, map_location="cpu", weights_only=True)
            result = FitResult(
                saved["state_dict"],
                saved["history"],
                job.run_dir,
                [r.numpy() for r in saved["per_voxel_scores"]],
            )
    model.load_state_dict(result.state_dict)
    return result
