"""One balancing step of one unit or one tied set: its costs and its optimal log-step.

Every caller balances through this module: the local schedules (:mod:`synbal._solvers.schedules`),
the operations API (:func:`synbal._solvers.operations.balance_units`), the ``exact`` solver's
parity steps and custom polish, and the compiled step kernels
(:mod:`synbal._compiled.unit_steps`), which call the
``@njit`` functions below from their own loops.

Scaling a unit of degree ``c`` by ``e^t`` multiplies its incoming costs (power ``p``) by
``e^{pt}``, its outgoing costs by ``e^{-pct}`` and its self-loops by ``e^{p(1-c)t}``. The unit's
share of ``R`` is therefore ``f(t) = Σ_p a_p e^{pt} + b_p e^{-pct} + s_p e^{p(1-c)t}``, a
convex function whose minimiser is the balancing step:

* one power, no self-loop (or ``c = 1``): ``t* = log(c·b/a) / (p(1+c))`` (:func:`closed_log_step`) —
  i.e. ``λ* = (OUT/IN)^{1/(2p)}`` for BiLUs and ``λ* = (c·OUT/IN)^{1/(p(c+1))}`` for BiPUs;
* otherwise a safeguarded Newton iteration on ``f'(t) = 0`` (:func:`log_step`; bracketed, so
  it cannot diverge);
* for a custom cost ``g`` (a Python function, so not compiled): Brent's method on ``f'(t) = 0``.

A tied set is balanced as one unit whose ``a``, ``b``, ``s`` are the costs entering, leaving and
inside the set. Afterwards ``IN = c·OUT`` for a single power, and the drop of ``R`` is, for
BiLUs, ``ΔR = (√IN − √OUT)²`` (eq. 5.7 of the synaptic-balance paper).

Where numba forbids sharing: the exact-chain iteration (:func:`synbal._compiled.chain._iterate`)
needs ``e^{pt}`` with the step and takes both from the ratio ``c·OUT/IN`` without an ``exp``;
it is the one other place the closed form is written.

>>> import numpy as np
>>> t = optimal_log_steps({2.0: (np.array([4.0]), np.array([1.0]), np.zeros(1))}, np.ones(1))
>>> float(np.exp(t[0]))  # (OUT/IN)^(1/4)
0.7071067811865476
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numba
import numpy as np
from scipy.optimize import brentq

from synbal._problem.problem import BalanceProblem, CustomCosts

__all__ = [
    "SetCosts",
    "balance_in_order",
    "closed_log_step",
    "delta_r_closed_form",
    "log_step",
    "optimal_log_steps",
    "step_set",
]

Costs = Mapping[float, tuple[np.ndarray, np.ndarray, np.ndarray]]


def delta_r_closed_form(IN: np.ndarray | float, OUT: np.ndarray | float) -> np.ndarray:
    """Decrease of ``R`` when a BiLU unit (any ``Lp``) is balanced: ``(√IN − √OUT)²``."""
    return np.asarray((np.sqrt(IN) - np.sqrt(OUT)) ** 2)


# ---------------------------------------------------------------------- the step math (compiled)
@numba.njit(cache=True, inline="always")
def closed_log_step(a: float, b: float, c: float, p: float) -> float:
    """``log(c·b/a) / (p(1+c))``: the step of a unit with one power and no self-loop."""
    return np.log(c * b / a) / (p * (1.0 + c))


@numba.njit(cache=True)
def _derivatives(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: float, powers: np.ndarray,
                 t: float) -> tuple[float, float]:
    """``f'(t)`` and ``f''(t)``."""
    d1 = 0.0
    d2 = 0.0
    for k in range(powers.size):
        p = powers[k]
        ea = a[k] * np.exp(p * t)
        eb = b[k] * np.exp(-p * c * t)
        es = s[k] * np.exp(p * (1.0 - c) * t)
        d1 += p * (ea - c * eb + (1.0 - c) * es)
        d2 += p * p * (ea + c * c * eb + (1.0 - c) ** 2 * es)
    return d1, d2


@numba.njit(cache=True)
def log_step(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: float, powers: np.ndarray) -> float:
    """The minimiser ``t*`` of ``f`` for per-power incoming ``a``, outgoing ``b``, self-loop ``s``.

    0 for a dead unit (no incoming or no outgoing cost: the optimum is at 0 or ∞).
    """
    at = a.sum()
    bt = b.sum()
    if not (at > 0.0 and bt > 0.0):
        return 0.0
    # logs of each factor: b/a under- or overflows for costs far apart (1e-293 / 1e293)
    t = (np.log(c) + np.log(bt) - np.log(at)) / (powers.max() * (1.0 + c))
    if powers.size == 1 and (s[0] == 0.0 or c == 1.0):
        return t
    lo = t
    hi = t
    step = 1.0
    d1, d2 = _derivatives(a, b, s, c, powers, lo)
    while d1 > 0.0:  # expand the bracket until f'(lo) < 0 < f'(hi)
        lo -= step
        step *= 2.0
        d1, d2 = _derivatives(a, b, s, c, powers, lo)
    step = 1.0
    d1, d2 = _derivatives(a, b, s, c, powers, hi)
    while d1 < 0.0:
        hi += step
        step *= 2.0
        d1, d2 = _derivatives(a, b, s, c, powers, hi)
    for _ in range(200):
        d1, d2 = _derivatives(a, b, s, c, powers, t)
        if d1 < 0.0:
            lo = t
        elif d1 > 0.0:
            hi = t
        else:
            return t
        new = t - d1 / d2
        if not (lo < new < hi):
            new = 0.5 * (lo + hi)
        if abs(new - t) <= 1e-15 * (1.0 + abs(t)):
            return new
        t = new
    return t


