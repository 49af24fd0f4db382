"""Balancing one unit or one tied set: the optimal log-step, closed form or 1-D Newton.

Scaling a unit of degree ``c`` by ``e^t`` multiplies its incoming costs (power ``p``) by
``e^{pt}``, its outgoing costs by ``e^{-pct}`` and its self-loops by ``e^{p(1-c)t}``. The unit's
share of ``R`` is therefore ``f(t) = Σ_p a_p e^{pt} + b_p e^{-pct} + s_p e^{p(1-c)t}``, a
convex function whose minimiser is the balancing step:

* one power, no self-loop (or ``c = 1``): ``t* = log(c·b/a) / (p(1+c))`` — i.e.
  ``λ* = (OUT/IN)^{1/(2p)}`` for BiLUs and ``λ* = (c·OUT/IN)^{1/(p(c+1))}`` for BiPUs;
* otherwise a safeguarded Newton iteration on ``f'(t) = 0`` (bracketed, so it cannot diverge).

Afterwards ``IN = c·OUT`` for a single power, and the drop of ``R`` is, for BiLUs,
``ΔR = (√IN − √OUT)²`` (eq. 5.7 of the synaptic-balance paper).

>>> import numpy as np
>>> t = optimal_log_steps({2.0: (np.array([4.0]), np.array([1.0]), np.zeros(1))}, np.ones(1))
>>> float(np.exp(t[0]))  # (OUT/IN)^(1/4)
0.7071067811865476
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["delta_r_closed_form", "optimal_log_steps"]

Costs = Mapping[float, tuple[np.ndarray, np.ndarray, np.ndarray]]


def delta_r_closed_form(IN: np.ndarray | float, OUT: np.ndarray | float) -> np.ndarray:
    """Decrease of ``R`` when a BiLU unit (any ``Lp``) is balanced: ``(√IN − √OUT)²``."""
    return np.asarray((np.sqrt(IN) - np.sqrt(OUT)) ** 2)


def _derivatives(costs: Costs, c: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d1 = np.zeros_like(t)
    d2 = np.zeros_like(t)
    for p, (a, b, s) in costs.items():
        ea = a * np.exp(p * t)
        eb = b * np.exp(-p * c * t)
        es = s * np.exp(p * (1.0 - c) * t)
        d1 += p * (ea - c * eb + (1.0 - c) * es)
        d2 += p * p * (ea + c * c * eb + (1.0 - c) ** 2 * es)
    return d1, d2


def optimal_log_steps(costs: Costs, degree: np.ndarray, theta: float = 1.0) -> np.ndarray:
    """The balancing log-step ``θ·t*`` of each unit (or tied set), vectorised.

    ``costs[p] = (a, b, s)``: per unit, the cost of incoming weights *excluding* self-loops,
    of outgoing weights excluding self-loops, and of self-loops (inside edges of a tied set).
    Units with ``a = 0`` or ``b = 0`` (dead: the optimum is at 0 or ∞) get step 0.
    """
    c = np.asarray(degree, dtype=np.float64)
    a_tot = sum((v[0] for v in costs.values()), np.zeros_like(c))
    b_tot = sum((v[1] for v in costs.values()), np.zeros_like(c))
    live = (a_tot > 0) & (b_tot > 0)
    t = np.zeros_like(c)
    if not live.any():
        return t
    if len(costs) == 1:
        ((p, (a, b, s)),) = costs.items()
        simple = live & ((s == 0) | (c == 1.0))
        # logs of each factor: b/a under- or overflows for costs far apart (1e-293 / 1e293)
        t[simple] = (np.log(c[simple]) + np.log(b[simple]) - np.log(a[simple])) / (p * (1.0 + c[simple]))
        hard = live & ~simple
    else:
        hard = live
    if hard.any():
        sub = {p: (a[hard], b[hard], s[hard]) for p, (a, b, s) in costs.items()}
        t[hard] = _newton(sub, c[hard])
    return theta * t


def _newton(costs: Costs, c: np.ndarray, iters: int = 200) -> np.ndarray:
    """Root of ``f'(t)`` for each unit by bracketed Newton (``f`` convex, ``f'`` increasing)."""
    pmax = max(costs)
    a = sum((v[0] for v in costs.values()), np.zeros_like(c))
    b = sum((v[1] for v in costs.values()), np.zeros_like(c))
    t = (np.log(c) + np.log(b) - np.log(a)) / (pmax * (1.0 + c))
    lo = t.copy()
    hi = t.copy()
    step = np.ones_like(t)
    d1, _ = _derivatives(costs, c, lo)
    for _ in range(200):  # expand the bracket until f'(lo) < 0 < f'(hi)
        bad = d1 > 0
        if not bad.any():
            break
        lo[bad] -= step[bad]
        step[bad] *= 2
        d1, _ = _derivatives(costs, c, lo)
    step[:] = 1.0
    d1, _ = _derivatives(costs, c, hi)
    for _ in range(200):
        bad = d1 < 0
        if not bad.any():
            break
        hi[bad] += step[bad]
        step[bad] *= 2
        d1, _ = _derivatives(costs, c, hi)
    t = np.clip(t, lo, hi)
    for _ in range(iters):
        d1, d2 = _derivatives(costs, c, t)
        lo = np.where(d1 < 0, t, lo)
        hi = np.where(d1 > 0, t, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            new = t - d1 / d2
        outside = ~np.isfinite(new) | (new <= lo) | (new >= hi)
        new = np.where(outside, 0.5 * (lo + hi), new)
        done = np.abs(new - t) <= 1e-15 * (1.0 + np.abs(t))
        t = new
        if done.all():
            break
    return t
