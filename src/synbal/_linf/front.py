"""``synbal.balance(net, "linf")`` and ``synbal.deficit(net, "linf")``: extraction, solving, reports.

Any adapter that supports per-weight (custom) costs provides the magnitudes; biases are left
out of the costs unless the regularizer is ``"linf+bias"`` (they are still scaled on apply).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from synbal._adapters.protocol import Adapter, adapter_for
from synbal._linf.graph import MaxGraph
from synbal._linf.lexmin import lexmin_lp, local_sweeps
from synbal._linf.regularizer import MaxNormRegularizer
from synbal._linf.solve import max_balance_unit_degree
from synbal._problem.metrics import DeficitReport, UnitBalance
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import CustomRegularizer
from synbal._result import BalanceResult
from synbal._solvers.base import HistoryEntry
from synbal.errors import RegularizerError, SynbalError

__all__ = ["balance_max", "deficit_max", "max_problem"]

_MAGNITUDE = CustomRegularizer(g=np.abs, dg=np.sign, name="linf")


def _costs_without_biases(adapter: Adapter) -> BalanceProblem:
    """The adapter's per-weight costs with every bias's cost set to zero (biases are not counted)."""
    from synbal._adapters.dense import DenseNetAdapter
    from synbal._adapters.graph import GraphAdapter

    if isinstance(adapter, GraphAdapter):
        graph = adapter.graph.copy()
        graph.bias_costs = {name: 0.0 for name in graph.biases}
        return GraphAdapter(graph).problem(_MAGNITUDE)
    if isinstance(adapter, DenseNetAdapter):
        net = dataclasses.replace(adapter.net, biases=[None] * len(adapter.net.weights))
        return DenseNetAdapter(net).problem(_MAGNITUDE)
    discovery = getattr(adapter, "discovery", None)
    if discovery is not None:  # PyTorch: zero the bias tensors in a copy of the parameter table
        import torch

        from synbal._adapters.torch.extract import build_problem

        params = {name: (torch.zeros_like(p) if name in discovery.uses and discovery.uses[name].bias else p)
                  for name, p in discovery.params.items()}
        return build_problem(dataclasses.replace(discovery, params=params), _MAGNITUDE)
    raise RegularizerError(
        f"cannot leave biases out of the max-norm for a {type(adapter).__name__}; use 'linf+bias'"
    )


def max_problem(adapter: Adapter, reg: MaxNormRegularizer) -> tuple[MaxGraph, BalanceProblem]:
    """The pair graph of ``adapter``'s source for ``reg``, and the per-weight problem it came from."""
    problem = adapter.problem(_MAGNITUDE) if reg.include_bias else _costs_without_biases(adapter)
    if problem.custom is None:  # pragma: no cover - every built-in adapter supports custom costs
        raise SynbalError(f"{type(adapter).__name__} gives no per-weight magnitudes")
    return MaxGraph.from_costs(problem.custom, problem.degree, problem.names or []), problem


def solve_max(g: MaxGraph, method: str, *, tol: float, max_sweeps: int,
              seed: int | None) -> tuple[np.ndarray, int, np.ndarray]:
    """``(u, rounds or sweeps, unreachable)`` for ``method`` (``exact`` = the canonical state)."""
    MaxNormRegularizer().check_method(method)
    none = np.zeros(g.n, dtype=bool)
    if method != "exact":
        u, sweeps, _ = local_sweeps(g, order=method, seed=seed, tol=tol, max_sweeps=max_sweeps)
        return u, sweeps, none
    dead = g.dead_mask()
    if np.all(g.degree[~dead] == 1.0):
        return max_balance_unit_degree(g.n, g.dst, g.src, g.loga, dead)
    u, lps = lexmin_lp(g)
    return u, lps, none


def balance_max(net: Any, reg: MaxNormRegularizer, method: str, *, tol: float, max_sweeps: int,
                seed: int | None, inplace: bool, **adapter_options: Any) -> BalanceResult:
    """The max-norm branch of :func:`synbal.balance` (same result type)."""
    start = time.perf_counter()
    adapter = adapter_for(net, **adapter_options)
    g, problem = max_problem(adapter, reg)
    u0 = np.zeros(g.n)
    u, steps, unreachable = solve_max(g, method, tol=tol, max_sweeps=max_sweeps, seed=seed)
    rel = np.where(unreachable, 0.0, g.relative_deficit(u))
    final = float(rel.max(initial=0.0))
    history = [HistoryEntry(0, g.norm(u0), float(g.relative_deficit(u0).max(initial=0.0))),
               HistoryEntry(max(int(steps), 1), g.norm(u), final)]
    balanced = adapter.apply(u, inplace=inplace)
    names = list(g.names)
    excluded = adapter.excluded()
    excluded.update({names[i]: "no path from the inputs through it to the outputs; left unscaled"
                     for i in np.flatnonzero(unreachable)})
    return BalanceResult(
        net=balanced, scales={names[i]: float(np.exp(u[i])) for i in range(g.n)}, log_scales=u,
        converged=final <= tol, history=history, method=method, regularizer=str(reg),
        regularizer_before=history[0].regularizer, regularizer_after=history[-1].regularizer,
        max_relative_deficit=final, seconds=time.perf_counter() - start, problem=problem, excluded=excluded,
    )


def deficit_max(net: Any, reg: MaxNormRegularizer, **adapter_options: Any) -> DeficitReport:
    """The max-norm branch of :func:`synbal.deficit`: per unit the largest in/out weight."""
    adapter = adapter_for(net, **adapter_options)
    g, _ = max_problem(adapter, reg)
    u = np.zeros(g.n)
    IN, OUT = (np.exp(v) for v in g.in_out(u))
    rel = g.relative_deficit(u)
    dead = g.dead_mask()
    units = [UnitBalance(name=str(g.names[i]), IN=float(IN[i]), OUT=float(OUT[i]), degree=float(g.degree[i]),
                         deficit=0.0 if dead[i] else float((IN[i] - OUT[i]) ** 2),
                         relative_deficit=float(rel[i]), status="dead" if dead[i] else "free")
             for i in range(g.n)]
    return DeficitReport(regularizer=str(reg), units=units, regularizer_value=g.norm(u),
                         overall_deficit=float(sum(x.deficit for x in units)),
                         max_relative_deficit=float(rel.max(initial=0.0)), frobenius_norm=None,
                         excluded=adapter.excluded())
