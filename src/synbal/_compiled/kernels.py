"""Compiled single-unit balancing steps (numba) for the sequential schedules.

The stochastic and cyclic schedules balance one unit at a time. Each step needs only the unit's
row and column of the aggregated cost matrix, so the problem is stored once as a unit-level
graph (CSR by destination and by source, one value column per power) and the cached factors
``X[k, j] = exp(−p_k c_j u_j)``, ``Y[k, i] = exp(p_k u_i)`` are refreshed only for the unit that
moved. A step then costs one dot product over the unit's neighbours.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
...                                   CostBlock(2.0, [-1], [0], [[1.0]])])
>>> ug = UnitGraph.build(prob)
>>> u = np.zeros(1)
>>> ug.run_steps(u, np.array([0]), theta=1.0)
>>> float(np.exp(u[0]))
0.7071067811865476
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

from synbal._compiled.lowlevel import PREFETCH_AHEAD, PREFETCH_BYTES, prefetch
from synbal._problem.problem import BalanceProblem
from synbal._solvers.steps import closed_log_step, log_step

__all__ = ["GraphArrays", "UnitGraph", "graph_factors", "graph_max_rel", "graph_prefetch", "graph_step"]


@dataclass
class UnitGraph:
    """The problem as CSR arrays over units ``0..n-1`` plus one fixed unit ``n``."""

    n: int
    powers: np.ndarray
    degree_ext: np.ndarray
    in_ptr: np.ndarray
    in_idx: np.ndarray
    in_val: np.ndarray
    out_ptr: np.ndarray
    out_idx: np.ndarray
    out_val: np.ndarray
    prefetch: bool = False  # request the next units' rows ahead (graphs larger than the caches)

    @classmethod
    def build(cls, problem: BalanceProblem) -> UnitGraph:
        """Aggregate every block into one (n+1)×(n+1) matrix per power (fixed units merged)."""
        n = problem.n
        powers = np.array(problem.powers, dtype=np.float64)
        mats = []
        for p in powers:
            acc = sp.csr_array((n + 1, n + 1))
            for b in problem.blocks:
                if b.power != p:
                    continue
                coo = sp.coo_array(b.explicit())
                r = np.where(b.dst[coo.row] < 0, n, b.dst[coo.row])
                c = np.where(b.src[coo.col] < 0, n, b.src[coo.col])
                acc = acc + sp.csr_array((coo.data, (r, c)), shape=(n + 1, n + 1))
            mats.append(acc)
        pattern = sum((abs(m) for m in mats), sp.csr_array((n + 1, n + 1))).tocsr()
        pattern.sort_indices()
        pattern.data[:] = 1.0
        in_val = np.zeros((pattern.nnz, powers.size))
        rows = np.repeat(np.arange(n + 1), np.diff(pattern.indptr))
        for k, m in enumerate(mats):
            in_val[:, k] = np.asarray(m[rows, pattern.indices]).reshape(-1)
        numbered = sp.csr_array((np.arange(pattern.nnz, dtype=np.float64) + 1, pattern.indices,
                                 pattern.indptr), shape=(n + 1, n + 1))
        csc = numbered.tocsc()
        csc.sort_indices()
        perm = csc.data.astype(np.int64) - 1
        in_idx = pattern.indices.astype(np.int32)
        in_val = np.ascontiguousarray(in_val)
        return cls(
            n=n,
            powers=powers,
            degree_ext=np.append(problem.degree, 1.0),
            in_ptr=pattern.indptr.astype(np.int64),
            in_idx=in_idx,
            in_val=in_val,
            out_ptr=csc.indptr.astype(np.int64),
            out_idx=csc.indices.astype(np.int32),
            out_val=np.ascontiguousarray(in_val[perm]),
            prefetch=2 * (in_idx.nbytes + in_val.nbytes) > PREFETCH_BYTES,
        )

    def factors(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``X[k, j] = exp(−p_k c_j u_j)`` and ``Y[k, i] = exp(p_k u_i)`` (fixed unit: 1)."""
        ue = np.append(u, 0.0)
        X = np.exp(-np.outer(self.powers, self.degree_ext * ue))
        Y = np.exp(np.outer(self.powers, ue))
        return X, Y

    @property
    def arrays(self) -> GraphArrays:
        """The arrays the compiled steps read, as one tuple (see :data:`GraphArrays`)."""
        return (self.degree_ext, self.powers, self.in_ptr, self.in_idx, self.in_val, self.out_ptr, self.out_idx,
                self.out_val)

    def run_steps(self, u: np.ndarray, order: np.ndarray, theta: float) -> None:
        """Balance the units in ``order`` one after the other, updating ``u`` in place."""
        X, Y = self.factors(u)
        _run_steps(order.astype(np.int64), u, X, Y, theta, self.prefetch, self.arrays)

    def many_stochastic(self, u0: np.ndarray, free: np.ndarray, runs: int, seed: int, tol: float,
                        max_sweeps: int, theta: float, record_every: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs`` independent stochastic runs from ``u0`` in parallel threads
        (:func:`synbal._compiled.many_runs.many_stochastic`)."""
        from synbal._compiled.many_runs import many_stochastic

        return many_stochastic(self, u0, free, runs, seed, tol, max_sweeps, theta, record_every)


#: ``(degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val)``: degrees (fixed
#: unit last), powers, and the CSR arrays by destination (``in_*``) and by source (``out_*``)
#: with one cost column per power.
GraphArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@numba.njit(cache=True)
def graph_factors(u: np.ndarray, g: GraphArrays) -> tuple[np.ndarray, np.ndarray]:
    """``X[k, j] = exp(−p_k c_j u_j)``, ``Y[k, i] = exp(p_k u_i)`` (fixed unit ``n``: 1)."""
    degree_ext, powers = g[0], g[1]
    n = u.size
    X = np.ones((powers.size, n + 1))
    Y = np.ones((powers.size, n + 1))
    for k in range(powers.size):
        for j in range(n):
            X[k, j] = np.exp(-powers[k] * degree_ext[j] * u[j])
            Y[k, j] = np.exp(powers[k] * u[j])
    return X, Y


@numba.njit(cache=True)
def _unit_costs(i: int, X: np.ndarray, Y: np.ndarray, g: GraphArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per power: unit ``i``'s incoming and outgoing costs (self-loops excluded) and self-loop costs."""
    _, powers, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val = g
    P = powers.size
    a = np.zeros(P)
    b = np.zeros(P)
    s = np.zeros(P)
    for k in range(P):
        acc = 0.0
        loop = 0.0
        for e in range(in_ptr[i], in_ptr[i + 1]):
            j = in_idx[e]
            v = in_val[e, k] * X[k, j]
            if j == i:
                loop += v
            else:
                acc += v
        a[k] = acc * Y[k, i]
        s[k] = loop * Y[k, i]
        acc = 0.0
        for e in range(out_ptr[i], out_ptr[i + 1]):
            r = out_idx[e]
            if r != i:
                acc += out_val[e, k] * Y[k, r]
        b[k] = acc * X[k, i]
    return a, b, s


@numba.njit(cache=True)
def graph_step(i: int, u: np.ndarray, X: np.ndarray, Y: np.ndarray, theta: float, g: GraphArrays) -> None:
    """Balance unit ``i`` (:mod:`synbal._solvers.steps`), refreshing its cached factors."""
    degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val = g
    c = degree_ext[i]
    if powers.size == 1:
        # single power: closed form unless a BiPU has a self-loop (no allocations on this path)
        p = powers[0]
        acc = 0.0
        loop = 0.0
        for e in range(in_ptr[i], in_ptr[i + 1]):
            j = in_idx[e]
            if j == i:
                loop += in_val[e, 0] * X[0, j]
            else:
                acc += in_val[e, 0] * X[0, j]
        out = 0.0
        for e in range(out_ptr[i], out_ptr[i + 1]):
            r = out_idx[e]
            if r != i:
                out += out_val[e, 0] * Y[0, r]
        a1 = acc * Y[0, i]
        b1 = out * X[0, i]
        if a1 <= 0.0 or b1 <= 0.0:
            return
        if loop == 0.0 or c == 1.0:
            u[i] += theta * closed_log_step(a1, b1, c, p)
            X[0, i] = np.exp(-p * c * u[i])
            Y[0, i] = np.exp(p * u[i])
            return
    a, b, s = _unit_costs(i, X, Y, g)
    t = theta * log_step(a, b, s, c, powers)
    if t != 0.0:
        u[i] += t
        for k in range(powers.size):
            X[k, i] = np.exp(-powers[k] * degree_ext[i] * u[i])
            Y[k, i] = np.exp(powers[k] * u[i])


@numba.njit(cache=True)
def graph_prefetch(i: int, g: GraphArrays) -> None:
    """Ask for unit ``i``'s rows (indices and costs, both directions) ahead of its step."""
    _, _, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val = g
    for e in range(in_ptr[i], in_ptr[i + 1], 16):
        prefetch(in_idx, e)  # type: ignore[call-arg]  # numba supplies the typing context
    for e in range(out_ptr[i], out_ptr[i + 1], 16):
        prefetch(out_idx, e)  # type: ignore[call-arg]
    flat_in = in_val.reshape(-1)
    flat_out = out_val.reshape(-1)
    width = in_val.shape[1]
    for e in range(in_ptr[i] * width, in_ptr[i + 1] * width, 8):
        prefetch(flat_in, e)  # type: ignore[call-arg]
    for e in range(out_ptr[i] * width, out_ptr[i + 1] * width, 8):
        prefetch(flat_out, e)  # type: ignore[call-arg]


@numba.njit(cache=True)
def _run_steps(order: np.ndarray, u: np.ndarray, X: np.ndarray, Y: np.ndarray, theta: float, ahead: bool,
               g: GraphArrays) -> None:
    for q in range(min(PREFETCH_AHEAD, order.size) if ahead else 0):
        graph_prefetch(order[q], g)
    for q in range(order.size):
        if ahead and q + PREFETCH_AHEAD < order.size:
            graph_prefetch(order[q + PREFETCH_AHEAD], g)
        graph_step(order[q], u, X, Y, theta, g)


@numba.njit(cache=True)
def graph_max_rel(free: np.ndarray, X: np.ndarray, Y: np.ndarray, g: GraphArrays) -> float:
    """``max |IN − c·OUT| / (IN + c·OUT)`` (summed over powers as the gradient) over ``free``."""
    degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val = g
    worst = 0.0
    if powers.size == 1:
        # single power: IN and OUT without the per-unit arrays of the general path
        for q in range(free.size):
            i = free[q]
            IN = 0.0
            for e in range(in_ptr[i], in_ptr[i + 1]):
                IN += in_val[e, 0] * X[0, in_idx[e]]
            OUT = 0.0
            for e in range(out_ptr[i], out_ptr[i + 1]):
                OUT += out_val[e, 0] * Y[0, out_idx[e]]
            IN *= Y[0, i]
            OUT *= X[0, i]
            c = degree_ext[i]
            if IN + c * OUT > 0.0:
                worst = max(worst, abs(IN - c * OUT) / (IN + c * OUT))
        return worst
    for q in range(free.size):
        i = free[q]
        a, b, s = _unit_costs(i, X, Y, g)
        c = degree_ext[i]
        grad = 0.0
        sc = 0.0
        for k in range(powers.size):
            IN = a[k] + s[k]
            OUT = b[k] + s[k]
            grad += powers[k] * (IN - c * OUT)
            sc += powers[k] * (IN + c * OUT)
        if sc > 0.0:
            rel = abs(grad) / sc
            if rel > worst:
                worst = rel
    return worst
