"""Figures of what an encoding model learned and how well it predicts (the paper's figures).

Every function returns a :class:`matplotlib.figure.Figure` and saves it when given
``output_file`` (any format matplotlib writes, chosen by the extension). Functions take a
fitted encoder or the fitted arrays themselves (``retina_map_``, ``layer_weights_``,
scores), so they also serve models fitted elsewhere.

- :func:`plot_retina_map`: where in the image every voxel reads, coloured by the layer it
  reads most (Figure 4), optionally over a stimulus.
- :func:`plot_voxel_map`: any per-voxel values on the brain, in the space the responses
  came in: nilearn stat maps for volumes, nilearn surface plots for surfaces, MNE
  topomaps over time for EEG/MEG, a scatter of the coordinates for plain arrays.
- :func:`plot_layer_selector` and :func:`plot_retinotopy`: the LayerSelector (Figure 5)
  and the RetinaMapper (eccentricity, polar angle) on the brain, through
  :func:`plot_voxel_map`.
- :func:`plot_score_distributions`: violins of voxel scores per ROI or per model, with
  noise ceilings (Figure 1).
- :func:`plot_veroi_dendrogram`: the veROI hierarchy and its cut (Figure 6).
- :func:`plot_retrieval_grid`: the image shown next to the best candidates retrieved from
  the brain response, per ROI (Figures 7 and 9).
- :func:`plot_identification`: identification accuracy per ROI next to the encoding score
  (Figure 8).
- :func:`plot_encoder_report`: all of the above for a fitted encoder and held-out data,
  written to a folder (what ``afo-encoding demo`` does).

matplotlib, nilearn's plotting and MNE are imported when a function runs, so importing
this module is cheap; nothing in the package imports it.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .decoding import top_candidates

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_encoder_report",
    "plot_identification",
    "plot_layer_selector",
    "plot_retina_map",
    "plot_retinotopy",
    "plot_retrieval_grid",
    "plot_score_distributions",
    "plot_veroi_dendrogram",
    "plot_voxel_map",
]

# -- shared helpers ------------------------------------------------------------------------


def _finish(fig: Figure, output_file: str | Path | None) -> Figure:
    if output_file is not None:
        fig.savefig(output_file, dpi=150, bbox_inches="tight")
    return fig


def _new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    # constrained layout keeps legends placed beside the axes inside the figure
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _fitted(source: Any, name: str, subject: int) -> np.ndarray:
    """A fitted attribute of an encoder (one subject's), or ``source`` itself as an array."""
    value = getattr(source, name, source)
    if isinstance(value, list | tuple):
        if not 0 <= subject < len(value):
            raise ValueError(
                f"subject must be in [0, {len(value)}) for this encoder, got {subject}."
            )
        value = value[subject]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _space(source: Any, space: Any, subject: int) -> Any:
    if space is None:
        space = getattr(source, "space_", None)
        if isinstance(space, list | tuple):
            space = space[subject]
    if space is None or not hasattr(space, "inverse_transform"):
        raise ValueError(
            "Give the ResponseSpace of the voxels (space=, from afo_encoding.as_responses) "
            "or a fitted encoder with space_."
        )
    return space


def _layer_names(source: Any, n_layers: int, layer_names: Sequence[str] | None) -> list[str]:
    if layer_names is None:
        backbone = getattr(source, "backbone_", None)
        layer_names = getattr(backbone, "layer_names", None)
    if layer_names is None or len(layer_names) != n_layers:
        if layer_names is not None:
            raise ValueError(
                f"layer_names must name the {n_layers} layers, got {len(layer_names)}."
            )
        return [f"layer {i}" for i in range(n_layers)]
    return [str(n) for n in layer_names]


def _layer_colors(n_layers: int) -> list:
    """One colour per layer, shallow (dark) to deep (bright), shared by all figures."""
    import matplotlib as mpl

    return [mpl.colormaps["viridis"](x) for x in np.linspace(0.0, 0.92, n_layers)]


def _as_rgb(image: Any) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)  # (C, H, W) -> (H, W, C)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3):
        raise ValueError(f"An image must be (H, W), (H, W, 3) or (3, H, W), got {image.shape}.")
    return image


