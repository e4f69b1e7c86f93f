"""The ``afo-encoding demo``: fit a TopyEncoder on a simulated brain, next to the linear probe.

:func:`run_demo` simulates a visual cortex seeing procedural images
(:func:`afo_encoding.simulation.make_retinotopic_dataset`), fits a
:class:`~afo_encoding.encoders.topy.TopyEncoder` with its defaults and a
:class:`~afo_encoding.encoders.linear.LinearProbeEncoder` on the same Gabor-pyramid
backbone (seconds on 2 cores), predicts held-out images, and prints, per visual area, the
mean Pearson r of both next to the planted noise ceiling, what the TopyEncoder learned
about the planted retinotopy, and the table in words. The scores go to ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: the simulated data set and the backbone of the demo, sized for a laptop CPU: 32-px images
#: whose three simulated feature scales (Gabor wavelengths 2, 4 and 8 px) are the first
#: three levels of a pyramid of wavelength 2 px. Everything else is TopyEncoder's defaults
#: (the ridge recipe); ``afo-encoding demo --paper`` runs the paper's SGD recipe instead.
DEMO_DATA = {"n_images": 1600, "image_size": 32, "n_voxels": 600, "n_repeats": 3, "snr": 1.0}
DEMO_ENCODER = {
    "backbone": "pyramid",
    "backbone_params": {"image_size": 32, "wavelength": 2.0},
}
#: the paper's recipe (``head_solver="sgd"``) at a laptop's budget: before the ridge recipe
#: it was the demo's; it shows what the closed-form heads gained
PAPER_ENCODER = {
    **DEMO_ENCODER,
    "head_solver": "sgd",
    "d_model": 32,
    "batch_size": 64,
    # 1,600 images instead of NSD's 10,000 per subject and a few hundred steps: a noise of
    # 0.1 (paper: 0.01) lets the voxels explore the image, a step of 1e-2 (paper: 3e-3) lets
    # the heads grow in time, a tenth of it keeps the RetinaMapper off the border
    "sigma": 0.1,
    "learning_rate": 1e-2,
    "retina_lr_scale": 0.1,
    "max_epochs": 120,
    "n_iter_no_change": 20,
    "top_k": 5,
}
N_TEST = 200
#: ``afo-encoding demo --quick``: a smoke test of the whole demo in seconds (a smaller
#: brain, fewer images, two epochs); its scores say that everything runs, not how well
QUICK_DATA = {**DEMO_DATA, "n_images": 400, "n_voxels": 150, "n_repeats": 2}
QUICK_N_TEST = 80
QUICK_MAX_EPOCHS = 2


def _area_table(rois, r, ceiling, retina, prf, r_linear=None) -> list[dict[str, Any]]:
    rows = []
    for area in ("early", "mid", "late", "all"):
        sel = np.ones(len(r), bool) if area == "all" else np.asarray(rois) == area
        if not sel.any():
            continue
        row = {
            "area": area,
            "voxels": int(sel.sum()),
            "r": float(np.mean(r[sel])),
            "noise_ceiling": float(np.mean(ceiling[sel])),
        }
        row["fraction_of_ceiling"] = row["r"] / row["noise_ceiling"]
        if r_linear is not None:
            row["r_linear_probe"] = float(np.mean(r_linear[sel]))
        if retina is not None and sel.sum() > 2:
            row["retina_r_x"], row["retina_r_y"] = (
                float(np.corrcoef(retina[sel, a], prf[sel, a])[0, 1]) for a in range(2)
            )
        rows.append(row)
    return rows


def _format_table(rows: list[dict[str, Any]], modality: str) -> str:
    unit = "voxels" if modality == "fmri" else "columns"
    lines = [
        f"{'area':<6} {unit:>8} {'TopyEncoder r':>14} {'linear probe r':>15} {'difference':>11}"
        f" {'noise ceiling':>14} {'r / ceiling':>12} {'retina r (x, y)':>16}",
    ]
    for row in rows:
        retina = (
            f"{row['retina_r_x']:+.2f}, {row['retina_r_y']:+.2f}" if "retina_r_x" in row else ""
        )
        lines.append(
            f"{row['area']:<6} {row['voxels']:>8d} {row['r']:>14.3f}"
            f" {row['r_linear_probe']:>15.3f} {row['r'] - row['r_linear_probe']:>+11.3f}"
            f" {row['noise_ceiling']:>14.3f} {row['fraction_of_ceiling']:>12.0%} {retina:>16}"
        )
    return "\n".join(lines)


#: differences of mean r smaller than this are called a tie in the demo's summary
TIE = 0.005


def _in_words(rows: list[dict[str, Any]], seconds: dict[str, float]) -> str:
    """The table in a sentence: where TopyEncoder wins, ties or loses, and what it cost."""
    verdicts: dict[str, list[str]] = {"beats": [], "ties with": [], "loses to": []}
    for row in rows:
        if row["area"] == "all":
            continue
        diff = row["r"] - row["r_linear_probe"]
        verdict = "beats" if diff > TIE else "loses to" if diff < -TIE else "ties with"
        verdicts[verdict].append(f"{row['area']} {diff:+.3f}")
    parts = [f"{verdict} the linear probe in {', '.join(areas)}"
             for verdict, areas in verdicts.items() if areas]
    ratio = seconds["fit"] / max(seconds["fit_linear_probe"], 1e-9)
    return (
        f"TopyEncoder {'; it '.join(parts)} (mean test r, same backbone, same images). "
        f"Fit: {seconds['fit']:.1f} s against {seconds['fit_linear_probe']:.1f} s for the "
        f"linear probe ({ratio:.0f}x)."
    )


def run_demo(
    modality: str = "fmri",
    out_dir: str | Path = "afo_demo",
    random_state: int | None = 0,
    verbose: bool | int | str | None = True,
    device: str = "auto",
    paper: bool = False,
    max_epochs: int | None = None,
    quick: bool = False,
    **encoder_params: Any,
) -> dict[str, Any]:
    """Fit a TopyEncoder on a simulated brain; print and save per-area scores.

    Parameters
    ----------
    modality : {"fmri", "eeg", "meg"}
        What the simulated recording is: a 4D Niimg of occipital voxels, or EEG / MEG
        epochs (a "voxel" is then a sensor x time point).
    out_dir : str or Path
        Folder for ``scores.csv`` (one row per voxel: area, test r of the TopyEncoder and
        of the linear probe, noise ceiling, learned and planted pRF centre),
        ``summary.json`` (per-area table, settings, timings), the figures of
        :func:`afo_encoding.plotting.plot_encoder_report` under ``figures/``,
        ``report.html`` (:func:`afo_encoding.report.generate_report`: one self-contained
        page), and for fMRI ``test_r.nii.gz``, the test r of every voxel on the brain.
    random_state : int or None
        Seed of the simulation and of the fit.
    verbose : bool, int or str
        Progress bars and steps (the table is printed in any case).
    device : str
        Where to train (``"auto"``: a GPU when there is one).
    paper : bool
        Fit the paper's recipe (:data:`PAPER_ENCODER`: SGD-trained heads) instead of
        TopyEncoder's defaults (:data:`DEMO_ENCODER`: closed-form ridge heads).
    max_epochs : int or None
        Epochs of the TopyEncoder's fit (``None``: the recipe's own, or 2 with
        ``quick``).
    quick : bool
        A smoke test in seconds: a smaller simulated brain (:data:`QUICK_DATA`), fewer
        test images and 2 epochs; the scores say that everything runs, not how well.
    **encoder_params
        Override other parameters of the encoder.

    Returns
    -------
    summary : dict
        ``areas`` (the printed table as a list of dicts), ``modality``, ``settings``,
        ``seconds`` per step, ``out_dir``.
    """
    from ._logging import use_log_level
    from .simulation import make_retinotopic_dataset

    if modality not in ("fmri", "eeg", "meg"):
        raise ValueError(f"modality must be 'fmri', 'eeg' or 'meg', got {modality!r}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(
            max_epochs, int) or max_epochs < 1):
        raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}.")
    data_params, n_test = (QUICK_DATA, QUICK_N_TEST) if quick else (DEMO_DATA, N_TEST)
    if max_epochs is None and quick:
        max_epochs = QUICK_MAX_EPOCHS
    if max_epochs is not None:
        encoder_params["max_epochs"] = max_epochs
    seconds = {}
    with use_log_level(verbose):
        clock = time.perf_counter()
        data = make_retinotopic_dataset(
            modality=modality, random_state=random_state, verbose=verbose, **data_params
        )
        seconds["simulate"] = time.perf_counter() - clock
        params = {**(PAPER_ENCODER if paper else DEMO_ENCODER), **encoder_params}
        fits = _fit_both(data, modality, params, device, random_state, verbose, seconds, n_test)
    encoder, probe, r, r_linear, y_test, test = fits

    # the simulator's columns are the encoder's voxels (none is dropped: all carry signal)
    keep = encoder.space_.keep
    ceiling = np.asarray(data.noise_ceiling)[keep]
    rois = np.asarray(data.rois)[keep]
    prf = np.asarray(data.prf_center)[keep]
    retina = encoder.retina_map_ if modality == "fmri" else None
    rows = _area_table(rois, r, ceiling, retina, prf, r_linear)
    summary = {
        "modality": modality,
        "areas": rows,
        "epochs": encoder.n_iter_,
        "validation_r": encoder.history_["final_score"],
        "in_words": _in_words(rows, seconds),
        "validation_r_per_epoch": encoder.history_["val_score"],
        "settings": {
            "data": data_params,
            "encoder": params,
            "random_state": random_state,
            "n_test_images": n_test,
            "quick": quick,
        },
        "seconds": seconds,
        "out_dir": str(out_dir),
    }
    _write_scores(out_dir / "scores.csv", rois, r, r_linear, ceiling, encoder.retina_map_, prf)
    # written now and again once the figures exist, so a failed figure loses no score
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if modality == "fmri":
        encoder.inverse_transform(r[None].astype(np.float32)).to_filename(
            out_dir / "test_r.nii.gz"
        )

    from .plotting import plot_encoder_report

    clock = time.perf_counter()
    figures = plot_encoder_report(
        encoder, data.images[test], y_test, out_dir / "figures",
        rois=np.asarray(data.rois), noise_ceiling=np.asarray(data.noise_ceiling),
        baseline=probe, roi_order=("early", "mid", "late"),
    )
    seconds["figures"] = time.perf_counter() - clock
    summary["figures"] = {name: str(path) for name, path in figures.items()}
    from .report import generate_report

    clock = time.perf_counter()
    generate_report(
        encoder, data.images[test], y_test, baseline=probe, rois=np.asarray(data.rois),
        noise_ceiling=np.asarray(data.noise_ceiling), roi_order=("early", "mid", "late"),
        title=f"TopyEncoder on a simulated {modality.upper()} recording (afo-encoding demo)",
        output_file=out_dir / "report.html",
    )
    seconds["report"] = time.perf_counter() - clock
    summary["report"] = str(out_dir / "report.html")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))

    recipe = "the paper's SGD recipe" if paper else "defaults"
    header = (
        f"TopyEncoder ({recipe}) and "
        f"LinearProbeEncoder on a simulated {modality.upper()} recording: "
        f"{len(data.images) - n_test} training images, {n_test} test images, {len(r)} "
        f"{'voxels' if modality == 'fmri' else 'columns'}."
    )
    sys.stdout.write(
        f"{header}\n{_format_table(rows, modality)}\n{summary['in_words']}\n"
        f"Scores written to {out_dir}; open {out_dir / 'report.html'} in a browser.\n"
    )
    return summary


def _fit_both(data, modality, params, device, random_state, verbose, seconds, n_test) -> tuple:
    """Fit the TopyEncoder and the linear probe on all but the last ``n_test`` images and
    score both on those; ``seconds`` gets the timings. Returns both models, their test r
    per voxel, the test responses and the test indices."""
    from ._logging import logger
    from .encoders.linear import LinearProbeEncoder
    from .encoders.topy import TopyEncoder
    from .metrics import pearson_r

    n = len(data.images)
    train, test = np.arange(n - n_test), np.arange(n - n_test, n)
    if modality == "fmri":
        from nilearn.image import index_img

        y_train, y_test = index_img(data.responses, train), index_img(data.responses, test)
    else:
        y_train, y_test = data.responses[train], data.responses[test]
    encoder = TopyEncoder(
        **params, mask=data.mask, device=device, random_state=random_state, verbose=verbose
    )
    logger.info("Fitting %r", encoder)
    clock = time.perf_counter()
    encoder.fit(data.images[train], y_train)
    seconds["fit"] = time.perf_counter() - clock
    clock = time.perf_counter()
    predicted = encoder.predict(data.images[test])
    seconds["predict"] = time.perf_counter() - clock
    r = pearson_r(encoder.space_.transform(y_test), predicted)

    clock = time.perf_counter()
    probe = LinearProbeEncoder(
        backbone=params["backbone"],
        backbone_params=params.get("backbone_params"),
        mask=data.mask,
        device=device,
        random_state=random_state,
        verbose=verbose,
    ).fit(data.images[train], y_train)
    seconds["fit_linear_probe"] = time.perf_counter() - clock
    r_linear = pearson_r(probe.space_.transform(y_test), probe.predict(data.images[test]))
    return encoder, probe, r, r_linear, y_test, test


def _write_scores(path: Path, rois, r, r_linear, ceiling, retina_map, prf) -> None:
    """``scores.csv``: one row per voxel."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["column", "area", "r", "r_linear_probe", "noise_ceiling", "retina_x", "retina_y",
             "prf_x", "prf_y"]
        )
        for i in range(len(r)):
            writer.writerow(
                [
                    i,
                    rois[i],
                    f"{r[i]:.5f}",
                    f"{r_linear[i]:.5f}",
                    f"{ceiling[i]:.5f}",
                    *(f"{v:.4f}" for v in retina_map[i]),
                    *(f"{v:.4f}" for v in prf[i]),
                ]
            )
