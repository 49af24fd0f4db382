"""Fuzzing the JSON graph format through the API: a seeded generator and a checker of every outcome.

:func:`fuzz_graph` turns a seed into a ``synbal.graph/1`` JSON dict (plain Python objects, so
the CLI harness can write it to a file as is): chains, layered, non-layered and recurrent graphs
with mixed activations, BiPU degrees (valid and invalid), biases, cost coefficients, and hostile
magnitudes — 1e±300, subnormals, zeros, mixes. :func:`fuzz_case` adds a regularizer and a method;
:func:`run_case` runs it through :func:`synbal.balance` and :func:`synbal.deficit` and sorts the
outcome into one of :data:`OUTCOMES`. Only ``ok``, ``typed`` and ``overflow`` are acceptable:

* ``ok`` — balanced; scales finite and non-zero, ``R`` finite, same function on random inputs
  (or the original overflows everywhere, so nothing can be compared);
* ``typed`` — a :class:`synbal.errors.SynbalError` (bad input, or a state float64 cannot hold);
* ``range`` — balanced, and in long double the balanced net computes the original's function,
  but in float64 it overflows or underflows where the original does not (a square of 1e-163,
  say): the function check fails (the CLI exits 1), as it must;
* ``untyped`` (any other exception), ``hang`` (over :data:`HANG_SECONDS`), ``bad_result``
  (success with a zero/infinite/NaN scale, non-finite ``R`` or deficit, converged with a NaN
  history) and ``changed`` (success, finite outputs, different function) are failures.

>>> case = fuzz_case(7)
>>> sorted(case) == ["graph", "method", "reg"] and case["graph"]["format"] == "synbal.graph/1"
True
>>> fuzz_graph(3) == fuzz_graph(3)
True
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections import Counter
from typing import Any

import numpy as np

import synbal
from synbal._adapters.graph import Graph, verify_same_function
from synbal.errors import SynbalError, VerificationError

__all__ = ["HANG_SECONDS", "OUTCOMES", "fuzz_case", "fuzz_graph", "run_case", "run_many"]

OUTCOMES = ("ok", "typed", "range", "untyped", "hang", "bad_result", "changed")
HANG_SECONDS = 20.0
METHODS = ("exact", "exact", "exact", "stochastic", "cyclic", "layer", "alternating", "tied", "multiplicative")
REGULARIZERS = ("l2", "l1", "l0.5", "l3", "1*l2+0.01*l1", "l2+l0.5", "0.5*l3+2*l1", "l1.5", "l2,1")
HOSTILE = (1e300, 1e-300, 1e150, 1e-150, 5e-324, 1e-310, 2.2e-308, 1.7e308, 0.0, 1.0, 1e200, 1e-200)
SCALABLE = ("relu", "leaky_relu", "abs", "linear", "identity")
OTHER = ("tanh", "sigmoid", "softplus", "gelu", "silu", "elu", "relu6", "sin")


def _magnitudes(rng: np.random.Generator, size: int) -> np.ndarray:
    mode = rng.choice(6, p=[0.2, 0.1, 0.15, 0.25, 0.15, 0.15])
    if mode == 0:  # ordinary
        return np.exp(rng.uniform(np.log(1e-2), np.log(1e2), size))
    if mode == 1:  # anything float64 holds
        return 10.0 ** rng.uniform(-300, 300, size)
    if mode == 2:  # picked from the extremes
        return np.asarray(rng.choice(HOSTILE, size), dtype=np.float64)
    if mode == 3:  # two families far apart
        high = 10.0 ** rng.uniform(140, 150, size)
        return np.where(rng.random(size) < 0.5, high, 10.0 ** rng.uniform(-150, -140, size))
    if mode == 4:  # subnormals and zeros among ordinary weights
        base = np.exp(rng.uniform(-3, 3, size))
        return np.where(rng.random(size) < 0.3, rng.choice([5e-324, 1e-310, 0.0, 4e-320], size), base)
    return 10.0 ** rng.uniform(-40, 40, size)


def _activation(rng: np.random.Generator) -> Any:
    r = rng.random()
    if r < 0.35:
        return str(rng.choice(SCALABLE))
    if r < 0.5:
        return {"type": "bilu", "a": float(rng.uniform(-2, 2)), "b": float(rng.uniform(-2, 2))}
    if r < 0.75:
        degree = float(rng.choice([0.01, 0.5, 2.0, 3.0, 100.0, 0.3, 1.7])) if rng.random() < 0.97 else \
            float(rng.choice([1e-320, 0.0, -1.0, 1e300, 1e-5, 1e5]))  # invalid: must be refused
        return {"type": "bipu", "c": degree, "C": float(rng.uniform(-2, 2)), "D": float(rng.uniform(-2, 2))}
    if r < 0.85:
        return str(rng.choice(OTHER))
    return "relu"


def fuzz_graph(seed: int) -> dict[str, Any]:
    """A random ``synbal.graph/1`` JSON dict (plain Python objects) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n_in, n_hid, n_out = int(rng.integers(1, 4)), int(rng.integers(0, 13)), int(rng.integers(1, 4))
    shape = int(rng.integers(4))  # 0 chain, 1 layered, 2 DAG with skips, 3 recurrent
    units: list[dict[str, Any]] = [{"name": f"x{k}", "role": "input"} for k in range(n_in)]
    units += [{"name": f"h{k}", "role": "hidden", "activation": _activation(rng)} for k in range(n_hid)]
    units += [{"name": f"y{k}", "role": "output"} for k in range(n_out)]
    xs, hs, ys = ([u["name"] for u in units if u["role"] == r] for r in ("input", "hidden", "output"))
    pairs: set[tuple[str, str]] = set()
    if shape == 0 or n_hid == 0:  # a chain x0 -> h0 -> ... -> y0 (plus the other inputs/outputs)
        path = [xs[0], *hs, ys[0]]
        pairs |= set(itertools.pairwise(path))
        pairs |= {(x, path[1]) for x in xs} | {(path[-2], y) for y in ys}
    elif shape == 1:  # layers
        cuts = sorted(rng.choice(np.arange(1, n_hid), size=min(int(rng.integers(0, 3)), n_hid - 1), replace=False))
        layers = [xs, *[list(part) for part in np.split(np.array(hs), cuts)], ys]
        pairs |= {(a, b) for la, lb in itertools.pairwise(layers) for a in la for b in lb
                  if rng.random() < 0.8}
    else:
        p_edge = float(rng.uniform(0.15, 0.6))
        order = [*xs, *hs]
        for i, a in enumerate(order):
            for b in [*order[i + 1:], *ys]:
                if b not in xs and rng.random() < p_edge:
                    pairs.add((a, b))
        if shape == 3:  # backward edges and self-loops
            pairs |= {(a, b) for a in hs for b in hs if hs.index(b) <= hs.index(a) and rng.random() < p_edge / 2}
    edges = sorted(pairs)
    mags = _magnitudes(rng, len(edges))
    signs = rng.choice([-1.0, 1.0], len(edges))
    graph: dict[str, Any] = {
        "format": "synbal.graph/1", "units": units,
        "edges": [[a, b, float(s * m)] for (a, b), s, m in zip(edges, signs, mags, strict=True)],
    }
    if rng.random() < 0.6:
        targets = [*hs, *ys]
        picked = [t for t in targets if rng.random() < 0.5]
        graph["biases"] = {t: float(v) for t, v in zip(picked, _magnitudes(rng, len(picked)) *
                                                        rng.choice([-1.0, 1.0], len(picked)), strict=True)}
    if edges and rng.random() < 0.2:
        graph["cost_coefficients"] = [[a, b, float(rng.choice([0.0, 0.5, 2.0, 1e-300, 1e100]))]
                                      for a, b in edges if rng.random() < 0.3]
    return graph


