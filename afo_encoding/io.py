"""Save and load fitted encoders: one safetensors file, weights as tensors, the rest as JSON.

No pickle is involved: loading a file never runs code from it, and a model fitted on a GPU
loads on a CPU. The file holds the network weights, the voxel coordinates and response
spaces (arrays), and in its metadata the estimator's class, parameters and fitted
bookkeeping (JSON). The backbone is not stored: it is rebuilt by name on load (features
are recomputed from the images, or come from the cache).

The encoders take part through the save hooks of their base class
(:func:`afo_encoding.encoders._base.saved_state` and
:func:`~afo_encoding.encoders._base.from_saved_state`).
The classes a file may name are listed in :data:`LOADABLE_CLASSES` (a file chooses among
those, never a module to import).

Models travel between machines: paths of this machine (the feature cache ``memory``, the
``checkpoint_dir``) are not stored, a model fitted on a GPU loads and predicts on a CPU, and
a checksum of the tensors (metadata ``tensors_blake2b``) catches damaged weights on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: metadata key of the JSON document in the safetensors header
_META_KEY = "afo_encoding"
FORMAT_VERSION = 1
#: the classes a file may name, and the module each comes from
LOADABLE_CLASSES = {
    "afo_encoding.encoders.topy.TopyEncoder": "afo_encoding.encoders.topy",
    "afo_encoding.encoders.linear.LinearProbeEncoder": "afo_encoding.encoders.linear",
    "afo_encoding.encoders.afo.AllForOneEncoder": "afo_encoding.encoders.afo",
}
#: parameters that name places on the machine that saved the model: not stored
MACHINE_PARAMS = ("memory", "checkpoint_dir")
_CUDA_DEVICES = ("cuda", "gpu")


def _json_param(name: str, value: Any) -> Any:
    """A constructor parameter as JSON, or a clear error."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_param(name, v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_param(f"{name}[{k!r}]", v) for k, v in value.items()}
    location = getattr(value, "location", None)  # joblib.Memory
    if type(value).__name__ == "Memory":
        return None if location is None else str(location)
    if isinstance(value, np.random.RandomState):
        return None
    raise TypeError(
        f"Cannot save parameter {name}={type(value).__name__}: only names, numbers, paths "
        "and lists of them go in the file. Pickle the estimator instead (pickle.dump), or "
        "give that parameter by name."
    )


def params_to_json(estimator, drop: tuple[str, ...] = ()) -> dict:
    """The estimator's constructor parameters as JSON values (see :func:`save`); those in
    ``drop`` are written as ``None`` (what they gave is in the fitted state), and so are the
    paths of this machine (:data:`MACHINE_PARAMS`)."""
    drop = (*drop, *MACHINE_PARAMS)
    return {
        k: None if k in drop else _json_param(k, v)
        for k, v in estimator.get_params(deep=False).items()
    }


def encoder_params_to_json(estimator) -> dict:
    """An encoder's parameters as JSON; a ``mask`` given as an image or array is dropped,
    since the fitted response spaces carry the voxel selection it made."""
    mask = getattr(estimator, "mask", None)
    keep_mask = mask is None or isinstance(mask, str | os.PathLike)
    return params_to_json(estimator, drop=() if keep_mask else ("mask",))


def space_to_state(space, prefix: str) -> tuple[dict, dict]:
    """Split a response space's ``to_dict()`` into arrays (keyed ``prefix + key``, for the
    tensors) and the JSON values; :func:`space_from_state` puts it back together."""
    tensors, values = {}, {}
    for key, value in space.to_dict().items():
        if isinstance(value, np.ndarray):
            tensors[f"{prefix}{key}"] = value
        else:
            values[key] = value
    return tensors, values


def space_from_state(tensors: dict, values: dict, prefix: str):
    """Rebuild the response space that :func:`space_to_state` split."""
    from .responses import space_from_dict

    state = dict(values)
    state.update(
        {k[len(prefix) :]: v.numpy() for k, v in tensors.items() if k.startswith(prefix)}
    )
    return space_from_dict(state)


def to_tensor(array: Any) -> torch.Tensor:
    """A contiguous CPU tensor that owns its memory (what safetensors stores)."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu").contiguous().clone()
    return torch.from_numpy(np.ascontiguousarray(np.array(array, copy=True)))


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """A BLAKE2b digest of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


#: the extension :func:`save` gives a name that has none
SUFFIX = ".safetensors"


