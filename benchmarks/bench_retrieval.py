"""Retrieval scoring: afo_encoding.decoding.score_candidates against numpy.corrcoef.

Decoding by retrieval needs the Pearson r of every measured pattern (query) with every
predicted candidate pattern. The obvious numpy code stacks both sets and calls
``numpy.corrcoef``, which computes the whole (queries + candidates)^2 matrix in float64
and holds a float64 copy of everything. ``score_candidates`` computes only the
queries x candidates block, as chunked products of row-standardised blocks.

For each shape the script checks that every variant gives the numbers of corrcoef (the
largest difference, and how often both pick the same top-1 candidate), then times them
interleaved (numpy float32 and float64, torch float32 and bfloat16 on the CPU and on a GPU
when there is one, corrcoef; repeated) so that load from other processes on a shared CPU
hits all of them alike, and prints the median times and the median of the per-repeat
ratios. Last, the peak memory allocated during the call beyond the inputs and the output
(tracemalloc, which sees numpy's allocations), for several chunk sizes: it grows with the
chunk size, not with the numbers of queries and candidates.

All contenders run with the same number of BLAS and torch threads (``--threads``,
default 1).

Why the square case cannot reach large ratios in float32: ``numpy.corrcoef`` multiplies
the stacked matrix by itself with a symmetric rank-k update (half the products), so its
work for ``n`` queries and ``n`` candidates is only twice ours; float32 doubles the rate of
the product again, so about 4x is the ceiling there, less the cost of standardising. A
bfloat16 product (AMX units of recent Intel CPUs, GPUs) runs several times faster again,
at the price of scores rounded to about 3 significant digits. With few queries and many
candidates, the usual retrieval setting, corrcoef spends almost all its time on
candidate x candidate correlations nobody asked for.

The second peer is what one writes without corrcoef: z-score every row in float32 and take
one matrix product. It computes the same block in the same precision as ours, so it shows
what the chunking costs or saves in time; it holds z-scored copies of both inputs, which
ours never makes (not run with ``--skip-corrcoef``).

Run: ``python benchmarks/bench_retrieval.py`` (a few minutes on 2 cores). For the size of
the design claim (10,000 x 10,000 x 50,000, 4 GB of inputs; numpy.corrcoef would need
another 11 GB): ``python benchmarks/bench_retrieval.py --shape 10000 10000 50000
--repeats 1 --skip-corrcoef --memory-chunk-sizes 512``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from afo_encoding.decoding import score_candidates


def corrcoef_scores(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The peer: numpy.corrcoef on the stacked matrix, cut to the queries x candidates block."""
    n_queries = queries.shape[0]
    return np.corrcoef(np.vstack([queries, candidates]))[:n_queries, n_queries:]


