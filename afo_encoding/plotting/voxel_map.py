"""Per-voxel values on the brain, drawn with the tools of the container the responses came
in: nilearn for volumes and surfaces, MNE topomaps for sensors x time, a scatter for arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import finish

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


@fill_plot_doc
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
        EEG/MEG: the times (s) of the topomaps (default: 5 evenly spaced after stimulus
        onset, 0 ms excluded, when the epochs reach past it).
    view : str
        Surfaces: the camera (nilearn's ``view``: "posterior", "lateral", "medial"...).
    title : str | None
        Figure title.
    %(output_file)s

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
    return finish(fig, output_file)


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
    from matplotlib.colors import ListedColormap, Normalize

    data = epochs.get_data(copy=True)
    all_times = epochs.times
    if times is None:
        # after stimulus onset: before it (and at 0 ms) the brain has not responded, and
        # what a model learned there (a retina map, layer weights) is noise
        after = all_times[all_times > 0] if (all_times > 0).any() else all_times
        times = after[np.unique(np.linspace(0, len(after) - 1, 5).round().astype(int))]
    times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if times.min() < all_times[0] - 1e-9 or times.max() > all_times[-1] + 1e-9:
        raise ValueError(
            f"times must lie within the epochs, [{all_times[0]:g}, {all_times[-1]:g}] s, "
            f"got {times.tolist()}."
        )
    n_rows, n_cols = len(titles), len(times)
    fig = plt.figure(figsize=(1.9 * n_cols + 0.8, 2.5 * n_rows), layout="constrained")
    rows = np.atleast_1d(fig.subfigures(n_rows, 1))
    ch_types = set(epochs.get_channel_types())
    for i, (name, cmap, (lo, hi)) in enumerate(zip(titles, cmaps, lims)):
        # one subfigure per map: its title sits above its row, clear of the time labels
        axes = rows[i].subplots(1, n_cols + 1,
                                gridspec_kw={"width_ratios": [1.0] * n_cols + [0.08]})
        evoked = mne.EvokedArray(np.nan_to_num(data[i], nan=lo), epochs.info,
                                 tmin=float(all_times[0]), verbose=False)
        # labels (a ListedColormap) are not interpolated between sensors: no made-up
        # classes, no contour lines
        labels = isinstance(cmap, ListedColormap)
        evoked.plot_topomap(times=times, axes=list(axes[:n_cols]), colorbar=False,
                            show=False, cmap=cmap, vlim=(lo, hi), time_unit="ms",
                            scalings={t: 1.0 for t in ch_types}, sensors=True,
                            image_interp="nearest" if labels else "cubic",
                            contours=0 if labels else 6)
        fig.colorbar(ScalarMappable(norm=Normalize(lo, hi), cmap=cmap), cax=axes[-1])
        if name:
            rows[i].suptitle(name, x=0.01, ha="left", fontsize="medium")
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
