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

import json
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
    atomic_write_text,
    cpu_state_dict,
    load_checkpoint,
    precision_key,
    run_fingerprint,
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
        Seconds a DDP process waits for the others in one collective operation before it
        fails with an error (instead of hanging); ``None``: torch's default (30 min).
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


def _train(fabric, job: _Job) -> FitResult:
    config = job.config
    rank, world = fabric.global_rank, fabric.world_size
    run_dir = None if job.run_dir is None else Path(job.run_dir)
    last_path = None if run_dir is None else run_dir / "last.pt"
    cuda = fabric.device.type == "cuda"
    acc_device = fabric.device if cuda else torch.device("cpu")
    devices = [fabric.device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices), use_log_level(job.verbose):
        torch.manual_seed(job.seed)
        from pytorch_optimizer import AdaBelief

        net = job.model
        # frozen parameters (a pre-fitted readout) neither train nor decay
        optimizer = AdaBelief(
            _parameter_groups(net, config),
            lr=config.learning_rate,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        wrapped, optimizer = fabric.setup(_AllSubjects(net), optimizer)
        dtype = _feature_dtype(net)
        sampler = MixedSubjectSampler(
            [len(d.train_index) for d in job.subjects],
            [d.n_voxels for d in job.subjects],
            config.batch_size,
            config.n_voxels_per_step,
            job.seed,
            world_size=world,
            rank=rank,
        )
        steps = sampler.steps_per_epoch(config.epoch_fraction, config.min_steps_per_epoch)
        topk = TopKCheckpoints(config.top_k, run_dir, writer=fabric.is_global_zero)
        history = _new_history()
        state = {"epoch": 0, "best": -np.inf, "wait": 0, "finished": False}

        if last_path is not None and last_path.exists():
            ckpt = load_checkpoint(last_path, RESUME_FROM_SCRATCH)
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            sampler.load_state_dict(ckpt["sampler"])
            torch.set_rng_state(ckpt["torch_rng"])
            if cuda and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"], fabric.device)
            topk.load_state_dict(ckpt["topk"])
            history = ckpt["history"]
            state = ckpt["state"]
            logger.info(
                "Resuming the fit from %s after epoch %d (best validation r %.4f).",
                run_dir,
                state["epoch"],
                state["best"],
            )

        def validate():
            return validation_scores(
                net,
                job.subjects,
                device=fabric.device,
                autocast=fabric.autocast,
                dtype=dtype,
                batch_size=config.eval_batch_size,
                voxel_chunk=config.voxel_chunk,
                shard=(rank, world),
                all_reduce=None
                if world == 1
                else (lambda t: fabric.all_reduce(t.to(acc_device), reduce_op="sum")),
            )

        epochs = range(state["epoch"], 0 if state["finished"] else config.max_epochs)
        bar = progress(
            epochs,
            job.verbose if fabric.is_global_zero else False,
            desc="fit",
            unit="epoch",
            total=config.max_epochs,
            initial=state["epoch"],
        )
        for epoch in bar:
            start = time.perf_counter()
            wrapped.train()
            losses = [
                _train_step(fabric, wrapped, optimizer, job.subjects, sampler, config, dtype)
                for _ in range(steps)
            ]
            train_loss = float(np.mean(losses))
            if world > 1:
                train_loss = float(fabric.all_reduce(torch.tensor(train_loss), reduce_op="mean"))
            score, per_voxel = validate()
            epoch_number = epoch + 1
            history["epoch"].append(epoch_number)
            history["train_loss"].append(train_loss)
            history["val_score"].append(score)
            history["val_score_subjects"].append(
                [float(np.mean(r)) if len(r) else float("nan") for r in per_voxel]
            )
            history["seconds"].append(time.perf_counter() - start)
            topk.offer(score, epoch_number, net)
            if score > state["best"]:
                state["best"], state["wait"] = score, 0
            else:
                state["wait"] += 1
            state["epoch"] = epoch_number
            stop = state["wait"] >= config.n_iter_no_change
            state["finished"] = stop or epoch_number == config.max_epochs
            if last_path is not None:
                if fabric.is_global_zero:
                    atomic_save(
                        {
                            "model": cpu_state_dict(net),
                            "optimizer": optimizer.state_dict(),
                            "sampler": sampler.state_dict(),
                            "torch_rng": torch.get_rng_state(),
                            "cuda_rng": torch.cuda.get_rng_state(fabric.device) if cuda else None,
                            "topk": topk.state_dict(),
                            "history": history,
                            "state": state,
                        },
                        last_path,
                    )
                fabric.barrier()
            logger.debug(
                "epoch %d: train loss %.5f, validation r %.4f", epoch_number, train_loss, score
            )
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{train_loss:.4f}", val_r=f"{score:.4f}")
            info = {
                "epoch": epoch_number,
                "train_loss": train_loss,
                "val_score": score,
                "model": net,
                "rank": rank,
            }
            for callback in job.callbacks:
                callback(info)
            if stop:
                logger.info(
                    "Early stopping after epoch %d: no better validation r for %d epochs.",
                    epoch_number,
                    config.n_iter_no_change,
                )
                break
        if hasattr(bar, "close"):
            bar.close()

        def evaluate(weights):
            net.load_state_dict(weights)
            return validate()[0]

        if config.soup and len(topk.entries) > 1:
            final, final_score, used = greedy_soup(topk.candidates(), evaluate)
            soup_epochs = [topk.entries[i]["epoch"] for i in used]
        else:
            final, final_score = topk.load(topk.entries[0]["epoch"]), topk.entries[0]["score"]
            soup_epochs = [topk.entries[0]["epoch"]]
        net.load_state_dict(final)
        history.update(
            best_epoch=topk.entries[0]["epoch"],
            best_score=topk.entries[0]["score"],
            soup_epochs=soup_epochs,
            final_score=final_score,
            stopped_early=state["wait"] >= config.n_iter_no_change,
        )
        per_voxel = validate()[1]
        result = FitResult(cpu_state_dict(net), history, job.run_dir, per_voxel)
        if world > 1:
            # tear the process group down on every rank together: a gloo thread still
            # alive when a spawned worker exits aborts it ("terminate called without an
            # active exception"), which failed the 2-process test now and then
            fabric.barrier()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if world > 1 and fabric.is_global_zero:
            # spawned workers hand their result to the parent through a pipe that is read
            # only once they have exited: anything larger than the pipe's buffer would
            # block, so rank 0 writes a file and returns its name
            torch.save(
                {
                    "state_dict": result.state_dict,
                    "history": history,
                    "per_voxel_scores": [torch.from_numpy(r) for r in per_voxel],
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
        run_dir = Path(checkpoint_dir) / f"run-{key}"
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = run_dir / "run.json"
        if meta.exists():
            seed = json.loads(meta.read_text())["seed"]
        else:
            atomic_write_text(
                meta,
                json.dumps(
                    {
                        "config": asdict(config),
                        "run_key": run_key,
                        "seed": seed,
                        "model": type(model).__qualname__,
                    },
                    indent=1,
                    default=str,
                ),
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
