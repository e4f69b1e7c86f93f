"""The retina map: where in the image every voxel reads, by layer (the paper's Figure 4)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import finish, layer_colors, new_axes
from ._inputs import as_rgb, fitted, layer_names_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@fill_plot_doc
def plot_retina_map(
    encoder_or_retina_map: Any,
    layer_weights: Any = None,
    *,
    subject: int = 0,
    image: Any = None,
    voxels: Any = None,
    layer_names: Sequence[str] | None = None,
    marker_size: float | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Where every voxel reads the image, coloured by the layer it reads most (Figure 4).

    Each dot is a voxel placed at its RetinaMapper point on the image grid (x to the
    right, y downward, the image spanning [-1, 1] in both; ``grid_sample`` convention),
    coloured by the argmax of its LayerSelector weights. Empty regions are parts of the
    image no voxel uses.

    Parameters
    ----------
    encoder_or_retina_map : fitted encoder | array-like, shape (n_voxels, 2)
        An encoder with ``retina_map_`` (and ``layer_weights_``), or the points.
    layer_weights : array-like, shape (n_voxels, n_layers) | None
        LayerSelector weights, when the first argument is an array. ``None`` with an
        array: one colour for all voxels.
    %(subject)s
    image : array-like, shape (H, W), (H, W, 3) or (3, H, W) | None
        A stimulus to draw under the dots, stretched over the grid.
    voxels : array-like of int or bool | None
        Plot only these voxels (indices or a boolean mask), e.g. one ROI.
    %(layer_names)s
    marker_size : float | None
        Dot area in points^2 (default: smaller for more voxels).
    %(axes_options)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes; one scatter collection per layer that some voxel reads most.

    Examples
    --------
    >>> fig = plot_retina_map(encoder, image=images[0])  # doctest: +SKIP
    """
    points = fitted(encoder_or_retina_map, "retina_map_", subject)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"A retina map must be (n_voxels, 2), got shape {points.shape}.")
    if layer_weights is None and hasattr(encoder_or_retina_map, "layer_weights_"):
        layer_weights = encoder_or_retina_map
    weights = None if layer_weights is None else fitted(layer_weights, "layer_weights_",
                                                         subject)
    if weights is not None and (weights.ndim != 2 or weights.shape[0] != points.shape[0]):
        raise ValueError(
            f"layer_weights must be (n_voxels={points.shape[0]}, n_layers), got shape "
            f"{weights.shape}."
        )
    if voxels is not None:
        index = np.asarray(voxels)
        index = np.flatnonzero(index) if index.dtype == bool else index
        points = points[index]
        weights = None if weights is None else weights[index]
    fig, ax = new_axes(ax, (5.5, 5.0))
    if image is not None:
        ax.imshow(as_rgb(image), extent=(-1, 1, 1, -1), cmap="gray", alpha=0.6, zorder=0)
    size = marker_size if marker_size is not None else float(np.clip(4000 / max(len(points), 1),
                                                                     1.0, 30.0))
    if weights is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="tab:blue", linewidths=0)
    else:
        n_layers = weights.shape[1]
        names = layer_names_of(encoder_or_retina_map, n_layers, layer_names)
        colors = layer_colors(n_layers)
        best = weights.argmax(axis=1)
        for layer in range(n_layers):
            sel = best == layer
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=size, color=colors[layer],
                           linewidths=0, label=f"{names[layer]} ({int(sel.sum())})")
        ax.legend(title="LayerSelector argmax", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", markerscale=max(1.0, 20 / size) ** 0.5)
    ax.set_xlim(-1, 1)
    ax.set_ylim(1, -1)  # image convention: y grows downward
    ax.set_aspect("equal")
    ax.set_xlabel("x (image grid)")
    ax.set_ylabel("y (image grid)")
    ax.set_title(title if title is not None else f"RetinaMap ({len(points)} voxels)")
    return finish(fig, output_file)
