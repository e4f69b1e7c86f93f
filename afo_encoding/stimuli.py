"""Image inputs: validation, lazy loading, stable ids, resizing and normalisation.

A :class:`StimulusSet` is the one image container the rest of the package reads. It wraps,
without copying,

- a uint8 array ``(n, H, W, 3)`` (RGB) or ``(n, H, W)`` / ``(n, H, W, 1)`` (grey),
- a float array ``(n, 3, H, W)`` with values in [0, 1] (channels first, as torch),
- any lazy array-like with ``shape``, ``dtype`` and ``__getitem__`` in one of these layouts
  (``h5py`` / ``zarr`` datasets, :class:`numpy.memmap`): images are read when accessed,
- a list of PIL images, of file paths (read when accessed), or of single-image arrays
  ``(H, W, 3)`` / ``(H, W)`` uint8 or ``(3, H, W)`` float; images of a list may differ in
  size;
- one image array, ``(H, W, 3)`` uint8 or ``(3, H, W)`` float: a set of one.

Files and PIL images of more than 8 bits per pixel (16-bit grey PNG or TIFF) are read at
full depth, as float in [0, 1]. Float images whose brightest value is under 0.01 (e.g.
divided by 255 twice) are accepted with a warning.

Each image has a stable id, ``ids[i]``, a hash of its pixels and shape: the same picture
gets the same id whichever container it came in, so the id is the key of the feature cache.
``to_tensor`` gives the backbone a normalised float32 batch of the size it declares in its
:class:`InputSpec`.

torch and PIL are imported inside the functions that need them, so that importing this
module stays light.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Images per block when a float array is scanned for NaN/inf and range (bounds memory).
_SCAN_BLOCK = 64
_ID_PREFIX = b"afo-encoding image v1"
# Float image sets whose brightest value is below this (2.5 of 255 levels) cannot be images.
_DARKEST_MAX = 0.01


@dataclass(frozen=True)
class InputSpec:
    """What a backbone expects: image size (height, width) and per-channel normalisation.

    Images are resized to ``size``, scaled to [0, 1], then ``(x - mean) / std``.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


# ----------------------------------------------------------------------------------------
# validation of single images and whole arrays


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.") and hasattr(obj, "convert")


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _is_lazy_array(obj: Any) -> bool:
    return (
        not isinstance(obj, (np.ndarray, str, bytes, os.PathLike, Sequence))
        and hasattr(obj, "shape")
        and hasattr(obj, "dtype")
        and hasattr(obj, "__getitem__")
    )


def _float_range_error(where: str, low: float, high: float) -> ValueError:
    return ValueError(
        f"Float images must have values in [0, 1]; {where} has values from {low:g} to "
        f"{high:g}. Scale them to [0, 1] (e.g. x / 255 for 0-255 data) or pass uint8 "
        "(n, H, W, 3) arrays."
    )


def _check_float_values(block: np.ndarray, first: int, what: str) -> None:
    """Raise if a float block of images ``first, first + 1, ...`` has NaN/inf or leaves [0, 1]."""
    finite = np.isfinite(block)
    if not finite.all():
        per_image = (~finite).reshape(len(block), -1).sum(axis=1)
        bad = int(np.flatnonzero(per_image)[0])
        value = block[bad][~finite[bad]].flat[0]
        raise ValueError(
            f"{what} {first + bad} contains {int(per_image[bad])} non-finite values "
            f"(e.g. {value}). Images must be finite: fix or drop that image."
        )
    low, high = block.min(axis=(1, 2, 3)), block.max(axis=(1, 2, 3))
    outside = np.flatnonzero((low < 0) | (high > 1))
    if outside.size:
        bad = int(outside[0])
        raise _float_range_error(f"{what} {first + bad}", float(low[bad]), float(high[bad]))


