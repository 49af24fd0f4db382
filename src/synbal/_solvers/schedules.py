"""Local balancing schedules of the theory (section 9 of the synaptic-balance paper).

* ``stochastic`` — one uniformly random free unit per step (seeded); a sweep is ``n`` steps.
* ``cyclic`` — every free unit once per sweep, in a fixed order.
* ``layer`` — independent sets balanced all at once, in turn: the layers of a layered net, or
  a greedy colouring of the unit graph.
* ``alternating`` — two independent sets (odd/even layers, or the two classes of a bipartite
  unit graph) balanced in turn.
* ``tied`` — one λ per set (default sets: the layers), each set balanced as a single unit.

Every step sets a unit (or set) to its optimal scale, or to ``λ*^θ`` for partial steps with
``θ ∈ (0, 1)``, so ``R`` never increases, and every schedule except ``tied`` converges to the
same state as :func:`synbal._solvers.exact.solve_exact` (Theorem 9.1).

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> from synbal._problem.regularizers import parse_regularizer
>>> from synbal._solvers.base import SolveOptions
>>> prob = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [-1], [[4.0]]),
...     CostBlock(2.0, [1], [0], [[1.0]]), CostBlock(2.0, [-1], [1], [[0.25]])])
>>> res = make_solver("cyclic")(prob, parse_regularizer("l2"), SolveOptions(tol=1e-12))
>>> res.converged, np.round(np.exp(res.u), 6).tolist()
(True, [0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import CustomRegularizer, Regularizer
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult, check_range
from synbal._solvers.custom import custom_set_steps, custom_unit_steps
from synbal._solvers.local import optimal_log_steps
from synbal.errors import SynbalError

__all__ = ["SCHEDULES", "SetEvaluator", "make_solver", "tied_layer_closed_form"]

SCHEDULES = ("stochastic", "cyclic", "layer", "alternating", "tied")


class SetEvaluator:
    """Per-power ``(IN, OUT, self-loop)`` costs of the members of a set, touching only its blocks."""

    def __init__(self, problem: BalanceProblem) -> None:
        self.problem = problem
        self._plans: dict[bytes, list[tuple[int, np.ndarray, np.ndarray]]] = {}

    def _plan(self, members: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        key = members.tobytes()
        plan = self._plans.get(key)
        if plan is None:
            inside = np.zeros(self.problem.n + 1, dtype=bool)
            inside[members] = True
            plan = []
            for k, b in enumerate(self.problem.blocks):
                rows = np.flatnonzero(inside[b.dst])
                cols = np.flatnonzero(inside[b.src])
                if rows.size or cols.size:
                    plan.append((k, rows, cols))
            self._plans[key] = plan
        return plan

    def costs(self, u: np.ndarray, members: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For each power: incoming and outgoing costs (self-loops excluded) and self-loop costs."""
        prob = self.problem
        pos = np.full(prob.n, -1, dtype=np.int64)
        pos[members] = np.arange(members.size)
        ue = np.append(u, 0.0)
        ce = np.append(prob.degree, 1.0)
        c = prob.degree[members]
        out: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
            p: (np.zeros(members.size), np.zeros(members.size), np.zeros(members.size))
            for p in prob.powers
        }
        for k, rows, cols in self._plan(members):
            b = prob.blocks[k]
            p = b.power
            x, y = b.factors(ue, ce)
            IN, OUT, _ = out[p]
            if rows.size:
                A = b.matrix if rows.size == b.dst.size else b.matrix[rows]
                IN[pos[b.dst[rows]]] += y[rows] * (A @ x)
            if cols.size:
                OUT[pos[b.src[cols]]] += x[cols] * (b.matrix.T @ y)[cols]
        loops = prob.self_loop_costs()
        for p, (IN, OUT, S) in out.items():
            S[:] = loops[p][members] * np.exp(p * (1.0 - c) * u[members])
            IN -= S
            OUT -= S
            np.maximum(IN, 0.0, out=IN)
            np.maximum(OUT, 0.0, out=OUT)
        return out


