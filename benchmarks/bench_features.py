"""Feature extraction through the cache vs the bare backbone forward, side by side.

For one backbone (default: DINOv2 ViT-B/14 with random weights, 224 px, the paper's four
layers) and each precision (fp32, bf16 autocast), this measures images per second of:

- ``bare``: the backbone's forward on ready-made normalised tensors, in inference mode
  (what any extraction code has to pay);
- ``cold``: :func:`extract_features` on raw uint8 images with an empty cache (hashing,
  resizing and normalising, the forward, writing the rows), then reading every feature
  back as tensors with :meth:`FeatureStore.batch`; in RAM and on disk (``memory=``);
- ``warm``: the same call again (every image cached in the process), then the same reads.

Ratios are against ``bare`` of the same precision; each figure is the median of
``--repeats`` runs, interleaved so that load from other processes hits all alike.
Targets: cold >= 0.9x bare, warm >= 50x bare.

Run: ``python benchmarks/bench_features.py --n-images 16 --repeats 3``. On a CPU shared
with other busy processes, pass ``--threads 1``: there, a multi-threaded forward pass run
straight from the main thread can be several times slower than the same pass in
:func:`extract_features` (OpenMP threads waiting on each other), which would flatter the
cache path.
"""

import argparse
import contextlib
import statistics
import tempfile
import time

import numpy as np
import torch

from afo_encoding.backbones import clear_feature_cache, extract_features, get_backbone
from afo_encoding.stimuli import as_stimuli


def _read_all(store, batch_size):
    for start in range(0, len(store), batch_size):
        store.batch(np.arange(start, min(start + batch_size, len(store))))


def _bare(backbone, x, batch_size, autocast):
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.inference_mode(), amp:
        for start in range(0, len(x), batch_size):
            backbone(x[start : start + batch_size])


def _through_cache(backbone, images, batch_size, autocast, memory):
    store = extract_features(
        backbone, images, memory=memory, batch_size=batch_size, autocast=autocast
    )
    _read_all(store, batch_size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="dinov2-base")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n-images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    kwargs = {"image_size": args.image_size}
    if args.backbone.startswith("dinov2"):
        kwargs["pretrained"] = False
    backbone = get_backbone(args.backbone, **kwargs)
    rng = np.random.default_rng(0)
    n, size = args.n_images, args.image_size
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x = as_stimuli(images).to_tensor(None, backbone.input_spec)
    print(
        f"{backbone.name}\n{n} images of {size} px, batch {args.batch_size}, "
        f"{torch.get_num_threads()} torch threads, median of {args.repeats} runs"
    )
    _bare(backbone, x[: args.batch_size], args.batch_size, None)  # warm-up

    rows = []
    for precision in args.precisions.split(","):
        autocast = None if precision == "fp32" else precision
        times = {"bare": [], "cold (RAM)": [], "cold (disk)": [], "warm": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            _bare(backbone, x, args.batch_size, autocast)
            times["bare"].append(time.perf_counter() - t)

            clear_feature_cache()
            t = time.perf_counter()
            _through_cache(backbone, images, args.batch_size, autocast, None)
            times["cold (RAM)"].append(time.perf_counter() - t)

            t = time.perf_counter()
            _through_cache(backbone, images, args.batch_size, autocast, None)
            times["warm"].append(time.perf_counter() - t)

            clear_feature_cache()
            with tempfile.TemporaryDirectory() as folder:
                t = time.perf_counter()
                _through_cache(backbone, images, args.batch_size, autocast, folder)
                times["cold (disk)"].append(time.perf_counter() - t)
                clear_feature_cache()
        bare = n / statistics.median(times["bare"])
        for what, values in times.items():
            speed = n / statistics.median(values)
            rows.append((precision, what, speed, speed / bare))

    print(f"\n{'precision':<10}{'path':<13}{'images/s':>12}{'x bare':>10}")
    for precision, what, speed, ratio in rows:
        print(f"{precision:<10}{what:<13}{speed:>12.2f}{ratio:>10.2f}")
    print("\ntargets: cold >= 0.90x bare, warm >= 50x bare")


if __name__ == "__main__":
    main()
