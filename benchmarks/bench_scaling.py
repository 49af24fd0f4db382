"""Scaling of ``deficit`` and ``exact`` with the size of an explicit graph: linear, not quadratic.

Run:  python benchmarks/bench_scaling.py [--sizes 1000 10000 100000] [--out results.json]

Two families of :class:`synbal.Graph` (built once per size, outside the timings): a ReLU chain
``x -> h0 -> ... -> y`` (one unit per layer: the deepest possible net) and a random sparse graph
(about three random edges per hidden unit, ten inputs and ten outputs, cycles allowed). For each
size it times ``synbal.deficit`` and ``synbal.balance(..., "exact")`` end to end (best of
``--repeats``) and prints each time next to the previous size's: with linear growth the ratio of
the times is about the ratio of the sizes (10x for 10x more units), with quadratic growth its
square. Everything is measured in one run, side by side, so the ratios hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

import synbal
from synbal._adapters.graph import Graph


def relu_chain(n: int, seed: int = 0) -> Graph:
    """``x -> h0 -> ... -> h{n-1} -> y`` with weights uniform in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    names = ["x", *[f"h{i}" for i in range(n)], "y"]
    hidden = [{"name": m, "role": "hidden", "activation": "relu"} for m in names[1:-1]]
    units = [{"name": "x", "role": "input"}, *hidden, {"name": "y", "role": "output"}]
    w = rng.uniform(0.5, 2.0, n + 1)
    return Graph.from_dict({"format": "synbal.graph/1", "units": units,
                            "edges": [[a, b, float(v)] for a, b, v in zip(names[:-1], names[1:], w, strict=True)]})


def random_sparse(n: int, seed: int = 0, degree: int = 3) -> Graph:
    """``n`` ReLU units, ten inputs and ten outputs, about ``degree·n`` random edges (cycles allowed)."""
    rng = np.random.default_rng(seed)
    names = [*[f"x{i}" for i in range(10)], *[f"h{i}" for i in range(n)], *[f"y{i}" for i in range(10)]]
    units = [*[{"name": m, "role": "input"} for m in names[:10]],
             *[{"name": m, "role": "hidden", "activation": "relu"} for m in names[10:-10]],
             *[{"name": m, "role": "output"} for m in names[-10:]]]
    src = rng.integers(0, n + 10, degree * n)
    dst = rng.integers(10, n + 20, degree * n)
    pairs = sorted({(int(a), int(b)) for a, b in zip(src, dst, strict=True) if a != b})
    w = rng.uniform(0.5, 2.0, len(pairs))
    return Graph.from_dict({"format": "synbal.graph/1", "units": units,
                            "edges": [[names[a], names[b], float(v)] for (a, b), v in zip(pairs, w, strict=True)]})


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    rows = []
    for family, make in (("relu chain", relu_chain), ("random sparse", random_sparse)):
        previous: dict[str, float] | None = None
        for n in args.sizes:
            g = make(n)
            res = synbal.balance(g, "l2", "exact")
            row = {"family": family, "units": n, "edges": len(g.edges),
                   "deficit_s": best_of(args.repeats, lambda g=g: synbal.deficit(g, "l2")),
                   "exact_s": best_of(args.repeats, lambda g=g: synbal.balance(g, "l2", "exact")),
                   "converged": res.converged, "newton_iterations": res.sweeps}
            growth = {k: row[k] / previous[k] for k in ("deficit_s", "exact_s")} if previous else {}
            row["growth"] = growth
            rows.append(row)
            print(f"{family:>13} {n:>8,} units {len(g.edges):>8,} edges: deficit {row['deficit_s']:7.3f} s"
                  + (f" (x{growth['deficit_s']:.1f})" if growth else "        ")
                  + f"   exact {row['exact_s']:7.3f} s" + (f" (x{growth['exact_s']:.1f})" if growth else "        ")
                  + f"   converged {res.converged} in {res.sweeps} iterations", flush=True)
            previous = {k: float(row[k]) for k in ("deficit_s", "exact_s")}  # type: ignore[arg-type]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
