"""Save and load fitted encoders: one safetensors file, weights as tensors, the rest as JSON.

No pickle is involved: loading a file never runs code from it, and a model fitted on a GPU
loads on a CPU. The file holds the network weights, the voxel coordinates and response
spaces (arrays), and in its metadata the estimator's class, parameters and fitted
bookkeeping (JSON). The backbone is not stored: it is rebuilt by name on load (features
are recomputed from the images, or come from the cache).

The encoders take part through the save hooks of their base class
(:func:`afo_encoding.encoders._base.saved_state` and
:func:`~afo_encoding.encoders._base.from_saved_state`).
"""

from __future__ import annotations

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
    ``drop`` are written as ``None`` (what they gave is in the fitted state)."""
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


def save(estimator, path: str | Path) -> Path:
    """Save a fitted estimator to one safetensors file.

    Parameters
    ----------
    estimator : fitted TopyEncoder, LinearProbeEncoder or AllForOneEncoder
        What to save. Parameters must be names, numbers, paths or lists of them (a
        backbone given as a torch module cannot be saved this way: pickle instead).
    path : str or Path
        The file to write (conventionally ``*.safetensors``); replaced if it exists.

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
    cls = type(estimator)
    document = {
        "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        **meta,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: to_tensor(v) for k, v in tensors.items()},
        str(tmp),
        metadata={_META_KEY: json.dumps(document)},
    )
    tmp.replace(path)
    return path


def load(path: str | Path):
    """Load an estimator saved with :func:`save` (on the CPU).

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save` / ``estimator.save``.

    Returns
    -------
    estimator
        The fitted estimator, ready to ``predict``.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}.")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        header = f.metadata() or {}
        if _META_KEY not in header:
            raise ValueError(f"{path} is not an afo-encoding model file (no metadata).")
        meta = json.loads(header[_META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} was saved by a newer afo-encoding (format {meta['format_version']}); "
            "upgrade afo-encoding to load it."
        )
    module_name, _, class_name = meta["class"].rpartition(".")
    if not module_name.startswith("afo_encoding."):
        raise ValueError(f"{path} names a class outside afo-encoding: {meta['class']!r}.")
    from .encoders._base import from_saved_state

    return from_saved_state(getattr(import_module(module_name), class_name), tensors, meta)