# -- retina map ----------------------------------------------------------------------------


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
    subject : int
        Which subject of a multi-subject encoder.
    image : array-like, shape (H, W), (H, W, 3) or (3, H, W) | None
        A stimulus to draw under the dots, stretched over the grid.
    voxels : array-like of int or bool | None
        Plot only these voxels (indices or a boolean mask), e.g. one ROI.
    layer_names : sequence of str | None
        Legend names of the layers (default: the encoder's backbone layer names).
    marker_size : float | None
        Dot area in points^2 (default: smaller for more voxels).
    ax : matplotlib Axes | None
        Where to draw (default: a new figure).
    title : str | None
        Axes title.
    output_file : str | Path | None
        Save the figure there.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axes; one scatter collection per layer that some voxel reads most.

    Examples
    --------
    >>> fig = plot_retina_map(encoder, image=images[0])  # doctest: +SKIP
    """
    points = _fitted(encoder_or_retina_map, "retina_map_", subject)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"A retina map must be (n_voxels, 2), got shape {points.shape}.")
    if layer_weights is None and hasattr(encoder_or_retina_map, "layer_weights_"):
        layer_weights = encoder_or_retina_map
    weights = None if layer_weights is None else _fitted(layer_weights, "layer_weights_",
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
    fig, ax = _new_axes(ax, (5.5, 5.0))
    if image is not None:
        ax.imshow(_as_rgb(image), extent=(-1, 1, 1, -1), cmap="gray", alpha=0.6, zorder=0)
    size = marker_size if marker_size is not None else float(np.clip(4000 / max(len(points), 1),
                                                                     1.0, 30.0))
    if weights is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color="tab:blue", linewidths=0)
    else:
        n_layers = weights.shape[1]
        names = _layer_names(encoder_or_retina_map, n_layers, layer_names)
        colors = _layer_colors(n_layers)
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
    return _finish(fig, output_file)


# -- per-voxel maps on the brain -----------------------------------------------------------


def _per_map(value: Any, n_maps: int, name: str) -> list:
    if isinstance(value, list | tuple):
        if len(value) != n_maps:
            raise ValueError(f"{name} must be one value or {n_maps} (one per map), got "
                             f"{len(value)}.")
        return list(value)
    return [value] * n_maps


def _limits(data: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    lo = float(finite.min()) if vmin is None and finite.size else vmin
    hi = float(finite.max()) if vmax is None and finite.size else vmax
    lo = 0.0 if lo is None else lo
    hi = lo + 1.0 if hi is None or hi <= lo else hi
    return lo, hi


def _container_kind(container: Any) -> str:
    if isinstance(container, np.ndarray):
        return "array"
    try:
        import mne

        if isinstance(container, mne.BaseEpochs):
            return "epochs"
    except ImportError:  # pragma: no cover - mne is a dependency
        pass
    from nilearn.surface import SurfaceImage

    if isinstance(container, SurfaceImage):
        return "surface"
    import nibabel

    if isinstance(container, nibabel.spatialimages.SpatialImage):
        return "volume"
    raise TypeError(f"Cannot plot values held in a {type(container).__name__}.")


def plot_voxel_map(
    values: Any,
    space: Any,
    *,
    titles: Sequence[str] | None = None,
    cmap: Any = "viridis",
    vmin: float | Sequence[float | None] | None = None,
    vmax: float | Sequence[float | None] | None = None,
    times: Sequence[float] | None = None,
    view: str = "posterior",
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Per-voxel values on the brain, drawn the way the responses came in.

    The values go back to the response container with ``space.inverse_transform`` and are
    drawn with the tools of that container: for a volume, nilearn's
    :func:`~nilearn.plotting.plot_stat_map` (over the MNI template, only the modelled
    voxels coloured); for a surface, :func:`~nilearn.plotting.plot_surf_stat_map` per
    hemisphere; for EEG/MEG sensors x time, MNE topomaps at a few time points; for plain
    arrays, a scatter of the voxel coordinates.

    Parameters
    ----------
    values : array-like, shape (n_voxels,) or (n_maps, n_voxels)
        One value per kept voxel of ``space``, or several maps (one row of panels each),
        e.g. scores (``validation_scores_``), layer weights, eccentricity.
    space : ResponseSpace
        The encoder's ``space_`` (see :func:`afo_encoding.as_responses`).
    titles : sequence of str | None
        One title per map.
    cmap : str | Colormap | list
        Colormap, or one per map.
    vmin, vmax : float | list | None
        Colour limits, or one pair per map (default: the range of each map).
    times : sequence of float | None
        EEG/MEG: the times (s) of the topomaps (default: 5 evenly spaced).
    view : str
        Surfaces: the camera (nilearn's ``view``: "posterior", "lateral", "medial"...).
    title : str | None
        Figure title.
    output_file : str | Path | None
        Save the figure there.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One row of panels per map: one slicer (volume), one 3D axes per hemisphere
        (surface), one topomap per time point and a colour bar (EEG/MEG), one scatter
        (array).

    Examples
    --------
    >>> fig = plot_voxel_map(encoder.validation_scores_, encoder.space_,
    ...                      titles=["validation r"], cmap="hot")  # doctest: +SKIP
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 1:
        data = data[None]
    n_voxels = getattr(space, "n_voxels", data.shape[-1])
    if data.ndim != 2 or data.shape[1] != n_voxels:
        raise ValueError(
            f"values must be (n_voxels={n_voxels},) or (n_maps, n_voxels), got shape "
            f"{np.shape(values)}."
        )
    n_maps = data.shape[0]
    titles = list(titles) if titles is not None else [None] * n_maps
    if len(titles) != n_maps:
        raise ValueError(f"titles must name the {n_maps} maps, got {len(titles)}.")
    cmaps = _per_map(cmap, n_maps, "cmap")
    lims = [_limits(d, lo, hi) for d, lo, hi in zip(data, _per_map(vmin, n_maps, "vmin"),
                                                      _per_map(vmax, n_maps, "vmax"))]
    container = space.inverse_transform(data.astype(np.float32))
    kind = _container_kind(container)
    draw = {"volume": _volume_maps, "surface": _surface_maps, "epochs": _topomaps,
            "array": _scatter_maps}[kind]
    options = {"epochs": {"times": times}, "surface": {"view": view}}.get(kind, {"space": space})
    fig = draw(container, titles, cmaps, lims, **options)
    if title is not None:
        fig.suptitle(title)
    return _finish(fig, output_file)


def _volume_maps(img: Any, titles: list, cmaps: list, lims: list, space: Any) -> Figure:
    import matplotlib.pyplot as plt
    from nilearn.image import new_img_like
    from nilearn.plotting import plot_stat_map

    data = np.asarray(img.dataobj, dtype=np.float64).reshape(*img.shape[:3], -1)
    # colour the modelled voxels only, whatever their value (0 is a value too: layer 0,
    # the fovea); the rest shows the template
    ones = space.inverse_transform(np.ones((1, space.n_voxels), dtype=np.float32))
    inside = np.asarray(ones.dataobj, dtype=np.float64).reshape(*img.shape[:3], -1)[..., 0]
    alpha = new_img_like(img, (inside == 1.0).astype(np.float32), copy_header=True)
    # the same cuts for every map, through the middle of the modelled voxels
    cut_coords = tuple(float(c) for c in np.median(space.coords[:, :3], axis=0))
    fig = plt.figure(figsize=(10, 3.4 * len(titles)))
    for i, (name, cmap, (lo, hi)) in enumerate(zip(titles, cmaps, lims)):
        ax = fig.add_subplot(len(titles), 1, i + 1)
        ax.set_axis_off()
        one = new_img_like(img, np.nan_to_num(data[..., i], nan=lo), copy_header=True)
        plot_stat_map(one, axes=ax, figure=fig, cmap=cmap, vmin=lo, vmax=hi,
                      symmetric_cbar=False, threshold=None, transparency=alpha,
                      cut_coords=cut_coords, title=name, draw_cross=False, black_bg=False)
    return fig


def _surface_maps(img: Any, titles: list, cmaps: list, lims: list, view: str) -> Figure:
    import matplotlib.pyplot as plt
    from nilearn.plotting import plot_surf_stat_map
    from nilearn.surface import SurfaceImage

    parts = list(img.mesh.parts)
    fig = plt.figure(figsize=(4.0 * len(parts), 3.6 * len(titles)))
    for i, (name, cmap, (lo, hi)) in enumerate(zip(titles, cmaps, lims)):
        one = SurfaceImage(mesh=img.mesh, data={
            p: np.nan_to_num(np.asarray(img.data.parts[p], dtype=np.float64).reshape(
                img.mesh.parts[p].n_vertices, -1)[:, i], nan=lo) for p in parts})
        for j, part in enumerate(parts):
            ax = fig.add_subplot(len(titles), len(parts), i * len(parts) + j + 1,
                                 projection="3d")
            plot_surf_stat_map(stat_map=one, hemi=part, view=view, axes=ax, figure=fig,
                               cmap=cmap, vmin=lo, vmax=hi, symmetric_cbar=False,
                               colorbar=j == len(parts) - 1,
                               title=f"{name} ({part})" if name else part)
    return fig


def _topomaps(epochs: Any, titles: list, cmaps: list, lims: list,
              times: Sequence[float] | None) -> Figure:
    import matplotlib.pyplot as plt
    import mne
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    data = epochs.get_data(copy=True)
    all_times = epochs.times
    if times is None:
        times = all_times[np.unique(np.linspace(0, len(all_times) - 1, 5).round().astype(int))]
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if times.min() < all_times[0] - 1e-9 or times.max() > all_times[-1] + 1e-9:
        raise ValueError(
            f"times must lie within the epochs, [{all_times[0]:g}, {all_times[-1]:g}] s, "
            f"got {times.tolist()}."
        )
    n_rows, n_cols = len(titles), len(times)
    fig, axes = plt.subplots(
        n_rows, n_cols + 1, figsize=(1.9 * n_cols + 0.8, 2.2 * n_rows), squeeze=False,
        gridspec_kw={"width_ratios": [1.0] * n_cols + [0.08]},
    )
    ch_types = set(epochs.get_channel_types())
    for i, (name, cmap, (lo, hi)) in enumerate(zip(titles, cmaps, lims)):
        evoked = mne.EvokedArray(np.nan_to_num(data[i], nan=lo), epochs.info,
                                 tmin=float(all_times[0]), verbose=False)
        evoked.plot_topomap(times=times, axes=list(axes[i, :n_cols]), colorbar=False,
                            show=False, cmap=cmap, vlim=(lo, hi), time_unit="ms",
                            scalings={t: 1.0 for t in ch_types}, sensors=True)
        fig.colorbar(ScalarMappable(norm=Normalize(lo, hi), cmap=cmap), cax=axes[i, -1])
        if name:
            axes[i, 0].set_title(name, loc="left", fontsize="medium", pad=16)
    fig.subplots_adjust(hspace=0.45)
    return fig


def _scatter_maps(array: np.ndarray, titles: list, cmaps: list, lims: list,
                  space: Any) -> Figure:
    import matplotlib.pyplot as plt

    coords = np.asarray(getattr(space, "coords", np.arange(array.shape[1])[:, None]))
    keep = getattr(space, "keep", np.ones(array.shape[1], dtype=bool))
    values = np.asarray(array, dtype=np.float64).reshape(len(array), -1)[:, keep]
    fig, axes = plt.subplots(1, len(titles), figsize=(4.2 * len(titles), 3.6), squeeze=False)
    for ax, row, name, cmap, (lo, hi) in zip(axes[0], values, titles, cmaps, lims):
        if coords.shape[1] >= 2:
            art = ax.scatter(coords[:, 0], coords[:, 1], c=row, cmap=cmap, vmin=lo, vmax=hi,
                             s=12, linewidths=0)
            ax.set_xlabel("coordinate 0")
            ax.set_ylabel("coordinate 1")
            ax.set_aspect("equal", adjustable="datalim")
        else:
            art = ax.scatter(coords[:, 0], row, c=row, cmap=cmap, vmin=lo, vmax=hi, s=12,
                             linewidths=0)
            ax.set_xlabel("coordinate")
        fig.colorbar(art, ax=ax)
        if name:
            ax.set_title(name)
    return fig


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
    space : ResponseSpace | None
        Where the voxels live (default: the encoder's ``space_``).
    kind : {"weights", "depth", "argmax"}
        ``"weights"``: one map per layer, its weight in [0, 1] (the paper's Figure 5);
        ``"depth"``: one map of the expected layer index ``sum_l l * eta_l`` (a smooth
        hierarchy map); ``"argmax"``: the layer read most, in the colours of
        :func:`plot_retina_map`.
    subject : int
        Which subject of a multi-subject encoder.
    layer_names : sequence of str | None
        Names of the layers (default: the backbone's).
    output_file : str | Path | None
        Save the figure there.
    **kwargs
        Passed to :func:`plot_voxel_map` (``times``, ``view``, ``title``...).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    weights = _fitted(encoder_or_weights, "layer_weights_", subject)
    if weights.ndim != 2:
        raise ValueError(f"layer weights must be (n_voxels, n_layers), got {weights.shape}.")
    space = _space(encoder_or_weights, space, subject)
    n_layers = weights.shape[1]
    names = _layer_names(encoder_or_weights, n_layers, layer_names)
    if kind == "weights":
        return plot_voxel_map(weights.T, space, titles=[f"LayerSelector: {n}" for n in names],
                              cmap="viridis", vmin=0.0, vmax=1.0, output_file=output_file,
                              **kwargs)
    if kind == "depth":
        depth = weights @ np.arange(n_layers, dtype=np.float64)
        return plot_voxel_map(depth, space, titles=[f"mean layer (0 = {names[0]})"],
                              cmap="viridis", vmin=0.0, vmax=n_layers - 1.0,
                              output_file=output_file, **kwargs)
    if kind == "argmax":
        from matplotlib.colors import ListedColormap

        cmap = ListedColormap(_layer_colors(n_layers))
        return plot_voxel_map(weights.argmax(axis=1).astype(np.float64), space,
                              titles=["LayerSelector argmax: " + ", ".join(
                                  f"{i}={n}" for i, n in enumerate(names))],
                              cmap=cmap, vmin=-0.5, vmax=n_layers - 0.5,
                              output_file=output_file, **kwargs)
    raise ValueError(f"kind must be 'weights', 'depth' or 'argmax', got {kind!r}.")


_RETINOTOPY = {
    "eccentricity": ("eccentricity", "viridis", 0.0, float(np.sqrt(2.0))),
    "angle": ("polar angle (rad)", "twilight_shifted", -np.pi, np.pi),
    "x": ("x (right > 0)", "RdBu_r", -1.0, 1.0),
    "y": ("y (down > 0)", "RdBu_r", -1.0, 1.0),
}


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
    space : ResponseSpace | None
        Where the voxels live (default: the encoder's ``space_``).
    kind : str | sequence of str
        Maps to draw, among "eccentricity" (distance to the image centre), "angle" (polar
        angle in radians, counter-clockwise from the right, upper field positive), "x",
        "y" (both in [-1, 1]). Eccentricity is in image half-widths (1: the border).
    subject : int
        Which subject of a multi-subject encoder.
    output_file : str | Path | None
        Save the figure there.
    **kwargs
        Passed to :func:`plot_voxel_map` (``times``, ``view``, ``title``...).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    points = _fitted(encoder_or_retina_map, "retina_map_", subject)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"A retina map must be (n_voxels, 2), got shape {points.shape}.")
    space = _space(encoder_or_retina_map, space, subject)
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


# -- score distributions -------------------------------------------------------------------


def _groups_of(scores: Any, groups: Any) -> dict:
    if isinstance(scores, Mapping):
        if groups is not None:
            raise ValueError("groups= goes with an array of scores, not with a dict.")
        return dict(scores)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if groups is None:
        return {"all voxels": scores}
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != scores.shape:
        raise ValueError(
            f"groups must hold one label per score ({scores.size}), got {groups.size}."
        )
    return {g: scores[groups == g] for g in dict.fromkeys(groups.tolist())}


def _ceiling_of(noise_ceiling: Any, name: Hashable, groups: Any) -> float | None:
    """The noise ceiling drawn over one violin: a number, the median of per-voxel ones."""
    if noise_ceiling is None:
        return None
    if isinstance(noise_ceiling, Mapping):
        value = noise_ceiling.get(name)
    elif isinstance(noise_ceiling, numbers.Number):
        value = noise_ceiling
    else:
        value = np.asarray(noise_ceiling, dtype=np.float64).reshape(-1)
        if groups is None:
            raise ValueError("Per-voxel noise ceilings need groups= (or give a dict).")
        value = value[np.asarray(groups).reshape(-1) == name]
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    value = value[np.isfinite(value)]
    return float(np.median(value)) if value.size else None


def plot_score_distributions(
    scores: Any,
    groups: Any = None,
    *,
    noise_ceiling: Any = None,
    ax: Axes | None = None,
    ylabel: str = "Pearson r",
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Violins of voxel scores per ROI or per model, with noise ceilings (Figure 1).

    Parameters
    ----------
    scores : array-like | dict
        - an array of per-voxel scores with ``groups`` (one violin per group label);
        - a dict ``{name: scores}`` (one violin per entry: models, ROIs, data sets);
        - a dict of dicts ``{group: {model: scores}}``: models side by side within each
          group, one colour per model (e.g. models compared per ROI).
    groups : array-like | None
        Label of every voxel (e.g. ROI names), with an array of ``scores``.
    noise_ceiling : float | array-like | dict | None
        Drawn as a dashed black segment over each violin: one number for all; per-voxel
        ceilings aligned with ``scores`` (their median per group); or a dict keyed like
        the violins (or, for a dict of dicts, by group) of numbers or per-voxel arrays.
        Use the units of the scores (r units for Pearson r, e.g.
        ``make_retinotopic_dataset(...).noise_ceiling``).
    ax : matplotlib Axes | None
        Where to draw (default: a new figure).
    ylabel : str
        Label of the score axis.
    title : str | None
        Axes title.
    output_file : str | Path | None
        Save the figure there.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One violin body per distribution (with its median marked), one dashed line per
        known ceiling.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fig = plot_score_distributions({"early": rng.normal(0.5, 0.1, 200),
    ...                                 "late": rng.normal(0.3, 0.1, 100)},
    ...                                noise_ceiling={"early": 0.8, "late": 0.6})
    >>> len(fig.axes[0].collections) >= 2
    True
    """
    nested = isinstance(scores, Mapping) and bool(scores) and all(
        isinstance(v, Mapping) for v in scores.values())
    # per-voxel ceilings go with an array of scores and its groups
    voxel_groups = None if isinstance(scores, Mapping) else groups
    if nested:
        table = {g: dict(v) for g, v in scores.items()}
        models = list(dict.fromkeys(m for v in table.values() for m in v))
    else:
        table = {g: {None: v} for g, v in _groups_of(scores, groups).items()}
        models = [None]
    group_names = list(table)
    if not group_names:
        raise ValueError("No scores to plot.")
    import matplotlib as mpl

    fig, ax = _new_axes(ax, (1.2 + 1.1 * len(group_names) * max(1.0, len(models) * 0.7), 4.0))
    width = 0.8 / len(models)
    colors = mpl.colormaps["tab10"](np.arange(len(models)) % 10)
    for m, model in enumerate(models):
        positions, data = [], []
        for g, group in enumerate(group_names):
            if model not in table[group]:
                continue
            values = np.asarray(table[group][model], dtype=np.float64).reshape(-1)
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(f"No finite score for {group!r}" +
                                 (f", model {model!r}." if model is not None else "."))
            positions.append(g + (m - (len(models) - 1) / 2) * width)
            data.append(values)
        parts = ax.violinplot(data, positions=positions, widths=width * 0.9,
                              showmedians=True, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(colors[m])
            body.set_edgecolor("black")
            body.set_alpha(0.7)
        if model is not None:
            parts["bodies"][0].set_label(str(model))
    ceiling_drawn = False
    for g, group in enumerate(group_names):
        ceiling = _ceiling_of(noise_ceiling, group, voxel_groups)
        if ceiling is not None:
            ax.hlines(ceiling, g - 0.45, g + 0.45, colors="black", linestyles="dashed",
                      label=None if ceiling_drawn else "noise ceiling", gid="noise-ceiling")
            ceiling_drawn = True
    ax.set_xticks(range(len(group_names)), [str(g) for g in group_names])
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_ylabel(ylabel)
    if nested or ceiling_drawn:
        ax.legend(fontsize="small", loc="best")
    if title is not None:
        ax.set_title(title)
    return _finish(fig, output_file)


# -- veROI dendrogram ----------------------------------------------------------------------


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
    ax : matplotlib Axes | None
        Where to draw (default: a new figure).
    title : str | None
        Axes title.
    output_file : str | Path | None
        Save the figure there.

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
    fig, ax = _new_axes(ax, (9.0, 4.0))
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
    return _finish(fig, output_file)


# -- retrieval -----------------------------------------------------------------------------


def _image_getter(images: Any):
    if isinstance(images, np.ndarray):
        return lambda i: _as_rgb(images[i])
    from .stimuli import as_stimuli

    stimuli = as_stimuli(images)
    return lambda i: stimuli[int(i)]


def plot_retrieval_grid(
    candidate_images: Any,
    scores: Any,
    true_index: Any,
    *,
    queries: Sequence[int] | None = None,
    k: int = 4,
    output_file: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """The image shown next to the best candidates retrieved from the brain (Figure 7).

    Each row is one measured response: its true image, then the ``k`` best-scoring
    candidates, best first, each titled with its Pearson r; a retrieved image that is
    the true one is framed in green. With scores per ROI, every query gets one row per
    ROI, labelled with the ROI (what each region "sees", Figures 7 and 9).

    Parameters
    ----------
    candidate_images : array-like | images
        The candidate set (uint8 ``(n, H, W, 3)``, or anything
        :func:`afo_encoding.stimuli.as_stimuli` takes), in the order of the scores'
        columns.
    scores : array-like, shape (n_queries, n_candidates) | dict
        From :func:`afo_encoding.decoding.rank_candidates`; a dict ``{roi: scores}``
        gives one row per ROI.
    true_index : array-like of int, shape (n_queries,)
        Column of the image actually shown for every query.
    queries : sequence of int | None
        Which queries to show (default: the first 4).
    k : int
        How many retrieved images per row.
    output_file : str | Path | None
        Save the figure there.
    title : str | None
        Figure title.

    Returns
    -------
    fig : matplotlib.figure.Figure
        ``n_rows x (k + 1)`` axes, each holding one image.
    """
    import matplotlib.pyplot as plt

    per_roi = dict(scores) if isinstance(scores, Mapping) else {None: scores}
    per_roi = {roi: np.asarray(s, dtype=np.float64) for roi, s in per_roi.items()}
    first = next(iter(per_roi.values()))
    if first.ndim != 2 or any(s.shape != first.shape for s in per_roi.values()):
        raise ValueError("scores must be (n_queries, n_candidates), the same for every ROI.")
    true_index = np.asarray(true_index)
    if true_index.shape != (first.shape[0],):
        raise ValueError(
            f"true_index must hold one index per query ({first.shape[0]}), got shape "
            f"{true_index.shape}."
        )
    queries = list(range(min(4, first.shape[0]))) if queries is None else list(queries)
    image = _image_getter(candidate_images)
    rows = [(q, roi) for q in queries for roi in per_roi]
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.6 * (k + 1), 1.75 * len(rows)),
                             squeeze=False)
    for r, (q, roi) in enumerate(rows):
        row_scores = per_roi[roi][q]
        best = top_candidates(row_scores[None], k=k)[0]
        truth = int(true_index[q])
        panels = [(truth, "shown")] + [(int(c), f"#{n + 1} r={row_scores[c]:.2f}")
                                       for n, c in enumerate(best)]
        for ax, (c, label) in zip(axes[r], panels):
            ax.imshow(image(c), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize="small")
            if c == truth and label != "shown":
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green")
                    spine.set_linewidth(3)
        name = f"query {q}" if roi is None else f"query {q}\n{roi}"
        axes[r, 0].set_ylabel(name, fontsize="small")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, output_file)