def save(estimator, path: str | Path) -> Path:
    """Save a fitted estimator to one safetensors file.

    Parameters
    ----------
    estimator : fitted TopyEncoder, LinearProbeEncoder or AllForOneEncoder
        What to save. Parameters must be names, numbers, paths or lists of them (a
        backbone given as a torch module cannot be saved this way: pickle instead).
    path : str or Path
        The file to write, replaced if it exists; a name without an extension gets
        ``.safetensors`` (``save(enc, "my_encoder")`` writes ``my_encoder.safetensors``,
        which ``load("my_encoder")`` finds). The file's mode follows the process umask.

    Returns
    -------
    path : Path
        The file written.

    Examples
    --------
    >>> enc.save("model.safetensors")  # doctest: +SKIP
    >>> enc = afo_encoding.load("model.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    from .encoders._base import saved_state

    tensors, meta = saved_state(estimator)
    tensors = {k: to_tensor(v) for k, v in tensors.items()}
    cls = type(estimator)
    document = {
        "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "tensors_blake2b": tensors_checksum(tensors),
        **meta,
    }
    path = Path(path)
    if not path.suffix:
        path = path.with_name(path.name + SUFFIX)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(document)})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # as open() would create it
    tmp.replace(path)
    return path


def _read_file(path: Path) -> tuple[dict, dict]:
    """The metadata document and the tensors of a model file, or errors that name it."""
    from safetensors import safe_open

    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}.")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; give the model file written by save (e.g. "
            f"{path / 'model.safetensors'})."
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors' own errors name no file
        raise ValueError(
            f"Cannot read {path}: it is damaged (e.g. cut short) or not a model file written "
            f"by afo_encoding.save ({type(err).__name__}: {err}). Save the model again, or "
            "restore the file from a copy."
        ) from err
    if _META_KEY not in header:
        raise ValueError(f"{path} is not an afo-encoding model file (no metadata).")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is damaged: its metadata is not valid JSON ({err}). Save the model "
            "again, or restore the file from a copy."
        ) from err
    if not isinstance(meta, dict) or "class" not in meta:
        raise ValueError(f"{path} is damaged: its metadata names no estimator class.")
    expected = meta.get("tensors_blake2b")  # files from before the checksum have none
    if expected is not None and tensors_checksum(tensors) != expected:
        raise ValueError(
            f"{path} is damaged: its tensors do not match the checksum saved with them (the "
            "weights were changed after saving). Save the model again, or restore the file "
            "from a copy."
        )
    return meta, tensors


def _set_params_everywhere(meta: Any, values: dict) -> None:
    """Set ``values`` in every parameter dictionary of a metadata document (an AFO file
    holds its own parameters and those of its final TopyEncoder)."""
    if not isinstance(meta, dict):
        return
    for key, value in meta.items():
        if key.endswith("params") and isinstance(value, dict):
            value.update({k: v for k, v in values.items() if k in value})
        else:
            _set_params_everywhere(value, values)


def _saved_device(meta: Any) -> str | None:
    if not isinstance(meta, dict):
        return None
    device = meta.get("params", {}).get("device") if isinstance(meta.get("params"), dict) else None
    return device if isinstance(device, str) else _saved_device(meta.get("final"))


def _placement(saved: str | None, path: Path) -> str | None:
    """The device a model fitted on ``saved`` runs on here: a GPU device on a machine without
    one becomes ``"cpu"``."""
    if not isinstance(saved, str) or not saved.lower().startswith(_CUDA_DEVICES):
        return None
    if torch.cuda.is_available():
        return None
    from ._logging import logger

    logger.info("%s was fitted with device=%r; no GPU here: it will run on the CPU.", path, saved)
    return "cpu"


def load(
    path: str | Path,
    *,
    device: str | None = None,
    memory: Any = None,
    checkpoint_dir: str | Path | None = None,
):
    """Load an estimator saved with :func:`save` (on the CPU).

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save` / ``estimator.save`` (the ``.safetensors``
        extension may be left out).
    device : str or None, default=None
        Where the loaded model computes (its ``device`` parameter). ``None`` keeps the saved
        one, except that a model fitted on a GPU runs on the CPU of a machine without one.
    memory : str, Path, joblib.Memory or None, default=None
        The feature cache to use on this machine (paths of the saving machine are not
        stored).
    checkpoint_dir : str, Path or None, default=None
        Where a refit of the loaded estimator writes its checkpoints.

    Returns
    -------
    estimator
        The fitted estimator, ready to ``predict``. Its ``mask`` parameter is ``None``: a
        mask image is not stored, the fitted response space (``space_``) keeps which
        voxels were fitted and maps predictions back on the brain.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        No file at ``path``.
    ValueError
        A damaged file (cut short, weights changed after saving, unreadable metadata) or
        one that names a class that is not an afo-encoding estimator.
    OSError
        The model's Hugging Face backbone is not on this machine (loading never downloads).
    """
    from .backbones.huggingface import hub_offline

    path = Path(path)
    if not path.exists() and not path.suffix and path.with_name(path.name + SUFFIX).exists():
        path = path.with_name(path.name + SUFFIX)
    meta, tensors = _read_file(path)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved by a newer afo-encoding (format {meta['format_version']}); "
            "upgrade afo-encoding to load it."
        )
    module_name = LOADABLE_CLASSES.get(meta["class"])
    if module_name is None:
        raise ValueError(
            f"{path} names the class {meta['class']!r}, which afo_encoding.load does not "
            f"load; it loads {sorted(LOADABLE_CLASSES)}."
        )
    # files from before MACHINE_PARAMS were dropped still hold the saving machine's paths
    params = {"memory": memory, "checkpoint_dir": checkpoint_dir}
    device = device or _placement(_saved_device(meta), path)
    if device is not None:
        params["device"] = device
    _set_params_everywhere(meta, params)
    from .encoders._base import from_saved_state

    cls = getattr(import_module(module_name), meta["class"].rpartition(".")[2])
    try:
        with hub_offline():
            return from_saved_state(cls, tensors, meta)
    except OSError as err:
        raise OSError(
            f"{path}: cannot rebuild its backbone from files on this machine ({err}). "
            "afo_encoding.load never downloads: get the backbone once with "
            "afo_encoding.backbones.get_backbone(name), then load again."
        ) from err
