"""Local balancing schedules of the theory (section 9 of the synaptic-balance paper).

* ``stochastic`` — one uniformly random free unit per step (seeded); a sweep is ``n`` steps.
* ``cyclic`` — every free unit once per sweep, in a fixed order.
* ``layer`` — independent sets balanced all at once, in turn: the layers of a layered net, or
  a greedy colouring of the unit graph.
* ``alternating`` — two independent sets (odd/even layers, or the two classes of a bipartite
  unit graph) balanced in turn.
* ``tied`` — one λ per set (default sets: the layers), each set balanced as a single unit.

Each schedule is a :class:`~synbal._solvers.method.Method`: it declares the options it takes
and chooses what one sweep balances (:meth:`Schedule.sweeper`); :meth:`Schedule.run` is the
loop they share. The steps themselves are :mod:`synbal._solvers.steps`.

Every step sets a unit (or set) to its optimal scale, or to ``λ*^θ`` for partial steps with
``θ ∈ (0, 1)``, so ``R`` never increases, and every schedule except ``tied`` converges to the
same state as :func:`synbal._solvers.exact.solve_exact` (Theorem 9.1).

>>> import numpy as np
>>> from synbal._adapters.graph import Graph, GraphAdapter
>>> from synbal._problem.regularizers import parse_regularizer
>>> from synbal._solvers.base import SolveOptions
>>> l2 = parse_regularizer("l2")  # two hidden units: IN 16 and 1, OUT 1 and 1
>>> prob = GraphAdapter(Graph.from_layers([np.array([[4.0], [1.0]]), np.array([[1.0, 1.0]])])).problem(l2)
>>> for schedule in SCHEDULES:  # tied: one λ for the layer, λ⁴ = 2/17
...     res = schedule.run(prob, l2, SolveOptions(tol=1e-12, seed=0))
...     print(schedule.name, res.converged, np.round(np.exp(res.u), 6).tolist())
stochastic True [0.5, 1.0]
cyclic True [0.5, 1.0]
layer True [0.5, 1.0]
alternating True [0.5, 1.0]
tied True [0.58566, 0.58566]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult, check_range
from synbal._solvers.method import Method
from synbal._solvers.steps import SetCosts, balance_in_order, step_set
from synbal.errors import SynbalError

__all__ = ["ALTERNATING", "CYCLIC", "LAYER", "SCHEDULES", "STOCHASTIC", "TIED", "Schedule", "tied_layer_closed_form"]

#: One sweep: balance some units of ``u`` in place and return how many steps it took.
Sweep = Callable[[np.ndarray], int]
#: The convergence measure at ``u``.
Measure = Callable[[np.ndarray], float]


class Schedule(Method):
    """A local schedule: sweeps of single-unit or set steps until the deficit reaches ``tol``."""

    options: ClassVar[tuple[str, ...]] = ("theta",)

    def sweeper(self, problem: BalanceProblem, options: SolveOptions) -> tuple[Sweep, Measure]:
        """What one sweep does (on the free units of ``problem``), and the convergence measure
        (the max relative deficit of the free units unless the schedule says otherwise)."""
        raise NotImplementedError

    def run(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        u = np.zeros(problem.n)
        sweep_once, deficit = self.sweeper(problem, options)
        history = [HistoryEntry(0, problem.value(u), deficit(u))]
        converged = history[0].max_relative_deficit <= options.tol or not problem.free_mask().any()
        steps = 0
        bar = tqdm(total=options.max_sweeps, desc=f"{self.name} balancing", disable=not options.progress,
                   leave=False)
        sweep = 0
        while not converged and sweep < options.max_sweeps:
            sweep += 1
            steps += sweep_once(u)
            check_range(problem, u)
            history.append(HistoryEntry(sweep, problem.value(u), deficit(u)))
            converged = history[-1].max_relative_deficit <= options.tol
            if np.isnan(history[-1].regularizer) or np.isnan(history[-1].max_relative_deficit):
                break  # the costs left float64: no later sweep can be judged (the final state says so)
            if options.callback is not None:
                options.callback(sweep, u)
            bar.update(1)
            bar.set_postfix(deficit=f"{history[-1].max_relative_deficit:.2e}")
        bar.close()
        return SolveResult(u, converged, history, steps=steps)


class _UnitSchedule(Schedule):
    """Single units in an order chosen per sweep; compiled kernels unless the costs are custom."""

    def order(self, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def sweeper(self, problem: BalanceProblem, options: SolveOptions) -> tuple[Sweep, Measure]:
        free = np.flatnonzero(problem.free_mask())
        rng = np.random.default_rng(options.seed)
        if problem.custom is not None or problem.signed:  # the compiled kernels assume rows of sign +1
            def sweep(u: np.ndarray) -> int:
                order = self.order(free, rng)
                balance_in_order(problem, u, order, options.theta)
                return order.size
            return sweep, problem.max_relative_deficit
        from synbal._compiled.chain_steps import step_kernel

        kernel = step_kernel(problem)

        def compiled_sweep(u: np.ndarray) -> int:
            order = self.order(free, rng)
            kernel.run_steps(u, order, options.theta)
            return order.size
        return compiled_sweep, problem.max_relative_deficit


class _Stochastic(_UnitSchedule):
    name = "stochastic"
    summary = "one uniformly random free unit per step (seeded); a sweep is n steps"

    def order(self, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(free, size=free.size)


class _Cyclic(_UnitSchedule):
    name = "cyclic"
    summary = "every free unit once per sweep, in a fixed order"

    def order(self, free: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return free


class _SetSchedule(Schedule):
    """Sets of units balanced in turn, each set in one step."""

    tied = False

    def sets(self, problem: BalanceProblem, options: SolveOptions) -> list[np.ndarray]:
        raise NotImplementedError

    def sweeper(self, problem: BalanceProblem, options: SolveOptions) -> tuple[Sweep, Measure]:
        sets = self.sets(problem, options)
        # a problem may supply its own (a sharded one reads its summed IN/OUT costs)
        costs = problem.set_evaluator() if hasattr(problem, "set_evaluator") else SetCosts(problem)

        def sweep(u: np.ndarray) -> int:
            for s in sets:
                step_set(problem, u, s, options.theta, tied=self.tied, costs=costs)
            return len(sets)
        return sweep, self.measure(problem, sets)

    def measure(self, problem: BalanceProblem, sets: list[np.ndarray]) -> Measure:
        return problem.max_relative_deficit


class _Layer(_SetSchedule):
    name = "layer"
    summary = "independent sets (the layers, or a greedy colouring) balanced all at once, in turn"

    def sets(self, problem: BalanceProblem, options: SolveOptions) -> list[np.ndarray]:
        return problem.colouring()


class _Alternating(_SetSchedule):
    name = "alternating"
    summary = "two independent sets (odd/even layers, or a bipartite colouring) in turn"

    def sets(self, problem: BalanceProblem, options: SolveOptions) -> list[np.ndarray]:
        if problem.layers is not None:
            free = problem.free_mask()
            layers = [layer[free[layer]] for layer in problem.layers]
            none = [np.zeros(0, np.int64)]
            odd = np.concatenate([layer for k, layer in enumerate(layers) if k % 2 == 0] or none)
            even = np.concatenate([layer for k, layer in enumerate(layers) if k % 2 == 1] or none)
            return [s for s in (odd.astype(np.int64), even.astype(np.int64)) if s.size]
        classes = problem.colouring()
        if len(classes) > 2:
            raise SynbalError(
                "method 'alternating' needs a bipartite unit graph (e.g. a layered network); this "
                f"network needs {len(classes)} colours — use method='layer' instead"
            )
        return classes


class _Tied(_SetSchedule):
    name = "tied"
    summary = "one λ per set (default sets: the layers), each set balanced as a single unit"
    options = ("theta", "sets", "closed_form")
    tied = True

    def sets(self, problem: BalanceProblem, options: SolveOptions) -> list[np.ndarray]:
        free = problem.free_mask()
        sets = options.sets if options.sets is not None else problem.layers
        if sets is None:
            raise SynbalError("method 'tied' needs sets: pass sets=[[unit names], ...] or a layered network")
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

    def run(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        from synbal._problem.signed import require_unsigned

        require_unsigned(problem, "method 'tied'")
        if not options.closed_form:
            return super().run(problem, reg, options)
        sets = self.sets(problem, options)
        u = tied_layer_closed_form(problem)
        tied_deficit = self.measure(problem, sets)(u)
        entry = HistoryEntry(1, problem.value(u), tied_deficit)
        return SolveResult(u, tied_deficit <= options.tol, [entry], steps=len(sets))

    def measure(self, problem: BalanceProblem, sets: list[np.ndarray]) -> Measure:
        """The largest relative deficit of a set (its members' summed gradient over their scale)."""
        def worst_set(u: np.ndarray) -> float:
            grad, scale = problem.gradient_parts(u)
            worst = 0.0
            for s in sets:
                sc = scale[s].sum()
                if sc > 0:
                    worst = max(worst, abs(grad[s].sum()) / sc)
            return worst
        return worst_set


STOCHASTIC: Schedule = _Stochastic()
CYCLIC: Schedule = _Cyclic()
LAYER: Schedule = _Layer()
ALTERNATING: Schedule = _Alternating()
TIED: Schedule = _Tied()
SCHEDULES: tuple[Schedule, ...] = (STOCHASTIC, CYCLIC, LAYER, ALTERNATING, TIED)


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
