"""Per-voxel ridge with cross-validated alphas: afo-encoding vs himalaya vs scikit-learn.

Side by side, in one run, on the same arrays: ``afo_encoding.encoders.ridge.ridge_cv``
(numpy and torch CPU backends), himalaya's ``RidgeCV`` (torch backend) and scikit-learn's
``RidgeCV(alpha_per_target=True)``, with an intercept, the same alphas and, for himalaya,
the same K-fold splits and the same selection score (R^2, averaged over folds; himalaya's
default would be the L2 loss). scikit-learn cannot combine ``alpha_per_target`` with K-fold
splits: it runs its efficient leave-one-out (GCV) instead, so its alphas are compared for
information only.

Each fit runs in a fresh subprocess so that peak memory is measured cleanly: after the
arrays are loaded, the kernel's high-water mark is reset (``/proc/self/clear_refs``) and
``VmHWM`` is read after the fit; torch allocations are included, which ``tracemalloc``
would miss. Methods are interleaved over the repeats and medians are reported, because
the machine may be shared.

Usage::

    python benchmarks/bench_linear_probe.py                       # 3,000 x 1,000 x 30,000
    python benchmarks/bench_linear_probe.py --n-samples 10000 --n-targets 100000 \\
        --methods ours-numpy himalaya --repeats 1 --himalaya-batch 10000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("ours-numpy", "ours-torch", "himalaya", "sklearn")


def make_data(n_samples, n_features, n_targets, n_test, folder, seed=0):
    """PCA-like features (decaying spectrum, non-zero mean) and voxels of varied SNR."""
    rng = np.random.default_rng(seed)
    scale = np.logspace(0, -1.5, n_features).astype(np.float32)
    x = rng.standard_normal((n_samples + n_test, n_features), dtype=np.float32) * scale + 1
    weights = rng.standard_normal((n_features, n_targets), dtype=np.float32)
    weights *= rng.uniform(0, 0.3, n_targets).astype(np.float32) ** 2 * 3
    y = x[:n_samples] @ weights
    y += rng.standard_normal((n_samples, n_targets), dtype=np.float32)
    y += rng.uniform(-5, 5, n_targets).astype(np.float32)
    np.save(folder / "x.npy", x[:n_samples])
    np.save(folder / "x_test.npy", x[n_samples:])
    np.save(folder / "y.npy", y)


def _memory_kib():
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
    )
    return int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def run_child(method, folder, out, alphas, n_folds, threads, himalaya_batch, save):
    """Fit one method on the saved arrays and write timing, memory, alphas, predictions."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HimalayaRidgeCV
    from himalaya.scoring import r2_score
    from sklearn.linear_model import RidgeCV as SklearnRidgeCV
    from sklearn.model_selection import KFold

    from afo_encoding.encoders.ridge import ridge_cv

    x = np.load(folder / "x.npy")
    y = np.load(folder / "y.npy")
    x_test = np.load(folder / "x_test.npy")
    Path("/proc/self/clear_refs").write_text("5")
    baseline, _ = _memory_kib()

    start = time.perf_counter()
    if method.startswith("ours"):
        result = ridge_cv(x, y, alphas, cv=n_folds, backend=method.split("-")[1])
        elapsed = time.perf_counter() - start
        chosen = result.alpha
        predictions = x_test @ result.coef + result.intercept
        if save:
            np.save(out.with_suffix(".scores.npy"), result.alpha_scores)
    elif method == "himalaya":
        set_backend("torch")
        params = {"score_func": r2_score}
        if himalaya_batch:
            params.update(n_targets_batch=himalaya_batch, n_targets_batch_refit=himalaya_batch)
        model = HimalayaRidgeCV(
            alphas=alphas, fit_intercept=True, cv=KFold(n_folds), solver_params=params
        )
        model.fit(x, y)
        elapsed = time.perf_counter() - start
        chosen = np.asarray(model.best_alphas_.cpu())
        predictions = np.asarray(model.predict(x_test).cpu())
    elif method == "sklearn":
        model = SklearnRidgeCV(alphas=alphas, fit_intercept=True, alpha_per_target=True)
        model.fit(x, y)
        elapsed = time.perf_counter() - start
        chosen = np.asarray(model.alpha_)
        predictions = model.predict(x_test)
    else:
        raise ValueError(method)
    _, peak = _memory_kib()
    if save:
        np.save(out.with_suffix(".alphas.npy"), chosen)
        np.save(out.with_suffix(".pred.npy"), predictions.astype(np.float32))
    out.write_text(json.dumps({"time": elapsed, "peak_kib": peak, "baseline_kib": baseline}))