def _array_layout(shape: tuple[int, ...], dtype: np.dtype, what: str) -> str:
    """Return ``"rgb"``, ``"gray"`` or ``"float"`` for a stack of images, or raise."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if dtype == np.uint8:
        if len(shape) == 4 and shape[-1] == 3:
            layout = "rgb"
        elif len(shape) == 3 or (len(shape) == 4 and shape[-1] == 1):
            layout = "gray"
        elif len(shape) == 4 and shape[1] in (1, 3):
            raise ValueError(
                f"uint8 {what} must be channels last, (n, H, W, 3); got shape {shape}. "
                "Use np.moveaxis(images, 1, -1)."
            )
        else:
            raise ValueError(
                f"uint8 {what} must have shape (n, H, W, 3) (RGB) or (n, H, W) (grey); "
                f"got shape {shape}."
            )
    elif dtype.kind == "f":
        if len(shape) == 4 and shape[1] == 3:
            layout = "float"
        elif len(shape) == 4 and shape[-1] == 3:
            raise ValueError(
                f"Float {what} must be channels first, (n, 3, H, W) as in torch; got shape "
                f"{shape}. Use np.moveaxis(images, -1, 1)."
            )
        else:
            raise ValueError(
                f"Float {what} must have shape (n, 3, H, W) with values in [0, 1]; got "
                f"shape {shape}."
            )
    else:
        raise TypeError(
            f"{what} must be uint8 (0-255) or float (0-1) arrays; got dtype {dtype}. Convert "
            "them, e.g. images.astype(np.uint8) for 0-255 integers after checking the range."
        )
    if 0 in shape:
        raise ValueError(f"{what} must not be empty; got shape {shape}.")
    return layout


def _is_one_image(array: np.ndarray) -> bool:
    """An ``(H, W, 3)`` / ``(H, W, 1)`` uint8 or ``(3, H, W)`` float array: one image (a
    stack of grey images 3 pixels wide is no stimulus set)."""
    if array.ndim != 3:
        return False
    if array.dtype == np.uint8:
        return array.shape[-1] in (1, 3)
    return array.dtype.kind == "f" and array.shape[0] == 3


def _warn_if_not_image_range(high: float, what: str) -> None:
    """Warn when float images are all darker than any photograph (e.g. divided by 255
    twice)."""
    if high < _DARKEST_MAX:
        warnings.warn(
            f"Float {what} have values from 0 to {high:.3g} at most: no image is that dark. "
            "Float images must be scaled to [0, 1] once (x / 255 for 0-255 data); were they "
            "divided by 255 twice? Pass the uint8 images, or rescale.",
            UserWarning,
            stacklevel=4,
        )


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> contiguous (H, W, 3) uint8."""
    if image.ndim == 3 and image.shape[-1] == 3:
        return np.ascontiguousarray(image)
    if image.ndim == 3:
        image = image[..., 0]
    return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=-1))