@numba.njit(cache=True)
def _log_steps(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: np.ndarray, powers: np.ndarray,
               theta: float) -> np.ndarray:
    t = np.zeros(c.size)
    for i in range(c.size):
        t[i] = theta * log_step(a[:, i], b[:, i], s[:, i], c[i], powers)
    return t


def optimal_log_steps(costs: Costs, degree: np.ndarray, theta: float = 1.0) -> np.ndarray:
    """The balancing log-step ``θ·t*`` of each unit (or tied set).

    ``costs[p] = (a, b, s)``: per unit, the cost of incoming weights *excluding* self-loops,
    of outgoing weights excluding self-loops, and of self-loops (inside edges of a tied set).
    Units with ``a = 0`` or ``b = 0`` (dead: the optimum is at 0 or ∞) get step 0.
    """
    c = np.ascontiguousarray(degree, dtype=np.float64)
    powers = np.array(list(costs), dtype=np.float64)
    a, b, s = (np.array([np.broadcast_to(np.asarray(v[k], dtype=np.float64), c.shape) for v in costs.values()])
               .reshape(powers.size, c.size) for k in range(3))
    return _log_steps(a, b, s, c, powers, float(theta))


# ---------------------------------------------------------------------- the costs a step sees
class SetCosts:
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
            x, y = b.factors(ue, ce)
            IN, OUT, _ = out[b.power]
            if rows.size:
                A = b.matrix if rows.size == b.dst.size else b.matrix[rows]
                # a row of sign -1 scales down with its unit: an outgoing cost (synbal._problem.signed)
                (IN if b.row_sign > 0 else OUT)[pos[b.dst[rows]]] += y[rows] * (A @ x)
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


def _tied_costs(problem: BalanceProblem, u: np.ndarray, members: np.ndarray) -> Costs:
    """The costs entering, leaving and inside a tied set, as one unit's costs."""
    return {p: (np.array([a]), np.array([b]), np.array([s]))
            for p, (a, b, s) in problem.subset_costs(u, members).items()}


# ---------------------------------------------------------------------- custom costs g (Python)
def _root(dfun: Callable[[float], float]) -> float:
    """The root of an increasing ``dfun`` by bracketing and Brent's method (0 if there is none).

    >>> round(_root(lambda t: float(2 * np.exp(2 * t) - 0.5 * np.exp(-2 * t))), 6)  # L2, IN=1, OUT=0.25
    -0.346574
    """
    lo, hi = -1.0, 1.0
    for _ in range(200):
        if dfun(lo) < 0:
            break
        lo *= 2
    for _ in range(200):
        if dfun(hi) > 0:
            break
        hi *= 2
    if not (dfun(lo) < 0 < dfun(hi)):
        return 0.0
    return float(brentq(dfun, lo, hi, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=500))


def _custom_step(problem: BalanceProblem, cc: CustomCosts, u: np.ndarray, members: np.ndarray) -> float:
    """The step minimising ``Σ g(m_in e^t) + Σ g(m_out e^{−ct}) + Σ g(m_self e^{(1−c)t})``."""
    inside = np.zeros(problem.n + 1, dtype=bool)
    inside[members] = True
    d_in = inside[cc.dst]
    s_in = inside[cc.src]
    m = cc.scaled(u, problem.degree)
    c = float(problem.degree[members[0]])
    groups = ((d_in & ~s_in, 1.0), (s_in & ~d_in, -c), (d_in & s_in, 1.0 - c))
    parts = [(m[mask], cc.coef[mask], k) for mask, k in groups if mask.any()]
    if not parts[0:1] or not (d_in & ~s_in & (m > 0)).any() or not (s_in & ~d_in & (m > 0)).any():
        return 0.0

    def slope(t: float) -> float:
        total = 0.0
        for mag, coef, k in parts:
            x = mag * np.exp(k * t)
            total += k * float(np.sum(coef * x * cc.dg(x)))
        return total

    return _root(slope)


# ---------------------------------------------------------------------- steps applied to u
def step_set(problem: BalanceProblem, u: np.ndarray, members: np.ndarray, theta: float, *, tied: bool,
             costs: SetCosts | None = None) -> None:
    """Balance ``members`` at once (in place): each with its own step (an independent set), or
    all with one common step (a tied set, one degree). ``costs`` caches the set's block plan."""
    cc = problem.custom
    if cc is not None and tied:
        u[members] += theta * _custom_step(problem, cc, u, members)
    elif cc is not None:
        u[members] += theta * np.array([_custom_step(problem, cc, u, np.array([i])) for i in members])
    elif tied:
        u[members] += optimal_log_steps(_tied_costs(problem, u, members), problem.degree[members[:1]], theta)[0]
    else:
        costs = costs or SetCosts(problem)
        u[members] += optimal_log_steps(costs.costs(u, members), problem.degree[members], theta)


def balance_in_order(problem: BalanceProblem, u: np.ndarray, order: np.ndarray, theta: float,
                     costs: SetCosts | None = None) -> None:
    """Balance the units in ``order`` one after the other (in place; each sees the steps before it)."""
    costs = costs if costs is not None or problem.custom is not None else SetCosts(problem)
    for i in order:
        step_set(problem, u, np.array([i]), theta, tied=False, costs=costs)
