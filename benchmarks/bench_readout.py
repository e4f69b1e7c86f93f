"""Readout speed: TopyNeck's fused readout vs neuralpredictors' FullGaussian2d.

Times one training step (forward + backward) of the readout alone: positions from the
voxel coordinates (RetinaMapper / position network), bilinear sampling of the maps, layer
mix and per-voxel weights, for a batch of 128 images with D = 256 channels on 16 x 16 maps.

Like for like: one layer each, no global branch, position networks of the same size (two
hidden layers of 128, final tanh). Also reported: ours with the paper's L = 4 layers and the
global vectors. neuralpredictors samples every image at its own point and forms the
``(B, D, n_voxels)`` sampled tensor; a 50,000-neuron readout needs several of those
(6.5 GB each in float32), more than this machine has to spare, so it is run as several
readouts of at most ``--np-chunk`` neurons, one after the other (the same total work).

Each configuration is timed ``--repeats`` times, interleaved, and the medians are printed
with the ratio ours / neuralpredictors (below 1: ours is faster), both in wall-clock time and
in CPU time of the process (steadier on a machine shared with other jobs). The default is
one thread, for the same reason; ``--threads`` changes it.

Run: ``python benchmarks/bench_readout.py [--voxels 8000 50000] [--repeats 5] [--threads 1]
[--device cpu]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from neuralpredictors.layers.readouts import FullGaussian2d

from afo_encoding.nn import SubjectReadout

BATCH, DIM, SIZE = 128, 256, 16


def ours(coords, n_layers, use_global, device):
    readout = SubjectReadout(coords, n_layers=n_layers, d_model=DIM).train()
    gen = torch.Generator().manual_seed(0)
    # move the zero-initialised last layer so that voxels spread over the image
    with torch.no_grad():
        last = readout.retina_mapper.mlp[-1]
        last.weight.copy_(torch.randn(last.weight.shape, generator=gen))
    # channels-last, as the conv adapters give them
    maps = [torch.randn(BATCH, DIM, SIZE, SIZE, generator=gen)
            .contiguous(memory_format=torch.channels_last).to(device).requires_grad_(True)
            for _ in range(n_layers)]
    glob = torch.randn(BATCH, n_layers, DIM, generator=gen).to(device).requires_grad_(True)
    readout.to(device)

    def step():
        y = readout(maps, glob if use_global else None)
        y.square().mean().backward()

    return readout, step


def neuralpredictors(coords, chunk, device):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(BATCH, DIM, SIZE, SIZE, generator=gen).to(device).requires_grad_(True)
    readouts = []
    for start in range(0, len(coords), chunk):
        part = coords[start:start + chunk]
        readouts.append(FullGaussian2d(
            (DIM, SIZE, SIZE), len(part), bias=True,
            grid_mean_predictor={"hidden_layers": 2, "hidden_features": 128, "final_tanh": True},
            source_grid=part,
        ).to(device).train())

    def step():
        for readout in readouts:
            y = readout(maps)
            y.square().mean().backward()

    return readouts, step


def timed(module, step, device):
    """Wall-clock and CPU seconds of one step."""
    modules = module if isinstance(module, list) else [module]
    for m in modules:
        m.zero_grad(set_to_none=True)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voxels", type=int, nargs="+", default=[8000, 50000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--np-chunk", type=int, default=8000,
                        help="neurons per neuralpredictors readout (memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda (ours then uses its 'sampling' strategy)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} thread(s); "
          f"batch {BATCH}, "
          f"D {DIM}, maps {SIZE}x{SIZE}; forward + backward, median of {args.repeats}; "
          f"neuralpredictors {args.np_chunk} neurons per readout")
    print(f"{'voxels':>7} {'clock':>5} {'ours L=1':>9} {'npred':>8} {'ratio':>6} "
          f"{'ours L=4+global':>16} {'ratio':>6}")
    for n in args.voxels:
        coords = np.random.default_rng(0).normal(scale=30, size=(n, 3))
        runs = {
            "ours1": ours(coords, 1, use_global=False, device=device),
            "np": neuralpredictors(coords, args.np_chunk, device),
            "ours4": ours(coords, 4, use_global=True, device=device),
        }
        times = {k: [] for k in runs}
        for module, step in runs.values():
            timed(module, step, device)  # warm-up
        for _ in range(args.repeats):
            for k, (module, step) in runs.items():
                times[k].append(timed(module, step, device))
        for i, clock in enumerate(("wall", "cpu")):
            med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
            print(f"{n:>7} {clock:>5} {med['ours1']:>8.3f}s {med['np']:>7.3f}s "
                  f"{med['ours1'] / med['np']:>6.3f} {med['ours4']:>15.3f}s "
                  f"{med['ours4'] / med['np']:>6.3f}", flush=True)


if __name__ == "__main__":
    main()
