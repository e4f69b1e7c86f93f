"""Every figure of a fitted encoder, evaluated on held-out images, written to a folder."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils import Bunch

from ._docs import fill_plot_doc
from ._figure import finish
from ._inputs import fitted, space_of
from .dendrogram import plot_veroi_dendrogram, plot_veroi_map
from .model_maps import plot_layer_selector, plot_retinotopy
from .retina_map import plot_retina_map
from .retrieval import plot_identification, plot_retrieval_grid
from .scores import plot_score_distributions

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@fill_plot_doc
def plot_encoder_report(
    encoder: Any,
    images: Any,
    responses: Any,
    out_dir: str | Path,
    *,
    rois: Any = None,
    noise_ceiling: Any = None,
    baseline: Any = None,
    roi_order: Any = None,
    subject: int = 0,
    n_rois: int = 6,
    n_queries: int = 2,
    k: int = 4,
    fmt: str = "png",
) -> dict[str, Path]:
    """Write every figure of a fitted encoder, evaluated on held-out images, to a folder.

    The encoder predicts ``images`` once; the figures are: the retina map over the first
    image (``retina_map``), the LayerSelector and the RetinaMapper on the brain
    (``layer_selector``, ``retinotopy``), the test scores per ROI with their noise
    ceilings, next to those of a ``baseline`` model (``scores``), identification per ROI
    with the encoding scores (``identification``), retrieval grids per ROI
    (``retrieval``), and the veROI dendrogram of the head weights with the veROIs on the
    brain in its colours (``veroi_dendrogram``, ``veroi_map``, when the encoder has
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
    baseline : fitted encoder | None
        A second model fitted on the same voxels (e.g. the
        :class:`~afo_encoding.LinearProbeEncoder`): its violins stand next to the
        encoder's.
    roi_order : sequence | None
        The ROIs from left to right (e.g. ``["early", "mid", "late"]``; default: in the
        order they first appear).
    %(subject)s
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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    test = _evaluate(encoder, images, responses, subject, rois, noise_ceiling, baseline,
                     roi_order)
    figures = chain(
        _model_figures(encoder, images, subject),
        _test_figures(test, images, n_queries, k, _names(encoder, baseline)),
        _veroi_figures(encoder, subject, n_rois),
    )
    paths: dict[str, Path] = {}
    for name, fig in figures:  # one figure at a time: drawn, saved, closed
        paths[name] = out_dir / f"{name}.{fmt}"
        finish(fig, paths[name])
        plt.close(fig)
    return paths


def _per_voxel(values: Any, name: str, keep: np.ndarray, n_voxels: int) -> np.ndarray | None:
    """Per-voxel ``values`` given for the kept or the raw voxels, as one per kept voxel."""
    if values is None:
        return None
    values = np.asarray(values).reshape(-1)
    if values.size == keep.size != n_voxels:
        values = values[keep]
    if values.size != n_voxels:
        raise ValueError(f"{name} must hold one value per voxel ({n_voxels}), got "
                         f"{values.size}.")
    return values


def _names(encoder: Any, baseline: Any) -> tuple[str, str]:
    """What the figures call the encoder and the baseline (their class names)."""
    name = type(encoder).__name__
    other = "baseline" if baseline is None else type(baseline).__name__
    return name, other if other != name else f"{other} (baseline)"


def units_of(space: Any, n_voxels: int) -> str:
    """What a space's columns are, in words: "4500 voxels", "60 channels x 75 times"."""
    if getattr(space, "kind", None) == "epochs":
        n_times = len(space.times)
        return (f"{n_voxels // n_times} channels x {n_times} times"
                if n_voxels % n_times == 0 else f"{n_voxels} channel x time columns")
    return {"surface": f"{n_voxels} vertices", "array": f"{n_voxels} columns"}.get(
        getattr(space, "kind", None), f"{n_voxels} voxels")


def _evaluate(encoder: Any, images: Any, responses: Any, subject: int, rois: Any,
              noise_ceiling: Any, baseline: Any = None, roi_order: Any = None) -> Bunch:
    """Predict ``images`` once; per-voxel r, ROI labels, ceilings, retrieval scores per ROI."""
    from ..decoding import measured_patterns, predict_patterns, score_candidates
    from ..metrics import pearson_r

    space = space_of(encoder, None, subject)
    predictions = predict_patterns(encoder, images, subject)
    measured = measured_patterns(encoder, responses, subject, predictions.shape[1])
    n_voxels = predictions.shape[1]
    keep = getattr(space, "keep", np.ones(n_voxels, dtype=bool))
    labels = _per_voxel(rois, "rois", keep, n_voxels)
    labels = np.full(n_voxels, "all voxels") if labels is None else labels
    ceiling = _per_voxel(noise_ceiling, "noise_ceiling", keep, n_voxels)
    names = [roi for roi in (dict.fromkeys(labels.tolist()) if roi_order is None
                             else roi_order) if np.sum(labels == roi) >= 2]
    scores = {roi: score_candidates(measured, predictions, voxels=labels == roi)
              for roi in names}
    if len(names) > 1:
        scores["all voxels"] = score_candidates(measured, predictions)
    r_baseline = None
    if baseline is not None:
        other = predict_patterns(baseline, images, subject)
        if other.shape != predictions.shape:
            raise ValueError(f"The baseline predicts {other.shape[1]} voxels, the encoder "
                             f"{n_voxels}; fit both on the same responses.")
        r_baseline = pearson_r(measured, other)
    return Bunch(r=pearson_r(measured, predictions), labels=labels, ceiling=ceiling,
                 scores=scores, n_images=len(measured), n_voxels=n_voxels,
                 several_rois=len(names) > 1, r_baseline=r_baseline, rois=names,
                 units=units_of(space, n_voxels))


def _model_figures(encoder: Any, images: Any, subject: int) -> Iterator[tuple[str, Figure]]:
    """What the model learned: the retina map, the RetinaMapper and LayerSelector maps."""
    if hasattr(encoder, "retina_map_"):
        first = np.asarray(images[0]) if isinstance(images, np.ndarray) else None
        yield "retina_map", plot_retina_map(encoder, subject=subject, image=first)
        yield "retinotopy", plot_retinotopy(encoder, subject=subject)
    if hasattr(encoder, "layer_weights_"):
        yield "layer_selector", plot_layer_selector(encoder, subject=subject, kind="weights")


def _test_figures(test: Bunch, images: Any, n_queries: int, k: int,
                  names: tuple[str, str] = ("encoder", "baseline"),
                  ) -> Iterator[tuple[str, Figure]]:
    """How well it predicts the held-out images: scores, identification, retrieval."""
    from ..decoding import identification_accuracy

    r, labels, truth = test.r, test.labels, np.arange(test.n_images)
    yield "scores", score_figure(test, names)
    results = {roi: identification_accuracy(s, truth) for roi, s in test.scores.items()}
    encoding = {roi: r if roi == "all voxels" and test.several_rois else r[labels == roi]
                for roi in test.scores}
    yield "identification", plot_identification(
        results, encoding, title=f"identification among {test.n_images} images")
    yield "retrieval", plot_retrieval_grid(images, test.scores, truth,
                                           queries=list(range(min(n_queries, len(truth)))),
                                           k=min(k, len(truth)))


def score_figure(test: Bunch, names: tuple[str, str]) -> Figure:
    """Violins of the test r per ROI (the encoder's next to the baseline's), ceilings."""
    title = f"test scores ({test.n_images} images, {test.units})"
    if test.r_baseline is None:
        return plot_score_distributions(test.r, test.labels, noise_ceiling=test.ceiling,
                                        order=test.rois, title=title)
    nested = {roi: {names[0]: test.r[test.labels == roi],
                    names[1]: test.r_baseline[test.labels == roi]} for roi in test.rois}
    ceiling = None if test.ceiling is None else {
        roi: test.ceiling[test.labels == roi] for roi in test.rois}
    return plot_score_distributions(nested, noise_ceiling=ceiling, title=title)


def _veroi_figures(encoder: Any, subject: int, n_rois: int) -> Iterator[tuple[str, Figure]]:
    """The veROI dendrogram of the head weights and the veROIs on the brain, when the
    encoder has ``coef_``."""
    if getattr(encoder, "coef_", None) is None:
        return
    from ..parcellation import veroi

    coef = fitted(encoder, "coef_", subject)
    n_points = min(200, coef.shape[0])
    cut = min(n_rois, n_points)
    labels, linkage = veroi(coef, n_rois=cut, n_prefilter=n_points, random_state=0)
    yield "veroi_dendrogram", plot_veroi_dendrogram(linkage, n_rois=cut)
    yield "veroi_map", plot_veroi_map(labels, encoder, subject=subject)