def fuzz_case(seed: int) -> dict[str, Any]:
    """A graph, a regularizer and a method, all drawn from ``seed``."""
    rng = np.random.default_rng([seed, 1])
    return {"graph": fuzz_graph(seed), "reg": str(rng.choice(REGULARIZERS)), "method": str(rng.choice(METHODS))}


def _bad_result(res: synbal.BalanceResult) -> str | None:
    scales = np.array(list(res.scales.values()), dtype=np.float64)
    if scales.size and not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        return "a scale is zero, infinite or NaN"
    if not (math.isfinite(res.regularizer_after) and math.isfinite(res.max_relative_deficit)):
        return f"R = {res.regularizer_after}, deficit = {res.max_relative_deficit}"
    if res.converged and not all(math.isfinite(h.regularizer) for h in res.history[1:]):
        return "converged with a non-finite R in the history"
    return None


def _same_in_long_double(a: Graph, b: Graph, samples: int = 16, rtol: float = 1e-8) -> bool:
    """Whether ``b`` computes ``a``'s function when both are evaluated in long double (on the
    inputs the function check uses): then a float64 mismatch is a range failure, not a changed function."""
    x = np.random.default_rng(0).standard_normal((samples, len(a.inputs)))
    steps = 6 if a.is_recurrent else None
    with np.errstate(all="ignore"):
        fa = a.simulate(x, steps, dtype=np.longdouble)
        fb = b.simulate(x, steps, dtype=np.longdouble)
    ok = np.isfinite(fa)
    if not ok.any() or not np.all(np.isfinite(fb[ok])):
        return False
    scale = max(np.max(np.abs(fa[ok])), np.finfo(np.longdouble).smallest_subnormal)
    return bool(np.max(np.abs(fa[ok] - fb[ok])) <= rtol * scale)


