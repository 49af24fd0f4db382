"""The unit graph: a balance problem as CSR arrays for the compiled single-unit steps.

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

import numpy as np
import scipy.sparse as sp

from synbal._compiled.lowlevel import PREFETCH_BYTES
from synbal._compiled.many_runs import many_stochastic
from synbal._compiled.unit_steps import GRAPH, NO_CHAIN, GraphArrays, run_steps
from synbal._problem.problem import BalanceProblem

__all__ = ["UnitGraph"]


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
        from synbal._problem.signed import require_unsigned

        require_unsigned(problem, "the compiled unit kernels")
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
        run_steps(GRAPH, order.astype(np.int64), u, X, Y, theta, self.prefetch, self.arrays, NO_CHAIN)

    def many_stochastic(self, u0: np.ndarray, free: np.ndarray, runs: int, seed: int, tol: float,
                        max_sweeps: int, theta: float, record_every: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs`` independent stochastic runs from ``u0`` in parallel threads
        (:func:`synbal._compiled.many_runs.many_stochastic`)."""
        return many_stochastic(GRAPH, self.arrays, NO_CHAIN, self.prefetch, u0, free, runs, seed, tol,
                               max_sweeps, theta, record_every)


