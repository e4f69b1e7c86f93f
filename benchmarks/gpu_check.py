"""GPU check: what only a GPU can show, in one run and one table.

Sections (each in its own ``try``, so that one failure leaves the rest of the table):

- ``precision``: a TopyEncoder fit in float32, bf16-mixed and fp16-mixed (fp16 on CUDA
  only): seconds per fit and the test r, against float32;
- ``readout``: the fused readout (``fused_readout``, the default strategy of the device)
  against ``grid_sample`` sampling then the same arithmetic (``sample_layers``): forward
  and backward time, largest difference;
- ``linear_probe``: LinearProbeEncoder with the torch backend on the device against numpy
  on the CPU: fit time, largest prediction difference;
- ``retrieval``: ``score_candidates`` on the device against a plain float32 z-score matmul
  in numpy: time, largest score difference;
- ``features``: feature extraction throughput (images/s) of DINOv2-base (random weights,
  built from its transformers config, offline) and EfficientNet-Lite0, float32 and the
  device's mixed precision;
- ``afo``: AllForOneEncoder with ``n_jobs`` equal to the GPU count (1 on a CPU) against
  ``n_jobs=1``: time, whether the predictions are equal;
- ``device_move``: a model fitted on the device predicting on the CPU, against its own
  predictions on the device;
- ``nsd_sized``: a synthetic NSD-sized fit (30,000 images, 40,000 voxels, cached features
  of the pyramid backbone): seconds per epoch and peak GPU memory.

Run: ``python benchmarks/gpu_check.py`` (under 10 minutes on one GPU);
``python benchmarks/gpu_check.py --device cpu --quick`` is the smoke test of the CPU (tiny
sizes, under 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import torch

#: sizes of the full run and of --quick
SIZES = {
    False: {
        "fit_samples": 2000, "fit_voxels": 2000, "epochs": 5, "image_size": 64,
        "readout": (128, 256, 16, 20000), "probe": (4000, 2000, 5000),
        "retrieval": (2000, 10000, 20000), "feature_images": 256, "feature_batch": 64,
        "feature_size": 224, "afo_samples": 600, "nsd": (30000, 40000), "nsd_epochs": 2,
        "repeats": 3,
    },
    True: {
        "fit_samples": 120, "fit_voxels": 30, "epochs": 2, "image_size": 16,
        "readout": (8, 16, 8, 200), "probe": (200, 40, 50),
        "retrieval": (50, 200, 300), "feature_images": 2, "feature_batch": 2,
        "feature_size": 112, "afo_samples": 72, "nsd": (300, 400), "nsd_epochs": 1,
        "nsd_d_model": 16,
        "repeats": 1,
    },
}  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(func: Callable, device: str, repeats: int = 1) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls of ``func`` and its last result."""
    times, result = [], None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = func()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _image_data(n: int, n_voxels: int, size: int, seed: int = 0):
    """Images and voxels that read local mean brightness (a few planted receptive fields)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    gray = images.mean(-1, dtype=np.float32) / 255
    half = max(size // 2, 1)
    fields = [gray[:, :half, :half], gray[:, half:, :half], gray[:, :half, half:]]
    signal = np.stack([f.mean((1, 2)) for f in fields], 1)
    Y = signal @ rng.normal(size=(3, n_voxels)) * 10 + rng.normal(size=(n, n_voxels))
    return images, Y.astype(np.float32), rng.normal(size=(n_voxels, 3))


def _topy(device: str, sizes: dict, **kw):
    from afo_encoding.encoders import TopyEncoder

    params = {
        "head_solver": "sgd", "d_model": 32, "max_epochs": sizes["epochs"],
        "n_iter_no_change": sizes["epochs"], "top_k": 1, "soup": False, "batch_size": 64,
        "device": device, "random_state": 0,
        "backbone_params": {"image_size": sizes["image_size"], "n_scales": 2},
    }  # fmt: skip
    return TopyEncoder(**{**params, **kw})


def _test_r(encoder, images, Y) -> float:
    from afo_encoding.metrics import pearson_r

    return float(np.nanmean(pearson_r(Y, encoder.predict(images))))


def check_precision(device: str, sizes: dict) -> list:
    images, Y, coords = _image_data(sizes["fit_samples"], sizes["fit_voxels"], sizes["image_size"])
    train, test = slice(0, len(Y) * 4 // 5), slice(len(Y) * 4 // 5, None)
    precisions = ["32-true", "bf16-mixed"] + (["16-mixed"] if device.startswith("cuda") else [])
    rows, reference = [], None
    _topy(device, {**sizes, "epochs": 1}).fit(images[:64], Y[:64], coords=coords)  # warm-up
    for precision in precisions:
        encoder = _topy(device, sizes, precision=precision)
        seconds, _ = _timed(
            lambda e=encoder: e.fit(images[train], Y[train], coords=coords), device
        )
        r = _test_r(encoder, images[test], Y[test])
        reference = reference or (seconds, r)
        rows.append(
            ("precision", f"TopyEncoder {precision}", f"{seconds:.2f} s, r={r:.3f}",
             f"x{seconds / reference[0]:.2f} time, r {r - reference[1]:+.3f} vs 32-true")
        )  # fmt: skip
    return rows


def check_readout(device: str, sizes: dict) -> list:
    from afo_encoding.nn import fused_readout
    from afo_encoding.nn.readout import sample_layers

    batch, dim, size, n_voxels = sizes["readout"]
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(batch, dim, size, size, generator=gen).to(device) for _ in range(4)]
    u = (torch.rand(n_voxels, 2, generator=gen) * 2 - 1).to(device)
    w = torch.randn(n_voxels, dim, generator=gen).to(device) / dim**0.5
    eta = torch.softmax(torch.randn(n_voxels, 4, generator=gen), 1).to(device)
    for tensor in (*maps, w):
        tensor.requires_grad_(True)

    def fused():
        y = fused_readout(maps, u, w, eta)
        y.square().mean().backward()
        return y.detach()

    def sampled():
        # the peer: grid_sample per layer, then the layer mix and the voxel weights
        features = sample_layers(maps, u).unflatten(2, (4, dim))  # (B, n, L, D)
        y = torch.einsum("bnld,nl,nd->bn", features, eta, w)
        y.square().mean().backward()
        return y.detach()

    fused()  # first calls: kernels, caches
    sampled()
    t_fused, y_fused = _timed(fused, device, sizes["repeats"])
    t_sampled, y_sampled = _timed(sampled, device, sizes["repeats"])
    diff = float((y_fused - y_sampled).abs().max())
    return [
        ("readout", f"fused, {n_voxels} voxels, B={batch}, D={dim}", f"{t_fused * 1e3:.1f} ms",
         f"x{t_fused / t_sampled:.2f} vs grid_sample ({t_sampled * 1e3:.1f} ms), "
         f"max diff {diff:.1e}"),
    ]  # fmt: skip


def check_linear_probe(device: str, sizes: dict) -> list:
    from afo_encoding.encoders import LinearProbeEncoder

    n, n_features, n_voxels = sizes["probe"]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, n_features), dtype=np.float32)
    Y = (X[:, :50] @ rng.standard_normal((min(50, n_features), n_voxels))).astype(np.float32)
    Y += rng.standard_normal(Y.shape, dtype=np.float32)
    params = {"n_components": None, "alphas": np.logspace(-1, 4, 6), "cv": 3}

    def fit(backend, on):
        return LinearProbeEncoder(**params, backend=backend, device=on).fit(X, Y)

    t_dev, on_device = _timed(lambda: fit("torch", device), device)
    t_cpu, on_cpu = _timed(lambda: fit("numpy", "cpu"), "cpu")
    diff = float(np.abs(on_device.predict(X[:100]) - on_cpu.predict(X[:100])).max())
    return [
        ("linear_probe", f"torch on {device}, {n}x{n_features} -> {n_voxels}",
         f"{t_dev:.2f} s", f"x{t_dev / t_cpu:.2f} vs numpy CPU ({t_cpu:.2f} s), "
         f"max diff {diff:.1e}"),
    ]  # fmt: skip


def zscore_matmul(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The peer: rows z-scored in float32, one matrix product, divided by n_voxels."""

    def z(a):
        a = a - a.mean(1, keepdims=True)
        return a / a.std(1, keepdims=True)

    return z(queries) @ z(candidates).T / queries.shape[1]


