"""``exact`` on a sharded model: Newton's method whose every sum runs over the ranks.

The Newton step solves ``H Δu = −∇R`` on the free units. Everything it needs is a sum over the
weights of per-unit quantities, so each rank adds up its own shards and one all-reduce of ``n``
floats (``n`` = units, not parameters) finishes it:

* ``∇R`` and the Hessian's diagonal come from the IN/OUT sums of
  :class:`~synbal._adapters.torch.sharded.ShardedProblem` (one all-reduce per new ``u``);
* a Hessian–vector product ``H z`` is the diagonal times ``z`` plus the off-diagonal part
  ``−p² Σ_edges v_rc (z_c e_r + z_r e_c)`` (``v_rc`` the scaled cost of the weights between units
  ``r`` and ``c``), which each rank computes from the rows it holds with two products per block —
  one all-reduce per product;
* the step is found by conjugate gradients (Jacobi-preconditioned, inexact Newton: loose far from
  the minimum, tight near it) and damped by :mod:`synbal._solvers.exact`'s line search on
  ``∇R`` when the full step does not halve the deficit.

Every rank does the same arithmetic on the same reduced numbers, so they agree at every step;
the final log-scales are broadcast from rank 0 all the same, so every rank applies bit-identical
scales. The balanced state is the unique minimiser of ``R``: the one the single-process ``exact``
finds, to the tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from synbal._adapters.torch.collective import Collective
from synbal._compiled.powermatrix import as_products
from synbal._problem.problem import BalanceProblem
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal._solvers.exact import STALLED, _below_rounding, _forcing, _line_search, _max_rel, full_step
from synbal.errors import SynbalError

__all__ = ["hessian_product", "solve_sharded_exact"]

#: Conjugate-gradient iterations allowed per Newton step (each one all-reduce).
CG_ITERATIONS = 2_000


def hessian_product(problem: BalanceProblem, collective: Collective, u: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``H(u) z`` for the whole model: this rank's off-diagonal part, summed over ranks in one
    all-reduce, plus the diagonal times ``z`` (``problem``: this rank's blocks, its IN/OUT sums
    already summed over ranks, as :class:`~synbal._adapters.torch.sharded.ShardedProblem`'s are).
    Layered problems only (no self-loops)."""
    ue, ce = problem._ext(u)
    ze = np.append(np.asarray(z, dtype=np.float64), 0.0)  # the fixed slot: no variable, no product
    part = np.zeros(problem.n + 1)
    for b in problem.blocks:
        x, y = b.factors(ue, ce)  # source (column) and destination (row) factors of the scaled costs
        row, col = as_products(b.matrix, x * ce[b.src] * ze[b.src], y * ze[b.dst])
        # indices >= 0 never repeat inside a block; writes to the fixed slot are discarded
        part[b.dst] -= b.power**2 * y * row
        part[b.src] -= b.power**2 * ce[b.src] * x * col
    off = collective.all_reduce_sum(torch.from_numpy(part[:-1]), "summing a Hessian product over ranks")
    return problem.hessian_diagonal(u) * z + off.numpy()


def _conjugate_gradients(matvec: Callable[[np.ndarray], np.ndarray], rhs: np.ndarray, diag: np.ndarray,
                         rtol: float) -> np.ndarray:
    """Solve ``A x = rhs`` (symmetric positive definite) to relative residual ``rtol``, preconditioned
    by ``diag`` (A's diagonal)."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = r / diag
    p = z.copy()
    rz = float(r @ z)
    stop = rtol * float(np.linalg.norm(rhs))
    for _ in range(CG_ITERATIONS):
        if float(np.linalg.norm(r)) <= stop:
            break
        ap = matvec(p)
        alpha = rz / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        z = r / diag
        rz, previous = float(r @ z), rz
        p = z + (rz / previous) * p
    return x


def _newton_step(problem: BalanceProblem, collective: Collective, u: np.ndarray, grad: np.ndarray,
                 idx: np.ndarray, rtol: float) -> np.ndarray:
    """The (inexact) Newton step on the free units ``idx`` (zero elsewhere)."""
    diag = np.maximum(problem.hessian_diagonal(u)[idx], np.finfo(float).tiny)

    def matvec(v: np.ndarray) -> np.ndarray:
        full = np.zeros(problem.n)
        full[idx] = v
        return hessian_product(problem, collective, u, full)[idx]

    step = np.zeros(problem.n)
    step[idx] = _conjugate_gradients(matvec, -grad[idx], diag, rtol)
    return step


def solve_sharded_exact(problem: BalanceProblem, collective: Collective, options: SolveOptions) -> SolveResult:
    """The balanced state of a sharded model by Newton's method (see the module docstring;
    ``problem`` as for :func:`hessian_product`)."""
    if problem.layers is None:
        raise SynbalError("'exact' on a sharded model needs a layered model (no weight joins units of one "
                          "layer); use method 'layer' or 'alternating'")
    free = problem.free_mask()
    idx = np.flatnonzero(free)
    u = np.zeros(problem.n)
    grad, scale = problem.gradient_parts(u)
    rel = _max_rel(grad, scale, free)
    history = [HistoryEntry(0, problem.value(u), rel)]
    it = 0
    notes: list[str] = []
    while rel > options.tol and it < max(options.max_sweeps, 1) and idx.size:
        it += 1
        step = _newton_step(problem, collective, u, grad, idx, _forcing(rel, options.tol))
        full = full_step(problem, u, step, rel, free)
        if full is not None:
            u, grad, scale, rel = full
        else:
            alpha = _line_search(problem, u, step, float(grad @ step))
            if _below_rounding(alpha * step, u):  # the next iteration would repeat this one
                notes.append(STALLED.format(it=it, rel=rel))
                break
            u = u + alpha * step
            grad, scale = problem.gradient_parts(u)
            rel = _max_rel(grad, scale, free)
        history.append(HistoryEntry(it, problem.value(u), rel))
        if options.callback is not None:
            options.callback(it, u)
    u = collective.broadcast(torch.from_numpy(u.copy()), "sharing the balanced log-scales").numpy()
    return SolveResult(u, rel <= options.tol, history, steps=it, notes=notes)
