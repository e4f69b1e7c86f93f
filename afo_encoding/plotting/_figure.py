"""Figure plumbing shared by every plot: new axes, saving, the colours of the layers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def finish(fig: Figure, output_file: str | Path | None) -> Figure:
    """Save ``fig`` to ``output_file`` when given (150 dpi, tight); return it."""
    if output_file is not None:
        fig.savefig(output_file, dpi=150, bbox_inches="tight")
    return fig


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure of ``figsize`` inches with one axes."""
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    # constrained layout keeps legends placed beside the axes inside the figure
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def layer_colors(n_layers: int) -> list:
    """One colour per layer, shallow (dark) to deep (bright), shared by all figures."""
    import matplotlib as mpl

    return [mpl.colormaps["viridis"](x) for x in np.linspace(0.0, 0.92, n_layers)]
