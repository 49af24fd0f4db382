"""Side by side: ``deficit`` and ``exact`` at 100,000 units on two source trees, alternating.

Run:  python benchmarks/ab_scaling.py OLD_SRC NEW_SRC [--units 100000] [--repeats 5]

Each repeat runs one fresh subprocess per tree (``PYTHONPATH=<tree>``), old and new in turn, on
the graphs of :mod:`bench_scaling` (a ReLU chain and a random sparse graph). A subprocess builds
both graphs, warms each call up once (imports, compiled kernels), then times ``synbal.deficit``
and ``synbal.balance(..., "exact")`` once each. Printed: the median and the range over the
repeats of every time, per tree, and the ratio of the medians, so a loaded machine slows both
trees alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
import synbal
from bench_scaling import random_sparse, relu_chain
out = {{}}
for family, make in (("chain", relu_chain), ("sparse", random_sparse)):
    g = make({units})
    for op, fn in (("deficit", lambda: synbal.deficit(g, "l2")), ("exact", lambda: synbal.balance(g, "l2", "exact"))):
        fn()
        start = time.perf_counter()
        res = fn()
        out[f"{{family}} {{op}}"] = time.perf_counter() - start
        if op == "exact":
            assert res.converged, (family, res.max_relative_deficit)
print(json.dumps(out))
"""


def run(tree: str, units: int) -> dict[str, float]:
    bench = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": tree}
    proc = subprocess.run([sys.executable, "-c", CHILD.format(bench=bench, units=units)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for r in range(args.repeats):
        for side in ("old", "new"):
            for key, t in run(getattr(args, side), args.units).items():
                times[side].setdefault(key, []).append(t)
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"{'case':<16} {'old median (range) s':>26} {'new median (range) s':>26} {'old/new':>8}")
    for key in times["old"]:
        o, n = times["old"][key], times["new"][key]
        mo, mn = statistics.median(o), statistics.median(n)
        print(f"{key:<16} {mo:>9.3f} ({min(o):.3f}-{max(o):.3f}) {mn:>9.3f} ({min(n):.3f}-{max(n):.3f}) "
              f"{mo / mn:>7.1f}x")


if __name__ == "__main__":
    main()