def check_retrieval(device: str, sizes: dict) -> list:
    from afo_encoding.decoding import score_candidates

    n_queries, n_candidates, n_voxels = sizes["retrieval"]
    rng = np.random.default_rng(0)
    candidates = rng.standard_normal((n_candidates, n_voxels), dtype=np.float32)
    queries = candidates[:n_queries] + 2 * rng.standard_normal((n_queries, n_voxels), np.float32)
    score_candidates(queries[:2], candidates[:2], device=device)  # first call
    t_ours, ours = _timed(lambda: score_candidates(queries, candidates, device=device), device)
    t_peer, peer = _timed(lambda: zscore_matmul(queries, candidates), "cpu")
    diff = float(np.abs(ours - peer).max())
    top1 = float(np.mean(ours.argmax(1) == peer.argmax(1)))
    return [
        ("retrieval", f"score_candidates on {device}, {n_queries}x{n_candidates}x{n_voxels}",
         f"{t_ours:.3f} s", f"x{t_ours / t_peer:.2f} vs float32 z-score matmul "
         f"({t_peer:.3f} s), max diff {diff:.1e}, same top-1 {top1:.0%}"),
    ]  # fmt: skip


def check_features(device: str, sizes: dict) -> list:
    from afo_encoding.backbones import get_backbone
    from afo_encoding.stimuli import as_stimuli

    n, batch, size = sizes["feature_images"], sizes["feature_batch"], sizes["feature_size"]
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    autocasts = [None, "bf16"] + (["fp16"] if device.startswith("cuda") else [])
    rows = []
    for name, kwargs in (
        ("dinov2-base", {"pretrained": False, "image_size": size}),
        ("efficientnet-lite0", {}),
    ):
        try:
            backbone = get_backbone(name, **kwargs).to(device).eval()
        except (ImportError, OSError) as err:  # the [models] extra, a weights file
            rows.append(("features", name, "skipped", f"{type(err).__name__}: {err}"[:90]))
            continue
        x = as_stimuli(images).to_tensor(None, backbone.input_spec).to(device)
        for autocast in autocasts:

            def run(backbone=backbone, x=x, autocast=autocast):
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)
                device_type = torch.device(device).type
                with torch.inference_mode(), torch.autocast(device_type, dtype, dtype is not None):
                    for start in range(0, n, batch):
                        backbone(x[start : start + batch])

            run()  # warm-up
            seconds, _ = _timed(run, device, sizes["repeats"])
            pixels = "x".join(map(str, x.shape[-2:]))
            rows.append(("features", f"{name} {autocast or 'fp32'}, {pixels} px",
                         f"{n / seconds:.1f} img/s", f"batch {batch}"))  # fmt: skip
    return rows


