"""The veROI hierarchy and its cut (the paper's Figure 6)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@fill_plot_doc
def plot_veroi_dendrogram(
    linkage: Any,
    n_rois: int | None = None,
    distance_threshold: float | None = None,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """The veROI hierarchy with its cut (Figure 6).

    Parameters
    ----------
    linkage : array-like, shape (n_centroids - 1, 4)
        The linkage returned by :func:`afo_encoding.parcellation.veroi`.
    n_rois, distance_threshold : int | float | None
        The cut, as given to ``veroi`` (at most one): drawn as a dashed line, the
        branches below it coloured per veROI and labelled with the veROI numbers of
        ``veroi`` (0, 1, ... from left to right). Neither: the tree alone.
    %(axes_options)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        The dendrogram, the cut line and one text label per veROI.

    Examples
    --------
    >>> from afo_encoding.parcellation import veroi  # doctest: +SKIP
    >>> labels, linkage = veroi(encoder, n_rois=6)  # doctest: +SKIP
    >>> fig = plot_veroi_dendrogram(linkage, n_rois=6)  # doctest: +SKIP
    """
    from scipy.cluster.hierarchy import dendrogram, fcluster

    z = np.asarray(linkage, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 4 or z.shape[0] < 1:
        raise ValueError(f"linkage must be (n_points - 1, 4), got shape {z.shape}.")
    if n_rois is not None and distance_threshold is not None:
        raise ValueError("Give at most one of n_rois and distance_threshold.")
    n_points = z.shape[0] + 1
    heights = np.sort(z[:, 2])
    cut = None
    if n_rois is not None:
        if not isinstance(n_rois, numbers.Integral) or not 1 <= n_rois <= n_points:
            raise ValueError(f"n_rois must be an integer in [1, {n_points}], got {n_rois!r}.")
        if n_rois == 1:
            cut = heights[-1] * 1.02
        else:
            # between the merge that leaves n_rois clusters and the next one
            cut = 0.5 * (heights[n_points - n_rois - 1] + heights[n_points - n_rois]) \
                if n_rois < n_points else 0.5 * heights[0]
        cluster = fcluster(z, t=int(n_rois), criterion="maxclust")
    elif distance_threshold is not None:
        cut = float(distance_threshold)
        cluster = fcluster(z, t=cut, criterion="distance")
    fig, ax = new_axes(ax, (9.0, 4.0))
    tree = dendrogram(z, ax=ax, no_labels=True, color_threshold=cut if cut else 0.0,
                      above_threshold_color="grey")
    if cut is not None:
        ax.axhline(cut, color="black", linestyle="--", linewidth=1.0,
                   label=f"cut: {len(np.unique(cluster))} veROIs")
        leaves = np.asarray(tree["leaves"])
        order = list(dict.fromkeys(cluster[leaves]))
        for number, c in enumerate(order):
            x = 5.0 + 10.0 * np.flatnonzero(cluster[leaves] == c)
            ax.text(x.mean(), 0.0, str(number), ha="center", va="top", fontsize="small",
                    gid="veroi-label")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("Ward distance")
    ax.set_xlabel(f"k-means centroids ({n_points}), veROIs numbered left to right",
                  labelpad=14)
    ax.set_title(title if title is not None else "veROI hierarchy")
    return finish(fig, output_file)
