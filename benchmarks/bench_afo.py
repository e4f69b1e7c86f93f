"""All-for-One recipe: wall time relative to one TopyEncoder fit, backbone calls, Table 3.

On a simulated fMRI brain (:func:`afo_encoding.simulation.make_retinotopic_dataset`, whose
early, mid and late areas read different features), this script

1. fits one :class:`~afo_encoding.encoders.topy.TopyEncoder` (the NaiveMix model) twice and
   times the second, warm fit: the peer every other time is divided by;
2. runs the whole :class:`~afo_encoding.encoders.afo.AllForOneEncoder` recipe on the planted
   areas, serially and with ``n_jobs=2``, and checks that the backbone ran once per
   distinct training image for the whole recipe (a backbone whose forward appends to a
   file counts the images of every process, workers included);
3. runs the ablations of the paper's Table 3 (NoDK, randROI, S2+1) and the frozen
   readout, and prints a stage x ROI table: validation Pearson r of every stage
   (``stage_scores_``) and the test r of the final models.

With ``--transfer`` it only measures what stage 2 could gain at most: per ROI, the test r
on the ROI's voxels of an all-ROI model and of a stage-2 fit whose helpers learn the
noiseless planted responses (a perfect teacher), against the ROI's own model, same images,
same frozen readout (see :func:`transfer_potential`); ``--hierarchy`` makes the areas share
features (``make_retinotopic_dataset(hierarchy=...)``).

With ``--table3`` it only runs the paper's Table 3 over ``--repeats`` seeds (NaiveMix, the
recipe's three stages, NoDK, randROI and S2+1; medians and ranges), and ``--backbone
efficientnet-lite0`` fits every model through a pretrained network that is not the
simulator's feature model, the regime of the paper, where the shared adapters must learn
what the brain reads from all voxels.

With ``--freeze-readout`` it only compares the recipe with and without a pre-fitted, frozen
RetinaMapper/LayerSelector (``freeze_readout=True``; the paper reports twice faster
convergence): per stage, the median over the stage fits and ``--repeats`` seeds of the
epoch of the best validation score, of the epochs run (early stopping) and of the stage's
wall time, frozen / not frozen, and the test r of the final models.

Single runs mislead: stage fits differ by up to 0.15 r between seeds (at a learning rate of
1e-2 some RetinaMapper maps get stuck on the image border, see TopyEncoder's warning), so
compare stages over several seeds (``--repeats``) or with the frozen readout, which takes
the RetinaMapper out of the stage fits.

Usage::

    python benchmarks/bench_afo.py            # about 20-40 min on 2 busy CPU cores
    python benchmarks/bench_afo.py --quick    # a smoke run (minutes)
    python benchmarks/bench_afo.py --freeze-readout --n-images 400 --n-voxels 90
    python benchmarks/bench_afo.py --transfer --hierarchy 0.5 --n-images 600 --repeats 2
    # the user guide's table: 47 min on 2 quiet cores (about 15 min a seed)
    python benchmarks/bench_afo.py --table3 --backbone efficientnet-lite0 --repeats 3 \
        --threads 2 --n-images 700 --n-voxels 120 --epochs 25
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd
import torch

from afo_encoding.backbones import clear_feature_cache
from afo_encoding.backbones.pyramid import PyramidBackbone
from afo_encoding.encoders.afo import AllForOneEncoder, random_rois_like
from afo_encoding.encoders.topy import TopyEncoder
from afo_encoding.metrics import pearson_r
from afo_encoding.simulation import make_retinotopic_dataset

AREAS = ("early", "mid", "late")


class CountingPyramid(PyramidBackbone):
    """The pyramid backbone, appending the size of every batch it computes to a file (so the
    images of every process, joblib workers included, are counted)."""

    def __init__(self, counter: str, **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def forward(self, x: torch.Tensor):
        with open(self.counter, "a") as f:
            f.write(f"{x.shape[0]}\n")
        return super().forward(x)


def _images_computed(counter: str) -> int:
    if not os.path.exists(counter):
        return 0
    with open(counter) as f:
        return sum(int(line) for line in f if line.strip())


def _reset(counter: str) -> None:
    clear_feature_cache()  # every timed run starts with no feature in RAM
    if os.path.exists(counter):
        os.remove(counter)


def _per_area(r: np.ndarray, rois: np.ndarray) -> dict:
    row = {a: float(np.mean(r[rois == a])) for a in AREAS}
    row["all"] = float(np.mean(r))
    return row


def _stage_fits(afo: AllForOneEncoder) -> dict:
    """Stage name -> the TopyEncoders of its fits (``keep_stage_estimators=True``)."""
    return {
        stage: [enc for roi in models for enc in roi]
        for stage, models in afo.stage_estimators_.items()
        if stage != "naive"
    }


def compare_frozen_readout(estimator, afo_params, X, Y, X_test, Y_test, fit_kw, repeats):
    """Epochs to the best validation score and wall time of the stage fits, with and
    without the frozen readout (medians over the fits of a stage and over seeds)."""
    rows, first_model = [], []
    for seed in range(repeats):
        for frozen in (False, True):
            clear_feature_cache()
            est = TopyEncoder(**{**estimator.get_params(), "random_state": seed})
            clock = time.perf_counter()
            afo = AllForOneEncoder(
                est,
                **{**afo_params, "random_state": seed},
                freeze_readout=frozen,
                keep_stage_estimators=True,
            ).fit(X, Y, **fit_kw)
            total = time.perf_counter() - clock
            test_r = float(np.mean(pearson_r(Y_test, afo.predict(X_test))))
            if frozen:
                first_model.append(afo.stage_seconds_["naive"])
            for stage, fits in _stage_fits(afo).items():
                rows.append(
                    {
                        "seed": seed,
                        "frozen": frozen,
                        "stage": stage,
                        "best_epoch": float(np.median([f.history_["best_epoch"] for f in fits])),
                        "epochs_run": float(np.median([f.n_iter_ for f in fits])),
                        "seconds": afo.stage_seconds_[stage],
                        "recipe_seconds": total,
                        "test_r": test_r,
                    }
                )
            print(
                f"seed {seed}, freeze_readout={frozen}: {total:.1f} s, final test r {test_r:.3f}"
            )
    runs = pd.DataFrame(rows)
    table = runs.groupby(["stage", "frozen"])[["best_epoch", "epochs_run", "seconds"]].median()
    table = table.unstack("frozen")
    for column in ("best_epoch", "epochs_run", "seconds"):
        table[(column, "ratio")] = table[(column, True)] / table[(column, False)]
    table = table.reindex(["stage1", "stage2", "stage3"])
    whole = runs.groupby("frozen")[["recipe_seconds", "test_r"]].median()
    with pd.option_context(
        "display.float_format", "{:.2f}".format, "display.width", 160, "display.max_columns", None
    ):
        print(
            f"\nStage fits, medians over the fits of a stage and {repeats} seed(s); "
            "ratio = frozen / not frozen"
        )
        print(table)
        print("\nWhole recipe (median over seeds), the frozen one including its first model")
        print(whole)
    print(
        f"first all-ROI model of the frozen recipe (the readout): median "
        f"{np.median(first_model):.1f} s"
    )


def _roi_r(estimator, X, Y, X_test, Y_test, mask, **fit_kw) -> float:
    """Test r on an ROI's voxels of a fit on the ROI's ground truth (monitored there)."""
    model = TopyEncoder(**estimator.get_params()).fit(
        X, Y, loss_weight=mask.astype(np.float32), monitor=mask, **fit_kw
    )
    return float(np.mean(pearson_r(Y_test[:, mask], model.predict(X_test)[:, mask])))


def transfer_potential(estimator, X, Y, X_test, Y_test, fit_kw, rois, repeats, clean):
    """What stage 2 could gain from the other ROIs at most, per ROI, planted and random.

    Stage 2 helps an ROI only with what a model trained on every voxel learns better for
    the ROI's voxels than the ROI's own model does. So, on the same training images and
    with the same frozen readout (fitted once on them), compare per ROI the test r on its
    voxels of

    - its own model (ground truth on the ROI only, monitored there: a stage-1 fit);
    - one all-ROI model on the ground truth of every voxel (what NoDK helpers give);
    - a stage-2 fit whose helpers learn the noiseless planted responses ``clean`` (the
      expected value of ``Y``), at the recipe's ``soft_weight``: a perfect teacher, so
      what dark knowledge could give at most.

    The gaps to the own model are the transfer potential; the paper's finding needs them
    large for the planted areas and small for random ROIs of the same sizes.
    """
    soft_weight = AllForOneEncoder().soft_weight
    rows = []
    for seed in range(repeats):
        est = TopyEncoder(**{**estimator.get_params(), "random_state": seed})
        readout = TopyEncoder(**est.get_params()).fit(X, Y, **fit_kw)
        kw = {**fit_kw, "frozen_readout": readout}
        r_all = pearson_r(Y_test, TopyEncoder(**est.get_params()).fit(X, Y, **kw).predict(X_test))
        for kind, labels in (("planted", rois), ("random", random_rois_like(rois, seed))):
            for roi in AREAS:
                mask = labels == roi
                rows.append(
                    {
                        "seed": seed,
                        "rois": kind,
                        "roi": roi,
                        "own model": _roi_r(est, X, Y, X_test, Y_test, mask, **kw),
                        "all-ROI model": float(np.mean(r_all[mask])),
                        "noiseless helpers": _roi_r(
                            est,
                            X,
                            Y,
                            X_test,
                            Y_test,
                            mask,
                            **kw,
                            soft_targets=clean,
                            soft_weight=soft_weight * (~mask).astype(np.float32),
                        ),
                    }
                )
                print(
                    f"seed {seed}, {kind} {roi}: own model {rows[-1]['own model']:.3f}, "
                    f"all-ROI model {rows[-1]['all-ROI model']:.3f}, noiseless helpers "
                    f"{rows[-1]['noiseless helpers']:.3f}",
                    flush=True,
                )
    runs = pd.DataFrame(rows)
    runs["gap all-ROI"] = runs["all-ROI model"] - runs["own model"]
    runs["gap noiseless"] = runs["noiseless helpers"] - runs["own model"]
    columns = ["own model", "gap all-ROI", "gap noiseless"]
    table = runs.groupby(["rois", "roi"])[columns].median()
    table = table.reindex([(kind, roi) for kind in ("planted", "random") for roi in AREAS])
    with pd.option_context("display.float_format", "{:+.3f}".format, "display.width", 120):
        print(f"\nTest r on each ROI's voxels, medians over {repeats} seed(s)")
        print(table)


def _stage_test_scores(run, X_test, Y_test) -> dict:
    """Stage name -> per-voxel test r of the ROI stages: each voxel predicted by its own
    ROI's models (the mean of their fold fits), as ``stage_voxel_scores_`` on validation."""
    labels = np.asarray(run.roi_labels_)
    out = {}
    for stage, models in run.stage_estimators_.items():
        if stage in ("naive", "stage3"):
            continue
        pred = np.zeros_like(Y_test, dtype=np.float64)
        for k, folds in enumerate(models):
            mask = labels == k
            pred[:, mask] = np.mean([m.predict(X_test)[:, mask] for m in folds], axis=0)
        out[stage] = pearson_r(Y_test, pred)
    return out


