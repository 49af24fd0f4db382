"""The Hessian of ``R`` on the free units, assembled into a sparsity pattern computed once per solve.

Its non-zeros never move: a weight ``j → i`` of non-zero cost between two scalable units puts
``−p²c_j·V`` at ``(i, j)`` and ``(j, i)`` (``V`` its current cost), and every unit has a diagonal.
:class:`HessianPattern` finds, once, where each weight lands in the CSR arrays of the Hessian
restricted to the free units; each Newton step then only computes the values and sums them into
place with one ``bincount`` — no COO→CSR conversion, sorting or sub-matrix extraction per step.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> from synbal._solvers.exact import hessian
>>> prob = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [-1], [[4.0]]),
...     CostBlock(2.0, [1], [0], [[1.0]]), CostBlock(2.0, [-1], [1], [[0.25]])])
>>> u = np.array([0.1, -0.2])
>>> H = HessianPattern(prob, np.arange(2)).at(u)
>>> bool(np.allclose(H.toarray(), hessian(prob, u).toarray()))
True
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from synbal._problem.problem import BalanceProblem

__all__ = ["HessianPattern"]


class HessianPattern:
    """Where every weight's Hessian term goes in the CSR arrays of ``H[idx][:, idx]``."""

    def __init__(self, problem: BalanceProblem, idx: np.ndarray) -> None:
        self.problem = problem
        self.idx = idx
        m = idx.size
        pos = np.full(problem.n + 1, -1, dtype=np.int64)
        pos[idx] = np.arange(m)
        self.entries: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        keys = [np.arange(m, dtype=np.int64) * (m + 1)]  # the diagonal first
        for k, b in enumerate(problem.blocks):
            coo = sp.coo_array(b.explicit())
            r, c = b.dst[coo.row], b.src[coo.col]
            keep = np.flatnonzero((r >= 0) & (c >= 0) & (r != c) & (coo.data > 0))
            pr, pc = pos[r[keep]], pos[c[keep]]
            inside = (pr >= 0) & (pc >= 0)
            keep, pr, pc = keep[inside], pr[inside], pc[inside]
            if keep.size:
                self.entries.append((k, coo.row[keep], coo.col[keep], coo.data[keep], c[keep]))
                keys += [pr * m + pc, pc * m + pr]
        unique, self.slot = np.unique(np.concatenate(keys), return_inverse=True)
        self.indices = unique % m
        self.indptr = np.searchsorted(unique // m, np.arange(m + 1)).astype(np.int64)
        self.nnz = unique.size

    def at(self, u: np.ndarray) -> sp.csr_array:
        """``H(u)`` restricted to the free units ``idx`` (rows and columns in ``idx`` order)."""
        prob = self.problem
        ue = np.append(u, 0.0)
        ce = np.append(prob.degree, 1.0)
        vals = [prob.hessian_diagonal(u)[self.idx]]
        for k, rows, cols, data, src in self.entries:
            b = prob.blocks[k]
            x, y = b.factors(ue, ce)
            off = -b.power * b.power * b.row_sign * ce[src] * (data * y[rows] * x[cols])
            vals += [off, off]
        data_out = np.bincount(self.slot, weights=np.concatenate(vals), minlength=self.nnz)
        m = self.idx.size
        return sp.csr_array((data_out, self.indices, self.indptr), shape=(m, m))