def zscore_matmul_scores(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The plain peer: every row z-scored in float32 (whole copies of both inputs), then one
    matrix product divided by the number of voxels."""

    def zscore(a):
        a = a - a.mean(1, keepdims=True)
        return a / a.std(1, keepdims=True)

    return zscore(queries) @ zscore(candidates).T / queries.shape[1]


def make_patterns(n_queries: int, n_candidates: int, n_voxels: int):
    """Float32 predictions and noisy, offset measurements of the first candidates."""
    rng = np.random.default_rng(0)
    candidates = rng.standard_normal((n_candidates, n_voxels), dtype=np.float32)
    queries = candidates[np.arange(n_queries) % n_candidates]
    for start in range(0, n_queries, 1000):  # in blocks: no second input-sized temporary
        block = queries[start:start + 1000]
        block += 2.0 * rng.standard_normal(block.shape, dtype=np.float32)
        block += 100.0  # an offset, as raw signal has: standardisation must handle it
    return queries, candidates


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def peak_extra_mib(func, output_bytes: int) -> float:
    """Peak bytes allocated during ``func`` beyond its returned array, in MiB."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    result = func()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    return (peak - before - output_bytes) / 2**20


#: the second peer's name in the tables
ZSCORE = "float32 z-score matmul"


def contenders_for(queries, candidates, chunk_size: int, devices: list[str]) -> dict:
    """Every variant of score_candidates to time: numpy float32/float64, then torch float32
    and bfloat16 on every device asked for (the CPU's AMX units run bfloat16 products)."""

    def ours(**kw):
        return lambda: score_candidates(queries, candidates, chunk_size=chunk_size, **kw)

    contenders = {
        "numpy float32": ours(),
        "numpy float64": ours(dtype=np.float64),
    }
    for device in devices:
        contenders[f"torch {device} float32"] = ours(device=device)
        contenders[f"torch {device} bfloat16"] = ours(device=device, dtype="bfloat16")
    return contenders


def compare(shape, chunk_size: int, repeats: int, skip_corrcoef: bool,
            memory_chunk_sizes: list[int], devices: list[str]) -> None:
    n_q, n_c, n_v = shape
    queries, candidates = make_patterns(n_q, n_c, n_v)
    print(f"\n== queries x candidates x voxels = {n_q} x {n_c} x {n_v}, chunk_size "
          f"{chunk_size}, inputs {(queries.nbytes + candidates.nbytes) / 2**20:.0f} MiB")

    def peer():
        return corrcoef_scores(queries, candidates)

    contenders = contenders_for(queries, candidates, chunk_size, devices)
    if skip_corrcoef:
        contenders = {"numpy float32": contenders["numpy float32"]}
    else:
        ref = peer()
        truth = np.arange(n_q) % n_c
        print(f"same numbers? max |r - r_corrcoef| and top-1 agreement with corrcoef "
              f"(corrcoef's own top-1 accuracy: {np.mean(ref.argmax(1) == truth):.3f})")
        for name, func in contenders.items():
            scores = func()
            print(f"  {name:24s} {np.abs(scores - ref).max():.1e}   "
                  f"{np.mean(scores.argmax(1) == ref.argmax(1)):.4f}")
            del scores
        scores = zscore_matmul_scores(queries, candidates)
        print(f"  {'float32 z-score matmul':24s} {np.abs(scores - ref).max():.1e}   "
              f"{np.mean(scores.argmax(1) == ref.argmax(1)):.4f}")
        del ref, scores
        contenders["numpy.corrcoef (stacked)"] = peer
        contenders[ZSCORE] = lambda: zscore_matmul_scores(queries, candidates)
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, func in contenders.items():
            times[name].append(timed(func))
    for name, values in times.items():
        print(f"{name:26s} {statistics.median(values):8.3f} s (median of {repeats})")
    if not skip_corrcoef:
        for peer_name in ("numpy.corrcoef (stacked)", ZSCORE):
            ref_times = times[peer_name]
            print(f"speed-up over {peer_name} (median of per-repeat ratios):")
            for name, values in times.items():
                if name not in ("numpy.corrcoef (stacked)", ZSCORE):
                    ratio = statistics.median(r / t for r, t in zip(ref_times, values))
                    print(f"  {name:24s} {ratio:5.1f}x")
        mem_ref = peak_extra_mib(peer, n_q * n_c * 8)
        print(f"peak extra memory of numpy.corrcoef: {mem_ref:9.1f} MiB")
    print("peak extra memory of score_candidates numpy float32 (beyond inputs and output; "
          "tracemalloc does not see torch's allocations):")
    for size in memory_chunk_sizes:
        mem = peak_extra_mib(
            lambda s=size: score_candidates(queries, candidates, chunk_size=s), n_q * n_c * 4)
        print(f"  chunk_size {size:5d}: {mem:9.1f} MiB (two blocks, 2 * chunk_size * "
              f"n_voxels * 4 B = {2 * size * n_v * 4 / 2**20:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, action="append",
                        metavar=("N_QUERIES", "N_CANDIDATES", "N_VOXELS"),
                        help="shapes to run (repeatable); default: 1000 1000 20000 (square) "
                             "and 100 5000 20000 (few queries, a large candidate set)")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS threads for both contenders (default 1: on a CPU shared "
                             "with other processes, oversubscribed BLAS threads make timings "
                             "meaningless)")
    parser.add_argument("--memory-chunk-sizes", type=int, nargs="+", default=[64, 256, 512],
                        help="chunk sizes at which to measure the peak memory (one run each)")
    parser.add_argument("--skip-corrcoef", action="store_true",
                        help="time only score_candidates in float32 (for sizes corrcoef "
                             "cannot hold)")
    parser.add_argument("--devices", nargs="*", default=None,
                        help="torch devices to time (default: cpu, and cuda when present)")
    args = parser.parse_args()
    devices = args.devices
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    torch.set_num_threads(args.threads)
    print(f"BLAS and torch threads: {args.threads}; torch devices: {devices}")
    with threadpool_limits(args.threads):
        for shape in args.shape or [(1000, 1000, 20000), (100, 5000, 20000)]:
            compare(shape, args.chunk_size, args.repeats, args.skip_corrcoef,
                    args.memory_chunk_sizes, devices)


if __name__ == "__main__":
    main()