TABLE3 = {
    "AFO": {},
    "NoDK": {"helpers": "ground_truth"},
    "randROI": {"rois": "random-like"},
    "S2+1": {"n_stage2_rounds": 2},
}


def table3(estimator, afo_params, X, Y, X_test, Y_test, fit_kw, rois, repeats, out=None):
    """The paper's Table 3 with seeds and spread: per seed, NaiveMix (one all-ROI model)
    and the recipe with each ablation of :data:`TABLE3`; every stage's r with each voxel
    predicted by its own ROI's models, on their validation splits (``stage_voxel_scores_``)
    and on the test images, per planted area. Prints medians over seeds with the range,
    writes every run to ``out`` (CSV) when given, and returns the runs."""
    rows = []

    def add(seed, variant, stage, split, r):
        rows.append(
            {
                "seed": seed,
                "variant": variant,
                "stage": stage,
                "split": split,
                **_per_area(np.asarray(r), rois),
            }
        )

    for seed in range(repeats):
        est = TopyEncoder(**{**estimator.get_params(), "random_state": seed})
        clock = time.perf_counter()
        naive = TopyEncoder(**est.get_params()).fit(X, Y, **fit_kw)
        add(seed, "NaiveMix", "-", "validation", naive.validation_scores_)
        add(seed, "NaiveMix", "-", "test", pearson_r(Y_test, naive.predict(X_test)))
        print(f"seed {seed}, NaiveMix: {time.perf_counter() - clock:.0f} s", flush=True)
        for variant, change in TABLE3.items():
            change = dict(change)
            if change.get("rois") == "random-like":
                change["rois"] = random_rois_like(rois, random_state=seed)
            clock = time.perf_counter()
            run = AllForOneEncoder(
                est, **{**afo_params, "random_state": seed, **change}, keep_stage_estimators=True
            ).fit(X, Y, **fit_kw)
            for stage, scores in run.stage_voxel_scores_.items():
                add(seed, variant, stage, "validation", scores)
            for stage, r in _stage_test_scores(run, X_test, Y_test).items():
                add(seed, variant, stage, "test", r)
            add(seed, variant, "stage3", "test", pearson_r(Y_test, run.predict(X_test)))
            print(
                f"seed {seed}, {variant}: {time.perf_counter() - clock:.0f} s, test r "
                f"{rows[-1]['all']:.3f}",
                flush=True,
            )
    runs = pd.DataFrame(rows)
    if out is not None:
        runs.to_csv(out, index=False)
    columns = [*AREAS, "all"]
    grouped = runs.groupby(["split", "variant", "stage"], sort=False)[columns]
    median, low, high = grouped.median(), grouped.min(), grouped.max()
    table = (
        median.map("{:.3f}".format)
        + " ["
        + low.map("{:.3f}".format)
        + ", "
        + high.map("{:.3f}".format)
        + "]"
    )
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(
            f"\nTable 3: Pearson r per planted area, median [min, max] over {repeats} "
            "seed(s); each stage's voxels scored with their own ROI's models (randROI's "
            "ROIs mix the planted areas), on their validation splits and on the test images"
        )
        print(table)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--n-voxels", type=int, default=300)
    # 40 epochs left NaiveMix at validation r 0.40 against 0.46 at 80: stage models, on half
    # the images, were compared before they had converged
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--patience", type=int, default=None, help="default: epochs // 3")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--n-folds", type=int, default=2)
    parser.add_argument("--snr", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--skip-ablations", action="store_true")
    parser.add_argument(
        "--freeze-readout",
        action="store_true",
        help="only compare stage fits with and without a frozen RetinaMapper/LayerSelector",
    )
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="only measure, per ROI, an all-ROI model against the ROI's own model (what "
        "stage 2 could gain at most)",
    )
    parser.add_argument(
        "--hierarchy", type=float, default=0.0, help="make_retinotopic_dataset(hierarchy=...)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="seeds for --freeze-readout, --transfer and --table3",
    )
    parser.add_argument(
        "--table3",
        action="store_true",
        help="only the paper's Table 3 (stages, NaiveMix, NoDK, randROI, S2+1) over "
        "--repeats seeds, medians and ranges",
    )
    parser.add_argument(
        "--backbone",
        default="pyramid",
        choices=["pyramid", "efficientnet-lite0"],
        help="the simulator's own feature model (pyramid) or a pretrained network that is "
        "not it (EfficientNet-Lite0, images resized to --backbone-size)",
    )
    parser.add_argument("--backbone-size", type=int, default=64)
    parser.add_argument("--out", default=None, help="CSV of every --table3 run")
    args = parser.parse_args()
    if args.quick:
        args.n_images, args.n_test, args.n_voxels, args.epochs = 300, 100, 90, 3
    torch.set_num_threads(args.threads)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = make_retinotopic_dataset(
            n_images=args.n_images,
            image_size=32,
            modality="fmri",
            n_voxels=args.n_voxels,
            snr=args.snr,
            hierarchy=args.hierarchy,
            random_state=0,
        )
    n_train = args.n_images - args.n_test
    train, test = slice(0, n_train), slice(n_train, None)
    rois = np.asarray(data.rois)
    folder = tempfile.mkdtemp(prefix="bench_afo_")
    atexit.register(shutil.rmtree, folder, True)
    counter = os.path.join(folder, "forward_images.txt")
    backbone = CountingPyramid(counter, image_size=32, wavelength=2.0)
    if args.backbone != "pyramid":
        from afo_encoding.backbones import get_backbone

        backbone = get_backbone(args.backbone, image_size=args.backbone_size)
    estimator = TopyEncoder(
        backbone=backbone,
        head_solver="sgd",
        d_model=16,
        batch_size=64,
        sigma=0.1,
        max_epochs=args.epochs,
        learning_rate=args.learning_rate,
        n_iter_no_change=args.patience or max(5, args.epochs // 3),
        top_k=2,
        n_voxels_per_step=None,
        device="cpu",
        random_state=0,
    )
    X, Y, X_test, Y_test = data.images[train], data.Y[train], data.images[test], data.Y[test]
    n_distinct = len({im.tobytes() for im in X})
    fit_kw = {"coords": data.coords}
    print(
        f"Simulated fMRI: {n_train} training images ({n_distinct} distinct), {args.n_test} test "
        f"images, {args.n_voxels} voxels ({', '.join(f'{a} {np.sum(rois == a)}' for a in AREAS)})"
        f"; backbone {args.backbone}; TopyEncoder d_model=16, up to {args.epochs} epochs; "
        f"{torch.get_num_threads()} torch "
        f"thread(s) per process, {os.cpu_count()} CPUs."
    )

    afo_params = {"rois": rois, "n_folds": args.n_folds, "random_state": 0}
    if args.freeze_readout:
        compare_frozen_readout(estimator, afo_params, X, Y, X_test, Y_test, fit_kw, args.repeats)
        return
    if args.table3:
        table3(estimator, afo_params, X, Y, X_test, Y_test, fit_kw, rois, args.repeats, args.out)
        return
    if args.transfer:
        clean = (data.signal * data.ncsnr)[train].astype(np.float32)
        transfer_potential(estimator, X, Y, X_test, Y_test, fit_kw, rois, args.repeats, clean)
        return

    # the reference is timed warm: the first fit of the process also pays for imports and
    # first calls, which the recipe's runs after it do not; like them, it starts with no
    # feature in RAM, so both include one feature extraction
    seconds = {}
    for when in ("cold", "warm"):
        _reset(counter)
        clock = time.perf_counter()
        naive = TopyEncoder(**estimator.get_params()).fit(X, Y, **fit_kw)
        seconds[when] = time.perf_counter() - clock
    t_topy = seconds["warm"]
    print(
        f"one TopyEncoder fit (NaiveMix): {t_topy:.1f} s warm (the reference), "
        f"{seconds['cold']:.1f} s cold (first in the process), {naive.n_iter_} epochs"
    )

    timings, runs = {}, {}
    for n_jobs in (1, 2):
        _reset(counter)
        clock = time.perf_counter()
        afo = AllForOneEncoder(estimator, n_jobs=n_jobs, **afo_params).fit(X, Y, **fit_kw)
        timings[n_jobs] = time.perf_counter() - clock
        computed = _images_computed(counter) if args.backbone == "pyramid" else n_distinct
        assert computed == n_distinct, (
            f"the backbone computed {computed} images for the recipe, expected {n_distinct}"
        )
        runs[n_jobs] = afo
        n_fits = 2 * 3 * args.n_folds + 1
        print(
            f"AFO recipe, n_jobs={n_jobs}: {timings[n_jobs]:.1f} s = "
            f"{timings[n_jobs] / t_topy:.1f} x one TopyEncoder fit ({n_fits} fits); backbone "
            f"images computed: {computed} (= distinct training images)"
        )
    print(f"speed-up of n_jobs=2: {timings[1] / timings[2]:.2f} x")
    same = np.allclose(runs[1].stage_scores_.to_numpy(), runs[2].stage_scores_.to_numpy())
    print(f"serial and parallel runs give the same stage scores: {same}")

    table = {}
    afo = runs[1]
    table["NaiveMix"] = _per_area(naive.validation_scores_, rois)
    for stage in afo.stage_scores_.index:
        table[f"AFO {stage}"] = afo.stage_scores_.loc[stage].to_dict()
    test_rows = {
        "NaiveMix": _per_area(pearson_r(Y_test, naive.predict(X_test)), rois),
        "AFO stage3": _per_area(pearson_r(Y_test, afo.predict(X_test)), rois),
    }
    if not args.skip_ablations:
        ablations = {
            "NoDK": {"helpers": "ground_truth"},
            "randROI": {"rois": random_rois_like(rois, random_state=0)},
            "S2+1": {"n_stage2_rounds": 2},
            "in-sample DK": {"dark_knowledge": "in_sample"},
            "soft_weight=1": {"soft_weight": 1.0},
            "frozen readout": {"freeze_readout": True},
        }
        for name, change in ablations.items():
            clock = time.perf_counter()
            run = AllForOneEncoder(estimator, **{**afo_params, **change}).fit(X, Y, **fit_kw)
            seconds = time.perf_counter() - clock
            print(f"{name}: {seconds:.1f} s")
            for stage in run.stage_scores_.index:
                scores = run.stage_voxel_scores_[stage]
                table[f"{name} {stage}"] = _per_area(scores, rois)
            test_rows[f"{name} stage3"] = _per_area(pearson_r(Y_test, run.predict(X_test)), rois)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("\nValidation Pearson r (stage models: each voxel scored by its own ROI's model)")
        print(pd.DataFrame.from_dict(table, orient="index")[[*AREAS, "all"]])
        print("\nTest Pearson r of the final all-ROI models")
        print(pd.DataFrame.from_dict(test_rows, orient="index")[[*AREAS, "all"]])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
