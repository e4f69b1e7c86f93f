"""The veROI hierarchy and its cut (the paper's Figure 6), and the veROIs on the brain in
the same colours."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import finish, new_axes
from ._inputs import space_of
from .voxel_map import plot_voxel_map

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
        The dendrogram, the cut line and one text label per veROI; the branches of
        veROI ``k`` are drawn in ``veroi_colors(n)[k]``, the colours of
        :func:`plot_veroi_map`.

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
    color_of_link = None
    if cut is not None:
        color_of_link = _link_colors(z, cluster)
    tree = dendrogram(z, ax=ax, no_labels=True, color_threshold=cut if cut else 0.0,
                      above_threshold_color="grey",
                      link_color_func=None if color_of_link is None else color_of_link.get)
    if cut is not None:
        ax.axhline(cut, color="black", linestyle="--", linewidth=1.0,
                   label=f"cut: {len(np.unique(cluster))} veROIs")
        leaves = np.asarray(tree["leaves"])
        order = list(dict.fromkeys(cluster[leaves]))
        for number, c in enumerate(order):
            x = 5.0 + 10.0 * np.flatnonzero(cluster[leaves] == c)
            ax.text(x.mean(), 0.0, str(number), ha="center", va="top", fontsize="small",
                    gid="veroi-label", color=veroi_colors(len(order))[number],
                    fontweight="bold")
        ax.legend(loc="upper right", fontsize="small")
    ax.set_ylabel("Ward distance")
    ax.set_xlabel(f"k-means centroids ({n_points}), veROIs numbered left to right",
                  labelpad=14)
    ax.set_title(title if title is not None else "veROI hierarchy")
    return finish(fig, output_file)


def veroi_colors(n_rois: int) -> list[str]:
    """The colour of every veROI, shared by the dendrogram and the map on the brain."""
    import matplotlib as mpl
    from matplotlib.colors import to_hex

    palette = mpl.colormaps["tab10" if n_rois <= 10 else "tab20"]
    return [to_hex(palette(i % palette.N)) for i in range(n_rois)]


def _leaf_order_numbers(z: np.ndarray, cluster: np.ndarray) -> dict[int, int]:
    """fcluster's cluster id -> veROI number (0, 1... from left to right in the tree)."""
    from scipy.cluster.hierarchy import leaves_list

    leaves = leaves_list(z)
    return {int(c): number for number, c in enumerate(dict.fromkeys(cluster[leaves]))}


def _link_colors(z: np.ndarray, cluster: np.ndarray) -> dict[int, str]:
    """Colour of every link of the tree: its veROI's when all its leaves are in one."""
    n_points = z.shape[0] + 1
    colors = veroi_colors(len(np.unique(cluster)))
    number = _leaf_order_numbers(z, cluster)
    members: dict[int, set] = {i: {int(cluster[i])} for i in range(n_points)}
    link_colors = {}
    for i, (a, b) in enumerate(z[:, :2].astype(int)):
        members[n_points + i] = members[a] | members[b]
        (only,) = members[n_points + i] if len(members[n_points + i]) == 1 else (None,)
        link_colors[n_points + i] = "grey" if only is None else colors[number[only]]
    return link_colors


@fill_plot_doc
def plot_veroi_map(
    labels: Any,
    space: Any,
    *,
    subject: int = 0,
    title: str | None = None,
    output_file: str | Path | None = None,
    **kwargs: Any,
) -> Figure:
    """The veROIs on the brain, in the colours of :func:`plot_veroi_dendrogram`.

    The map closes the loop of Figure 6: the dendrogram says how the voxels' head weights
    group, the map says where those groups lie (a volume, a surface, or EEG/MEG sensors
    over time, through :func:`plot_voxel_map`).

    Parameters
    ----------
    labels : array-like of int, shape (n_voxels,)
        The veROI of every voxel, as :func:`afo_encoding.parcellation.veroi` returns it
        (numbered 0, 1... from left to right in the dendrogram).
    space : ResponseSpace | fitted encoder
        The voxels' space, or an encoder with ``space_``.
    %(subject)s
    title : str | None
        Figure title (default: how many veROIs).
    %(output_file)s
    %(voxel_map_kwargs)s

    Returns
    -------
    fig : matplotlib.figure.Figure

    Examples
    --------
    >>> labels, linkage = veroi(encoder, n_rois=6)  # doctest: +SKIP
    >>> plot_veroi_dendrogram(linkage, n_rois=6)  # doctest: +SKIP
    >>> plot_veroi_map(labels, encoder)  # doctest: +SKIP
    """
    from matplotlib.colors import ListedColormap

    labels = np.asarray(labels).reshape(-1)
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be non-negative integers, one veROI number per voxel "
                         "(from afo_encoding.parcellation.veroi).")
    space = space_of(space, None, subject) if hasattr(space, "space_") else space
    n_rois = int(labels.max()) + 1
    cmap = ListedColormap(veroi_colors(n_rois))
    if title is None:
        title = f"{n_rois} veROIs on the brain (colours of the dendrogram)"
    fig = plot_voxel_map(labels.astype(np.float64), space, titles=["veROI"], cmap=cmap,
                         vmin=-0.5, vmax=n_rois - 0.5, title=title, **kwargs)
    for ax in fig.axes:  # colour bars name the veROIs, one tick per colour
        colorbar = getattr(ax, "_colorbar", None)
        if colorbar is not None:
            colorbar.set_ticks(range(n_rois), labels=[str(k) for k in range(n_rois)])
    return finish(fig, output_file)
