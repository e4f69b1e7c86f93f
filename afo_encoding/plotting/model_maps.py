"""The fitted model on the brain: the LayerSelector (the paper's Figure 5) and the
RetinaMapper (eccentricity, polar angle), through :func:`plot_voxel_map`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import layer_colors
from ._inputs import fitted, layer_names_of, space_of
from .voxel_map import plot_voxel_map

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@fill_plot_doc
def plot_layer_selector(
    encoder_or_weights: Any,
    space: Any = None,
    *,
    kind: str = "weights",
    subject: int = 0,
    layer_names: Sequence[str] | None = None,
    output_file: str | Path | None = None,
    **kwargs: Any,
) -> Figure:
    """The LayerSelector on the brain: which depth of the backbone every voxel reads.

    Parameters
    ----------
    encoder_or_weights : fitted encoder | array-like, shape (n_voxels, n_layers)
        An encoder with ``layer_weights_`` and ``space_``, or the weights (rows sum to 1).
    %(space)s
    kind : {"weights", "depth", "argmax"}
        ``"weights"``: one map per layer, its weight (the paper's Figure 5), on one
        colour scale shared by the layers that spans the 2nd to 98th percentile of the
        weights (the figure title gives it);
        ``"depth"``: one map of the expected layer index ``sum_l l * eta_l`` (a smooth
        hierarchy map); ``"argmax"``: the layer read most, in the colours of
        :func:`plot_retina_map`.
    %(subject)s
    %(layer_names)s
    %(output_file)s
    %(voxel_map_kwargs)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    weights = fitted(encoder_or_weights, "layer_weights_", subject)
    if weights.ndim != 2:
        raise ValueError(f"layer weights must be (n_voxels, n_layers), got {weights.shape}.")
    space = space_of(encoder_or_weights, space, subject)
    n_layers = weights.shape[1]
    names = layer_names_of(encoder_or_weights, n_layers, layer_names)
    if kind == "weights":
        # one colour scale for all layers, spanning the weights there are: softmax weights
        # of 4 layers often lie within 0.2-0.5, where a 0-1 scale shows no contrast
        lo, hi = _shared_limits(weights)
        kwargs.setdefault("title", f"LayerSelector weights (colour scale {lo:.2f} to "
                                   f"{hi:.2f}, shared by the {n_layers} layers)")
        return plot_voxel_map(weights.T, space, titles=[f"LayerSelector: {n}" for n in names],
                              cmap="viridis", vmin=lo, vmax=hi, output_file=output_file,
                              **kwargs)
    if kind == "depth":
        depth = weights @ np.arange(n_layers, dtype=np.float64)
        return plot_voxel_map(depth, space, titles=[f"mean layer (0 = {names[0]})"],
                              cmap="viridis", vmin=0.0, vmax=n_layers - 1.0,
                              output_file=output_file, **kwargs)
    if kind == "argmax":
        from matplotlib.colors import ListedColormap

        cmap = ListedColormap(layer_colors(n_layers))
        return plot_voxel_map(weights.argmax(axis=1).astype(np.float64), space,
                              titles=["LayerSelector argmax: " + ", ".join(
                                  f"{i}={n}" for i, n in enumerate(names))],
                              cmap=cmap, vmin=-0.5, vmax=n_layers - 0.5,
                              output_file=output_file, **kwargs)
    raise ValueError(f"kind must be 'weights', 'depth' or 'argmax', got {kind!r}.")


def _shared_limits(values: np.ndarray) -> tuple[float, float]:
    """The 2nd to 98th percentile of all finite values (a range of at least 0.01)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [2.0, 98.0]))
    if hi - lo < 0.01:
        lo, hi = lo - 0.005, hi + 0.005
    return lo, hi


_RETINOTOPY = {
    "eccentricity": ("eccentricity", "viridis", 0.0, float(np.sqrt(2.0))),
    "angle": ("polar angle (rad)", "twilight_shifted", -np.pi, np.pi),
    "x": ("x (right > 0)", "RdBu_r", -1.0, 1.0),
    "y": ("y (down > 0)", "RdBu_r", -1.0, 1.0),
}


@fill_plot_doc
def plot_retinotopy(
    encoder_or_retina_map: Any,
    space: Any = None,
    *,
    kind: str | Sequence[str] = ("eccentricity", "angle"),
    subject: int = 0,
    output_file: str | Path | None = None,
    **kwargs: Any,
) -> Figure:
    """The RetinaMapper on the brain: eccentricity, polar angle or position of each voxel.

    Parameters
    ----------
    encoder_or_retina_map : fitted encoder | array-like, shape (n_voxels, 2)
        An encoder with ``retina_map_`` and ``space_``, or the points (x right, y down,
        in [-1, 1]).
    %(space)s
    kind : str | sequence of str
        Maps to draw, among "eccentricity" (distance to the image centre), "angle" (polar
        angle in radians, counter-clockwise from the right, upper field positive), "x",
        "y" (both in [-1, 1]). Eccentricity is in image half-widths (1: the border).
    %(subject)s
    %(output_file)s
    %(voxel_map_kwargs)s

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    points = fitted(encoder_or_retina_map, "retina_map_", subject)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"A retina map must be (n_voxels, 2), got shape {points.shape}.")
    space = space_of(encoder_or_retina_map, space, subject)
    kinds = [kind] if isinstance(kind, str) else list(kind)
    unknown = [k for k in kinds if k not in _RETINOTOPY]
    if unknown or not kinds:
        raise ValueError(f"kind must be among {sorted(_RETINOTOPY)}, got {kind!r}.")
    x, y = points[:, 0], points[:, 1]
    maps = {"eccentricity": np.hypot(x, y), "angle": np.arctan2(-y, x), "x": x, "y": y}
    specs = [_RETINOTOPY[k] for k in kinds]
    return plot_voxel_map(np.stack([maps[k] for k in kinds]), space,
                          titles=[s[0] for s in specs], cmap=[s[1] for s in specs],
                          vmin=[s[2] for s in specs], vmax=[s[3] for s in specs],
                          output_file=output_file, **kwargs)
