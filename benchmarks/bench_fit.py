"""Fitting throughput with cached features vs a backbone run on every batch, and the peak
memory of prediction at 100,000 and 400,000 voxels, chunked vs in one piece.

1. **Training samples/s.** The same TopyNet trains for a few epochs on the same images
   twice: ``cached``, the way afo-encoding fits (every image through the frozen backbone
   once, :func:`extract_features`, then :meth:`FeatureStore.batch` each step), and
   ``recompute``, the way a plain training loop does it (the backbone runs on the images of
   every batch, every epoch, validation included). Samples/s count training samples over
   whole epochs (the steps plus validation); the one-off extraction of the cached run is
   reported apart. The ratio is cached / recompute.
2. **Peak memory of predict.** In a fresh process per setting, a TopyNet over ``n`` voxels
   predicts 64 images with :func:`afo_encoding.training.predict_array`, in chunks of 32,768
   voxels (afo-encoding's default) and in one piece (``voxel_chunk=n``, the peer). Reported:
   the growth of the process's peak resident memory during the call (Linux: the peak is
   reset through ``/proc/self/clear_refs`` just before), and that growth minus the output
   array, i.e. the working memory.

Run: ``python benchmarks/bench_fit.py`` (pyramid backbone, 64 px, ~2 minutes on a laptop)
or ``--backbone dinov2-small --image-size 224`` (random weights, no download) for the
paper's kind of backbone; add ``--adapter-width 64``: with the paper's adapters (as wide
as the layer) the trainable convolutions cost several times the backbone's forward pass on
a CPU, which hides what caching saves. ``--threads 1`` on a busy shared CPU.
"""

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from afo_encoding.backbones import clear_feature_cache, extract_features, get_backbone
from afo_encoding.nn import TopyNet
from afo_encoding.stimuli import as_stimuli
from afo_encoding.training import EngineConfig, SubjectData, TrainingConfig, fit_model


class LiveFeatures:
    """The feature-store interface computed on the fly: the backbone on every batch."""

    def __init__(self, backbone, images):
        self.backbone = backbone
        self.stimuli = as_stimuli(images)

    def __len__(self):
        return len(self.stimuli)

    def batch(self, indices, device=None, dtype=torch.float32):
        x = self.stimuli.to_tensor(np.asarray(indices), self.backbone.input_spec)
        with torch.inference_mode():
            local_maps, global_vectors = self.backbone(x)
        return (
            [m.to(device=device, dtype=dtype).clone() for m in local_maps],
            [g.to(device=device, dtype=dtype).clone() for g in global_vectors],
        )


def _backbone(args):
    kwargs = {"image_size": args.image_size}
    if args.backbone != "pyramid":
        kwargs = {"pretrained": False}
    return get_backbone(args.backbone, **kwargs)


