"""Reading the brain back: retrieval grids (the paper's Figures 7 and 9) and identification
accuracy per ROI (Figure 8)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..decoding import top_candidates
from ._docs import fill_plot_doc
from ._figure import finish, new_axes
from ._inputs import as_rgb

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _image_getter(images: Any):
    if isinstance(images, np.ndarray):
        return lambda i: as_rgb(images[i])
    from ..stimuli import as_stimuli

    stimuli = as_stimuli(images)
    return lambda i: stimuli[int(i)]


@fill_plot_doc
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
    %(output_file)s
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
    # small stimuli (32 px) drawn pixel for pixel on ~1 inch tiles: sharp, and a grid of
    # 16 rows stays readable on a screen
    tile = 1.05
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(tile * (k + 1) + 0.4,
                                                        (tile + 0.2) * len(rows)),
                             squeeze=False)
    for r, (q, roi) in enumerate(rows):
        row_scores = per_roi[roi][q]
        best = top_candidates(row_scores[None], k=k)[0]
        truth = int(true_index[q])
        panels = [(truth, "shown")] + [(int(c), f"#{n + 1} r={row_scores[c]:.2f}")
                                       for n, c in enumerate(best)]
        for ax, (c, label) in zip(axes[r], panels):
            ax.imshow(image(c), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label, fontsize="x-small", pad=2)
            if c == truth and label != "shown":
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green")
                    spine.set_linewidth(3)
        name = f"query {q}" if roi is None else f"query {q}\n{roi}"
        axes[r, 0].set_ylabel(name, fontsize="x-small")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, output_file)


@fill_plot_doc
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
    %(axes_options)s

    Returns
    -------
    fig : matplotlib.figure.Figure
        One bar per ROI and accuracy, with error bars only when the results have a
        spread (``top{k}_std``), one chance marker per accuracy bar; the encoding scores
        on a second y axis of their own (Pearson r, in green).
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
    fig, ax = new_axes(ax, (2.2 + 1.0 * len(rois) * n_bars * 0.5, 4.0))
    x = np.arange(len(rois))
    for b, v in enumerate(k):
        pos = x + (b - (n_bars - 1) / 2) * width
        acc = [results[r][f"top{v}"] for r in rois]
        # error bars only where the result has a spread (identification_protocol's draws)
        spread = all(f"top{v}_std" in results[r] for r in rois)
        err = [results[r][f"top{v}_std"] for r in rois] if spread else None
        ax.bar(pos, acc, width * 0.95, yerr=err, capsize=2 if spread else 0,
               label=f"top-{v} identification" + (" (\u00b1 SD over draws)" if spread else ""))
        ax.hlines([results[r][f"chance_top{v}"] for r in rois], pos - width / 2,
                  pos + width / 2, colors="black", linestyles="dotted",
                  label="chance" if b == 0 else None)
    handles, labels = ax.get_legend_handles_labels()
    ax.set_xticks(x, [str(r) for r in rois])
    ax.set_ylim(0, 1)
    ax.set_ylabel("identification accuracy")
    if encoding_scores is not None:
        # a second quantity, a second axis: the encoding score is a correlation
        score_ax = ax.twinx()
        pos = x + (n_bars - 1 - (n_bars - 1) / 2) * width
        means, sems = [], []
        for r in rois:
            s = np.asarray(encoding_scores[r], dtype=np.float64).reshape(-1)
            s = s[np.isfinite(s)]
            means.append(s.mean())
            sems.append(s.std(ddof=1) / np.sqrt(s.size) if s.size > 1 else 0.0)
        score_ax.bar(pos, means, width * 0.95, yerr=sems, color="tab:green", capsize=2,
                     label="encoding score (mean r \u00b1 SEM over voxels)")
        score_ax.set_ylim(min(0.0, 1.1 * min(means)), 1)
        score_ax.set_ylabel("encoding score (mean Pearson r)", color="tab:green")
        score_ax.tick_params(axis="y", colors="tab:green")
        more_handles, more_labels = score_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.1),
              ncol=2)
    if title is not None:
        ax.set_title(title)
    return finish(fig, output_file)