def check_afo(device: str, sizes: dict) -> list:
    from afo_encoding.encoders import AllForOneEncoder

    images, Y, coords = _image_data(sizes["afo_samples"], 6, sizes["image_size"])
    n_jobs = max(torch.cuda.device_count(), 1) if device.startswith("cuda") else 1
    params = {"rois": np.repeat([0, 1], 3), "dark_knowledge": "in_sample", "random_state": 0}
    base = _topy(device, {**sizes, "epochs": 1})
    results = {}
    for jobs in sorted({1, n_jobs}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            afo = AllForOneEncoder(base, n_jobs=jobs, **params)
            results[jobs] = _timed(lambda a=afo: a.fit(images, Y, coords=coords), device)
    seconds, afo = results[n_jobs]
    same = np.array_equal(afo.predict(images), results[1][1].predict(images))
    return [
        ("afo", f"n_jobs={n_jobs} (GPUs: {torch.cuda.device_count()})", f"{seconds:.1f} s",
         f"x{seconds / results[1][0]:.2f} vs n_jobs=1, same predictions: {same}"),
    ]  # fmt: skip


def check_device_move(device: str, sizes: dict) -> list:
    images, Y, coords = _image_data(sizes["fit_samples"], sizes["fit_voxels"], sizes["image_size"])
    encoder = _topy(device, sizes).fit(images, Y, coords=coords)
    on_device = encoder.predict(images[:64])
    on_cpu = encoder.set_params(device="cpu").predict(images[:64])
    diff = float(np.abs(on_device - on_cpu).max())
    return [("device_move", f"fitted on {device}, predicts on cpu", f"max diff {diff:.1e}",
             f"of predictions with std {on_device.std():.2f}")]  # fmt: skip


def check_nsd_sized(device: str, sizes: dict) -> list:
    from afo_encoding.backbones import clear_feature_cache, extract_features, get_backbone
    from afo_encoding.nn import TopyNet
    from afo_encoding.training import EngineConfig, SubjectData, TrainingConfig, fit_model

    n, n_voxels = sizes["nsd"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    Y = rng.standard_normal((n, n_voxels), dtype=np.float32)
    coords = rng.standard_normal((n_voxels, 3))
    backbone = get_backbone("pyramid", image_size=64)
    clear_feature_cache()
    # on disk, memory-mapped, as a real run's memory= folder holds them (about 5 GB full size)
    folder = tempfile.mkdtemp(prefix="gpu_check_features_")
    atexit.register(shutil.rmtree, folder, True)
    extraction, store = _timed(
        lambda: extract_features(backbone, images, folder, batch_size=256, device=device), device
    )
    torch.manual_seed(0)
    model = TopyNet(
        backbone.local_channels, backbone.global_dims, [coords], d_model=sizes["nsd_d_model"]
    )
    n_val = n // 10
    data = SubjectData(store, Y, np.arange(n_val, n), np.arange(n_val))
    epochs = sizes["nsd_epochs"]
    config = TrainingConfig(max_epochs=epochs, n_iter_no_change=epochs, top_k=1, soup=False)
    accelerator = "cuda" if device.startswith("cuda") else "cpu"
    if accelerator == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = fit_model(
        model, [data], config, EngineConfig(accelerator=accelerator), random_state=0
    )
    per_epoch = statistics.median(result.history["seconds"])
    peak = "n/a (CPU)"
    if accelerator == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    return [
        ("nsd_sized", f"{n} images, {n_voxels} voxels, cached features",
         f"{per_epoch:.1f} s/epoch", f"peak GPU memory {peak}, features extracted "
         f"in {extraction:.1f} s"),
    ]  # fmt: skip


SECTIONS = {
    "precision": check_precision,
    "readout": check_readout,
    "linear_probe": check_linear_probe,
    "retrieval": check_retrieval,
    "features": check_features,
    "afo": check_afo,
    "device_move": check_device_move,
    "nsd_sized": check_nsd_sized,
}


def run_checks(device: str, quick: bool, sections=None) -> list:
    """Rows ``(section, case, value, comparison)`` of every section; a failing section
    gives one row with its error (the traceback goes to stderr)."""
    sizes = SIZES[quick]
    rows = []
    for name in sections or SECTIONS:
        start = time.perf_counter()
        try:
            rows.extend(SECTIONS[name](device, sizes))
        except Exception as err:  # one failure must not lose the table
            traceback.print_exc()
            rows.append((name, "FAILED", type(err).__name__, str(err).splitlines()[0][:90]))
        rows[-1] = (*rows[-1][:3], f"{rows[-1][3]} [{time.perf_counter() - start:.0f} s]")
    return rows


def format_table(rows: list) -> str:
    header = ("section", "case", "value", "comparison")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3])
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default, help=f"torch device (default: {default})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run_checks(args.device, args.quick, args.sections)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    size = "quick" if args.quick else "full"
    seconds = time.perf_counter() - start
    print(f"\nafo-encoding GPU check on {args.device} ({name}), torch {torch.__version__}, "
          f"{size} sizes, {seconds:.0f} s\n")  # fmt: skip
    print(format_table(rows))


if __name__ == "__main__":
    main()