def _sets_for(name: str, problem: BalanceProblem, options: SolveOptions) -> list[np.ndarray]:
    free = problem.free_mask()
    if name == "tied":
        sets = options.sets if options.sets is not None else problem.layers
        if sets is None:
            raise SynbalError(
                "method 'tied' needs sets: pass sets=[[unit names], ...] or a layered network"
            )
        out = []
        for s in sets:
            s = np.asarray(s, dtype=np.int64)
            s = s[free[s]]
            if s.size == 0:
                continue
            if np.unique(problem.degree[s]).size > 1:
                raise SynbalError("a tied set must contain units of one degree c")
            out.append(s)
        return out
    classes = problem.colouring()
    if name == "layer":
        return classes
    # alternating: two classes
    if problem.layers is not None:
        layers = [layer[free[layer]] for layer in problem.layers]
        odd = np.concatenate([layer for k, layer in enumerate(layers) if k % 2 == 0] or [np.zeros(0, np.int64)])
        even = np.concatenate([layer for k, layer in enumerate(layers) if k % 2 == 1] or [np.zeros(0, np.int64)])
        return [s for s in (odd.astype(np.int64), even.astype(np.int64)) if s.size]
    if len(classes) > 2:
        raise SynbalError(
            "method 'alternating' needs a bipartite unit graph (e.g. a layered network); this "
            f"network needs {len(classes)} colours — use method='layer' instead"
        )
    return classes


def _set_relative_deficit(problem: BalanceProblem, u: np.ndarray, sets: list[np.ndarray]) -> float:
    grad, scale = problem.gradient_parts(u)
    worst = 0.0
    for s in sets:
        sc = scale[s].sum()
        if sc > 0:
            worst = max(worst, abs(grad[s].sum()) / sc)
    return worst