def plot_identification(
    results: Mapping[Hashable, Mapping[str, Any]],
    encoding_scores: Mapping[Hashable, Any] | None = None,
    *,
    k: Sequence[int] = (1, 5),
    ax: Axes | None = None,
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Identification accuracy per ROI, next to each ROI's encoding score (Figure 8).

    Parameters
    ----------
    results : dict
        ``{roi: result}`` from :func:`afo_encoding.decoding.identification_accuracy` or
        :func:`~afo_encoding.decoding.identification_protocol` (whose ``top{k}_std`` give
        error bars). Chance (``chance_top{k}``) is marked on every bar.
    encoding_scores : dict | None
        ``{roi: per-voxel scores}``: their mean, with its standard error, as a third bar.
    k : sequence of int
        Which top-k accuracies to show (present in every result).
    ax : matplotlib Axes | None
        Where to draw (default: a new figure).
    title : str | None
        Axes title.
    output_file : str | Path | None
        Save the figure there.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One bar per ROI and accuracy (and encoding score), one chance marker per
        accuracy bar.
    """
    rois = list(results)
    if not rois:
        raise ValueError("No identification results to plot.")
    for roi in rois:
        missing = [f"top{v}" for v in k if f"top{v}" not in results[roi]]
        if missing:
            raise ValueError(f"The result of {roi!r} has no {missing}; compute it with "
                             f"k={tuple(k)}.")
    n_bars = len(k) + (encoding_scores is not None)
    width = 0.8 / n_bars
    fig, ax = _new_axes(ax, (1.5 + 1.0 * len(rois) * n_bars * 0.5, 4.0))
    x = np.arange(len(rois))
    for b, v in enumerate(k):
        pos = x + (b - (n_bars - 1) / 2) * width
        acc = [results[r][f"top{v}"] for r in rois]
        err = [results[r].get(f"top{v}_std", 0.0) for r in rois]
        ax.bar(pos, acc, width * 0.95, yerr=err, label=f"top-{v} identification",
               capsize=2)
        ax.hlines([results[r][f"chance_top{v}"] for r in rois], pos - width / 2,
                  pos + width / 2, colors="black", linestyles="dotted",
                  label="chance" if b == 0 else None)
    if encoding_scores is not None:
        pos = x + (n_bars - 1 - (n_bars - 1) / 2) * width
        means, sems = [], []
        for r in rois:
            s = np.asarray(encoding_scores[r], dtype=np.float64).reshape(-1)
            s = s[np.isfinite(s)]
            means.append(s.mean())
            sems.append(s.std(ddof=1) / np.sqrt(s.size) if s.size > 1 else 0.0)
        ax.bar(pos, means, width * 0.95, yerr=sems, color="tab:green", capsize=2,
               label="encoding score (mean r)")
    ax.set_xticks(x, [str(r) for r in rois])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy / Pearson r")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title is not None:
        ax.set_title(title)
    return _finish(fig, output_file)


# -- every figure of a fitted encoder --------------------------------------------------------


def plot_encoder_report(
    encoder: Any,
    images: Any,
    responses: Any,
    out_dir: str | Path,
    *,
    rois: Any = None,
    noise_ceiling: Any = None,
    subject: int = 0,
    n_rois: int = 6,
    n_queries: int = 4,
    k: int = 4,
    fmt: str = "png",
) -> dict[str, Path]:
    """Write every figure of a fitted encoder, evaluated on held-out images, to a folder.

    The encoder predicts ``images`` once; the figures are: the retina map over the first
    image (``retina_map``), the LayerSelector and the RetinaMapper on the brain
    (``layer_selector``, ``retinotopy``), the test scores per ROI with their noise
    ceilings (``scores``), identification per ROI with the encoding scores
    (``identification``), retrieval grids per ROI (``retrieval``) and the veROI
    dendrogram of the head weights (``veroi_dendrogram``, when the encoder has
    ``coef_``). The ``afo-encoding demo`` command calls it for the model it fits.

    Parameters
    ----------
    encoder : fitted encoder
        With ``predict``, ``space_`` and, for the model figures, ``retina_map_`` and
        ``layer_weights_`` (figures whose attributes are missing are skipped).
    images : images
        Held-out images, in a form ``encoder.predict`` accepts; they are also the
        candidate set of the retrieval figures.
    responses : array-like | Niimg | SurfaceImage | mne.Epochs
        The measured responses to ``images`` (any container the encoder was fitted on).
    out_dir : str | Path
        Folder for the figures (created if needed).
    rois : array-like | None
        ROI label of every voxel (kept or raw voxels); ``None``: all voxels as one ROI.
    noise_ceiling : array-like | None
        Per-voxel noise ceiling in units of Pearson r, drawn over the score violins.
    subject : int
        Which subject of a multi-subject encoder.
    n_rois : int
        Number of veROIs of the dendrogram's cut.
    n_queries : int
        Queries shown in the retrieval grid.
    k : int
        Retrieved images per query.
    fmt : str
        File format (extension): "png", "pdf", "svg"...

    Returns
    -------
    paths : dict
        Figure name -> file written.
    """
    import matplotlib.pyplot as plt

    from .decoding import _measured_patterns, _predict, identification_accuracy
    from .decoding import score_candidates as _score
    from .metrics import pearson_r

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    space = _space(encoder, None, subject)
    predictions = _predict(encoder, images, subject)
    measured = _measured_patterns(encoder, responses, subject, predictions.shape[1])
    n_voxels = predictions.shape[1]
    keep = getattr(space, "keep", np.ones(n_voxels, dtype=bool))

    def per_voxel(values: Any, name: str) -> np.ndarray | None:
        if values is None:
            return None
        values = np.asarray(values).reshape(-1)
        if values.size == keep.size != n_voxels:
            values = values[keep]
        if values.size != n_voxels:
            raise ValueError(f"{name} must hold one value per voxel ({n_voxels}), got "
                             f"{values.size}.")
        return values

    labels = per_voxel(rois, "rois")
    labels = np.full(n_voxels, "all voxels") if labels is None else labels
    ceiling = per_voxel(noise_ceiling, "noise_ceiling")
    names = [roi for roi in dict.fromkeys(labels.tolist()) if np.sum(labels == roi) >= 2]
    r = pearson_r(measured, predictions)
    truth = np.arange(len(measured))
    scores = {roi: _score(measured, predictions, voxels=labels == roi) for roi in names}
    if len(names) > 1:
        scores["all voxels"] = _score(measured, predictions)

    paths: dict[str, Path] = {}

    def save(name: str, fig: Figure) -> None:
        paths[name] = out_dir / f"{name}.{fmt}"
        fig.savefig(paths[name], dpi=150, bbox_inches="tight")
        plt.close(fig)

    if hasattr(encoder, "retina_map_"):
        first = np.asarray(images[0]) if isinstance(images, np.ndarray) else None
        save("retina_map", plot_retina_map(encoder, subject=subject, image=first))
        save("retinotopy", plot_retinotopy(encoder, subject=subject))
    if hasattr(encoder, "layer_weights_"):
        save("layer_selector", plot_layer_selector(encoder, subject=subject, kind="weights"))
    save("scores", plot_score_distributions(
        r, labels, noise_ceiling=ceiling,
        title=f"test scores ({len(measured)} images, {n_voxels} voxels)"))
    results = {roi: identification_accuracy(s, truth) for roi, s in scores.items()}
    encoding = {roi: r if roi == "all voxels" and len(names) > 1 else r[labels == roi]
                for roi in scores}
    save("identification", plot_identification(
        results, encoding, title=f"identification among {len(measured)} images"))
    save("retrieval", plot_retrieval_grid(images, scores, truth,
                                          queries=list(range(min(n_queries, len(truth)))),
                                          k=min(k, len(truth))))
    if getattr(encoder, "coef_", None) is not None:
        from .parcellation import veroi

        coef = _fitted(encoder, "coef_", subject)
        n_points = min(200, coef.shape[0])
        cut = min(n_rois, n_points)
        _, linkage = veroi(coef, n_rois=cut, n_prefilter=n_points, random_state=0)
        save("veroi_dendrogram", plot_veroi_dendrogram(linkage, n_rois=cut))
    return paths
