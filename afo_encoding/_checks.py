"""Checks that tell one sample from a collection of samples, and subjects from images.

An encoder's ``fit`` takes several subjects as lists, ``X = [X1, X2]`` and ``y = [y1, y2]``;
one subject's images may also come as a list (of image arrays, paths or PIL images) with its
responses as a list of rows. These checks keep the two readings apart, whatever the image
size and the number of voxels.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def is_one_sample(item: Any) -> bool:
    """Whether an item of a list is one sample (an image, a path, a row of features).

    Parameters
    ----------
    item : Any
        One item of a list given as ``X``.

    Returns
    -------
    one : bool
        True for a path, a PIL image, a 0-D or 1-D array (a row of features), a uint8
        ``(H, W)`` / ``(H, W, 3)`` / ``(H, W, 1)`` image or a float ``(3, H, W)`` image; False
        for what holds several samples (a stack of images, a 2D float feature array, a
        StimulusSet, a FeatureStore, a list).
    """
    if isinstance(item, (str, os.PathLike)) or type(item).__module__.startswith("PIL."):
        return True
    ndim = getattr(item, "ndim", None)
    shape = getattr(item, "shape", None)
    if ndim is None or shape is None or type(item).__name__ in ("StimulusSet", "FeatureStore"):
        return False
    if ndim <= 1:
        return True
    try:  # numpy and torch dtypes alike
        dtype = np.dtype(str(getattr(item, "dtype", None)).replace("torch.", ""))
    except TypeError:
        return False
    if ndim == 2:
        return dtype == np.uint8
    if ndim == 3:
        if dtype == np.uint8:
            return int(shape[-1]) in (1, 3)
        return dtype.kind == "f" and int(shape[0]) == 3
    return False


def subject_length_error(subject: int, n_x: int, n_y: int) -> ValueError:
    """The error for a subject whose images and responses differ in number."""
    return ValueError(
        f"Subject {subject} has {n_x} samples in X but {n_y} in y. Several subjects are "
        "given as lists X = [X1, X2, ...], y = [y1, y2, ...] where each X_s and y_s have one "
        "row per sample (subjects may differ from each other in length): check subject "
        f"{subject}'s X and y."
    )
