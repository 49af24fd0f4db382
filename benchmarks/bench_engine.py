"""Engine speed: exact / layer / stochastic vs a paper-style per-unit Python loop.

Run:  python benchmarks/bench_engine.py [--skip-big] [--budget SECONDS] [--out results.json]

For each layered net (float32 weights, He-initialised, biases) it reports the time to reach a
max relative deficit of 1e-10 end to end (cost extraction + solve + apply; for ``exact`` the best
of ``--repeats`` runs) and that time divided by the best-of-5 time of one read of all weights
("passes", measured side by side in the same run), the
per-step speed of the compiled stochastic kernel against a per-unit Python loop written the way
the paper's code does it, 1,000 independent stochastic runs on the MNIST-autoencoder shape, and
the peak memory traced during ``exact`` relative to the size of the weights.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from synbal._adapters.dense import DenseNet, DenseNetAdapter
from synbal._compiled.chain_steps import step_kernel
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve

L2 = parse_regularizer("l2")
TOL = 1e-10


def make_net(widths: list[int], seed: int = 0) -> DenseNet:
    rng = np.random.default_rng(seed)
    weights = [
        (rng.standard_normal((widths[k + 1], widths[k]), dtype=np.float32) * np.float32(np.sqrt(2 / widths[k])))
        for k in range(len(widths) - 1)
    ]
    biases = [(0.1 * rng.standard_normal(widths[k + 1])).astype(np.float32) for k in range(len(widths) - 1)]
    return DenseNet(weights, biases)


def read_time(net: DenseNet) -> float:
    best = np.inf
    for _ in range(5):
        t = time.perf_counter()
        for W in net.weights:
            W.sum()
        best = min(best, time.perf_counter() - t)
    return best


def end_to_end(net: DenseNet, method: str, budget: float, repeats: int = 1) -> dict[str, float | int | bool | None]:
    """Best of ``repeats`` end-to-end runs (adapter with its NaN check, costs, solve, apply).

    ``exact`` runs without the budget callback (it finishes in a few iterations; a callback
    would make it return to Python after every iteration).
    """
    best = np.inf
    for _ in range(repeats):
        work = net.copy()
        t0 = time.perf_counter()
        adapter = DenseNetAdapter(work)
        problem = adapter.problem(L2)
        deadline = time.perf_counter() + budget

        def stop_when_late(sweep: int, u: np.ndarray, deadline: float = deadline) -> None:
            if time.perf_counter() > deadline:
                raise TimeoutError

        opts = SolveOptions(tol=TOL, seed=0, max_sweeps=1_000_000,
                            callback=None if method == "exact" else stop_when_late)
        try:
            res = solve(problem, L2, method, opts)
        except TimeoutError:
            return {"seconds": None, "converged": False, "sweeps": -1}
        adapter.apply(res.u, inplace=True)
        best = min(best, time.perf_counter() - t0)
    seconds = best
    # measured on the balanced weights themselves (float64 copy: the float32 rounding of the
    # written weights alone leaves ~1e-8)
    check = DenseNetAdapter(DenseNet([w.astype(np.float64) for w in work.weights],
                                     [b.astype(np.float64) for b in work.biases if b is not None]))
    achieved = check.problem(L2).max_relative_deficit(np.zeros(problem.n))
    return {"seconds": seconds, "converged": res.converged, "sweeps": res.sweeps,
            "solver_max_relative_deficit": res.history[-1].max_relative_deficit,
            "max_relative_deficit_of_written_weights": achieved}


def paper_loop_step_time(net: DenseNet, steps: int = 3000, use_torch: bool = True) -> float:
    """Per-step time of the paper-style loop: pick a unit, compute IN/OUT, rescale its weights.

    ``use_torch`` works on the model's torch tensors (as PyTorch research code does); otherwise
    on numpy arrays — the faster of the two baselines, reported beside it.
    """
    import torch

    lib = torch if use_torch else np
    Ws = [torch.from_numpy(w.copy()) if use_torch else w.copy() for w in net.weights]
    bs = [torch.from_numpy(b.copy()) if use_torch else b.copy() for b in net.biases if b is not None]
    sizes = [w.shape[0] for w in Ws[:-1]]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(steps):
        layer = int(rng.integers(len(sizes)))
        i = int(rng.integers(sizes[layer]))
        IN = float(lib.sum(Ws[layer][i] ** 2) + bs[layer][i] ** 2)
        OUT = float(lib.sum(Ws[layer + 1][:, i] ** 2))
        lam = (OUT / IN) ** 0.25
        Ws[layer][i] *= lam
        bs[layer][i] *= lam
        Ws[layer + 1][:, i] /= lam
    return (time.perf_counter() - t) / steps


def kernel_step_time(net: DenseNet, sweeps: int = 20) -> float:
    """Per-step time of the compiled kernel the stochastic schedule uses (``step_kernel``)."""
    problem = DenseNetAdapter(net).problem(L2)
    graph = step_kernel(problem)
    free = np.flatnonzero(problem.free_mask())
    order = np.random.default_rng(0).choice(free, size=free.size * sweeps)
    u = np.zeros(problem.n)
    graph.run_steps(u.copy(), order[:10], 1.0)  # compile
    t = time.perf_counter()
    graph.run_steps(u, order, 1.0)
    return (time.perf_counter() - t) / order.size


def peak_memory_ratio(net: DenseNet, method: str = "exact") -> float:
    """Peak traced allocation while balancing (``stochastic``: 3 sweeps), over the weights' size."""
    weight_bytes = sum(w.nbytes for w in net.weights) + sum(b.nbytes for b in net.biases if b is not None)
    tracemalloc.start()
    tracemalloc.reset_peak()
    adapter = DenseNetAdapter(net)
    problem = adapter.problem(L2)
    res = solve(problem, L2, method, SolveOptions(tol=TOL, max_sweeps=3 if method == "stochastic" else 10_000))
    adapter.apply(res.u, inplace=True)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / weight_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-big", action="store_true", help="skip the 126M-weight net")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds allowed per slow method")
    ap.add_argument("--runs", type=int, default=1000, help="independent stochastic runs on the AE")
    ap.add_argument("--repeats", type=int, default=30,
                    help="end-to-end exact runs per net, the best one reported (default 30; 3 on the big net)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    shapes = {"mnist-ae": [784, 200, 100, 50, 100, 200, 784]}
    for depth in (4, 8, 16, 32):
        shapes[f"w512-d{depth}"] = [512] * (depth + 1)
    if not args.skip_big:
        shapes["1024-4096x8-1024"] = [1024] + [4096] * 8 + [1024]
    rows = []
    for name, widths in shapes.items():
        net = make_net(widths)
        tread = read_time(net)
        row: dict[str, object] = {"net": name, "weights": int(sum(w.size for w in net.weights)),
                                  "read_seconds": tread}
        big = name.startswith("1024")
        methods = ["exact"] if big else ["exact", "layer", "stochastic"]
        repeats = min(args.repeats, 3) if big else args.repeats
        for method in methods:
            r = end_to_end(net, method, args.budget, repeats=repeats if method == "exact" else 1)
            r["passes"] = r["seconds"] / tread if r["seconds"] is not None else None
            row[method] = r
        if not name.startswith("1024"):
            paper = paper_loop_step_time(net)
            paper_np = paper_loop_step_time(net, use_torch=False)
            kernel = kernel_step_time(net)
            row["paper_torch_step_seconds"] = paper
            row["paper_numpy_step_seconds"] = paper_np
            row["kernel_step_seconds"] = kernel
            row["step_speedup"] = paper / kernel
            row["step_speedup_vs_numpy_loop"] = paper_np / kernel
        row["peak_memory_x_weights"] = peak_memory_ratio(net.copy())
        if not big:
            row["peak_memory_x_weights_stochastic"] = peak_memory_ratio(net.copy(), "stochastic")
        rows.append(row)
        print(json.dumps(row), flush=True)
    # 1000 independent stochastic runs on the MNIST-AE shape
    net = make_net(shapes["mnist-ae"])
    problem = DenseNetAdapter(net).problem(L2)
    graph = step_kernel(problem)
    free = np.flatnonzero(problem.free_mask())
    graph.many_stochastic(np.zeros(problem.n), free, 2, 0, TOL, 5, 1.0)  # compile
    t = time.perf_counter()
    _, sweeps, _ = graph.many_stochastic(np.zeros(problem.n), free, args.runs, 1, TOL, 100_000, 1.0)
    many = {"runs": args.runs, "seconds": time.perf_counter() - t, "all_converged": bool((sweeps > 0).all()),
            "max_sweeps_used": int(np.abs(sweeps).max())}
    print(json.dumps({"many_stochastic": many}), flush=True)
    print()
    print("| net | weights | exact s | exact passes | layer s | stochastic s | stochastic step vs torch loop "
          "| vs numpy loop | peak mem / weights (exact, stochastic) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        def cell(m: str, row: dict[str, object] = row) -> str:
            r = row.get(m)
            if not isinstance(r, dict):
                return "–"
            return f"{r['seconds']:.3f} ({r['sweeps']} sw)" if r["converged"] else f"> {args.budget:.0f}"
        ex = row["exact"]
        assert isinstance(ex, dict)
        speed = f"{row['step_speedup']:.0f}×" if "step_speedup" in row else "–"
        speed_np = f"{row['step_speedup_vs_numpy_loop']:.0f}×" if "step_speedup" in row else "–"
        print(f"| {row['net']} | {row['weights']:,} | {cell('exact')} | {ex['passes']:.0f} | {cell('layer')} | "
              f"{cell('stochastic')} | {speed} | {speed_np} | {row['peak_memory_x_weights']:.2f}, "
              f"{row.get('peak_memory_x_weights_stochastic', float('nan')):.2f} |")
    print(f"\n{args.runs} stochastic runs on mnist-ae to {TOL:g}: {many['seconds']:.1f} s, "
          f"all converged: {many['all_converged']}")
    if args.out:
        from synbal._io import atomic_write_json

        atomic_write_json(args.out, {"rows": rows, "many_stochastic": many})


if __name__ == "__main__":
    main()
