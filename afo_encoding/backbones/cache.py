"""Feature extraction with a cache: the features of an image are computed once per backbone.

Layout. The features of one image are stored as one flat row: the local maps of every
layer, flattened in C-order, then the global vectors, in layer order
(:attr:`FeatureStore.slices` gives the columns of each part). Rows live in *segments*:
2-D arrays ``(n_rows, n_features)`` in the storage dtype, either in RAM or memory-mapped
from ``.npy`` files on disk. A :class:`FeatureStore` is a list of segments and, for every
image of the stimuli it was made for, the segment and row that hold its features; reading
a batch is one gather per segment touched, then one transfer and one cast.

Three levels of cache, searched in this order, keyed by the backbone's ``name``, the
precision of the computation (``autocast``) and the storage dtype, then by image id:

1. the process-level memory cache: segments made by earlier calls in this process (RAM
   segments up to a byte budget, see :func:`set_feature_cache_size`; every segment still
   referenced by a live store is found too);
2. the disk cache under ``memory`` (a path or a :class:`joblib.Memory`):
   ``<location>/afo_features/<hash of the key>/`` holds ``key.json`` and, per writing
   call, ``<uuid>.npy`` (the rows) with ``<uuid>.ids`` (the image id of each committed
   row, one per line) and ``<uuid>.sums`` (a BLAKE2b digest of each committed block of
   rows). Each writer creates files of its own, and appends ids only once their rows are
   flushed and their digest written, so several processes may fill the same cache at once
   and an interrupted extraction keeps what it had committed. What is read is verified
   (the array's shape and dtype, then the digests, once per file and process): a damaged
   file is removed with a warning that names it, and its features are computed again;
3. the backbone, for the images found nowhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._devices import autocast_dtype, resolve_device
from .._logging import logger, progress, use_log_level
from .base import Backbone

# storage dtype name -> (numpy dtype of the stored array, torch dtype it holds)
_STORAGE = {
    "float32": (np.dtype(np.float32), torch.float32),
    "float16": (np.dtype(np.float16), torch.float16),
    # numpy has no bfloat16: stored as the raw 16 bits (int16 view, read back as bfloat16)
    "bfloat16": (np.dtype(np.int16), torch.bfloat16),
}
# torch dtype of the stored bits
_BITS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.int16}
_COMMIT_SECONDS = 5.0


def _storage_name(dtype: Any) -> str:
    if dtype is None:
        return "float32"
    aliases = {
        torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
        "fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
    }  # fmt: skip
    if isinstance(dtype, str) and dtype.lower() in {**_STORAGE, **aliases}:
        return aliases.get(dtype.lower(), dtype.lower())
    if isinstance(dtype, torch.dtype) and dtype in aliases:
        return aliases[dtype]
    with contextlib.suppress(TypeError):
        if np.dtype(dtype) in (np.float32, np.float16):
            return np.dtype(dtype).name
    raise ValueError(
        f"dtype must be None (float32), 'float32', 'float16' or 'bfloat16' (or the torch "
        f"dtype), got {dtype!r}."
    )


@dataclass(frozen=True)
class FeatureLayout:
    """Shapes of the features of one image, and the columns of each part in a flat row."""

    layer_names: tuple[str, ...]
    local_channels: tuple[int, ...]
    local_shapes: tuple[tuple[int, int], ...]
    global_dims: tuple[int, ...]

    @classmethod
    def of(cls, backbone: Backbone) -> FeatureLayout:
        """Layout of the features of ``backbone``."""
        return cls(
            tuple(backbone.layer_names),
            tuple(int(c) for c in backbone.local_channels),
            tuple((int(h), int(w)) for h, w in backbone.local_shapes),
            tuple(int(g) for g in backbone.global_dims),
        )

    @property
    def part_shapes(self) -> list[tuple[int, ...]]:
        """Per-image shape of every part: local maps ``(C, h, w)`` then globals ``(G,)``."""
        return [(c, *hw) for c, hw in zip(self.local_channels, self.local_shapes)] + [
            (g,) for g in self.global_dims
        ]

    @property
    def slices(self) -> list[slice]:
        """Columns of every part in a flat row, locals then globals."""
        out, start = [], 0
        for shape in self.part_shapes:
            stop = start + int(np.prod(shape))
            out.append(slice(start, stop))
            start = stop
        return out

    @property
    def n_features(self) -> int:
        """Length of a flat row."""
        return sum(int(np.prod(s)) for s in self.part_shapes)

    def to_json(self) -> dict:
        return {
            "layer_names": list(self.layer_names),
            "local_channels": list(self.local_channels),
            "local_shapes": [list(s) for s in self.local_shapes],
            "global_dims": list(self.global_dims),
        }


class _Segment:
    """Rows of features ``(n_rows, n_features)`` with the image id of each row.

    ``path`` is set for a segment memory-mapped from disk; it then pickles as its path
    (a worker process maps the same file instead of receiving a copy of the data).
    """

    def __init__(self, array: np.ndarray, ids: Sequence[str], path: Path | None = None):
        self.array = array
        self.ids = list(ids)
        self.path = path

    @property
    def ram_bytes(self) -> int:
        return 0 if self.path is not None else self.array.nbytes

    def __getstate__(self) -> dict:
        state = {"ids": self.ids, "path": self.path}
        if self.path is None:
            state["array"] = self.array
        else:
            state["n_rows"] = len(self.ids)
        return state

    def __setstate__(self, state: dict) -> None:
        if state["path"] is not None:
            state["array"] = _open_rows(state["path"])[: state.pop("n_rows")]
        self.__dict__.update(state)


def _open_rows(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def _block_digest(rows: np.ndarray) -> str:
    return hashlib.blake2b(
        memoryview(np.ascontiguousarray(rows)).cast("B"), digest_size=16
    ).hexdigest()


def _read_sums(path: Path) -> list[tuple[int, int, str]]:
    """The ``(start, stop, digest)`` lines of a ``.sums`` file (a cut last line is dropped)."""
    blocks = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().split("\n")[:-1]:
            parts = line.split()
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                blocks.append((int(parts[0]), int(parts[1]), parts[2]))
    return blocks


# files already verified by this process: (path, size, mtime, rows) -> rows
_VERIFIED: set[tuple[str, int, int, int]] = set()


class _MemoryCache:
    """Process-level index of feature segments per cache key, with a RAM budget.

    Every segment is indexed through a weak reference, so it is found as long as some
    store uses it; RAM segments are also kept alive in least-recently-used order up to
    ``max_bytes``, memory-mapped ones (no RAM cost) up to ``max_mapped`` segments.
    """

    def __init__(self, max_bytes: int, max_mapped: int = 256) -> None:
        self.max_bytes = max_bytes
        self.max_mapped = max_mapped
        self._index: dict[str, dict[str, tuple[weakref.ref, int]]] = {}
        self._keep: OrderedDict[int, _Segment] = OrderedDict()
        # reentrant: a segment may die, and call forget, while the lock is held
        self._lock = threading.RLock()

    def add(self, key: str, segment: _Segment) -> None:
        ids = segment.ids

        def forget(ref: weakref.ref) -> None:  # drop the entries of a dead segment
            with self._lock:
                index = self._index.get(key, {})
                for image_id in ids:
                    if index.get(image_id, (None,))[0] is ref:
                        del index[image_id]

        ref = weakref.ref(segment, forget)
        with self._lock:
            index = self._index.setdefault(key, {})
            for row, image_id in enumerate(segment.ids):
                index[image_id] = (ref, row)
            if segment.ram_bytes <= self.max_bytes:  # a larger one would evict all others
                self._keep[id(segment)] = segment
                self._trim()

    def lookup(self, key: str, ids: Sequence[str]) -> dict[str, tuple[_Segment, int]]:
        found: dict[str, tuple[_Segment, int]] = {}
        with self._lock:
            index = self._index.get(key, {})
            for image_id in ids:
                entry = index.get(image_id)
                if entry is None:
                    continue
                segment = entry[0]()
                if segment is None:
                    del index[image_id]
                    continue
                found[image_id] = (segment, entry[1])
                if id(segment) in self._keep:
                    self._keep.move_to_end(id(segment))
        return found

    def clear(self) -> None:
        with self._lock:
            self._index.clear()
            self._keep.clear()

    def _trim(self) -> None:
        ram = sum(s.ram_bytes for s in self._keep.values())
        mapped = sum(s.path is not None for s in self._keep.values())
        for key in list(self._keep):
            if ram <= self.max_bytes and mapped <= self.max_mapped:
                break
            segment = self._keep[key]
            if segment.path is None and ram > self.max_bytes:
                ram -= segment.ram_bytes
                del self._keep[key]
            elif segment.path is not None and mapped > self.max_mapped:
                mapped -= 1
                del self._keep[key]


def _default_cache_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return min(4 * 2**30, total // 4)


_MEMORY = _MemoryCache(_default_cache_bytes())


def set_feature_cache_size(max_bytes: int) -> int:
    """Set the RAM budget of the process-level feature cache; return the previous one.

    Features computed without ``memory=`` stay in RAM for later calls (cross-validation
    folds, AFO stages, refits) while their total size is within this budget (default: a
    quarter of the physical memory, at most 4 GiB); the least recently used are dropped
    first. Features still held by a :class:`FeatureStore` are always found.

    Parameters
    ----------
    max_bytes : int
        The new budget in bytes (0 keeps nothing beyond live stores).

    Returns
    -------
    previous : int
        The budget before the call.
    """
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be >= 0, got {max_bytes}.")
    previous, _MEMORY.max_bytes = _MEMORY.max_bytes, int(max_bytes)
    with _MEMORY._lock:
        _MEMORY._trim()
    return previous


def clear_feature_cache() -> None:
    """Forget every feature kept by the process-level cache (the disk cache stays)."""
    _MEMORY.clear()


class _DiskCache:
    """The on-disk rows of one cache key, under ``<location>/afo_features/<hash>/``."""

    def __init__(self, location: str | os.PathLike, key: str, layout: FeatureLayout, storage: str):
        self.key = key
        self.layout = layout
        self.storage = storage
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        self.folder = Path(location).expanduser() / "afo_features" / digest
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"key": key, "storage": storage, "layout": layout.to_json(), "version": 1}
        meta_path = self.folder / "key.json"
        stored = self._read_key(meta_path)
        if stored is not None:
            if stored["key"] != key or stored["layout"] != meta["layout"]:
                raise RuntimeError(
                    f"The feature cache folder {self.folder} holds features of another "
                    f"backbone ({stored['key']!r}, layout {stored['layout']}), not of {key!r} "
                    f"with layout {meta['layout']}. Delete the folder."
                )
        else:
            tmp = self.folder / f".key.json.{uuid.uuid4().hex}.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, meta_path)

    @staticmethod
    def _read_key(path: Path) -> dict | None:
        """``key.json``, or None when it is missing or damaged (it is then rewritten: the
        folder's name is the hash of the key, the rows are checked file by file)."""
        if not path.exists():
            return None
        try:
            stored = json.loads(path.read_text())
            if isinstance(stored, dict) and {"key", "layout"} <= stored.keys():
                return stored
            reason = "it lacks the key or the layout"
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            reason = f"it is not valid JSON ({err})"
        warnings.warn(
            f"The feature cache file {path} is damaged: {reason}. It is written again.",
            UserWarning,
            stacklevel=5,
        )
        return None

    def _discard(self, npy: Path, reason: str) -> None:
        """Warn about a damaged segment and remove its files (its rows are recomputed)."""
        warnings.warn(
            f"The feature cache file {npy} is damaged: {reason}. Its features are computed "
            "again and the file is removed.",
            UserWarning,
            stacklevel=5,
        )
        for suffix in (".npy", ".ids", ".sums"):
            with contextlib.suppress(OSError):
                npy.with_suffix(suffix).unlink()

    def _verified_rows(self, npy: Path, n_rows: int) -> np.ndarray | None:
        """The first ``n_rows`` rows of a segment file, verified, or None if it is damaged."""
        try:
            stat = npy.stat()
            array = _open_rows(npy)
        except (OSError, ValueError, EOFError) as err:
            self._discard(npy, f"it cannot be read ({type(err).__name__}: {err})")
            return None
        expected = (self.layout.n_features, _STORAGE[self.storage][0])
        if array.ndim != 2 or (array.shape[1], array.dtype) != expected or array.shape[0] < n_rows:
            self._discard(
                npy,
                f"it holds a {array.dtype} array of shape {array.shape}, not {n_rows} or more "
                f"rows of {expected[0]} {expected[1]} features",
            )
            return None
        token = (str(npy), stat.st_size, stat.st_mtime_ns, n_rows)
        if token not in _VERIFIED:
            for start, stop, digest in _read_sums(npy.with_suffix(".sums")):
                if stop <= n_rows and _block_digest(array[start:stop]) != digest:
                    self._discard(npy, f"rows {start} to {stop - 1} do not match their checksum")
                    return None
            _VERIFIED.add(token)
        return array[:n_rows]

    def lookup(self, ids: set[str]) -> dict[str, tuple[_Segment, int]]:
        """Find committed rows of ``ids`` in the segments on disk (verified: a damaged file is
        removed with a warning and its rows are not found)."""
        found: dict[str, tuple[_Segment, int]] = {}
        for ids_path in sorted(self.folder.glob("*.ids")):
            if len(found) == len(ids):
                break
            try:
                text = ids_path.read_text()
            except FileNotFoundError:  # removed meanwhile by another process
                continue
            committed = text.split("\n")[:-1]  # a partial last line is dropped
            if not any(i in ids and i not in found for i in committed):
                continue
            npy = ids_path.with_suffix(".npy")
            rows = self._verified_rows(npy, len(committed))
            if rows is None:
                continue
            segment = _Segment(rows, committed, path=npy)
            for row, image_id in enumerate(committed):
                if image_id in ids and image_id not in found:
                    found[image_id] = (segment, row)
        return found

    def holds(self, entry: tuple[_Segment, int] | None) -> bool:
        """Whether a (segment, row) found elsewhere is already in this cache folder."""
        return (
            entry is not None and entry[0].path is not None and entry[0].path.parent == self.folder
        )

    def create(self, ids: Sequence[str]) -> _DiskWriter:
        """A writer of a new segment for ``ids``, in a file of its own."""
        return _DiskWriter(self.folder / f"{uuid.uuid4().hex}.npy", ids, self.layout, self.storage)


class _DiskWriter:
    """New rows written into a memory-mapped ``.npy``; their ids committed after a flush."""

    def __init__(self, path: Path, ids: Sequence[str], layout: FeatureLayout, storage: str):
        self.path = path
        self.ids = list(ids)
        self.array = np.lib.format.open_memmap(
            path, mode="w+", dtype=_STORAGE[storage][0], shape=(len(ids), layout.n_features)
        )
        self.n_committed = 0
        self.last_commit = time.monotonic()

    def commit(self, n_written: int, force: bool = False) -> None:
        """Publish the ids of rows up to ``n_written`` (at most every few seconds)."""
        if n_written == self.n_committed:
            return
        if not force and time.monotonic() - self.last_commit < _COMMIT_SECONDS:
            return
        self.array.flush()
        digest = _block_digest(self.array[self.n_committed : n_written])
        with open(self.path.with_suffix(".sums"), "a") as f:
            f.write(f"{self.n_committed} {n_written} {digest}\n")
        with open(self.path.with_suffix(".ids"), "a") as f:
            f.write("".join(f"{i}\n" for i in self.ids[self.n_committed : n_written]))
        self.n_committed = n_written
        self.last_commit = time.monotonic()

    def close(self) -> _Segment:
        self.commit(len(self.ids), force=True)
        del self.array  # unmap the writable view; readers map the file read-only
        return _Segment(_open_rows(self.path), self.ids, path=self.path)


class _RamWriter:
    """New rows in RAM, with the interface of :class:`_DiskWriter`."""

    def __init__(self, ids: Sequence[str], layout: FeatureLayout, storage: str):
        self.ids = list(ids)
        itemsize = _STORAGE[storage][0].itemsize
        needed = len(ids) * layout.n_features * itemsize
        with contextlib.suppress(ValueError, OSError, AttributeError):
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
            if needed > 0.9 * available:
                raise MemoryError(
                    f"The features of {len(ids)} images need {needed / 2**30:.1f} GiB, more "
                    f"than the {available / 2**30:.1f} GiB of free RAM. Pass memory='<a folder>' "
                    "to store them on disk (memory-mapped), and/or dtype='bfloat16' to halve them."
                )
        self.array = np.empty((len(ids), layout.n_features), dtype=_STORAGE[storage][0])

    def commit(self, n_written: int, force: bool = False) -> None:
        """Nothing to publish: the rows become visible when the segment is made."""

    def close(self) -> _Segment:
        return _Segment(self.array, self.ids)


def _disk_cache(memory: Any, key: str, layout: FeatureLayout, storage: str) -> _DiskCache | None:
    if memory is None:
        return None
    if isinstance(memory, str | os.PathLike):
        return _DiskCache(memory, key, layout, storage)
    location = getattr(memory, "location", AttributeError)
    if location is AttributeError:
        raise TypeError(
            f"memory must be None, a path or a joblib.Memory, got {type(memory).__name__}."
        )
    return None if location is None else _DiskCache(location, key, layout, storage)


class FeatureStore:
    """Features of a sequence of images, ready to be read in batches as torch tensors.

    Made by :func:`extract_features` (or :meth:`from_arrays`); row ``i`` holds the
    features of image ``i`` of the stimuli it was made for. Rows may be shared with other
    stores (subsets, repeated images): a store never copies features it can point to.

    Attributes
    ----------
    ids : list of str
        Image id of every row.
    backbone_name : str
        ``name`` of the backbone that computed the features.
    layer_names, local_channels, local_shapes, global_dims : list
        As on the backbone.
    dtype : torch.dtype
        Storage dtype (float32, float16 or bfloat16).
    slices : list of slice
        Columns of every part (locals then globals) in the flat rows of :meth:`rows`.
    """

    def __init__(
        self,
        segments: list[_Segment],
        segment_index: np.ndarray,
        row_index: np.ndarray,
        layout: FeatureLayout,
        storage: str,
        backbone_name: str,
    ) -> None:
        self._segments = segments
        self._segment_index = np.asarray(segment_index, dtype=np.int64)
        self._row_index = np.asarray(row_index, dtype=np.int64)
        self._layout = layout
        self._storage = storage
        self.backbone_name = backbone_name

    @classmethod
    def from_arrays(
        cls,
        locals_: Sequence[np.ndarray | torch.Tensor],
        globals_: Sequence[np.ndarray | torch.Tensor],
        ids: Sequence[str] | None = None,
        dtype: Any = None,
        name: str = "arrays",
        layer_names: Sequence[str] | None = None,
    ) -> FeatureStore:
        """Make a store from precomputed features (held in RAM).

        Parameters
        ----------
        locals_ : list of array, shape (n, C_l, h_l, w_l)
            Local maps of every layer.
        globals_ : list of array, shape (n, G_l)
            Global vectors of every layer.
        ids : list of str, optional
            Image ids (default ``"0"``, ``"1"``, ...).
        dtype : None, "float32", "float16" or "bfloat16"
            Storage dtype (default float32).
        name : str
            Recorded as ``backbone_name``.
        layer_names : list of str, optional
            Default ``"layer0"``, ``"layer1"``, ...
        """
        if len(locals_) != len(globals_) or not locals_:
            raise ValueError(
                f"Give one global array per local array (at least one), got {len(locals_)} "
                f"local and {len(globals_)} global arrays."
            )
        parts = [torch.as_tensor(a) for a in [*locals_, *globals_]]
        n = parts[0].shape[0]
        bad = [tuple(p.shape) for p in parts if p.shape[0] != n]
        if (
            bad
            or any(p.ndim != 4 for p in parts[: len(locals_)])
            or any(p.ndim != 2 for p in parts[len(locals_) :])
        ):
            raise ValueError(
                "locals_ must be arrays (n, C, h, w) and globals_ arrays (n, G) with the same "
                f"n; got shapes {[tuple(p.shape) for p in parts]}."
            )
        layout = FeatureLayout(
            tuple(layer_names or (f"layer{i}" for i in range(len(locals_)))),
            tuple(int(p.shape[1]) for p in parts[: len(locals_)]),
            tuple((int(p.shape[2]), int(p.shape[3])) for p in parts[: len(locals_)]),
            tuple(int(p.shape[1]) for p in parts[len(locals_) :]),
        )
        storage = _storage_name(dtype)
        flat = torch.cat([p.reshape(n, -1).float() for p in parts], dim=1)
        array = _to_storage_numpy(flat, storage)
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        if len(ids) != n:
            raise ValueError(f"Got {len(ids)} ids for {n} images.")
        segment = _Segment(array, ids)
        return cls([segment], np.zeros(n), np.arange(n), layout, storage, name)

    def __len__(self) -> int:
        return len(self._row_index)

    def __repr__(self) -> str:
        return (
            f"FeatureStore(n_images={len(self)}, backbone={self.backbone_name!r}, "
            f"layers={list(self.layer_names)}, dtype={self._storage})"
        )

    @property
    def ids(self) -> list[str]:
        return [self._segments[s].ids[r] for s, r in zip(self._segment_index, self._row_index)]

    @property
    def layer_names(self) -> list[str]:
        return list(self._layout.layer_names)

    @property
    def local_channels(self) -> list[int]:
        return list(self._layout.local_channels)

    @property
    def local_shapes(self) -> list[tuple[int, int]]:
        return list(self._layout.local_shapes)

    @property
    def global_dims(self) -> list[int]:
        return list(self._layout.global_dims)

    @property
    def n_features(self) -> int:
        return self._layout.n_features

    @property
    def slices(self) -> list[slice]:
        return self._layout.slices

    @property
    def dtype(self) -> torch.dtype:
        return _STORAGE[self._storage][1]

    @property
    def on_disk(self) -> bool:
        """Whether every row is memory-mapped from the disk cache."""
        return all(s.path is not None for s in self._segments)

    def _indices(self, indices: Any) -> np.ndarray:
        if indices is None:
            return np.arange(len(self))
        if isinstance(indices, slice):
            return np.arange(len(self))[indices]
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"Boolean mask of shape {idx.shape} for {len(self)} images.")
            return np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(
                f"Image index out of range for a store of {len(self)} images: "
                f"min {idx.min()}, max {idx.max()}."
            )
        return np.where(idx < 0, idx + len(self), idx)

    def _gather(
        self, idx: np.ndarray, columns: slice = slice(None), out: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``idx``, ``columns`` of the flat features, in the storage dtype.

        Plain numpy copies, one per segment touched: single-threaded memcpy, which stays
        fast on a busy machine where a multi-threaded gather waits for its threads.
        """
        seg = self._segment_index[idx]
        rows = self._row_index[idx]
        if len(self._segments) == 1 and out is None:
            return np.asarray(self._segments[0].array[rows, columns])
        if out is None:
            width = len(range(*columns.indices(self.n_features)))
            out = np.empty((len(idx), width), dtype=_STORAGE[self._storage][0])
        for s in np.unique(seg):
            where = seg == s
            out[where] = self._segments[s].array[rows[where], columns]
        return out

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """Torch view of stored rows (bfloat16 rows are kept as int16 bits)."""
        return torch.from_numpy(array).view(_STORAGE[self._storage][1])

    def batch(
        self,
        indices: Any,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Features of some images as torch tensors: the training hot path.

        Parameters
        ----------
        indices : array-like of int, bool mask, slice or None
            Rows to read (``None``: all).
        device : str or torch.device, optional
            Where to put the tensors (default CPU). Rows are gathered on the CPU (in pinned
            memory for CUDA), moved in the storage dtype, then cast on the device.
        dtype : torch.dtype
            Dtype of the returned tensors.

        Returns
        -------
        locals : list of Tensor, shape (B, C_l, h_l, w_l)
        globals : list of Tensor, shape (B, G_l)
            Contiguous tensors.
        """
        idx = self._indices(indices)
        device = torch.device("cpu") if device is None else torch.device(device)
        shapes = self._layout.part_shapes
        if device.type == "cpu":
            parts = [
                self._tensor(self._gather(idx, sl)).reshape(len(idx), *shape).to(dtype)
                for sl, shape in zip(self.slices, shapes)
            ]
        else:
            # one gather into (pinned) host memory, one transfer, the cast on the device
            host = torch.empty(
                (len(idx), self.n_features),
                dtype=_BITS[self._storage],
                pin_memory=device.type == "cuda",
            )
            self._gather(idx, out=host.numpy())
            flat = self._tensor(host.numpy()).to(device, non_blocking=True).to(dtype)
            parts = [
                flat[:, sl].reshape(len(idx), *shape).contiguous()
                for sl, shape in zip(self.slices, shapes)
            ]
        n_layers = len(self._layout.layer_names)
        return parts[:n_layers], parts[n_layers:]

    def rows(self, indices: Any = None, dtype: Any = np.float32) -> np.ndarray:
        """Flat feature rows ``(n, n_features)`` as a numpy array (e.g. for a linear probe).

        Parameters
        ----------
        indices : array-like of int, bool mask, slice or None
            Rows to read (``None``: all).
        dtype : numpy dtype
            Dtype of the result (default float32).
        """
        flat = self._gather(self._indices(indices))
        if self._storage == "bfloat16":
            flat = self._tensor(flat).to(torch.float32).numpy()
        return flat.astype(dtype, copy=False)

    def subset(self, indices: Any) -> FeatureStore:
        """A store of some of the images, sharing their features (no copy)."""
        idx = self._indices(indices)
        return FeatureStore(
            self._segments,
            self._segment_index[idx],
            self._row_index[idx],
            self._layout,
            self._storage,
            self.backbone_name,
        )


def _to_storage_numpy(flat: torch.Tensor, storage: str) -> np.ndarray:
    """CPU numpy copy of ``flat`` in the storage dtype (bfloat16 as its int16 bits)."""
    return flat.detach().to(device="cpu", dtype=_STORAGE[storage][1]).view(_BITS[storage]).numpy()


def _resolve_device(device: Any, backbone: Backbone) -> torch.device:
    if device is None:
        first = next(itertools.chain(backbone.parameters(), backbone.buffers()), None)
        return first.device if first is not None else torch.device("cpu")
    return resolve_device(device)


def _cache_key(backbone: Backbone, autocast: str | None, storage: str) -> str:
    return f"{backbone.name}|compute={autocast or 'fp32'}|storage={storage}"


def extract_features(
    backbone: Backbone,
    stimuli: Any,
    memory: Any = None,
    dtype: Any = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    autocast: str | None = None,
    verbose: bool | int | str | None = None,
) -> FeatureStore:
    """Features of every image for a frozen backbone, each computed once and cached.

    Images already seen with the same backbone (same ``name``), ``autocast`` and storage
    ``dtype`` are not computed again: their features come from the process-level memory
    cache, else from the disk cache under ``memory``. Repeated images (same id) are
    computed once and share their row.

    Parameters
    ----------
    backbone : Backbone
        From :func:`afo_encoding.backbones.get_backbone`.
    stimuli : StimulusSet or array-like of images
        Anything :func:`afo_encoding.stimuli.as_stimuli` accepts.
    memory : None, str, path or joblib.Memory
        Folder of the disk cache (nilearn's convention): features are written under
        ``<memory>/afo_features/`` and memory-mapped from there, so data sets larger than
        the RAM work. ``None``: RAM only.
    dtype : None, "float32", "float16" or "bfloat16"
        Storage dtype of the features (``None``: float32). Half precision halves RAM and
        disk use; :meth:`FeatureStore.batch` casts back to what you ask.
    batch_size : int
        Images per forward pass.
    device : None, "auto", str or torch.device
        Where the backbone runs. ``None``: where it is (the CPU unless you moved it);
        ``"auto"``: CUDA when available, else the CPU. The backbone is moved there.
    autocast : None, "bf16" or "fp16"
        Mixed precision of the forward pass (``"bf16"`` works on the CPU too). Features
        computed in another precision are cached separately.
    verbose : bool, int, str or None
        Progress bar and log messages (see :func:`afo_encoding.set_log_level`).

    Returns
    -------
    store : FeatureStore
        Row ``i`` holds the features of image ``i`` of ``stimuli``.

    Examples
    --------
    >>> import numpy as np
    >>> from afo_encoding.backbones import extract_features, get_backbone
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    >>> store = extract_features(get_backbone("pyramid", image_size=64), images)
    >>> locals_, globals_ = store.batch([0, 2])
    >>> tuple(locals_[0].shape)
    (2, 15, 32, 32)
    """
    from ..stimuli import as_stimuli

    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"backbone must be a Backbone (see get_backbone), got {type(backbone).__name__}."
        )
    autocast_dtype(autocast)  # an unknown name fails here, before any image is read
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    stimuli = as_stimuli(stimuli)
    storage = _storage_name(dtype)
    layout = FeatureLayout.of(backbone)
    key = _cache_key(backbone, autocast, storage)
    ids = [str(i) for i in stimuli.ids]

    with use_log_level(verbose):
        found, disk = _cached_rows(key, ids, memory, layout, storage)
        to_save: list[str] = []
        if disk is not None:
            to_save = list(
                dict.fromkeys(i for i in ids if i in found and not disk.holds(found[i]))
            )
        to_compute: dict[str, int] = {}
        for i, image_id in enumerate(ids):
            if image_id not in found:
                to_compute.setdefault(image_id, i)
        logger.info(
            "Features of %d images (%s): %d cached, %d to compute.",
            len(ids), backbone.name, len(set(ids)) - len(to_compute), len(to_compute),
        )  # fmt: skip
        if to_save or to_compute:
            new_ids = to_save + list(to_compute)
            if disk is not None:
                writer: _DiskWriter | _RamWriter = disk.create(new_ids)
            else:
                writer = _RamWriter(new_ids, layout, storage)
            _copy_rows(writer, [found[i] for i in to_save])
            if to_compute:
                _compute(
                    backbone, stimuli, list(to_compute.values()), writer, len(to_save), layout,
                    storage, batch_size, _resolve_device(device, backbone), autocast, verbose,
                )  # fmt: skip
            segment = writer.close()
            _MEMORY.add(key, segment)
            found.update({image_id: (segment, row) for row, image_id in enumerate(new_ids)})
    return _store_of_rows(found, ids, layout, storage, backbone.name)


