"""Readers of file formats the sources use that need care: pandas' HDF5 tables and
pickled NumPy files, read without PyTables and without running arbitrary pickles."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


class PandasFrameBlocks:
    """The blocks of a DataFrame saved by ``DataFrame.to_hdf`` in pandas' fixed format.

    pandas writes one group per key, with one ``block<i>_values`` array per dtype block
    (rows x columns, stored transposed) and the block's column labels in
    ``block<i>_items``. Reading the blocks with h5py needs no PyTables and reads only the
    rows asked for, which matters for files of several GB.

    Parameters
    ----------
    path : path-like
        The HDF5 file.
    key : str, optional
        The group; by default the only one in the file.
    """

    def __init__(self, path: str | Path, key: str | None = None) -> None:
        import h5py

        self.path = Path(path)
        self.file = h5py.File(self.path, "r")
        groups = [k for k, v in self.file.items() if isinstance(v, h5py.Group)]
        if key is None:
            if len(groups) != 1:
                raise ValueError(f"{self.path} holds {groups}; say which key to read.")
            key = groups[0]
        group = self.file[key]
        kind = group.attrs.get("pandas_type", b"")
        if (kind.decode() if isinstance(kind, bytes) else str(kind)) != "frame":
            raise ValueError(
                f"{self.path}:{key} is not a DataFrame saved by pandas in the fixed format "
                f"(pandas_type={kind!r}); the file is damaged or not the expected one."
            )
        self.group = group
        self.n_blocks = int(group.attrs["nblocks"])

    def __enter__(self) -> PandasFrameBlocks:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def values(self, block: int):
        """The h5py dataset of a block's values, shape (n_rows, n_block_columns)."""
        return self.group[f"block{block}_values"]

    def string_items(self, block: int) -> list[str] | None:
        """The column labels of a block when stored as strings (``None`` if pickled)."""
        items = self.group[f"block{block}_items"]
        if items.dtype.kind != "S":
            return None
        return [i.decode() for i in items[()]]

    def find_column(self, name: str) -> np.ndarray:
        """The values of a column stored in a block of its own (e.g. ``voxel_id``)."""
        for block in range(self.n_blocks):
            if self.string_items(block) == [name]:
                return np.asarray(self.values(block)[:, 0])
        raise KeyError(f"{self.path} has no column {name!r} in a block of its own.")

    def float_block(self) -> int:
        """The block of floating-point values (there must be exactly one)."""
        blocks = [b for b in range(self.n_blocks) if self.values(b).dtype.kind == "f"]
        if len(blocks) != 1:
            raise ValueError(f"{self.path} has {len(blocks)} blocks of floats, not one.")
        return blocks[0]

    def iter_rows(self, block: int, rows: np.ndarray,
                  chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(positions, values)`` of the wanted rows, read a contiguous chunk at a time.

        Reading chunks and keeping the wanted rows is far faster than h5py's fancy
        indexing with thousands of scattered rows.
        """
        data = self.values(block)
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        start = 0
        while start < len(sorted_rows):
            first = sorted_rows[start]
            stop = np.searchsorted(sorted_rows, first + chunk, side="left")
            block_values = np.asarray(data[first : sorted_rows[stop - 1] + 1])
            yield order[start:stop], block_values[sorted_rows[start:stop] - first]
            start = stop


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays, and nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"The file asks to build {module}.{name}, which a data file has no reason to; "
            "refusing to load it (the file is not the expected one, or was tampered with)."
        )


def load_pickled_npy(fileobj: IO[bytes]) -> Any:
    """The object inside a ``.npy`` file of a pickled object (``np.save`` of a dict).

    Equivalent to ``np.load(f, allow_pickle=True).item()``, but the pickle may only build
    NumPy arrays and plain containers, so a tampered file cannot run code.
    """
    version = np.lib.format.read_magic(fileobj)
    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
              else np.lib.format.read_array_header_2_0)(fileobj)
    _, _, dtype = header
    if dtype != np.dtype(object):
        raise ValueError(f"Expected a pickled object in the .npy file; found dtype {dtype}.")
    array = _NumpyOnlyUnpickler(fileobj).load()
    return array.item() if isinstance(array, np.ndarray) and array.shape == () else array
