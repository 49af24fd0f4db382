"""Reference solvers for the max-norm: the lexicographic minimax by linear programming, and
plain per-unit max-balancing sweeps.

:func:`lexmin_lp` handles any degrees (BiPU units of degree ``c ≠ 1``, where scaling is no
longer a similarity and :mod:`synbal._linf.solve` does not apply). It solves one LP per level
of the sorted weight vector: minimise ``t`` subject to ``loga_e + u_dst − c_src u_src ≤ t`` for
the edges not yet fixed and ``= value_e`` for the fixed ones; the edges with a positive dual are
tight in every optimum, so they are fixed at ``t``. Meant for small networks (up to one LP per
distinct weight level).

:func:`local_sweeps` repeats the exact one-unit step ``λ* = (OUT/IN)^{1/(1+c)}`` (in logs
``u_i += (log OUT_i − log IN_i)/(1 + c_i)``), which makes the unit's largest incoming and
outgoing weights equal. Its end point is *a* balanced state; which one can depend on the order
and on the start (see :mod:`synbal._linf`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from synbal._linf.graph import MaxGraph
from synbal.errors import SynbalError

__all__ = ["lexmin_lp", "local_sweeps"]


def _incidence(g: MaxGraph, free: np.ndarray) -> tuple[sp.csr_array, np.ndarray]:
    """Rows: edges; columns: free units; entries ``+1`` (destination) and ``−c`` (source)."""
    col = np.full(g.n + 1, -1)
    col[np.flatnonzero(free)] = np.arange(int(free.sum()))
    m = g.loga.size
    rows, cols, vals = [], [], []
    for end, coef in ((g.dst, np.ones(m)), (g.src, -np.append(g.degree, 1.0)[g.src])):
        c = col[end]
        ok = c >= 0
        rows.append(np.flatnonzero(ok))
        cols.append(c[ok])
        vals.append(coef[ok])
    B = sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                     shape=(m, int(free.sum()))).tocsr()
    B.sum_duplicates()
    return B, np.asarray(abs(B).sum(axis=1)).reshape(-1) > 0


def lexmin_lp(g: MaxGraph, *, tol: float = 1e-9) -> tuple[np.ndarray, int]:
    """Log-scales minimising the sorted vector of log-weights lexicographically; ``(u, LPs solved)``.

    Dead units stay at ``u = 0``. Raises :class:`~synbal.errors.SynbalError` when the largest
    weight can be made arbitrarily small (no minimiser).
    """
    free = ~g.dead_mask()
    B, moving = _incidence(g, free)
    a = g.loga[moving]
    B = B[moving]
    nf = int(free.sum())
    fixed = np.zeros(a.size, dtype=bool)
    value = np.zeros(a.size)
    x = np.zeros(nf + 1)
    lps = 0
    while not fixed.all():
        open_ = np.flatnonzero(~fixed)
        A_ub = sp.hstack([B[open_], sp.csr_array(-np.ones((open_.size, 1)))]).tocsr()
        shut = np.flatnonzero(fixed)
        A_eq = sp.hstack([B[shut], sp.csr_array((shut.size, 1))]).tocsr() if shut.size else None
        b_eq = value[shut] - a[shut] if shut.size else None
        cost = np.zeros(nf + 1)
        cost[-1] = 1.0
        res = linprog(cost, A_ub=A_ub, b_ub=-a[open_], A_eq=A_eq, b_eq=b_eq,
                      bounds=[(None, None)] * (nf + 1), method="highs")
        lps += 1
        if res.status != 0:
            raise SynbalError(f"max-norm balancing has no minimiser here (LP status: {res.message})")
        x = res.x
        t = float(x[-1])
        dual = -np.asarray(res.ineqlin.marginals)
        newly = dual > tol
        if not newly.any():  # degenerate duals: fix what is tight
            newly = (B[open_] @ x[:nf]) + a[open_] >= t - tol * max(1.0, abs(t))
        fixed[open_[newly]] = True
        value[open_[newly]] = t
    u = np.zeros(g.n)
    u[free] = x[:nf]
    return u, lps


def local_sweeps(g: MaxGraph, u0: np.ndarray | None = None, *, order: str = "cyclic", seed: int | None = None,
                 tol: float = 1e-10, max_sweeps: int = 10_000) -> tuple[np.ndarray, int, bool]:
    """Per-unit max-balancing steps until every live unit has ``IN = OUT`` within ``tol``.

    ``order`` is ``"cyclic"`` (unit order) or ``"stochastic"`` (a fresh random order per
    sweep). Returns ``(u, sweeps, converged)``.
    """
    if order not in ("cyclic", "stochastic"):
        raise SynbalError(f"unknown sweep order {order!r}; use 'cyclic' or 'stochastic'")
    rng = np.random.default_rng(seed)
    u = np.zeros(g.n) if u0 is None else np.array(u0, dtype=np.float64)
    live = np.flatnonzero(~g.dead_mask())
    ins = [np.flatnonzero(g.dst == i) for i in range(g.n)]
    outs = [np.flatnonzero(g.src == i) for i in range(g.n)]
    ce = np.append(g.degree, 1.0)
    for sweep in range(1, max_sweeps + 1):
        for i in (rng.permutation(live) if order == "stochastic" else live):
            ue = np.append(u, 0.0)
            e_in, e_out = ins[i], outs[i]
            log_in = np.max(g.loga[e_in] + ue[g.dst[e_in]] - ce[g.src[e_in]] * ue[g.src[e_in]])
            log_out = np.max(g.loga[e_out] + ue[g.dst[e_out]] - ce[g.src[e_out]] * ue[g.src[e_out]])
            u[i] += (log_out - log_in) / (1.0 + g.degree[i])
        if g.relative_deficit(u).max(initial=0.0) <= tol:
            return u, sweep, True
    return u, max_sweeps, False