def _run(name: str, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
    u = np.zeros(problem.n)
    free_idx = np.flatnonzero(problem.free_mask())
    rng = np.random.default_rng(options.seed)
    custom = isinstance(reg, CustomRegularizer) or problem.custom is not None
    sets: list[np.ndarray] = []
    if name in ("layer", "alternating", "tied"):
        sets = _sets_for(name, problem, options)
    if name == "tied" and options.closed_form:
        u = tied_layer_closed_form(problem)
        tied_deficit = _set_relative_deficit(problem, u, sets)
        entry = HistoryEntry(1, problem.value(u), tied_deficit)
        return SolveResult(u, tied_deficit <= options.tol, [entry], steps=len(sets))
    unit_graph = None
    if name in ("stochastic", "cyclic") and not custom:
        from synbal._compiled.chain_steps import step_kernel

        unit_graph = step_kernel(problem)
    # a problem may supply its own (a sharded one reads its summed IN/OUT costs)
    evaluator = problem.set_evaluator() if hasattr(problem, "set_evaluator") else SetEvaluator(problem)

    def deficit_of(v: np.ndarray) -> float:
        if name == "tied":
            return _set_relative_deficit(problem, v, sets)
        return problem.max_relative_deficit(v)

    history = [HistoryEntry(0, problem.value(u), deficit_of(u))]
    converged = history[0].max_relative_deficit <= options.tol or free_idx.size == 0
    steps = 0
    bar = tqdm(total=options.max_sweeps, desc=f"{name} balancing", disable=not options.progress,
               leave=False)
    sweep = 0
    while not converged and sweep < options.max_sweeps:
        sweep += 1
        if name in ("stochastic", "cyclic"):
            order = free_idx if name == "cyclic" else rng.choice(free_idx, size=free_idx.size)
            if unit_graph is not None:
                unit_graph.run_steps(u, order, options.theta)
            else:
                custom_unit_steps(problem, u, order, options.theta)
            steps += order.size
        else:
            for s in sets:
                if custom:
                    custom_set_steps(problem, u, s, options.theta, tied=name == "tied")
                elif name == "tied":
                    _tied_step(problem, u, s, options.theta)
                else:
                    costs = evaluator.costs(u, s)
                    u[s] += optimal_log_steps(costs, problem.degree[s], options.theta)
                steps += 1
        check_range(problem, u)
        history.append(HistoryEntry(sweep, problem.value(u), deficit_of(u)))
        converged = history[-1].max_relative_deficit <= options.tol
        if options.callback is not None:
            options.callback(sweep, u)
        bar.update(1)
        bar.set_postfix(deficit=f"{history[-1].max_relative_deficit:.2e}")
    bar.close()
    return SolveResult(u, converged, history, steps=steps)


def _tied_step(problem: BalanceProblem, u: np.ndarray, members: np.ndarray, theta: float) -> None:
    costs = {
        p: (np.array([a]), np.array([b]), np.array([s]))
        for p, (a, b, s) in problem.subset_costs(u, members).items()
    }
    c = problem.degree[members[:1]]
    u[members] += optimal_log_steps(costs, c, theta)[0]


def make_solver(name: str) -> Callable[[BalanceProblem, Regularizer, SolveOptions], SolveResult]:
    """The solver function of schedule ``name`` (one of :data:`SCHEDULES`)."""
    if name not in SCHEDULES:
        raise SynbalError(f"unknown schedule {name!r}")

    def solver(problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        return _run(name, problem, reg, options)

    solver.__name__ = f"solve_{name}"
    solver.__doc__ = f"Balance with the {name!r} schedule."
    return solver


def tied_layer_closed_form(problem: BalanceProblem) -> np.ndarray:
    """Appendix B: one multiplier per layer of a bias-free chain, in closed form.

    With layer costs ``T_l = ‖A_l‖_p^p`` and ``M_l = Λ_l/Λ_{l−1}``, the optimum makes every
    ``M_l^p T_l`` equal: ``M_l = G/‖A_l‖_p`` with ``G`` the geometric mean of the layer norms.
    (Eq. 12.7 as printed gives ``M_l²``; see THEORY.md.) Requires a single power, degree 1,
    no biases and blocks only between consecutive layers.
    """
    if problem.layers is None or len(problem.powers) != 1 or np.any(problem.degree != 1.0):
        raise SynbalError("the tied closed form needs a layered BiLU network and a single Lp")
    p = problem.powers[0]
    layer_of = np.full(problem.n + 1, -1, dtype=np.int64)  # last entry: fixed
    for k, layer in enumerate(problem.layers):
        layer_of[layer] = k
    depth = len(problem.layers)
    totals = np.zeros(depth + 1)
    for b in problem.blocks:
        if b.bias and b.total() > 0:
            raise SynbalError("the tied closed form does not apply with non-zero biases")
        dl = np.unique(layer_of[b.dst])
        sl = np.unique(layer_of[b.src])
        if b.total() == 0 or (dl.tolist() == [-1] and sl.tolist() == [-1]):
            continue
        if dl.size != 1 or sl.size != 1:
            raise SynbalError("the tied closed form needs each block to join two whole layers")
        d = depth if dl[0] < 0 else int(dl[0])
        s = -1 if sl[0] < 0 else int(sl[0])
        if d != s + 1:
            raise SynbalError("the tied closed form needs blocks between consecutive layers only")
        totals[d] += b.total()
    if np.any(totals <= 0):
        raise SynbalError("the tied closed form needs every layer to have non-zero weights")
    log_norms = np.log(totals) / p
    steps = log_norms.mean() - log_norms  # log M_l
    layer_u = np.cumsum(steps)[:-1]
    u = np.zeros(problem.n)
    for k, layer in enumerate(problem.layers):
        u[layer] = layer_u[k]
    return u