def run_case(case: dict[str, Any], max_sweeps: int = 1000) -> tuple[str, str]:
    """``(outcome, detail)`` of one case (see the module docstring)."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # counted by the CLI contract, not here
        try:
            g = Graph.from_dict(case["graph"])
            synbal.deficit(g, case["reg"])
            res = synbal.balance(g, case["reg"], case["method"], max_sweeps=max_sweeps, seed=0)
            outcome, detail = "ok", ""
            bad = _bad_result(res)
            if bad is not None:
                outcome, detail = "bad_result", bad
            else:
                try:
                    verify_same_function(g, res.net)
                except VerificationError as exc:
                    outcome = "range" if _same_in_long_double(g, res.net) else "changed"
                    detail = str(exc)
        except SynbalError as exc:
            outcome, detail = "typed", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # the outcome under test: an error that is not a SynbalError
            outcome, detail = "untyped", f"{type(exc).__name__}: {exc}"
    if time.perf_counter() - start > HANG_SECONDS:
        return "hang", f"{time.perf_counter() - start:.1f} s; {outcome}: {detail}"
    return outcome, detail


def run_many(seeds: range, max_sweeps: int = 1000) -> tuple[Counter[str], dict[str, list[tuple[int, str]]]]:
    """Tallies per outcome over ``seeds`` and, per outcome other than ``ok``/``typed``, its cases."""
    tally: Counter[str] = Counter()
    failures: dict[str, list[tuple[int, str]]] = {}
    for seed in seeds:
        outcome, detail = run_case(fuzz_case(seed), max_sweeps)
        tally[outcome] += 1
        if outcome not in ("ok", "typed"):
            failures.setdefault(outcome, []).append((seed, detail))
    return tally, failures


def main(argv: list[str] | None = None) -> None:
    """``python tests/fuzz_graphs.py START STOP``: run seeds ``START..STOP-1``, printing running tallies."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    start_seed, stop_seed = int(args[0]), int(args[1])
    begin = time.perf_counter()
    tally: Counter[str] = Counter()
    durations: list[tuple[float, int]] = []
    for seed in range(start_seed, stop_seed):
        case_start = time.perf_counter()
        outcome, detail = run_case(fuzz_case(seed))
        durations.append((time.perf_counter() - case_start, seed))
        tally[outcome] += 1
        if outcome not in ("ok", "typed"):
            print(f"seed {seed}: {outcome}: {detail[:200]}", flush=True)
        if (seed - start_seed + 1) % 100 == 0 or seed == stop_seed - 1:
            print(f"{seed - start_seed + 1} cases, {time.perf_counter() - begin:.0f} s: {dict(tally)}", flush=True)
    slowest = ", ".join(f"seed {seed} {seconds:.1f} s" for seconds, seed in sorted(durations, reverse=True)[:5])
    print(f"slowest cases: {slowest}", flush=True)


if __name__ == "__main__":
    main()