def compare(folder, reference, other, alphas):
    """Alpha and held-out prediction agreement of ``other`` with ``reference``.

    Prediction differences are relative to each voxel's standard deviation in the data.
    """
    a_ref, a_other = (np.load(folder / f"{m}.0.alphas.npy") for m in (reference, other))
    p_ref, p_other = (np.load(folder / f"{m}.0.pred.npy") for m in (reference, other))
    scale = np.load(folder / "y.npy", mmap_mode="r").std(0)
    # himalaya returns float32 alphas: compare grid positions
    rows_ref, rows_other = (
        np.abs(np.log(a)[None] - np.log(alphas)[:, None]).argmin(0) for a in (a_ref, a_other)
    )
    same = rows_ref == rows_other
    steps = np.abs(rows_ref - rows_other)
    error = np.abs(p_ref - p_other) / scale
    stats = {
        "alphas equal": f"{same.mean():.4%}",
        "grid steps apart (max)": f"{steps.max():.0f}",
        "pred. diff / voxel std, same alpha (max)": f"{error[:, same].max():.2e}",
        "all voxels (median, max)": f"{np.median(error):.2e}, {error.max():.2e}",
    }
    scores_file = folder / f"{other}.0.scores.npy"
    if scores_file.exists() and not same.all():
        # how far apart, in our own CV scores, the two choices are where they differ
        scores = np.load(scores_file)
        columns = np.flatnonzero(~same)
        gap = scores[rows_other[columns], columns] - scores[rows_ref[columns], columns]
        stats["CV R^2 gap where alphas differ (max)"] = f"{gap.max():.1e}"
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=3000)
    parser.add_argument("--n-features", type=int, default=1000)
    parser.add_argument("--n-targets", type=int, default=30000)
    parser.add_argument("--n-alphas", type=int, default=20)
    parser.add_argument("--n-folds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--himalaya-batch", type=int, default=0, help="himalaya n_targets_batch (0: all)"
    )
    parser.add_argument("--data", type=Path, help="folder for the arrays (default: a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    alphas = np.logspace(-1, 6, args.n_alphas)

    if args.child:
        run_child(
            args.child, args.data, args.out, alphas, args.n_folds, args.threads,
            args.himalaya_batch, args.save,
        )  # fmt: skip
        return

    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        folder = Path(tmp)
        print(
            f"{args.n_samples} samples x {args.n_features} features x {args.n_targets} targets, "
            f"{args.n_alphas} alphas, {args.n_folds}-fold CV, {args.threads} threads, "
            f"{args.repeats} repeats",
            flush=True,
        )
        make_data(args.n_samples, args.n_features, args.n_targets, 500, folder)
        runs = {method: [] for method in args.methods}
        comparisons = []
        for repeat in range(args.repeats):
            for method in args.methods:
                out = folder / f"{method}.{repeat}.json"
                command = [
                    sys.executable, __file__, "--child", method, "--data", str(folder),
                    "--out", str(out), "--n-folds", str(args.n_folds),
                    "--n-alphas", str(args.n_alphas), "--threads", str(args.threads),
                    "--himalaya-batch", str(args.himalaya_batch),
                ] + (["--save"] if repeat == 0 else [])  # fmt: skip
                subprocess.run(command, check=True)
                runs[method].append(json.loads(out.read_text()))
                last = runs[method][-1]
                print(
                    f"  run {repeat}: {method:11s} {last['time']:8.1f} s, peak "
                    f"{last['peak_kib'] / 2**20:5.2f} GiB",
                    flush=True,
                )
            if repeat == 0 and "himalaya" in runs:
                for method in args.methods:
                    if method != "himalaya":
                        stats = compare(folder, "himalaya", method, alphas)
                        line = "; ".join(f"{k} {v}" for k, v in stats.items())
                        comparisons.append(f"{method} vs himalaya: {line}")
                        print(f"  {comparisons[-1]}", flush=True)

        def median(method, key):
            return float(np.median([run[key] for run in runs[method]]))

        def paired(method, peer):
            # per-round ratios: robust to the load of a shared machine drifting over time
            pairs = zip(runs[method], runs[peer])
            return float(np.median([a["time"] / b["time"] for a, b in pairs]))

        print(
            f"\n{'method':11s} {'median s':>9s} {'/himalaya':>9s} {'/sklearn':>9s} "
            f"{'peak GiB':>9s} {'above data':>10s}   (ratios: median of per-round ratios)"
        )
        for method in args.methods:
            seconds = median(method, "time")
            ratios = [
                f"{paired(method, peer):9.3f}" if peer in runs else f"{'-':>9s}"
                for peer in ("himalaya", "sklearn")
            ]
            peak = median(method, "peak_kib") / 2**20
            above = peak - median(method, "baseline_kib") / 2**20
            print(f"{method:11s} {seconds:9.1f} {' '.join(ratios)} {peak:9.2f} {above:10.2f}")
        print("\n".join(comparisons))


if __name__ == "__main__":
    main()
