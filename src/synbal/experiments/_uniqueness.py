"""Theorem 9.1 beyond layered L2 nets: every random order ends in the one balanced state.

``synbal reproduce uniqueness``. Claim tested (paper, Theorem 9.1 and Remark 9.3 — stated for any
network of BiLU/BiPU units and any Lp regularizer, shown in the paper's Figure 9 only for layered
nets with L2): stochastic balancing, run with many random orders from the same weights, converges
to a single balanced state that depends only on the weights.

Design: four families of random explicit networks (:func:`~synbal.experiments._random_graphs.random_graph`,
biases included, weights log-uniform in [0.2, 2] with random signs) —

* ``non-layered``: DAGs with skip connections, BiLU units of several slopes;
* ``recurrent``: the same plus backward edges and self-loops (cycles);
* ``mixed``: about 20 % of the hidden units non-scalable (tanh, sigmoid, softplus, gelu, silu),
  which stay fixed;
* ``BiPU``: about a third of the hidden units BiPUs of degree c ∈ {0.5, 2, 3} (balanced means
  IN = c·OUT);

and three regularizers, L2, L1 and L0.5 (p = 0.5). For each graph and regularizer the exact
solver gives the reference state ``u*`` (to max relative deficit 1e-12); then ``orders``
stochastic runs (one random unit per step, seeds 0, 1, …) stop at max relative deficit
``tol = 1e-10``. Measured per run: whether it converged, ``max_i |u_i − u*_i|`` (the largest
difference of a unit's log-scale, i.e. of ``log λ_i``) and the relative difference of the final
regularizer value.

Verdict (thresholds fixed before any run: :data:`SAME_STATE`): *supported* when every run
converged and ends within ``SAME_STATE`` of ``u*`` in every unit; *not supported* when some
converged run ends farther away; *inconclusive* when all converged runs agree but some did not
converge within the sweep budget. Full run: 10 graphs × 20 orders per family and regularizer,
24 hidden units (2,400 stochastic runs); ``--quick``: 2 graphs × 5 orders, 10 hidden units.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synbal._adapters.graph import GraphAdapter
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal.errors import SynbalError
from synbal.experiments._random_graphs import random_graph
from synbal.experiments._report import ExperimentContext, new_figure, write_outputs

__all__ = ["FAMILIES", "SAME_STATE", "UniquenessSettings", "run", "run_cell", "verdict"]

NAME = "uniqueness"
OPTIONS = {"graphs": "random graphs per family", "orders": "random orders (stochastic runs) per graph",
           "hidden": "hidden units per graph"}
CLAIM = "stochastic balancing in any order converges to one balanced state (Theorem 9.1), for any graph and Lp"
#: Every run must end within this max |Δ log λ| of the exact state (log-scale units).
SAME_STATE = 1e-6
#: ``random_graph`` options per family.
FAMILIES: dict[str, dict[str, bool]] = {
    "non-layered": {},
    "recurrent": {"recurrent": True},
    "mixed": {"mixed": True},
    "BiPU": {"bipu": True},
}
REGULARIZERS = ("l2", "l1", "l0.5")


@dataclass(frozen=True)
class UniquenessSettings:
    """Graphs per family, random orders per graph, hidden units, tolerances, sweep budget."""

    graphs: int = 10
    orders: int = 20
    hidden: int = 24
    tol: float = 1e-10
    exact_tol: float = 1e-12
    max_sweeps: int = 100_000

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> UniquenessSettings:
        base = cls(graphs=2, orders=5, hidden=10) if ctx.quick else cls()
        extra = {k: int(ctx.extra[k]) for k in ("graphs", "orders", "hidden") if k in ctx.extra}
        if ctx.seeds is not None:
            extra["orders"] = ctx.seeds
        chosen = replace(base, **extra)
        if min(chosen.graphs, chosen.orders, chosen.hidden) < 1:
            raise SynbalError(f"{NAME}: graphs, orders and hidden must be at least 1")
        return chosen


def run_cell(family: str, reg_name: str, graph_seed: int, st: UniquenessSettings) -> dict[str, Any]:
    """One graph and regularizer: the exact state, then ``st.orders`` random orders against it."""
    kinds = FAMILIES[family]
    graph = random_graph(np.random.default_rng(graph_seed), n_hidden=st.hidden, recurrent=kinds.get("recurrent", False),
                         bipu=kinds.get("bipu", False), mixed=kinds.get("mixed", False))
    reg = parse_regularizer(reg_name)
    problem = GraphAdapter(graph).problem(reg)
    exact = solve(problem, reg, "exact", SolveOptions(tol=st.exact_tol))
    if not exact.converged:
        raise SynbalError(f"{NAME}: the exact solver did not converge on {family} graph {graph_seed} ({reg_name})")
    r_exact = problem.value(exact.u)
    distance, r_gap, sweeps, converged = [], [], [], []
    for order in range(st.orders):
        res = solve(problem, reg, "stochastic", SolveOptions(tol=st.tol, seed=order, max_sweeps=st.max_sweeps))
        converged.append(bool(res.converged))
        distance.append(float(np.max(np.abs(res.u - exact.u))) if problem.n else 0.0)
        r_gap.append(abs(problem.value(res.u) - r_exact) / r_exact)
        sweeps.append(res.sweeps)
    return {"units": problem.n, "free_units": int(problem.free_mask().sum()), "recurrent": graph.is_recurrent,
            "exact_shift": float(np.max(np.abs(exact.u))) if problem.n else 0.0,
            "regularizer_drop": 1.0 - r_exact / problem.value(np.zeros(problem.n)),
            "converged": converged, "distance": distance, "r_gap": r_gap, "sweeps": sweeps}


def verdict(converged: int, runs: int, worst_converged_distance: float) -> tuple[str, str]:
    """``(word, sentence)`` from the run counts and the largest distance of a converged run.

    >>> verdict(10, 10, 1e-9)[0], verdict(10, 10, 1e-3)[0], verdict(9, 10, 1e-9)[0]
    ('supported', 'not supported', 'inconclusive')
    """
    text = (f"{converged}/{runs} runs converged; the largest max |Δ log λ| of a converged run from the exact "
            f"state is {worst_converged_distance:.2e} (threshold {SAME_STATE:g})")
    if worst_converged_distance > SAME_STATE:
        return "not supported", text + ": some random order ends in a different state."
    if converged < runs:
        return "inconclusive", text + ": the converged runs agree, but not every run converged within the budget."
    return "supported", text + ": every random order ends in the exact balanced state."


def _aggregate(cells: list[dict[str, Any]]) -> dict[str, Any]:
    dist = np.array([d for c in cells for d in c["distance"]])
    conv = np.array([v for c in cells for v in c["converged"]])
    worst = float(dist[conv].max()) if conv.any() else float("inf")
    word, text = verdict(int(conv.sum()), int(conv.size), worst)
    return {"graphs": len(cells), "runs": int(conv.size), "converged": int(conv.sum()),
            "max_distance": worst, "median_distance": float(np.median(dist)),
            "max_regularizer_gap": float(max(g for c in cells for g in c["r_gap"])),
            "sweeps_mean": float(np.mean([s for c in cells for s in c["sweeps"]])),
            "sweeps_max": int(max(s for c in cells for s in c["sweeps"])),
            "units_mean": float(np.mean([c["units"] for c in cells])),
            "exact_shift_max": float(max(c["exact_shift"] for c in cells)),
            "regularizer_drop_mean": float(np.mean([c["regularizer_drop"] for c in cells])),
            "verdict": word, "sentence": text}


def _figure(table: dict[str, dict[str, dict[str, Any]]], distances: dict[str, dict[str, list[float]]]) -> Any:
    fig, ax = new_figure(size=(7.5, 3.8))
    labels, data = [], []
    for family, per_reg in distances.items():
        for reg, values in per_reg.items():
            labels.append(f"{family}\n{reg}")
            data.append(np.log10(np.maximum(values, 1e-18)))
    ax.boxplot(data, whis=(0, 100))
    ax.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=6)
    ax.axhline(np.log10(SAME_STATE), color="red", ls="--", label=f"threshold {SAME_STATE:g}")
    ax.set_ylabel("log10 max_i |u_i − u*_i| (end of each run)")
    ax.set_title("stochastic balancing, random orders vs the exact state", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """``synbal reproduce uniqueness`` (see the module docstring)."""
    st = UniquenessSettings.for_context(ctx)
    start = time.perf_counter()
    table: dict[str, dict[str, dict[str, Any]]] = {}
    distances: dict[str, dict[str, list[float]]] = {}
    total = len(FAMILIES) * len(REGULARIZERS) * st.graphs
    with tqdm(total=total, desc=NAME, unit="graph", disable=not ctx.progress) as bar:
        for family in FAMILIES:
            table[family], distances[family] = {}, {}
            for reg in REGULARIZERS:
                cells = []
                for g in range(st.graphs):
                    cells.append(run_cell(family, reg, g, st))
                    bar.update()
                table[family][reg] = _aggregate(cells)
                distances[family][reg] = [d for c in cells for d in c["distance"]]
    runs = sum(c["runs"] for per in table.values() for c in per.values())
    conv = sum(c["converged"] for per in table.values() for c in per.values())
    worst = max(c["max_distance"] for per in table.values() for c in per.values())
    word, sentence = verdict(conv, runs, worst)
    results = {"verdict": word, "sentence": sentence, "table": table, "distances": distances,
               "seconds": time.perf_counter() - start}
    write_outputs(ctx, NAME, results=results, settings={**asdict(st), "same_state": SAME_STATE,
                                                        "families": FAMILIES, "regularizers": REGULARIZERS},
                  summary_md=_summary(st, table, word, sentence), figures={"distances": _figure(table, distances)})
    return results


def _summary(st: UniquenessSettings, table: dict[str, dict[str, dict[str, Any]]], word: str, sentence: str) -> str:
    lines = [
        f"# {NAME}: {CLAIM}",
        "",
        f"**Result: {word}.** {sentence}",
        "",
        f"{st.graphs} random graphs per family ({st.hidden} hidden units, biases, weights log-uniform in "
        f"[0.2, 2] with random signs), {st.orders} random orders per graph and regularizer; stochastic runs stop "
        f"at max relative deficit {st.tol:g} (at most {st.max_sweeps} sweeps); reference: the exact solver "
        f"to {st.exact_tol:g}.",
        "",
        "| family | R | runs | converged | max |Δ log λ| | median | max rel. gap in R | sweeps mean (max) "
        "| scalable units (mean) | max |log λ*| | R drop by balancing | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for family, per_reg in table.items():
        for reg, c in per_reg.items():
            lines.append(
                f"| {family} | {reg} | {c['runs']} | {c['converged']} | {c['max_distance']:.2e} | "
                f"{c['median_distance']:.1e} | {c['max_regularizer_gap']:.1e} | {c['sweeps_mean']:.0f} "
                f"({c['sweeps_max']}) | {c['units_mean']:.1f} | {c['exact_shift_max']:.3g} | "
                f"{100 * c['regularizer_drop_mean']:.1f} % | {c['verdict']} |")
    lines += ["", "max |log λ*| and the R drop show how far the exact state is from the start (there was "
              "something to balance); max |Δ log λ| is how far a random order's end point is from it."]
    return "\n".join(lines)