def _train(features, backbone, Y, coords, args, epochs=None):
    torch.manual_seed(0)
    model = TopyNet(
        backbone.local_channels,
        backbone.global_dims,
        [coords],
        d_model=args.d_model,
        adapter_width=args.adapter_width,
    )
    n = len(Y)
    n_val = max(2, n // 10)
    data = SubjectData(features, Y, np.arange(n_val, n), np.arange(n_val))
    epochs = epochs or args.epochs
    config = TrainingConfig(
        max_epochs=epochs, batch_size=args.batch_size, n_iter_no_change=epochs, top_k=1, soup=False
    )
    start = time.perf_counter()
    fit_model(model, [data], config, EngineConfig(accelerator="cpu"), random_state=0)
    seconds = time.perf_counter() - start
    steps = max(
        config.min_steps_per_epoch,
        int(np.ceil(config.epoch_fraction * (n - n_val) / args.batch_size)),
    )
    return epochs * steps * args.batch_size / seconds


def throughput(args):
    rng = np.random.default_rng(0)
    size = args.image_size
    images = rng.integers(0, 256, (args.n_images, size, size, 3), dtype=np.uint8)
    Y = rng.standard_normal((args.n_images, args.n_voxels)).astype(np.float32)
    coords = rng.standard_normal((args.n_voxels, 3))
    backbone = _backbone(args)
    clear_feature_cache()
    start = time.perf_counter()
    store = extract_features(backbone, images, batch_size=args.batch_size)
    extraction = time.perf_counter() - start
    live = LiveFeatures(backbone, images)
    _train(store, backbone, Y, coords, args, epochs=1)  # imports, first-call costs
    runs = {"cached": [], "recompute": []}
    for _ in range(args.repeats):  # interleaved, so that load from others hits both alike
        runs["cached"].append(_train(store, backbone, Y, coords, args))
        runs["recompute"].append(_train(live, backbone, Y, coords, args))
    cached, recompute = (float(np.median(runs[k])) for k in ("cached", "recompute"))
    print(
        f"training throughput, {args.backbone} at {size} px, batch {args.batch_size}, "
        f"{args.epochs} epochs, {args.n_voxels} voxels, D={args.d_model}, median of "
        f"{args.repeats}"
    )
    print(
        f"  cached features : {cached:8.1f} samples/s (after a one-off extraction of "
        f"{args.n_images} images in {extraction:.1f} s)"
    )
    print(f"  recompute       : {recompute:8.1f} samples/s")
    print(f"  ratio           : {cached / recompute:8.2f}x")
    return {"cached": cached, "recompute": recompute, "extraction_s": extraction}


def _predict_child(n_voxels, chunk, d_model, n_images):
    """Run in a fresh process: peak RSS growth of one chunked prediction (bytes)."""
    from afo_encoding.backbones import FeatureStore
    from afo_encoding.training import predict_array

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shapes = [(32, 32), (16, 16), (8, 8), (4, 4)]
    local_maps = [rng.standard_normal((n_images, 15, *s)).astype(np.float32) for s in shapes]
    global_vectors = [rng.standard_normal((n_images, 30)).astype(np.float32) for _ in shapes]
    store = FeatureStore.from_arrays(local_maps, global_vectors)
    model = TopyNet(
        [15] * 4, [30] * 4, [rng.standard_normal((n_voxels, 3))], d_model=d_model
    ).eval()
    predict_array(model, store, 0, np.arange(4), n_voxels, voxel_chunk=chunk)  # warm up
    before = _reset_peak()
    out = predict_array(model, store, 0, np.arange(n_images), n_voxels, voxel_chunk=chunk)
    return {"peak_growth": _peak() - before, "output": out.nbytes}


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Reset the peak resident memory (Linux: clear_refs 5) and return the current one."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def _peak():
    return _status("VmHWM")


def memory(args):
    print(
        f"peak memory of predict ({args.predict_images} images, D={args.d_model}): "
        "growth of the peak RSS during the call, and that minus the output array"
    )
    results = {}
    for n in (100_000, 400_000):
        for label, chunk in (("chunked 32768", 32768), ("one piece", n)):
            code = (
                f"import json, sys; sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r});"
                f"from bench_fit import _predict_child;"
                f"print(json.dumps(_predict_child({n}, {chunk}, {args.d_model}, "
                f"{args.predict_images})))"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(n, label)] = res
            mib = 2**20
            print(
                f"  {n:>7,} voxels, {label:<13}: peak +{res['peak_growth'] / mib:7.1f} MiB, "
                f"working +{(res['peak_growth'] - res['output']) / mib:7.1f} MiB "
                f"(output {res['output'] / mib:.1f} MiB)"
            )
    for n in (100_000, 400_000):
        chunked = (
            results[(n, "chunked 32768")]["peak_growth"] - results[(n, "chunked 32768")]["output"]
        )
        whole = results[(n, "one piece")]["peak_growth"] - results[(n, "one piece")]["output"]
        print(
            f"  {n:>7,} voxels: working memory one piece / chunked = "
            f"{whole / max(chunked, 1):.1f}x"
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="pyramid")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-images", type=int, default=640)
    parser.add_argument("--n-voxels", type=int, default=2000)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--adapter-width",
        type=int,
        default=None,
        help="channels inside the conv adapters (default: the layer's)",
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--predict-images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    throughput(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
