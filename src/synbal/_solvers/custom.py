"""Balancing steps for a custom cost ``g`` (1-D numeric minimisation per unit or tied set).

For a unit of degree ``c`` with incoming magnitudes ``m_in``, outgoing ``m_out`` and self-loops
``m_self``, balancing minimises ``f(t) = Σ g(m_in e^t) + Σ g(m_out e^{−ct}) + Σ g(m_self e^{(1−c)t})``.
``f'(t) = 0`` is eq. 5.4 of the synaptic-balance paper in log form; it has one root when
``t ↦ g(e^t)`` is convex, found here by bracketing and Brent's method.

>>> import numpy as np
>>> f = lambda ts: np.array([2 * np.exp(2 * t) - 2 * 0.25 * np.exp(-2 * t) for t in ts])
>>> round(float(_root(lambda t: float(f([t])[0]))), 6)  # L2, IN=1, OUT=0.25
-0.346574
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import brentq

from synbal._problem.problem import BalanceProblem, CustomCosts

__all__ = ["custom_set_steps", "custom_unit_steps"]


def _root(dfun: Callable[[float], float]) -> float:
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


def _set_step(problem: BalanceProblem, u: np.ndarray, members: np.ndarray) -> float:
    cc = problem.custom
    if cc is None:  # pragma: no cover - guarded by callers
        raise ValueError("custom steps need custom costs")
    inside = np.zeros(problem.n + 1, dtype=bool)
    inside[members] = True
    d_in = inside[cc.dst]
    s_in = inside[cc.src]
    m = cc.scaled(u, problem.degree)
    c = float(problem.degree[members[0]])
    groups = (
        (d_in & ~s_in, 1.0),
        (s_in & ~d_in, -c),
        (d_in & s_in, 1.0 - c),
    )
    parts = [(m[mask], cc.coef[mask], k) for mask, k in groups if mask.any()]
    if not parts[0:1] or not (d_in & ~s_in & (m > 0)).any() or not (s_in & ~d_in & (m > 0)).any():
        return 0.0
    return _root(lambda t: _slope(cc, parts, t))


def _slope(cc: CustomCosts, parts: list[tuple[np.ndarray, np.ndarray, float]], t: float) -> float:
    total = 0.0
    for mag, coef, k in parts:
        x = mag * np.exp(k * t)
        total += k * float(np.sum(coef * x * cc.dg(x)))
    return total


def custom_unit_steps(problem: BalanceProblem, u: np.ndarray, order: np.ndarray, theta: float) -> None:
    """Balance the units in ``order`` one after the other (in place)."""
    for i in order:
        u[i] += theta * _set_step(problem, u, np.array([i]))


def custom_set_steps(problem: BalanceProblem, u: np.ndarray, members: np.ndarray, theta: float,
                     *, tied: bool) -> None:
    """Balance an independent set unit by unit, or a tied set with one common step."""
    if tied:
        u[members] += theta * _set_step(problem, u, members)
    else:
        steps = [_set_step(problem, u, np.array([i])) for i in members]
        u[members] += theta * np.asarray(steps)