def _cached_rows(key: str, ids: list[str], memory: Any, layout, storage: str) -> tuple:
    """Where the cached features of ``ids`` are, ``{id: (segment, row)}`` (RAM, then disk:
    the disk copy wins), and the disk cache (``None`` without ``memory``)."""
    found = _MEMORY.lookup(key, ids)
    disk = _disk_cache(memory, key, layout, storage)
    if disk is not None:
        # what is found only in RAM is written to the disk too (see extract_features)
        from_disk = disk.lookup({i for i in ids if not disk.holds(found.get(i))})
        for segment in {id(s): s for s, _ in from_disk.values()}.values():
            _MEMORY.add(key, segment)
        found.update(from_disk)
    return found, disk


def _store_of_rows(found: dict, ids: list[str], layout, storage: str, name: str) -> FeatureStore:
    """A FeatureStore whose row ``i`` is the row ``found[ids[i]]`` of its segment."""
    segments: dict[int, int] = {}
    segment_list: list[_Segment] = []
    seg_index = np.empty(len(ids), dtype=np.int64)
    row_index = np.empty(len(ids), dtype=np.int64)
    for i, image_id in enumerate(ids):
        segment, row = found[image_id]
        if id(segment) not in segments:
            segments[id(segment)] = len(segment_list)
            segment_list.append(segment)
        seg_index[i] = segments[id(segment)]
        row_index[i] = row
    return FeatureStore(segment_list, seg_index, row_index, layout, storage, name)


