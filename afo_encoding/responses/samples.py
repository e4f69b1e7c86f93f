"""Response containers that scikit-learn's model selection can split by sample.

``cross_val_score``, ``GridSearchCV`` and the other model-selection tools count and index
``y`` along its first axis; a 4D Niimg has samples on its last axis, a SurfaceImage on its
second and mne.Epochs has no ``shape``. :class:`ResponseSamples` wraps any of them (or a
list of 3D Niimgs, or an array) and gives them a first axis of samples; the encoders, their
``score`` and :func:`afo_encoding.metrics.pearson_scorer` read it as the container it
wraps, cut to the selected samples.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def _kind(container: Any) -> str:
    from .convert import _input_kind

    return _input_kind(container)


def _n_samples(container: Any, kind: str) -> int:
    if kind == "volume":
        if isinstance(container, (list, tuple)):
            return len(container)
        from .volume import _load_4d

        return int(_load_4d(container).shape[3])
    if kind == "surface":
        return int(container.shape[-1])
    return len(container)


class ResponseSamples:
    """Responses in their container, indexable by sample for scikit-learn.

    Parameters
    ----------
    container : 4D Niimg, list of 3D Niimgs, SurfaceImage, mne.Epochs or array
        What ``fit`` takes as ``y``.
    indices : array-like of int, optional
        The samples this view holds (default: all, in order).

    Attributes
    ----------
    shape : tuple of int
        ``(n_samples,)``: what scikit-learn counts.

    Examples
    --------
    >>> from sklearn.model_selection import KFold, cross_val_score  # doctest: +SKIP
    >>> from afo_encoding.responses import ResponseSamples  # doctest: +SKIP
    >>> cross_val_score(TopyEncoder(), images, ResponseSamples(bold_img),
    ...                 cv=KFold(5))  # doctest: +SKIP
    """

    def __init__(self, container: Any, indices: Any = None) -> None:
        if isinstance(container, ResponseSamples):
            container, indices = container.container, container._select(indices)
        self.container = container
        self.kind = _kind(container)
        n = _n_samples(container, self.kind)
        self.indices = np.arange(n) if indices is None else np.asarray(indices, dtype=np.intp)
        if self.indices.ndim != 1 or (
            self.indices.size and not (-n <= self.indices.min() and self.indices.max() < n)
        ):
            raise IndexError(
                f"Sample indices must be a 1D array of integers in [0, {n}), got {self.indices!r}."
            )

    def _select(self, key: Any) -> np.ndarray:
        return self.indices if key is None else self.indices[key]

    @property
    def shape(self) -> tuple[int]:
        return (len(self.indices),)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: Any) -> ResponseSamples:
        if isinstance(key, tuple):  # scikit-learn indexes as y[indices, ...]
            key, *rest = key
            if any(r is not Ellipsis and r != slice(None) for r in rest):
                raise IndexError(f"ResponseSamples index samples only, got {rest!r}.")
        key = np.asarray(key)
        if key.ndim == 0:
            key = key[None]
        return ResponseSamples(self.container, self.indices[key])

    def __repr__(self) -> str:
        return f"ResponseSamples({type(self.container).__name__}, n_samples={len(self)})"

    def select(self) -> Any:
        """The wrapped container, cut to this view's samples (a container of the same
        kind)."""
        idx = self.indices
        if len(idx) == _n_samples(self.container, self.kind) and np.array_equal(
            idx, np.arange(len(idx))
        ):
            return self.container
        if self.kind == "volume" and isinstance(self.container, (list, tuple)):
            return [self.container[i] for i in idx]
        if self.kind in ("volume", "surface"):
            from nilearn.image import index_img

            container = self.container
            if isinstance(container, (str, os.PathLike)):
                from .volume import _load_4d

                container = _load_4d(container)
            return index_img(container, idx)
        if self.kind == "epochs":
            return self.container[idx]
        return np.asarray(self.container)[idx]


def unwrap_samples(y: Any) -> Any:
    """``y``, or the container a :class:`ResponseSamples` stands for."""
    return y.select() if isinstance(y, ResponseSamples) else y