def _float_to_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded to nearest."""
    return np.ascontiguousarray(np.round(np.moveaxis(image, 0, -1) * 255).astype(np.uint8))


def _hash_image(kind: bytes, image: np.ndarray) -> str:
    digest = hashlib.blake2b(_ID_PREFIX, digest_size=16)
    digest.update(kind + b":" + repr(tuple(image.shape)).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------
# sources: where images come from; a StimulusSet is a source plus a selection of indices


class _ArraySource:
    """A stack of images, in memory (``numpy.ndarray``, never copied) or lazy (h5py, zarr)."""

    def __init__(self, array: Any, what: str = "images") -> None:
        self.array = array
        self.layout = _array_layout(array.shape, array.dtype, what)
        self.lazy = not isinstance(array, np.ndarray) or isinstance(array, np.memmap)
        self._checked: np.ndarray | None = None
        if self.layout == "float":
            self._checked = np.zeros(len(self), dtype=bool)
            if not self.lazy:
                high = 0.0
                for start in range(0, len(self), _SCAN_BLOCK):
                    block = array[start : start + _SCAN_BLOCK]
                    _check_float_values(block, start, "image")
                    high = max(high, float(block.max()))
                self._checked[:] = True
                _warn_if_not_image_range(high, what)

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def describe(self) -> str:
        kind = {"rgb": "uint8 RGB", "gray": "uint8 grey", "float": "float"}[self.layout]
        lazy = "lazy " if self.lazy else ""
        return f"{lazy}{kind} array {tuple(int(s) for s in self.array.shape)}"

    def _raw(self, k: int) -> np.ndarray:
        image = np.asarray(self.array[k])
        if self._checked is not None and not self._checked[k]:
            _check_float_values(image[None], k, "image")
            self._checked[k] = True
        return image

    def uint8(self, k: int) -> np.ndarray:
        image = self._raw(k)
        return _float_to_uint8(image) if self.layout == "float" else _as_rgb_uint8(image)

    def image_id(self, k: int) -> str:
        image = self._raw(k)
        if self.layout == "float":
            return _hash_image(b"float32", image.astype(np.float32, copy=False))
        return _hash_image(b"uint8", _as_rgb_uint8(image))

    def batch(self, indices: np.ndarray) -> list[np.ndarray]:
        """Images ``indices`` as one block (uint8 NHWC or float NCHW), in a list of one."""
        if self.lazy:
            block = np.stack([self._raw(int(k)) for k in indices])
        else:
            block = self.array[indices]
        if self.layout == "gray":
            block = block.reshape(*block.shape[:3], 1)
        return [block]


class _ListSource:
    """A list of PIL images, file paths (read on access) or single-image arrays."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = list(items)
        missing, float_max = [], None
        for k, item in enumerate(self.items):
            if isinstance(item, (str, os.PathLike)):
                if not Path(item).is_file():
                    missing.append(str(item))
            elif isinstance(item, np.ndarray) or _is_torch_tensor(item):
                item = self.items[k] = _to_numpy(item)
                layout = _array_layout((1, *item.shape), item.dtype, f"image {k}")
                if layout == "float":
                    _check_float_values(item[None], k, "image")
                    float_max = max(float_max or 0.0, float(item.max()))
            elif not _is_pil(item):
                raise TypeError(
                    "A list of images must hold file paths (str or pathlib.Path), PIL images "
                    f"or arrays; item {k} is a {type(item).__name__}: {_short_repr(item)}."
                )
        if float_max is not None:
            _warn_if_not_image_range(float_max, "images")
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise FileNotFoundError(
                f"Image file not found: {missing[0]!r}{more}. Check the paths (relative paths "
                f"are read from the current directory, {os.getcwd()!r})."
            )

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> str:
        kinds = sorted({_item_kind(item) for item in self.items})
        return f"list of {len(self)} {' / '.join(kinds)}"

    def _load(self, k: int) -> np.ndarray:
        """Image ``k`` as (H, W, 3) uint8 or (3, H, W) float."""
        item = self.items[k]
        if isinstance(item, np.ndarray):
            if item.dtype == np.uint8:
                return _as_rgb_uint8(item)
            return item
        if _is_pil(item):
            return _pil_to_array(item)
        return _read_image_file(item)

    def uint8(self, k: int) -> np.ndarray:
        image = self._load(k)
        return image if image.dtype == np.uint8 else _float_to_uint8(image)

    def image_id(self, k: int) -> str:
        image = self._load(k)
        if image.dtype == np.uint8:
            return _hash_image(b"uint8", image)
        return _hash_image(b"float32", image.astype(np.float32, copy=False))

    def batch(self, indices: np.ndarray) -> list[np.ndarray]:
        """Images ``indices`` one by one (sizes may differ), each with a leading axis of 1."""
        return [self._load(int(k))[None] for k in indices]