def _copy_rows(writer: _DiskWriter | _RamWriter, sources: list[tuple[_Segment, int]]) -> None:
    """Copy rows of existing segments to the first rows of ``writer``, and commit them."""
    if not sources:
        return
    groups: dict[int, tuple[_Segment, list[int], list[int]]] = {}
    for dst, (segment, row) in enumerate(sources):
        _, dsts, rows = groups.setdefault(id(segment), (segment, [], []))
        dsts.append(dst)
        rows.append(row)
    for segment, dsts, rows in groups.values():
        writer.array[dsts] = segment.array[rows]
    writer.commit(len(sources), force=True)


def _compute(
    backbone: Backbone,
    stimuli: Any,
    indices: list[int],
    writer: _DiskWriter | _RamWriter,
    offset: int,
    layout: FeatureLayout,
    storage: str,
    batch_size: int,
    device: torch.device,
    autocast: str | None,
    verbose: Any,
) -> None:
    """Run the backbone on ``stimuli[indices]``, writing rows ``offset:`` of ``writer``."""
    n = len(indices)
    backbone.to(device)
    spec = backbone.input_spec
    expected = layout.part_shapes
    starts = range(0, n, batch_size)
    amp = (
        torch.autocast(device.type, dtype=autocast_dtype(autocast))
        if autocast
        else contextlib.nullcontext()
    )

    def load(start: int) -> torch.Tensor:
        return stimuli.to_tensor(indices[start : start + batch_size], spec)

    # The next batch is read and resized in a thread while the backbone runs.
    with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode(), amp:
        pending = pool.submit(load, 0)
        for start in progress(starts, verbose, desc="features", total=len(starts), unit="batch"):
            x = pending.result()
            if start + batch_size < n:
                pending = pool.submit(load, start + batch_size)
            locals_, globals_ = backbone(x.to(device, non_blocking=True))
            parts = [*locals_, *globals_]
            got = [tuple(p.shape[1:]) for p in parts]
            if got != expected:
                raise RuntimeError(
                    f"Backbone {backbone.name!r} returned features of shapes {got} for inputs "
                    f"{tuple(x.shape)}; it declared {expected}."
                )
            rows = slice(offset + start, offset + start + len(x))
            for part, columns in zip(parts, layout.slices):
                writer.array[rows, columns] = _to_storage_numpy(part.reshape(len(x), -1), storage)
            writer.commit(rows.stop)
