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

from synbal._compiled.lowlevel import PREFETCH_AHEAD, PREFETCH_BYTES, SCREEN_STRIDE, prefetch
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

    def run_steps(self, u: np.ndarray, order: np.ndarray, theta: float) -> None:
        """Balance the units in ``order`` one after the other, updating ``u`` in place."""
        X, Y = self.factors(u)
        _run_steps(order.astype(np.int64), u, self.degree_ext, self.powers, self.in_ptr,
                   self.in_idx, self.in_val, self.out_ptr, self.out_idx, self.out_val, X, Y, theta,
                   self.prefetch)

    def many_stochastic(self, u0: np.ndarray, free: np.ndarray, runs: int, seed: int, tol: float,
                        max_sweeps: int, theta: float, record_every: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs`` independent stochastic runs from ``u0``, in parallel threads.

        Each run balances one uniformly random free unit per step and checks its max relative
        deficit after every sweep (``len(free)`` steps). Returns ``(U, sweeps, snapshots)``:
        final log-scales ``(runs, n)``, sweeps used per run (negative if ``tol`` was not met),
        and, if ``record_every > 0``, log-scales every ``record_every`` sweeps
        ``(runs, max_sweeps // record_every + 1, n)`` (the last state repeated after stopping).
        """
        n_rec = max_sweeps // record_every + 1 if record_every > 0 else 0
        U = np.tile(u0, (runs, 1))
        snaps = np.zeros((runs, n_rec, self.n))
        sweeps = np.zeros(runs, dtype=np.int64)
        _many_stochastic(U, free.astype(np.int64), np.int64(seed), tol, max_sweeps, theta,
                         record_every, snaps, sweeps, self.degree_ext, self.powers, self.in_ptr,
                         self.in_idx, self.in_val, self.out_ptr, self.out_idx, self.out_val,
                         self.prefetch)
        return U, sweeps, snaps


@numba.njit(cache=True)
def _dfun(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: float, powers: np.ndarray,
          t: float) -> tuple[float, float]:
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
def _solve1d(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: float, powers: np.ndarray) -> float:
    at = a.sum()
    bt = b.sum()
    if at <= 0.0 or bt <= 0.0:
        return 0.0
    t = np.log(c * bt / at) / (powers.max() * (1.0 + c))
    if powers.size == 1 and (s[0] == 0.0 or c == 1.0):
        return t
    lo = t
    hi = t
    step = 1.0
    d1, d2 = _dfun(a, b, s, c, powers, lo)
    while d1 > 0.0:
        lo -= step
        step *= 2.0
        d1, d2 = _dfun(a, b, s, c, powers, lo)
    step = 1.0
    d1, d2 = _dfun(a, b, s, c, powers, hi)
    while d1 < 0.0:
        hi += step
        step *= 2.0
        d1, d2 = _dfun(a, b, s, c, powers, hi)
    for _ in range(200):
        d1, d2 = _dfun(a, b, s, c, powers, t)
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
def _unit_costs(i: int, degree_ext: np.ndarray, powers: np.ndarray, in_ptr: np.ndarray,
                in_idx: np.ndarray, in_val: np.ndarray, out_ptr: np.ndarray, out_idx: np.ndarray,
                out_val: np.ndarray, X: np.ndarray, Y: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
def _step(i: int, u: np.ndarray, degree_ext: np.ndarray, powers: np.ndarray, in_ptr: np.ndarray,
          in_idx: np.ndarray, in_val: np.ndarray, out_ptr: np.ndarray, out_idx: np.ndarray,
          out_val: np.ndarray, X: np.ndarray, Y: np.ndarray, theta: float) -> None:
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
            t = theta * np.log(c * b1 / a1) / (p * (1.0 + c))
            u[i] += t
            X[0, i] = np.exp(-p * c * u[i])
            Y[0, i] = np.exp(p * u[i])
            return
    a, b, s = _unit_costs(i, degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx,
                          out_val, X, Y)
    t = theta * _solve1d(a, b, s, c, powers)
    if t != 0.0:
        u[i] += t
        for k in range(powers.size):
            X[k, i] = np.exp(-powers[k] * degree_ext[i] * u[i])
            Y[k, i] = np.exp(powers[k] * u[i])


@numba.njit(cache=True)
def _prefetch_unit(i: int, in_ptr: np.ndarray, in_idx: np.ndarray, in_val: np.ndarray,
                   out_ptr: np.ndarray, out_idx: np.ndarray, out_val: np.ndarray) -> None:
    """Ask for unit ``i``'s rows (indices and costs, both directions) ahead of its step."""
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
def _run_steps(order: np.ndarray, u: np.ndarray, degree_ext: np.ndarray, powers: np.ndarray,
               in_ptr: np.ndarray, in_idx: np.ndarray, in_val: np.ndarray, out_ptr: np.ndarray,
               out_idx: np.ndarray, out_val: np.ndarray, X: np.ndarray, Y: np.ndarray,
               theta: float, ahead: bool) -> None:
    for q in range(min(PREFETCH_AHEAD, order.size) if ahead else 0):
        _prefetch_unit(order[q], in_ptr, in_idx, in_val, out_ptr, out_idx, out_val)
    for q in range(order.size):
        if ahead and q + PREFETCH_AHEAD < order.size:
            _prefetch_unit(order[q + PREFETCH_AHEAD], in_ptr, in_idx, in_val, out_ptr, out_idx,
                           out_val)
        _step(order[q], u, degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val,
              X, Y, theta)


@numba.njit(cache=True)
def _max_rel(free: np.ndarray, degree_ext: np.ndarray, powers: np.ndarray, in_ptr: np.ndarray,
             in_idx: np.ndarray, in_val: np.ndarray, out_ptr: np.ndarray, out_idx: np.ndarray,
             out_val: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
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
        a, b, s = _unit_costs(i, degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx,
                              out_val, X, Y)
        c = degree_ext[i]
        g = 0.0
        sc = 0.0
        for k in range(powers.size):
            IN = a[k] + s[k]
            OUT = b[k] + s[k]
            g += powers[k] * (IN - c * OUT)
            sc += powers[k] * (IN + c * OUT)
        if sc > 0.0:
            rel = abs(g) / sc
            if rel > worst:
                worst = rel
    return worst


@numba.njit(parallel=True, cache=True)
def _many_stochastic(U: np.ndarray, free: np.ndarray, seed: np.int64, tol: float, max_sweeps: int,
                     theta: float, record_every: int, snaps: np.ndarray, sweeps: np.ndarray,
                     degree_ext: np.ndarray, powers: np.ndarray, in_ptr: np.ndarray,
                     in_idx: np.ndarray, in_val: np.ndarray, out_ptr: np.ndarray,
                     out_idx: np.ndarray, out_val: np.ndarray, ahead: bool) -> None:
    runs = U.shape[0]
    n = U.shape[1]
    P = powers.size
    lead = PREFETCH_AHEAD if ahead else 0
    for r in numba.prange(runs):
        np.random.seed(seed + r)  # noqa: NPY002 (numba supports only the legacy API)
        # the next ``lead`` units are drawn early (same stream) so their rows can be prefetched
        upcoming = np.empty(lead + 1, dtype=np.int64)
        for q in range(lead):
            upcoming[q] = free[np.random.randint(0, free.size)]  # noqa: NPY002
            _prefetch_unit(upcoming[q], in_ptr, in_idx, in_val, out_ptr, out_idx, out_val)
        head = 0
        u = U[r]
        X = np.ones((P, n + 1))
        Y = np.ones((P, n + 1))
        for k in range(P):
            for j in range(n):
                X[k, j] = np.exp(-powers[k] * degree_ext[j] * u[j])
                Y[k, j] = np.exp(powers[k] * u[j])
        rec = 0
        if record_every > 0:
            snaps[r, 0, :] = u
            rec = 1
        done = -1
        for sweep in range(1, max_sweeps + 1):
            for _ in range(free.size):
                drawn = free[np.random.randint(0, free.size)]  # noqa: NPY002
                if lead > 0:
                    _prefetch_unit(drawn, in_ptr, in_idx, in_val, out_ptr, out_idx, out_val)
                upcoming[(head + lead) % (lead + 1)] = drawn
                i = upcoming[head]
                head = (head + 1) % (lead + 1)
                _step(i, u, degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx,
                      out_val, X, Y, theta)
            if record_every > 0 and sweep % record_every == 0:
                snaps[r, rec, :] = u
                rec += 1
            # a sample of the units first: if one of them is above tol, so is the maximum
            if _max_rel(free[::SCREEN_STRIDE], degree_ext, powers, in_ptr, in_idx, in_val, out_ptr,
                        out_idx, out_val, X, Y) <= tol and \
                    _max_rel(free, degree_ext, powers, in_ptr, in_idx, in_val, out_ptr, out_idx,
                             out_val, X, Y) <= tol:
                done = sweep
                break
        while record_every > 0 and rec < snaps.shape[1]:
            snaps[r, rec, :] = u
            rec += 1
        sweeps[r] = done if done > 0 else -max_sweeps