def _item_kind(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return "paths"
    if isinstance(item, np.ndarray):
        return "arrays"
    return "PIL images"


def _short_repr(obj: Any, limit: int = 60) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_numpy(obj: Any) -> np.ndarray:
    if _is_torch_tensor(obj):
        return obj.detach().cpu().numpy()
    return np.asarray(obj)


# PIL modes of more than 8 bits per pixel, and the value of full white in each
_DEEP_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def _pil_to_array(image: Any, where: str = "a PIL image") -> np.ndarray:
    """A PIL image as (H, W, 3) uint8, or (3, H, W) float32 in [0, 1] when it has more than
    8 bits per pixel (16-bit PNG and TIFF files are read at full depth, not clipped to 255)."""
    if image.mode not in _DEEP_MODES and image.mode != "F":
        return np.asarray(image.convert("RGB"))
    grey = np.asarray(image).astype(np.float32)
    if image.mode in _DEEP_MODES:
        if grey.min() < 0 or grey.max() > _DEEP_MODES[image.mode]:
            raise ValueError(
                f"Cannot read {where}: {image.mode} pixel values from {grey.min():g} to "
                f"{grey.max():g} are not 8- or 16-bit. Convert the file to 8- or 16-bit."
            )
        grey /= _DEEP_MODES[image.mode]
    _check_float_values(grey[None, None], 0, where)
    return np.ascontiguousarray(np.repeat(grey[None], 3, axis=0))


def _read_image_file(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return _pil_to_array(image, str(path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Image file not found: {str(path)!r} (it existed when the StimulusSet was made)."
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"Cannot read image file {str(path)!r}: {err}") from err


def _make_source(images: Any) -> _ArraySource | _ListSource:
    if _is_torch_tensor(images):
        images = _to_numpy(images)
    if isinstance(images, np.ndarray):
        if images.dtype == object:
            return _ListSource(list(images))
        if _is_one_image(images):
            return _ArraySource(images[None])
        return _ArraySource(images)
    if isinstance(images, (str, os.PathLike)):
        raise TypeError(
            f"Got a single path, {str(images)!r}; pass a list of image paths, e.g. "
            "sorted(pathlib.Path(folder).glob('*.png'))."
        )
    if _is_pil(images):
        raise TypeError("Got a single PIL image; pass a list of images, e.g. [image].")
    if _is_lazy_array(images):
        return _ArraySource(images)
    if isinstance(images, Sequence) or hasattr(images, "__iter__"):
        items = list(images)
        if not items:
            raise ValueError("No images: the list of images is empty.")
        return _ListSource(items)
    raise TypeError(
        "Images must be a uint8 (n, H, W, 3) or float (n, 3, H, W) array, a list of PIL "
        f"images or file paths, or a StimulusSet; got a {type(images).__name__}: "
        f"{_short_repr(images)}."
    )


# ----------------------------------------------------------------------------------------
# public API


class StimulusSet:
    """The images shown to a subject, loaded lazily, each with a stable content id.

    Parameters
    ----------
    images : array-like, list or StimulusSet
        One of: a uint8 array ``(n, H, W, 3)`` (RGB) or ``(n, H, W)`` (grey); a float array
        ``(n, 3, H, W)`` with values in [0, 1]; a lazy array-like (h5py or zarr dataset,
        :class:`numpy.memmap`) in one of these layouts; a list of PIL images, of file paths
        or of single-image arrays; a torch tensor. Arrays are wrapped, never copied. Files
        must exist when the set is made and are read each time an image is accessed.

    Attributes
    ----------
    ids : list of str
        One id per image (see :attr:`ids`).

    Notes
    -----
    In-memory float arrays are checked for NaN/inf and for the [0, 1] range when the set is
    made; lazy ones when an image is first read. Images of a list may differ in size:
    :meth:`to_tensor` resizes each to the backbone's size.

    Examples
    --------
    >>> import numpy as np
    >>> from afo_encoding.stimuli import InputSpec, StimulusSet
    >>> images = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    >>> stimuli = StimulusSet(images)
    >>> len(stimuli), stimuli[0].shape
    (4, (32, 32, 3))
    >>> stimuli.to_tensor([0, 1], InputSpec(size=(16, 16))).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, images: Any) -> None:
        if isinstance(images, StimulusSet):
            self._source, self._index = images._source, images._index
            self._ids = images._ids
            return
        self._source = _make_source(images)
        self._index: np.ndarray | None = None
        # shared with every subset, so an id is hashed once per source image
        self._ids: list[str | None] = [None] * len(self._source)

    def __len__(self) -> int:
        return len(self._source) if self._index is None else len(self._index)

    def __repr__(self) -> str:
        selection = "" if self._index is None else f", subset of {len(self._source)}"
        return f"<StimulusSet: {len(self)} images from a {self._source.describe()}{selection}>"

    def _positions(self, indices: Any = None) -> np.ndarray:
        """Source positions of ``indices`` (None: all), validated against ``len(self)``."""
        n = len(self)
        if indices is None:
            positions = np.arange(n)
        elif isinstance(indices, slice):
            positions = np.arange(n)[indices]
        else:
            positions = np.asarray(indices)
            if positions.size == 0:
                positions = positions.astype(np.intp)
            if positions.dtype == bool:
                if positions.shape != (n,):
                    raise IndexError(
                        f"A boolean selection of images must have length {n}; got shape "
                        f"{positions.shape}."
                    )
                positions = np.flatnonzero(positions)
            elif positions.dtype.kind not in "iu":
                raise IndexError(
                    f"Image indices must be integers, a slice or a boolean mask; got "
                    f"{_short_repr(indices)}."
                )
            positions = positions.reshape(-1).astype(np.intp)
            out = (positions < -n) | (positions >= n)
            if out.any():
                raise IndexError(
                    f"Image index {int(positions[out][0])} is out of range for a StimulusSet "
                    f"of {n} images."
                )
            positions = positions % n if n else positions
        return positions if self._index is None else self._index[positions]

    def __getitem__(self, i: int) -> np.ndarray:
        """Return image ``i`` as a uint8 ``(H, W, 3)`` array (use :meth:`subset` for many)."""
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(
                f"StimulusSet indices must be integers, got {_short_repr(i)}; use "
                "stimuli.subset(indices) to select several images."
            )
        return self._source.uint8(int(self._positions([i])[0]))

    @property
    def ids(self) -> list[str]:
        """Stable content ids, one per image: hex blake2b of the pixels and their shape.

        The same picture has the same id in any container (array, file, PIL image) as long
        as its pixels are the same (uint8 images; float images are hashed as float32).
        Computed on first access, once per image, and shared with subsets.
        """
        out = []
        for k in self._positions():
            if self._ids[k] is None:
                self._ids[k] = self._source.image_id(int(k))
            out.append(self._ids[k])
        return out

    def subset(self, indices: Any) -> StimulusSet:
        """Return the images ``indices`` (ints, slice or boolean mask) as a new StimulusSet.

        The new set reads from the same source (no copy) and keeps the images' ids.
        """
        new = StimulusSet.__new__(StimulusSet)
        new._source, new._ids = self._source, self._ids
        new._index = self._positions(indices)
        return new

    def to_tensor(
        self,
        indices: Any = None,
        spec: InputSpec | None = None,
        device: str | torch.device | None = None,
    ) -> torch.Tensor:
        """Return images ``indices`` as a normalised float32 batch for a backbone.

        Parameters
        ----------
        indices : sequence of int, slice, boolean mask or None
            Which images, in order; ``None`` means all.
        spec : InputSpec or None
            Target size and normalisation; ``None`` means ``InputSpec()`` (224 x 224,
            ImageNet mean and std).
        device : str or torch.device or None
            Where to put the batch (default: CPU).

        Returns
        -------
        batch : torch.Tensor
            float32 ``(B, 3, H, W)`` with ``(H, W) = spec.size``: each image scaled to
            [0, 1], resized (bilinear with antialiasing; the whole image, so a non-square
            image is stretched rather than cropped: every pixel the subject saw is kept),
            then ``(x - mean) / std``.
        """
        import torch
        import torch.nn.functional as F

        spec = InputSpec() if spec is None else spec
        size = tuple(int(s) for s in spec.size)
        positions = self._positions(indices)
        resized = []
        for block in self._source.batch(positions):
            block = np.ascontiguousarray(block)
            # PIL and memory-mapped images are read-only; torch wants writable memory
            x = torch.from_numpy(block if block.flags.writeable else block.copy())
            if x.dtype == torch.uint8:
                x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
            else:
                x = x.to(torch.float32)
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=True)
            resized.append(x)
        if resized:
            batch = torch.cat(resized) if len(resized) > 1 else resized[0].contiguous()
        else:
            batch = torch.empty((0, 3, *size), dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
        batch = (batch - mean) / std
        return batch if device is None else batch.to(device)


def as_stimuli(images: Any) -> StimulusSet:
    """Validate ``images`` and return them as a :class:`StimulusSet`.

    Parameters
    ----------
    images : array-like, list or StimulusSet
        See :class:`StimulusSet`. A StimulusSet is returned as is.

    Returns
    -------
    stimuli : StimulusSet
        The images, wrapped without copying.

    Raises
    ------
    TypeError
        Images of an unsupported type or dtype.
    ValueError
        Wrong shape, float values outside [0, 1], NaN/inf, no images.
    FileNotFoundError
        A path that does not exist (the message names it).
    """
    if isinstance(images, StimulusSet):
        return images
    return StimulusSet(images)
