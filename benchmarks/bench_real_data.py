"""TopyEncoder (defaults) against LinearProbeEncoder on real recordings, same backbone.

The data sets of ``../shared/realdata`` (read from there, never copied):

- the 8 macaque V4 sessions of Cowley et al. (2023): repeat-averaged spike counts, images
  112 x 112; a fixed, seeded 80/20 split of the distinct images of each session (190925
  shows 300 of its images twice: both presentations stay on one side);
- mouse VISp, two-photon dF/F of 212 neurons to 118 natural scenes at 31 x 31 (Allen Brain
  Observatory, the upstream 100/18 split).

For every data set and backbone (the Gabor pyramid, and EfficientNet-Lite0 pretrained on
ImageNet), the features of all images are computed once; both encoders are then fitted on
the same feature store (so fit times compare the models, not the backbone), and scored by
the mean over neurons of the held-out Pearson r. Fits are repeated (``--repeats``, seeds
0, 1, ...; the linear probe is deterministic) and medians reported. A noise ceiling needs
repeated measurements of one image: the V4 files here are repeat-averaged, but session
190925 shows 300 of its images in two presentations, each with its own average, so its
ceiling is ``sqrt`` of the correlation between the two (see :func:`repeat_ceiling`), and
the table gives each model's mean over neurons of ``r / ceiling``; the other sessions and
the Allen set (whose trial file does not say which trial is which image) have none (the
DataLad fetcher of the V4 data gets the single trials).

Usage::

    python benchmarks/bench_real_data.py                       # everything (~15 min, 2 cores)
    python benchmarks/bench_real_data.py --datasets v4 --backbones efficientnet-lite0
    python benchmarks/bench_real_data.py --quick               # 2 V4 sessions, pyramid

Writes ``bench_real_data.csv`` (one row per data set, backbone and model) and prints the
table with the ratios TopyEncoder / linear probe.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

V4_SESSIONS = ("190925", "190927", "190928", "190929", "210224", "210305", "210322", "210621")
BACKBONES = {
    "pyramid": {"image_size": 112},
    "efficientnet-lite0": {},
}
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def image_split(images: np.ndarray, seed: int = 0, test_fraction: float = 0.2):
    """Seeded split of the distinct images (identical ones stay together)."""
    keys = [hashlib.blake2b(im.tobytes(), digest_size=8).hexdigest() for im in images]
    _, inverse = np.unique(keys, return_inverse=True)
    n_distinct = inverse.max() + 1
    order = np.random.default_rng(seed).permutation(n_distinct)
    held = np.zeros(n_distinct, bool)
    held[order[: int(round(test_fraction * n_distinct))]] = True
    test = held[inverse]
    return np.flatnonzero(~test), np.flatnonzero(test)


def repeat_ceiling(images: np.ndarray, Y: np.ndarray):
    """Per-neuron ceiling on a model's Pearson r from images shown in two presentations.

    Each presentation's response is itself an average over trials; the two are correlated
    over the images shown twice (:func:`afo_encoding.metrics.split_half_reliability`, no
    Spearman-Brown step, since one presentation is what the models predict): ``r12`` is the
    reliability of one presentation, and ``sqrt(r12)`` the largest r a model can expect
    against one. ``None`` when fewer than 20 images were shown twice.
    """
    from afo_encoding.metrics import split_half_reliability

    keys = [hashlib.blake2b(im.tobytes(), digest_size=8).hexdigest() for im in images]
    rows: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    pairs = [r[:2] for r in rows.values() if len(r) >= 2]
    if len(pairs) < 20:
        return None
    repeats = np.stack([Y[p] for p in pairs])  # (n_pairs, 2, n_neurons)
    r12 = split_half_reliability(repeats, n_splits=1, spearman_brown=False)
    return np.sqrt(np.clip(r12, 0.0, None))


def load_v4(root: Path, session: str):
    folder = root / "cowley2023_v4"
    Y = np.load(folder / "responses_repeat_averaged" / f"responses_{session}.npy").T
    from PIL import Image

    with zipfile.ZipFile(folder / "images" / f"images_{session}.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
        images = np.stack(
            [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert("RGB")) for n in names]
        )
    train, test = image_split(images)
    Y = Y.astype(np.float32)
    return images, Y, train, test, repeat_ceiling(images, Y)


def load_allen(root: Path):
    folder = root / "allen_boc_natural_scenes_psailamul"
    x = np.concatenate([np.load(folder / "Allen_train_input.npy"),
                        np.load(folder / "Allen_test_input.npy")])
    images = x.reshape(-1, 31, 31).astype(np.uint8)
    Y = np.concatenate([np.load(folder / "Allen_train_output.npy"),
                        np.load(folder / "Allen_test_output.npy")]).astype(np.float32)
    return images, Y, np.arange(100), np.arange(100, 118), None


def datasets(root: Path, which: list[str], sessions: list[str]):
    if "v4" in which:
        for session in sessions:
            yield f"V4 {session}", *load_v4(root, session)
    if "allen" in which:
        yield "mouse V1 (Allen)", *load_allen(root)


def measure(name, images, Y, train, test, ceiling, backbone_name, repeats, memory):
    import torch

    from afo_encoding import LinearProbeEncoder, TopyEncoder
    from afo_encoding.backbones import extract_features, get_backbone
    from afo_encoding.metrics import pearson_r

    backbone = get_backbone(backbone_name, **BACKBONES[backbone_name])
    start = time.perf_counter()
    store_train = extract_features(backbone, images[train], memory=memory)
    store_test = extract_features(backbone, images[test], memory=memory)
    seconds_features = time.perf_counter() - start
    fits = {"LinearProbeEncoder": ([], []), "TopyEncoder": ([], [])}
    last = {}
    # the two models take turns, seed after seed, so that neither gets a colder process
    # (first allocations, page cache) than the other; the probe is deterministic: its
    # repeats only time it
    fractions = {"LinearProbeEncoder": [], "TopyEncoder": []}
    for seed in range(repeats):
        for model, (scores, seconds) in fits.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # neurons have no positions
                encoder = (TopyEncoder(random_state=seed) if model == "TopyEncoder"
                           else LinearProbeEncoder())
                torch.manual_seed(seed)
                start = time.perf_counter()
                encoder.fit(store_train, Y[train])
                seconds.append(time.perf_counter() - start)
            r = pearson_r(Y[test], encoder.predict(store_test))
            scores.append(float(np.mean(r)))
            if ceiling is not None:  # neurons with a ceiling of 0 have nothing to predict
                kept = ceiling > 0
                fractions[model].append(float(np.mean(r[kept] / ceiling[kept])))
            last[model] = encoder
    rows = []
    for model in ("TopyEncoder", "LinearProbeEncoder"):
        scores, seconds = fits[model]
        rows.append({
            "data": name, "backbone": backbone_name, "model": model,
            "n_train": len(train), "n_test": len(test), "n_neurons": Y.shape[1],
            "r": float(np.median(scores)), "r_spread": float(np.ptp(scores)),
            "ceiling": "" if ceiling is None else float(np.mean(ceiling)),
            "fraction_of_ceiling": (float(np.median(fractions[model])) if fractions[model]
                                    else ""),
            "fit_seconds": float(np.median(seconds)), "feature_seconds": seconds_features,
            "local_readout_on": getattr(last[model], "history_", {}).get("local_readout_on", ""),
        })
    return rows


def _cell(value, width):
    return f"{'-':>{width}}" if value == "" else f"{value:>{width}.3f}"


def print_table(rows):
    pairs = {}
    for row in rows:
        pairs.setdefault((row["data"], row["backbone"]), {})[row["model"]] = row
    header = (f"{'data':<18} {'backbone':<19} {'neurons':>7} {'r Topy':>7} {'r probe':>8} "
              f"{'diff':>7} {'ceiling':>7} {'Topy/c':>6} {'probe/c':>7} {'fit Topy s':>10} "
              f"{'fit probe s':>11} {'time ratio':>10}")
    print(header)
    print("-" * len(header))
    for (data, backbone), pair in pairs.items():
        topy, probe = pair["TopyEncoder"], pair["LinearProbeEncoder"]
        print(f"{data:<18} {backbone:<19} {topy['n_neurons']:>7d} {topy['r']:>7.3f} "
              f"{probe['r']:>8.3f} {topy['r'] - probe['r']:>+7.3f} "
              f"{_cell(topy['ceiling'], 7)} {_cell(topy['fraction_of_ceiling'], 6)} "
              f"{_cell(probe['fraction_of_ceiling'], 7)} {topy['fit_seconds']:>10.1f} "
              f"{probe['fit_seconds']:>11.2f} {topy['fit_seconds'] / probe['fit_seconds']:>9.0f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path, default=REALDATA,
                        help="the folder of the real recordings (default ../shared/realdata)")
    parser.add_argument("--datasets", nargs="+", default=["v4", "allen"],
                        choices=["v4", "allen"])
    parser.add_argument("--sessions", nargs="+", default=list(V4_SESSIONS))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES),
                        choices=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=3,
                        help="TopyEncoder fits per data set (seeds 0..); medians reported")
    parser.add_argument("--memory", default=None,
                        help="feature cache folder (default: features kept in RAM only)")
    parser.add_argument("--out", type=Path, default=Path("bench_real_data.csv"))
    parser.add_argument("--quick", action="store_true",
                        help="2 V4 sessions, the pyramid, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.sessions, args.backbones = ["v4"], ["210305", "210224"], ["pyramid"]
        args.repeats = 1
    if not (args.realdata / "cowley2023_v4").is_dir():
        raise SystemExit(f"The real recordings are not at {args.realdata}; pass --realdata.")
    rows = []
    for backbone in args.backbones:
        for name, images, Y, train, test, ceiling in datasets(args.realdata, args.datasets,
                                                               args.sessions):
            rows.extend(measure(name, images, Y, train, test, ceiling, backbone, args.repeats,
                                args.memory))
            print(f"  {name} / {backbone}: r Topy {rows[-2]['r']:.3f}, probe {rows[-1]['r']:.3f}",
                  flush=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
