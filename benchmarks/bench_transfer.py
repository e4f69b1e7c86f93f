"""Transfer: a fitted encoder as a backbone, and a new subject fitted from few images.

Two studies, each against its named peer in the same run:

- ``simulator``: a TopyEncoder fitted on one simulated brain (``random_state=0``, 1,000
  images) is the warm start (``fit(..., transfer_from=source)``) of another brain
  (``random_state=1``: other voxels, other images), fitted on its first 50, 100, 200, 400
  images; against a fit from scratch on the same images, scored on 200 held-out images
  (mean voxel Pearson r), over seeds.
- ``v4``: macaque V4 of Cowley et al. (2023), monkey "WE" (sessions 190925, 190927,
  190928, 190929). One TopyEncoder is fitted on the first three sessions (one subject
  each, all their images); on the held-out session 190929 (a seeded 80/20 split of its
  images), a LinearProbeEncoder reads (a) the raw pretrained backbone, (b) the encoder as
  a backbone (``get_backbone(source)``: its adapted maps), (c) the same plus the source
  neurons' predicted responses (``responses=True``); then TopyEncoder from scratch
  against ``transfer_from=source`` and against a TopyEncoder whose backbone is (c), on
  the first 50, 100, 200, 400 training images.

Usage::

    python benchmarks/bench_transfer.py simulator --seeds 0 1 2
    python benchmarks/bench_transfer.py simulator --head-solver sgd --sizes 50 200
    python benchmarks/bench_transfer.py v4 --memory /tmp/afo_cache

Prints one line per measurement and the ratio warm start / from scratch (or transferred
backbone / raw backbone).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

SIZES = (50, 100, 200, 400)
SOURCE_SESSIONS = ("190925", "190927", "190928")
TARGET_SESSION = "190929"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _quiet():
    warnings.simplefilter("ignore")


#: the sgd recipe at a CPU's budget on 32 px images (the paper's needs a GPU)
SGD = {"head_solver": "sgd", "d_model": 32, "batch_size": 64, "sigma": 0.1, "max_epochs": 40,
       "n_iter_no_change": 40, "top_k": 3}


def simulator(seeds, sizes=SIZES, head_solver="ridge", n_source=1000, n_test=200):
    from afo_encoding import LinearProbeEncoder, TopyEncoder
    from afo_encoding.backbones import get_backbone
    from afo_encoding.metrics import pearson_r
    from afo_encoding.simulation import make_retinotopic_dataset

    params = {"backbone_params": {"image_size": 32}, "device": "cpu",
              **(SGD if head_solver == "sgd" else {})}
    source_data = make_retinotopic_dataset(
        n_images=n_source, image_size=32, n_voxels=300, snr=3.0, random_state=0
    )
    target = make_retinotopic_dataset(
        n_images=max(sizes) + n_test, image_size=32, n_voxels=300, snr=3.0, random_state=1
    )
    test = np.arange(max(sizes), max(sizes) + n_test)
    start = time.perf_counter()
    source = TopyEncoder(**params, random_state=0).fit(
        source_data.images, source_data.Y, coords=source_data.coords
    )
    print(f"simulator ({head_solver}) source fitted in {time.perf_counter() - start:.0f} s "
          f"({n_source} images, 300 voxels)", flush=True)
    raw = get_backbone("pyramid", image_size=32)
    as_backbone = get_backbone(source, responses=True)

    def r_of(enc):
        return float(np.mean(pearson_r(target.Y[test], enc.predict(target.images[test]))))

    for n in sizes:
        train = np.arange(n)
        X, Y = target.images[train], target.Y[train]
        probes = {
            name: r_of(LinearProbeEncoder(backbone=bb).fit(X, Y))
            for name, bb in (("raw", raw), ("encoder", as_backbone))
        }
        print(f"simulator n={n:4d} linear probe: raw pyramid r={probes['raw']:.3f}, encoder "
              f"as backbone + responses r={probes['encoder']:.3f} "
              f"ratio={probes['encoder'] / probes['raw']:.2f}", flush=True)
        for seed in seeds:
            scores = {}
            for how, extra in (("scratch", {}), ("transfer", {"transfer_from": source})):
                enc = TopyEncoder(**params, random_state=seed).fit(
                    X, Y, coords=target.coords, **extra
                )
                scores[how] = r_of(enc)
            print(f"simulator n={n:4d} seed={seed} TopyEncoder ({head_solver}): scratch "
                  f"r={scores['scratch']:.3f} transfer r={scores['transfer']:.3f} "
                  f"ratio={scores['transfer'] / scores['scratch']:.2f}", flush=True)


def v4(root, memory, seeds, sizes=SIZES):
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_real_data import load_v4

    from afo_encoding import LinearProbeEncoder, TopyEncoder
    from afo_encoding.backbones import extract_features, get_backbone
    from afo_encoding.metrics import pearson_r

    backbone = get_backbone("efficientnet-lite0", image_size=112)
    sources = [load_v4(root, s) for s in SOURCE_SESSIONS]
    images, Y, train, test, _ = load_v4(root, TARGET_SESSION)
    seen = {im.tobytes() for data in sources for im in data[0]}
    shared = sum(im.tobytes() in seen for im in images[test])
    print(f"v4: {len(test)} test images of {TARGET_SESSION}, {shared} of them shown in the "
          "source sessions")
    start = time.perf_counter()
    source_stores = [extract_features(backbone, d[0], memory=memory) for d in sources]
    source = TopyEncoder(backbone="efficientnet-lite0", backbone_params={"image_size": 112},
                         device="cpu", random_state=0, memory=memory)
    source.fit(source_stores, [d[1] for d in sources])
    print(f"v4 source fitted on {SOURCE_SESSIONS} in {time.perf_counter() - start:.0f} s "
          f"({sum(len(d[1]) for d in sources)} images, "
          f"{sum(d[1].shape[1] for d in sources)} neurons)", flush=True)

    def probe_r(bb, rows):
        store_train = extract_features(bb, images[rows], memory=memory)
        store_test = extract_features(bb, images[test], memory=memory)
        probe = LinearProbeEncoder(backbone=bb).fit(store_train, Y[rows])
        return float(np.mean(pearson_r(Y[test], probe.predict(store_test))))

    backbones = {
        "raw efficientnet-lite0": backbone,
        "encoder as backbone": get_backbone(source),
        "encoder as backbone + responses": get_backbone(source, responses=True),
    }
    for n in (*sizes, len(train)):
        rows = train[:n]
        scores = {name: probe_r(bb, rows) for name, bb in backbones.items()}
        raw = scores["raw efficientnet-lite0"]
        print(f"v4 linear probe n={n:4d}: " + ", ".join(
            f"{k} r={v:.3f} ({v / raw:.2f}x raw)" for k, v in scores.items()), flush=True)
    as_backbone = backbones["encoder as backbone + responses"]
    arms = {  # name: (backbone, fit keywords)
        "scratch": (backbone, {}),
        "transfer": (backbone, {"transfer_from": source}),
        "on encoder as backbone + responses": (as_backbone, {}),
    }
    for n in (*sizes, len(train)):
        for seed in seeds:
            scores = {}
            for how, (bb, extra) in arms.items():
                enc = TopyEncoder(backbone=bb, device="cpu", random_state=seed)
                enc.fit(extract_features(bb, images[train[:n]], memory=memory),
                        Y[train[:n]], **extra)
                store_test = extract_features(bb, images[test], memory=memory)
                scores[how] = float(np.mean(pearson_r(Y[test], enc.predict(store_test))))
            print(f"v4 TopyEncoder n={n:4d} seed={seed}: " + ", ".join(
                f"{k} r={v:.3f} ({v / scores['scratch']:.2f}x scratch)"
                for k, v in scores.items()), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=("simulator", "v4"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--head-solver", choices=("ridge", "sgd"), default="ridge",
                        help="recipe of the simulator study")
    parser.add_argument("--memory", default=None, help="feature cache folder")
    parser.add_argument("--realdata", type=Path, default=REALDATA)
    args = parser.parse_args(argv)
    _quiet()
    if args.study == "simulator":
        simulator(args.seeds, tuple(args.sizes), args.head_solver)
    else:
        if not (args.realdata / "cowley2023_v4").is_dir():
            sys.exit(f"The V4 recordings are not in {args.realdata}.")
        v4(args.realdata, args.memory, args.seeds, tuple(args.sizes))


if __name__ == "__main__":
    main()
