"""An HTML report of a fitted encoder, as :class:`mne.Report` and nilearn's
``generate_report`` give one: one self-contained page (figures embedded as PNG) with the
test scores against the noise ceiling and a baseline, what the model learned (retina map,
LayerSelector), the scores on the brain, the training history, the parameters and the
data."""

from __future__ import annotations

import base64
import html
import io
import numbers
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

#: the sections of a report, in page order: (id, heading)
SECTIONS = (
    ("summary", "Summary"),
    ("scores", "Scores against the noise ceiling"),
    ("retina-map", "Retina map"),
    ("layer-selector", "LayerSelector"),
    ("score-map", "Scores on the brain"),
    ("history", "Training history"),
    ("parameters", "Parameters"),
    ("data", "Data"),
)

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #222; background: #fafafa; }
nav { position: sticky; top: 0; background: #24425f; padding: 0.5em 1em; z-index: 1; }
nav a { color: #fff; margin-right: 1.2em; text-decoration: none; font-size: 0.95em; }
main { max-width: 1100px; margin: auto; padding: 1em 2em 3em; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.5em 1.5em
          1em; margin: 1.2em 0; }
h1 { font-size: 1.6em; overflow-wrap: anywhere; }
h2 { font-size: 1.25em; border-bottom: 1px solid #eee; padding-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
p.note { color: #555; font-size: 0.92em; }
"""


class EncoderReport:
    """A self-contained HTML page about a fitted encoder.

    It shows itself in a Jupyter notebook (``_repr_html_``) and is written to disk with
    :meth:`save_as_html`; figures are embedded as base64 PNG, so the file is the whole
    report (no other file, no network).

    Attributes
    ----------
    title : str
        The page title.
    sections : dict
        Section id -> its HTML (``<section>`` element), in page order.
    """

    def __init__(self, title: str, sections: dict[str, str]) -> None:
        self.title = title
        self.sections = sections

    def get_html(self) -> str:
        """The whole page, as a string."""
        headings = dict(SECTIONS)
        nav = "".join(f'<a href="#{key}">{html.escape(headings.get(key, key))}</a>'
                      for key in self.sections)
        body = "\n".join(self.sections.values())
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
            f"<body>\n<nav>{nav}</nav>\n<main>\n<h1>{html.escape(self.title)}</h1>\n"
            f"{body}\n</main>\n</body>\n</html>\n"
        )

    def _repr_html_(self) -> str:
        return self.get_html()

    def __str__(self) -> str:
        return self.get_html()

    def __repr__(self) -> str:
        return f"<EncoderReport {self.title!r}: {', '.join(self.sections)}>"

    def save_as_html(self, file_name: str | Path) -> Path:
        """Write the page to ``file_name`` (UTF-8) and return its path."""
        path = Path(file_name)
        path.write_text(self.get_html(), encoding="utf-8")
        return path


def generate_report(
    encoder: Any,
    X_test: Any = None,
    y_test: Any = None,
    *,
    baseline: Any = None,
    rois: Any = None,
    noise_ceiling: Any = None,
    roi_order: Any = None,
    subject: int = 0,
    title: str | None = None,
    output_file: str | Path | None = None,
) -> EncoderReport:
    """An HTML report of a fitted encoder: scores, maps, history, parameters, data.

    Like :class:`mne.Report` and nilearn's ``generate_report``, one page holds what a
    reader asks of a fitted model: how well it predicts held-out images (per ROI, against
    the noise ceiling and a baseline such as the linear probe), what it learned (the
    retina map, the LayerSelector on the brain), the scores on the brain, the training
    history, its parameters and a summary of the data. Sections whose inputs are missing
    (no test data, no ``retina_map_``...) say so instead of a figure.

    Parameters
    ----------
    encoder : fitted encoder
        :class:`~afo_encoding.TopyEncoder`, :class:`~afo_encoding.LinearProbeEncoder` or
        :class:`~afo_encoding.AllForOneEncoder` (anything with ``predict`` and
        ``space_``).
    X_test, y_test : images and responses | None
        Held-out images and the measured responses to them (any container the encoder
        was fitted on). Without them, the score map shows the encoder's own validation
        scores (``validation_scores_`` or ``cv_scores_``) and there is no score table.
    baseline : fitted encoder | None
        A second model fitted on the same voxels (e.g. the linear probe), scored next to
        the encoder.
    rois : array-like | None
        ROI label of every voxel (kept or raw voxels): scores per ROI.
    noise_ceiling : array-like | None
        Per-voxel noise ceiling in units of Pearson r.
    roi_order : sequence | None
        The ROIs in the order of the table and the figure.
    subject : int
        Which subject of a multi-subject encoder.
    title : str | None
        Page title (default: the encoder's class name).
    output_file : str | Path | None
        Also write the page there.

    Returns
    -------
    report : EncoderReport
        Shown inline in a notebook; ``report.save_as_html("report.html")`` writes it.

    Examples
    --------
    >>> report = generate_report(encoder, X_test, y_test,
    ...                          baseline=probe)  # doctest: +SKIP
    >>> report.save_as_html("encoder_report.html")  # doctest: +SKIP
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(encoder)
    if (X_test is None) != (y_test is None):
        raise ValueError("Give both X_test and y_test (held-out images and the responses "
                         "to them), or neither.")
    import matplotlib

    name = type(encoder).__name__
    title = title if title is not None else f"{name} report"
    test = None
    if X_test is not None:
        from .plotting.report import _evaluate

        test = _evaluate(encoder, X_test, y_test, subject, rois, noise_ceiling, baseline,
                         roi_order)
    space = _space(encoder, subject)
    builders = {
        "summary": lambda: _summary(encoder, test, baseline),
        "scores": lambda: _scores(encoder, test, baseline),
        "retina-map": lambda: _retina_map(encoder, X_test, subject),
        "layer-selector": lambda: _layer_selector(encoder, subject),
        "score-map": lambda: _score_map(encoder, test, space),
        "history": lambda: _history(encoder),
        "parameters": lambda: _parameters(encoder),
        "data": lambda: _data(encoder, space, test),
    }
    headings = dict(SECTIONS)
    sections = {}
    with matplotlib.rc_context({"figure.max_open_warning": 0}):
        for key, build in builders.items():
            sections[key] = (f'<section id="{key}">\n<h2>{html.escape(headings[key])}</h2>\n'
                             f"{build()}\n</section>")
    report = EncoderReport(title, sections)
    if output_file is not None:
        report.save_as_html(output_file)
    return report


# ------------------------------------------------------------------------------ helpers


def _space(encoder: Any, subject: int) -> Any:
    space = getattr(encoder, "space_", None)
    if space is None and hasattr(encoder, "final_estimator_"):
        space = getattr(encoder.final_estimator_, "space_", None)
    if isinstance(space, list | tuple):
        space = space[subject]
    return space


def _attribute(encoder: Any, name: str, subject: int) -> Any:
    """A fitted attribute of the encoder (or of an AllForOneEncoder's final model)."""
    value = getattr(encoder, name, None)
    if value is None and hasattr(encoder, "final_estimator_"):
        value = getattr(encoder.final_estimator_, name, None)
    if isinstance(value, list | tuple):
        value = value[subject]
    return value


def _figure_html(fig: Any, alt: str) -> str:
    """The figure as an embedded PNG (and closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            return f'<td class="num">{text}</td>'
        return f"<td>{html.escape(str(value))}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(encoder: Any, test: Any, baseline: Any) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from . import __version__

    lines = [f"<p><b>{html.escape(type(encoder).__name__)}</b>, afo-encoding "
             f"{html.escape(__version__)}, report made {when}.</p>"]
    if test is not None:
        line = (f"Mean test Pearson r over {test.units}: <b>{np.nanmean(test.r):.3f}</b> "
                f"({test.n_images} held-out images)")
        if test.r_baseline is not None:
            line += (f"; {html.escape(type(baseline).__name__)}: "
                     f"{np.nanmean(test.r_baseline):.3f}")
        if test.ceiling is not None:
            line += f"; mean noise ceiling {np.nanmean(test.ceiling):.3f}"
        lines.append(f"<p>{line}.</p>")
    else:
        lines.append(_note("No test data were given: scores are the encoder's own "
                           "validation scores."))
    return "\n".join(lines)


def _scores(encoder: Any, test: Any, baseline: Any) -> str:
    if test is None:
        return _note("Give X_test and y_test to score held-out images.")
    from .plotting.report import _names, score_figure

    names = _names(encoder, baseline)
    header = ["ROI", "columns", f"{names[0]} r"]
    if test.r_baseline is not None:
        header += [f"{names[1]} r", "difference"]
    if test.ceiling is not None:
        header += ["noise ceiling", "r / ceiling"]
    rows = []
    groups = [(roi, test.labels == roi) for roi in test.rois]
    if len(groups) != 1:
        groups.append(("all", np.ones(test.n_voxels, dtype=bool)))
    for roi, sel in groups:
        r = float(np.nanmean(test.r[sel]))
        row = [roi, int(sel.sum()), r]
        if test.r_baseline is not None:
            other = float(np.nanmean(test.r_baseline[sel]))
            row += [other, f"{r - other:+.3f}"]
        if test.ceiling is not None:
            ceiling = float(np.nanmean(test.ceiling[sel]))
            row += [ceiling, f"{r / ceiling:.0%}" if ceiling > 0 else ""]
        rows.append(row)
    figure = _figure_html(score_figure(test, names), "test scores per ROI")
    return (_table(header, rows) +
            _note("Mean Pearson r of the held-out predictions per column (voxel, vertex "
                  "or channel x time), the violins' means; the dashed line is the mean "
                  "noise ceiling.") + figure)


def _retina_map(encoder: Any, X_test: Any, subject: int) -> str:
    if _attribute(encoder, "retina_map_", subject) is None:
        return _note(f"{type(encoder).__name__} has no retina map (no retina_map_).")
    from .plotting import plot_retina_map

    model = _fitted_model(encoder)
    image = np.asarray(X_test[0]) if isinstance(X_test, np.ndarray) and X_test.ndim >= 3 \
        else None
    fig = plot_retina_map(model, subject=subject, image=image)
    return (_figure_html(fig, "retina map") +
            _note("Where in the image every voxel reads (RetinaMapper), coloured by the "
                  "layer it reads most."))


def _layer_selector(encoder: Any, subject: int) -> str:
    if _attribute(encoder, "layer_weights_", subject) is None:
        return _note(f"{type(encoder).__name__} has no LayerSelector (no "
                     "layer_weights_).")
    from .plotting import plot_layer_selector

    fig = plot_layer_selector(_fitted_model(encoder), subject=subject, kind="weights")
    return _figure_html(fig, "LayerSelector weights on the brain")


def _fitted_model(encoder: Any) -> Any:
    """What carries the fitted maps: the encoder, or an AllForOneEncoder's final model."""
    if getattr(encoder, "retina_map_", None) is None and hasattr(encoder, "final_estimator_"):
        return encoder.final_estimator_
    return encoder


def _score_map(encoder: Any, test: Any, space: Any) -> str:
    if space is None:
        return _note("The encoder has no space_ to draw scores in.")
    from .plotting import plot_voxel_map

    if test is not None:
        values, what = test.r, "test Pearson r"
    else:
        values = next((v for v in (_attribute(encoder, "validation_scores_", 0),
                                   _attribute(encoder, "cv_scores_", 0)) if v is not None),
                      None)
        what = "validation Pearson r"
        if values is None:
            return _note("No scores to map: give X_test and y_test.")
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    hi = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
    fig = plot_voxel_map(values, space, titles=[what], cmap="RdBu_r", vmin=-hi, vmax=hi)
    return _figure_html(fig, f"{what} on the brain")


def _history(encoder: Any) -> str:
    history = _attribute(encoder, "history_", 0)
    if not history or not history.get("epoch"):
        return _note(f"{type(encoder).__name__} has no training history (closed-form "
                     "fit).")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = np.asarray(history["epoch"])
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    loss_ax.plot(epochs, history["train_loss"], marker="o", markersize=3)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (z-scored units)")
    score_ax.plot(epochs, history["val_score"], marker="o", markersize=3, color="tab:green")
    score_ax.set_xlabel("epoch")
    score_ax.set_ylabel("validation r (mean over voxels)")
    for ax in (loss_ax, score_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    best = history.get("best_epoch")
    if best is not None:
        score_ax.axvline(best, color="grey", linestyle="--", label=f"best epoch {best}")
        score_ax.legend(fontsize="small")
    facts = [[key.replace("_", " "), history[key]]
             for key in ("best_epoch", "best_score", "final_score", "stopped_early")
             if key in history and not isinstance(history[key], list | dict)]
    return _figure_html(fig, "training history") + (_table(["", ""], facts) if facts else "")


def _parameters(encoder: Any) -> str:
    rows = [[key, repr(value)] for key, value in sorted(encoder.get_params(deep=False).items())]
    return _table(["parameter", "value"], rows)


def _data(encoder: Any, space: Any, test: Any) -> str:
    rows = []
    if space is not None:
        rows.append(["responses", f"{type(space).__name__} ({space.kind}, modality "
                                  f"{space.modality})"])
        rows.append(["modelled columns", f"{space.n_voxels} of {space.n_raw_voxels}"])
        if space.kind == "epochs":
            rows.append(["channels x times", f"{len(space.ch_names)} x {len(space.times)} "
                                             f"({space.times[0]:g} to {space.times[-1]:g} s)"])
    backbone = _attribute(encoder, "backbone_", 0)
    if backbone is not None:
        rows.append(["backbone", type(backbone).__name__])
        names = getattr(backbone, "layer_names", None)
        if names:
            rows.append(["layers", ", ".join(map(str, names))])
    for key, label in (("n_subjects_", "subjects"), ("n_iter_", "epochs run"),
                       ("n_features_in_", "features in")):
        value = _attribute(encoder, key, 0)
        if value is not None:
            rows.append([label, value])
    if test is not None:
        rows.append(["test images", test.n_images])
        if test.several_rois:
            rows.append(["ROIs", ", ".join(map(str, test.rois))])
    return _table(["", ""], rows)
