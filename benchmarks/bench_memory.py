"""The memory floor under a stochastic step on a net larger than the caches.

A stochastic step on width-512 float32 layers reads one unit's stretch of 2 × 512 weights
(4 KB) at a random place. This probe reads 4 KB chunks of a 128 MB float32 array and sums their
squares in float64, in order and at random places, with and without asking for the chunk
``k`` steps ahead (the prefetch the step kernels use), and prints nanoseconds per chunk.

Run: ``python benchmarks/bench_memory.py [--chunks 200000]``. Nothing is asserted; compare
the random-place time with ``kernel_step_seconds`` of ``bench_engine.py`` at depth 32.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from synbal._compiled.lowlevel import prefetch

CHUNK = 1024  # float32 values: 4 KB, one unit's two rows at width 512


@numba.njit(fastmath=True)
def _read(a: np.ndarray, order: np.ndarray, ahead: int) -> float:
    acc = 0.0
    for q in range(order.size):
        if ahead > 0 and q + ahead < order.size:
            start = order[q + ahead] * CHUNK
            for j in range(start, start + CHUNK, 16):
                prefetch(a, j)  # type: ignore[call-arg]  # numba supplies the typing context
        start = order[q] * CHUNK
        for j in range(start, start + CHUNK):
            x = np.float64(a[j])
            acc += x * x
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=200_000, help="chunks read per measurement")
    ap.add_argument("--megabytes", type=int, default=128, help="size of the array read")
    args = ap.parse_args()
    a = np.random.default_rng(0).standard_normal(args.megabytes * 2**18).astype(np.float32)
    n_chunks = a.size // CHUNK
    in_order = np.arange(args.chunks) % n_chunks
    at_random = np.random.default_rng(1).integers(0, n_chunks, args.chunks)
    cases = [("in order", in_order, 0), ("random places", at_random, 0),
             ("random places, prefetch 2 ahead", at_random, 2), ("random places, prefetch 8 ahead", at_random, 8)]
    for label, order, ahead in cases:
        _read(a, order[:10], ahead)  # compile
        best = np.inf
        for _ in range(3):
            start = time.perf_counter()
            _read(a, order, ahead)
            best = min(best, (time.perf_counter() - start) / order.size)
        print(f"{label:34s} {best * 1e9:6.0f} ns per 4 KB chunk ({CHUNK * 4 / best / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main()
