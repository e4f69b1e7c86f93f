"""Voxel scores: violins per ROI or per model with noise ceilings (the paper's Figure 1), and
two models compared voxel by voxel."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._docs import fill_plot_doc
from ._figure import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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
    """The noise ceiling drawn over one violin: a number, the mean of per-voxel ones."""
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
    return float(np.mean(value)) if value.size else None


@fill_plot_doc
def plot_score_distributions(
    scores: Any,
    groups: Any = None,
    *,
    noise_ceiling: Any = None,
    order: Any = None,
    ax: Axes | None = None,
    ylabel: str = "Pearson r",
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Violins of voxel scores per ROI or per model, with noise ceilings (Figure 1).

    Each violin marks the mean score (a short line), the statistic that tables of mean r
    report, and the ceiling over it is the mean of the voxels' ceilings.

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
        ceilings aligned with ``scores`` (their mean per group); or a dict keyed like
        the violins (or, for a dict of dicts, by group) of numbers or per-voxel arrays.
        Use the units of the scores (r units for Pearson r, e.g.
        ``make_retinotopic_dataset(...).noise_ceiling``).
    order : sequence | None
        The groups from left to right (e.g. ``["early", "mid", "late"]``); default: in
        the order they first appear. Groups left out are not drawn.
    ylabel : str
        Label of the score axis.
    %(axes_options)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        One violin body per distribution (with its mean marked), one dashed line per
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
    table, models, nested = _score_table(scores, groups)
    if order is not None:
        missing = [g for g in order if g not in table]
        if missing:
            raise ValueError(f"order names groups without scores: {missing}; the groups "
                             f"are {list(table)}.")
        table = {g: table[g] for g in order}
    group_names = list(table)
    fig, ax = new_axes(ax, (1.2 + 1.1 * len(group_names) * max(1.0, len(models) * 0.7), 4.0))
    _draw_violins(ax, table, models)
    # per-voxel ceilings go with an array of scores and its groups
    voxel_groups = None if isinstance(scores, Mapping) else groups
    ceiling_drawn = _draw_ceilings(ax, group_names, noise_ceiling, voxel_groups)
    ax.set_xticks(range(len(group_names)), [str(g) for g in group_names])
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_ylabel(f"{ylabel} (line: mean)")
    if nested or ceiling_drawn:
        ax.legend(fontsize="small", loc="best")
    if title is not None:
        ax.set_title(title)
    return finish(fig, output_file)


def _score_table(scores: Any, groups: Any) -> tuple[dict, list, bool]:
    """``{group: {model: scores}}``, the models in order (``[None]``: one violin per
    group) and whether ``scores`` was a dict of dicts."""
    nested = isinstance(scores, Mapping) and bool(scores) and all(
        isinstance(v, Mapping) for v in scores.values())
    if nested:
        table = {g: dict(v) for g, v in scores.items()}
        models = list(dict.fromkeys(m for v in table.values() for m in v))
    else:
        table = {g: {None: v} for g, v in _groups_of(scores, groups).items()}
        models = [None]
    if not table:
        raise ValueError("No scores to plot.")
    return table, models, nested


def _draw_violins(ax: Axes, table: dict, models: list) -> None:
    """One violin per group and model, models side by side in their colours."""
    import matplotlib as mpl

    width = 0.8 / len(models)
    colors = mpl.colormaps["tab10"](np.arange(len(models)) % 10)
    for m, model in enumerate(models):
        positions, data = [], []
        for g, group in enumerate(table):
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
                              showmeans=True, showmedians=False, showextrema=False)
        parts["cmeans"].set_color("black")
        parts["cmeans"].set_gid("mean")
        for body in parts["bodies"]:
            body.set_facecolor(colors[m])
            body.set_edgecolor("black")
            body.set_alpha(0.7)
        if model is not None:
            parts["bodies"][0].set_label(str(model))


def _draw_ceilings(ax: Axes, group_names: list, noise_ceiling: Any, voxel_groups: Any) -> bool:
    """A dashed segment over every group with a known ceiling; whether any was drawn."""
    drawn = False
    for g, group in enumerate(group_names):
        ceiling = _ceiling_of(noise_ceiling, group, voxel_groups)
        if ceiling is not None:
            ax.hlines(ceiling, g - 0.45, g + 0.45, colors="black", linestyles="dashed",
                      label=None if drawn else "noise ceiling", gid="noise-ceiling")
            drawn = True
    return drawn


@fill_plot_doc
def plot_score_comparison(
    scores_x: Any,
    scores_y: Any,
    *,
    labels: tuple[str, str] = ("model x", "model y"),
    groups: Any = None,
    noise_ceiling: Any = None,
    ax: Axes | None = None,
    title: str | None = None,
    output_file: str | Path | None = None,
) -> Figure:
    """Two models' scores voxel by voxel: one point per voxel, the identity line, and how
    many voxels each model wins.

    Parameters
    ----------
    scores_x, scores_y : array-like of shape (n_voxels,)
        Per-voxel scores (e.g. held-out Pearson r) of the two models, on the same voxels.
        Voxels where either is NaN are left out (and counted in the legend).
    labels : (str, str)
        Names of the two models (axis labels).
    groups : array-like of shape (n_voxels,) | None
        A label per voxel (e.g. ROI names): one colour per group.
    noise_ceiling : float | None
        Drawn as dashed lines on both axes (in the units of the scores).
    %(axes_options)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        A scatter per group; the legend says, per group, how many voxels lie above and
        below the identity line and the median difference ``y - x``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> probe = rng.uniform(0.2, 0.7, 70)
    >>> fig = plot_score_comparison(probe, probe + rng.normal(0.01, 0.02, 70),
    ...                             labels=("linear probe r", "TopyEncoder r"))
    >>> len(fig.axes[0].collections)
    1
    """
    x = np.asarray(scores_x, dtype=np.float64).reshape(-1)
    y = np.asarray(scores_y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(
            f"scores_x and scores_y must score the same voxels: got {x.size} and {y.size} "
            "scores."
        )
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        raise ValueError("No voxel has a finite score in both models.")
    if groups is None:
        table = {"voxels": np.flatnonzero(finite)}
    else:
        labels_of = np.asarray(groups).reshape(-1)
        table = {g: np.flatnonzero(finite & (labels_of == g))
                 for g in _group_names(groups, x.size)}
    fig, ax = new_axes(ax, (4.6, 4.4))
    for name, index in table.items():
        if index.size == 0:
            continue
        diff = y[index] - x[index]
        ax.scatter(x[index], y[index], s=14, alpha=0.75,
                   label=f"{name}: {np.sum(diff > 0)} above, {np.sum(diff < 0)} below, "
                         f"median {np.median(diff):+.3f}")
    low = min(x[finite].min(), y[finite].min(), 0.0)
    high = max(x[finite].max(), y[finite].max())
    pad = 0.05 * (high - low or 1.0)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linewidth=0.8)
    if noise_ceiling is not None:
        ax.axvline(float(noise_ceiling), color="grey", linestyle="dashed", linewidth=0.8)
        ax.axhline(float(noise_ceiling), color="grey", linestyle="dashed", linewidth=0.8,
                   label="noise ceiling")
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    dropped = int(np.sum(~finite))
    legend = ax.legend(fontsize="small", loc="upper left")
    if dropped:
        legend.set_title(f"{dropped} voxels without a score left out", prop={"size": "small"})
    if title is not None:
        ax.set_title(title)
    return finish(fig, output_file)


def _group_names(groups: Any, n: int) -> list:
    groups = np.asarray(groups).reshape(-1)
    if groups.size != n:
        raise ValueError(f"groups must hold one label per voxel ({n}), got {groups.size}.")
    return list(dict.fromkeys(groups.tolist()))
