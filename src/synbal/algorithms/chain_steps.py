"""Single-unit balancing steps on dense layered chains (the stochastic and cyclic schedules).

A unit ``i`` of hidden layer ``h`` needs ``IN_i = e^{p u_i}(k_i + Σ_j |W_h[i, j]|^p e^{−p c u_j})``
and ``OUT_i = e^{−p c u_i}(l_i + Σ_r |W_{h+1}[r, i]|^p e^{p u_r})``, with ``k``/``l`` the costs
to and from fixed units (input, output, biases; see :mod:`synbal.algorithms.chain`). Row ``i`` of
``W_h`` is contiguous; column ``i`` of ``W_{h+1}`` is not, so a transposed copy of every interior
matrix is kept. Both orientations are copied into one buffer (twice the interior weights, in
their own dtype), so that the rows sit on huge pages. A step then reads
two contiguous rows with SIMD dot products, instead of gathering ``2·width`` neighbours through
index arrays as the general :class:`~synbal.algorithms.kernels.UnitGraph` kernel does.

:func:`step_kernel` picks this kernel for chains with a single power and the general one
otherwise; both offer ``run_steps`` and ``many_stochastic`` with the same meaning.

>>> import numpy as np
>>> from synbal.dense import DenseNet, DenseNetAdapter
>>> from synbal.regularizers import parse_regularizer
>>> net = DenseNet([np.array([[4.0]]), np.array([[1.0]]), np.array([[0.25]])])
>>> kernel = step_kernel(DenseNetAdapter(net).problem(parse_regularizer("l2")))
>>> type(kernel).__name__
'ChainSteps'
>>> u = np.zeros(2)
>>> kernel.run_steps(u, np.array([0, 1, 0, 1] * 30), theta=1.0)
>>> np.round(np.exp(u), 6).tolist()  # every weight becomes 1: 4·0.25, 1·0.25/0.25, 0.25/0.25
[0.25, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from synbal.algorithms.chain import Chain, _factors, chain_of
from synbal.algorithms.lowlevel import PREFETCH_AHEAD, PREFETCH_BYTES, SCREEN_STRIDE, prefetch
from synbal.powermatrix import _pw
from synbal.problem import BalanceProblem

__all__ = ["ChainSteps", "step_kernel"]


def step_kernel(problem: BalanceProblem) -> Any:
    """The fastest single-unit step kernel for ``problem``: :class:`ChainSteps` or a ``UnitGraph``."""
    chain = chain_of(problem)
    if chain is not None:
        return ChainSteps.from_chain(chain)
    from synbal.algorithms.kernels import UnitGraph

    return UnitGraph.build(problem)


@dataclass
class ChainSteps:
    """Row-contiguous copies of a chain's interior weights and everything a step needs."""

    chain: Chain
    unit_layer: np.ndarray  # hidden layer of each unit
    rows: np.ndarray  # flat buffer: into-layer matrices (rows = the layer's units), then transposed out-of-layer ones
    mat_geom: np.ndarray  # per matrix: (offset in ``rows``, row length)
    in_mat: np.ndarray  # per layer: index of its incoming interior matrix, -1 if none
    out_mat: np.ndarray  # per layer: index of the transposed outgoing one, -1 if none
    mat_power: np.ndarray
    mat_coef: np.ndarray
    prefetch: bool = False  # touch the next unit's rows ahead of time (weights larger than the caches)

    @classmethod
    def from_chain(cls, chain: Chain) -> ChainSteps:
        H = chain.layer_lo.size
        in_mat = np.full(H, -1, dtype=np.int64)
        out_mat = np.full(H, -1, dtype=np.int64)
        geom: list[tuple[int, int]] = []
        powers: list[float] = []
        coefs: list[float] = []
        # every row copy in one buffer (twice the interior weights, in their dtype): a flat array
        # needs no typed list in the kernels, and one large allocation gets huge pages
        dtype = chain.mats[0].dtype if chain.mats else np.float64
        buffer = np.empty(2 * sum(m.size for m in chain.mats), dtype=dtype)
        offset = 0
        for transposed in (False, True):
            for b, d in enumerate(chain.mat_dst):
                W = chain.mats[b].T if transposed else chain.mats[b]
                buffer[offset:offset + W.size].reshape(W.shape)[...] = W
                if transposed:
                    out_mat[d - 1] = len(geom)
                else:
                    in_mat[d] = len(geom)
                geom.append((offset, W.shape[1]))
                offset += W.size
                powers.append(float(chain.mat_power[b]))
                coefs.append(float(chain.mat_coef[b]))
        unit_layer = np.empty(chain.c_unit.size, dtype=np.int64)
        for h in range(H):
            unit_layer[chain.layer_lo[h]:chain.layer_hi[h]] = h
        return cls(chain, unit_layer, buffer, np.array(geom, dtype=np.int64).reshape(-1, 2), in_mat, out_mat,
                   np.array(powers), np.array(coefs), prefetch=buffer.nbytes > PREFETCH_BYTES)

    def _args(self) -> tuple[Any, ...]:
        c = self.chain
        return (c.power, c.layer_lo, c.layer_hi, self.unit_layer, c.c_unit, c.const_in, c.const_out, self.rows,
                self.mat_geom, self.in_mat, self.out_mat, self.mat_power, self.mat_coef)

    def run_steps(self, u: np.ndarray, order: np.ndarray, theta: float) -> None:
        """Balance the units in ``order`` one after the other, updating ``u`` in place."""
        _run_chain_steps(np.ascontiguousarray(order, dtype=np.int64), u, theta, self.prefetch, *self._args())

    def max_relative_deficit(self, u: np.ndarray, free: np.ndarray) -> float:
        """``max |IN − c·OUT| / (IN + c·OUT)`` over the units in ``free``."""
        X, Y = _factors_of(u, self.chain.power, self.chain.c_unit)
        return float(_chain_max_rel(np.ascontiguousarray(free, dtype=np.int64), X, Y, *self._args()))

    def many_stochastic(self, u0: np.ndarray, free: np.ndarray, runs: int, seed: int, tol: float,
                        max_sweeps: int, theta: float, record_every: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs`` independent stochastic runs from ``u0`` in parallel threads (same contract as
        :meth:`synbal.algorithms.kernels.UnitGraph.many_stochastic`)."""
        n = u0.size
        n_rec = max_sweeps // record_every + 1 if record_every > 0 else 0
        U = np.tile(u0, (runs, 1))
        snaps = np.zeros((runs, n_rec, n))
        sweeps = np.zeros(runs, dtype=np.int64)
        _many_chain_stochastic(U, np.ascontiguousarray(free, dtype=np.int64), np.int64(seed), tol, max_sweeps,
                               theta, record_every, snaps, sweeps, *self._args())
        return U, sweeps, snaps


@numba.njit(cache=True)
def _factors_of(u, p, c_unit):  # type: ignore[no-untyped-def]
    """``X = e^{−p c u}`` and ``Y = e^{p u}`` of every unit."""
    X = np.empty(u.size)
    Y = np.empty(u.size)
    for i in range(u.size):
        Y[i], X[i] = _factors(p, c_unit[i], u[i])
    return X, Y


@numba.njit(cache=True, inline="always")
def _row(rows, mat_geom, m, k):  # type: ignore[no-untyped-def]
    """Row ``k`` of matrix ``m`` in the flat buffer."""
    start = mat_geom[m, 0] + k * mat_geom[m, 1]
    return rows[start:start + mat_geom[m, 1]]


@numba.njit(fastmath=True, cache=True)
def _dot(row, q, f):  # type: ignore[no-untyped-def]
    """``Σ_j |row_j|^q f_j`` in float64."""
    acc = 0.0
    for j in range(row.size):
        acc += _pw(np.float64(row[j]), q) * f[j]
    return acc


@numba.njit(cache=True)
def _costs(i, X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat, out_mat,  # type: ignore[no-untyped-def]
           mat_power, mat_coef):
    """``(IN_i, OUT_i)`` at the factors ``X = e^{−p c u}``, ``Y = e^{p u}``."""
    h = unit_layer[i]
    k = i - lo[h]
    a = const_in[i]
    m = in_mat[h]
    if m >= 0:
        a += mat_coef[m] * _dot(_row(rows, mat_geom, m, k), mat_power[m], X[lo[h - 1]:hi[h - 1]])
    b = const_out[i]
    m = out_mat[h]
    if m >= 0:
        b += mat_coef[m] * _dot(_row(rows, mat_geom, m, k), mat_power[m], Y[lo[h + 1]:hi[h + 1]])
    return a * Y[i], b * X[i]


@numba.njit(cache=True)
def _chain_step(i, u, X, Y, theta, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat,  # type: ignore[no-untyped-def]
                out_mat, mat_power, mat_coef):
    a, b = _costs(i, X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat, out_mat,
                  mat_power, mat_coef)
    if a <= 0.0 or b <= 0.0:
        return  # dead unit: left alone
    c = c_unit[i]
    u[i] += theta * np.log(c * b / a) / (p * (1.0 + c))
    Y[i], X[i] = _factors(p, c, u[i])


@numba.njit(cache=True)
def _prefetch_rows(i, lo, unit_layer, rows, mat_geom, in_mat, out_mat):  # type: ignore[no-untyped-def]
    """Ask for unit ``i``'s two rows ahead of time (the schedule knows the next unit)."""
    h = unit_layer[i]
    k = i - lo[h]
    for m in (in_mat[h], out_mat[h]):
        if m >= 0:
            row = _row(rows, mat_geom, m, k)
            for j in range(0, row.size, 16):
                prefetch(row, j)  # type: ignore[call-arg]  # numba supplies the typing context


@numba.njit(cache=True)
def _run_chain_steps(order, u, theta, prefetch, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom,  # type: ignore[no-untyped-def]
                     in_mat, out_mat, mat_power, mat_coef):
    X, Y = _factors_of(u, p, c_unit)
    for q in range(min(PREFETCH_AHEAD, order.size) if prefetch else 0):
        _prefetch_rows(order[q], lo, unit_layer, rows, mat_geom, in_mat, out_mat)
    for q in range(order.size):
        if prefetch and q + PREFETCH_AHEAD < order.size:
            _prefetch_rows(order[q + PREFETCH_AHEAD], lo, unit_layer, rows, mat_geom, in_mat, out_mat)
        _chain_step(order[q], u, X, Y, theta, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom,
                    in_mat, out_mat, mat_power, mat_coef)


@numba.njit(cache=True)
def _chain_max_rel(free, X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat, out_mat,  # type: ignore[no-untyped-def]
                   mat_power, mat_coef):
    worst = 0.0
    for q in range(free.size):
        i = free[q]
        a, b = _costs(i, X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat, out_mat,
                      mat_power, mat_coef)
        c = c_unit[i]
        den = a + c * b
        if den > 0.0:
            worst = max(worst, abs(a - c * b) / den)
    return worst


@numba.njit(parallel=True, cache=True)
def _many_chain_stochastic(U, free, seed, tol, max_sweeps, theta, record_every, snaps, sweeps,  # type: ignore[no-untyped-def]
                           p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom, in_mat, out_mat,
                           mat_power, mat_coef):
    runs = U.shape[0]
    for r in numba.prange(runs):
        np.random.seed(seed + r)  # noqa: NPY002 (numba supports only the legacy API)
        u = U[r]
        X, Y = _factors_of(u, p, c_unit)
        rec = 0
        if record_every > 0:
            snaps[r, 0, :] = u
            rec = 1
        done = -1
        for sweep in range(1, max_sweeps + 1):
            for _ in range(free.size):
                i = free[np.random.randint(0, free.size)]  # noqa: NPY002
                _chain_step(i, u, X, Y, theta, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom,
                            in_mat, out_mat, mat_power, mat_coef)
            if record_every > 0 and sweep % record_every == 0:
                snaps[r, rec, :] = u
                rec += 1
            # a sample of the units first: if one of them is above tol, so is the maximum
            if _chain_max_rel(free[::SCREEN_STRIDE], X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows,
                              mat_geom, in_mat, out_mat, mat_power, mat_coef) <= tol and \
                    _chain_max_rel(free, X, Y, p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, mat_geom,
                                   in_mat, out_mat, mat_power, mat_coef) <= tol:
                done = sweep
                break
        while record_every > 0 and rec < snaps.shape[1]:
            snaps[r, rec, :] = u
            rec += 1
        sweeps[r] = done if done > 0 else -max_sweeps
