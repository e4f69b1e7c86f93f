"""Top-k checkpoints and the files that let an interrupted fit resume.

With a checkpoint directory, every fit writes into its own run folder
``<checkpoint_dir>/run-<fingerprint>/``, named by a hash of what determines the fit (recipe,
model layout, targets, splits, AFO hooks and the caller's key for the features), so the
folds of a cross-validation or the points of a grid search never mix their files:

- ``last.pt``: the whole training state after the last finished epoch (model, optimizer,
  sampler and torch random states, history, early-stopping counters, top-k list);
- ``top-epochNNNN.pt``: the weights of each of the best ``k`` epochs;
- ``run.json``: what the run is, for people, and its seed (:func:`run_folder`).

Files are written to a temporary name and renamed, so an interruption never leaves a
half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

StateDict = dict[str, torch.Tensor]


def cpu_state_dict(module: torch.nn.Module) -> StateDict:
    """A detached copy of ``module``'s state dict on the CPU."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_folder(root: str | Path, name: str, seed: Any, **record: Any) -> tuple[Path, Any]:
    """The run folder ``root/name`` (created) and the seed of its run.

    A new folder gets a ``run.json`` with ``seed`` and ``record`` (what the run is, for
    people); a folder that has one is a run resumed after an interruption, which goes on
    with the seed it started with (so an unseeded run finds its random draws again).

    Used by the training engine (one folder per fit) and by All-for-One (one per recipe).
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "run.json"
    if manifest.exists():
        return folder, json.loads(manifest.read_text())["seed"]
    atomic_write_text(manifest, json.dumps({**record, "seed": seed}, indent=1, default=str))
    return folder, seed


def precision_key(precision: Any) -> str:
    """What the numerical precision adds to a run's key: nothing for full precision (the
    folders of earlier runs keep their names), ``"|precision=..."`` otherwise, so a
    bf16 refit never resumes an fp32 run."""
    if str(precision) in ("32-true", "32", "32-bit"):
        return ""
    return f"|precision={precision}"


RESUME_FROM_SCRATCH = (
    "Delete it to fit this run again from its first epoch, or restore it from a copy."
)


class DamagedFileError(ValueError):
    """A checkpoint or a stage file that cannot be read back (e.g. cut short)."""


def load_checkpoint(path: Path, recover: str) -> Any:
    """``torch.load`` a checkpoint file, or an error that names it and says ``recover``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and zip errors name no file
        raise DamagedFileError(
            f"Cannot read the checkpoint {path}: it is damaged, e.g. cut short "
            f"({type(err).__name__}: {err}). {recover}"
        ) from err


def load_arrays(path: Path, recover: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file, read now, or an error that names it and says
    ``recover``."""
    try:
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    except Exception as err:  # zip and zlib errors name no file
        raise DamagedFileError(
            f"Cannot read {path}: it is damaged, e.g. cut short ({type(err).__name__}: "
            f"{err}). {recover}"
        ) from err


def _update(h, value) -> None:
    if value is None:
        h.update(b"<none>")
        return
    arr = np.ascontiguousarray(value)
    h.update(f"{arr.dtype}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))


def _update_features(h, features) -> None:
    """Features enter by their ``fingerprint``, else their backbone and image ids."""
    fingerprint = getattr(features, "fingerprint", None)
    if fingerprint is not None:
        h.update(str(fingerprint).encode())
        return
    h.update(f"{getattr(features, 'backbone_name', '')}|{len(features)}".encode())
    for i in getattr(features, "ids", ()):
        h.update(str(i).encode())


def run_fingerprint(model: torch.nn.Module, subjects, config: dict, run_key: str = "") -> str:
    """Hash of everything that determines a fit, naming its run folder.

    Parameters
    ----------
    model : torch.nn.Module
        Only its class, parameter names and shapes and the names of frozen parameters
        (``requires_grad=False``) enter, not the values, so a fit with
        ``random_state=None`` still finds its run again.
    subjects : list of SubjectData
        Targets, splits, loss weights, soft targets and monitored voxels enter; features
        enter through their ``fingerprint`` attribute, else their ``backbone_name`` and
        image ``ids`` (a :class:`~afo_encoding.backbones.FeatureStore`).
    config : dict
        The training recipe.
    run_key : str
        What the caller knows and the rest cannot show (model options, coordinates...).

    Returns
    -------
    fingerprint : str
        16 hexadecimal characters.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(run_key.encode())
    h.update(type(model).__qualname__.encode())
    for name, value in model.state_dict().items():
        h.update(f"{name}{tuple(value.shape)}".encode())
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    if frozen:  # a fit with frozen parameters is another fit (nothing added otherwise)
        h.update(("frozen:" + ",".join(frozen)).encode())
    for data in subjects:
        _update_features(h, data.features)
        for arr in (
            data.targets,
            data.train_index,
            data.val_index,
            data.loss_weight,
            data.soft_targets,
            data.soft_weight,
            data.monitor_index,
            data.target_mean,
            data.target_scale,
        ):
            _update(h, arr)
    return h.hexdigest()


class TopKCheckpoints:
    """The ``k`` best epochs by validation score, in memory or as files.

    Parameters
    ----------
    k : int
        How many to keep (>= 1).
    directory : Path | None
        Where the weights go; ``None`` keeps CPU copies in memory.
    writer : bool
        Whether this process writes files (rank 0 only under DDP).
    """

    def __init__(self, k: int, directory: Path | None = None, writer: bool = True):
        if k < 1:
            raise ValueError(f"top_k must be >= 1, got {k}.")
        self.k = k
        self.directory = None if directory is None else Path(directory)
        self.writer = writer
        self.entries: list[dict] = []  # {"score", "epoch", "file"}, best first
        self._memory: dict[int, StateDict] = {}

    def _file(self, epoch: int) -> Path:
        return self.directory / f"top-epoch{epoch:04d}.pt"

    def offer(self, score: float, epoch: int, module: torch.nn.Module) -> bool:
        """Keep ``module``'s weights if ``score`` is among the best ``k``; return whether it
        was kept."""
        if len(self.entries) >= self.k and score <= self.entries[-1]["score"]:
            return False
        state = cpu_state_dict(module)
        if self.directory is None:
            self._memory[epoch] = state
        elif self.writer:
            atomic_save(state, self._file(epoch))
        self.entries.append({"score": float(score), "epoch": int(epoch)})
        self.entries.sort(key=lambda e: (-e["score"], e["epoch"]))
        for dropped in self.entries[self.k :]:
            self._forget(dropped["epoch"])
        del self.entries[self.k :]
        return True

    def _forget(self, epoch: int) -> None:
        self._memory.pop(epoch, None)
        if self.directory is not None and self.writer:
            self._file(epoch).unlink(missing_ok=True)

    def load(self, epoch: int) -> StateDict:
        """Weights of a kept epoch."""
        if self.directory is None:
            return self._memory[epoch]
        return load_checkpoint(
            self._file(epoch),
            "Delete it; the other kept epochs still make the final model, or delete its run "
            "folder to fit again from the first epoch.",
        )

    def candidates(self) -> list[tuple[float, Callable[[], StateDict]]]:
        """``(score, load)`` for every kept epoch, best first (the input of a soup)."""
        return [(e["score"], lambda e=e: self.load(e["epoch"])) for e in self.entries]

    def state_dict(self) -> list[dict]:
        """The list of kept epochs and scores (the weights are files already)."""
        return [dict(e) for e in self.entries]

    def load_state_dict(self, entries: list[dict]) -> None:
        """Restore the list saved by :meth:`state_dict`."""
        self.entries = [dict(e) for e in entries]
