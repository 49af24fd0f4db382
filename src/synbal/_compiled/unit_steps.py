"""The compiled unit-step kernels of the ``stochastic`` and ``cyclic`` schedules, on two layouts.

* The *unit graph* (:class:`~synbal._compiled.unit_graph.UnitGraph`, any problem): the problem
  as CSR arrays by destination and by source with one cost column per power, and cached factors
  ``X[k, j] = exp(−p_k c_j u_j)``, ``Y[k, i] = exp(p_k u_i)`` refreshed only for the unit that
  moved. A step costs one pass over the unit's neighbours. Arrays: :data:`GraphArrays`.
* The *chain* (:class:`~synbal._compiled.chain_steps.ChainSteps`, dense layered nets of one
  power): every unit's incoming row and outgoing column side by side in one buffer, so a step
  reads one contiguous stretch. Arrays: :data:`ChainArrays`; factors are ``(1, n)`` arrays.

The step itself — closed form or bracketed Newton — is :mod:`synbal._solvers.steps`, shared
with the Python schedules. :func:`run_steps` and the many-runs driver
(:mod:`synbal._compiled.many_runs`) take both layouts' arrays and a ``kind`` saying which is
real (the other is an empty stand-in, :data:`NO_GRAPH` or :data:`NO_CHAIN`): one compiled
function for both, which numba caches on disk (passing the step functions as arguments would not be).

>>> import numpy as np
>>> from synbal._compiled.unit_graph import UnitGraph
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]), CostBlock(2.0, [-1], [0], [[1.0]])])
>>> g = UnitGraph.build(prob)
>>> u = np.zeros(1)
>>> X, Y = g.factors(u)
>>> run_steps(GRAPH, np.array([0]), u, X, Y, 1.0, False, g.arrays, NO_CHAIN)
>>> float(np.exp(u[0]))
0.7071067811865476
"""

from __future__ import annotations

import numba
import numpy as np

from synbal._compiled.chain import _factors
from synbal._compiled.lowlevel import PREFETCH_AHEAD, prefetch
from synbal._compiled.powermatrix import _pw
from synbal._solvers.steps import closed_log_step, log_step

__all__ = ["CHAIN", "GRAPH", "NO_CHAIN", "NO_GRAPH", "ChainArrays", "GraphArrays", "chain_factors", "chain_max_rel",
           "graph_factors", "graph_max_rel", "max_rel", "run_steps"]

#: ``kind``: the unit graph's arrays are the real ones.
GRAPH = 0
#: ``kind``: the chain's arrays are the real ones.
CHAIN = 1


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


@numba.njit(cache=True, inline="always")
def graph_step(i: int, u: np.ndarray, X: np.ndarray, Y: np.ndarray, theta: float, g: GraphArrays) -> None:
    """Balance unit ``i`` (:mod:`synbal._solvers.steps`), refreshing its cached factors.

    Inlined into the step loop: as a call, taking the arrays out of ``g`` at every step costs
    about a tenth of a step on nets of ~100 neighbours per unit."""
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


#: ``(p, lo, hi, unit_layer, c_unit, const_in, const_out, rows, layer_geom, layer_power)``: the
#: power, each hidden layer's unit range, each unit's layer and degree, its costs to and from
#: fixed units, the stretch buffer, and per layer its stretch geometry and block (power, coefficient)s.
ChainArrays = tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                    np.ndarray, np.ndarray]


@numba.njit(cache=True)
def chain_factors(u, k):  # type: ignore[no-untyped-def]
    """``X = e^{−p c u}`` and ``Y = e^{p u}`` of every unit, as ``(1, n)`` arrays (row 0: the factors)."""
    p, c_unit = k[0], k[4]
    X = np.empty((1, u.size))
    Y = np.empty((1, u.size))
    for i in range(u.size):
        Y[0, i], X[0, i] = _factors(p, c_unit[i], u[i])
    return X, Y


@numba.njit(cache=True, inline="always")
def _stretch(i, lo, unit_layer, layer_geom):  # type: ignore[no-untyped-def]
    """``(start, incoming length, outgoing length)`` of unit ``i``'s stretch of the buffer."""
    h = unit_layer[i]
    n_in = layer_geom[h, 1]
    n_out = layer_geom[h, 2]
    return layer_geom[h, 0] + (i - lo[h]) * (n_in + n_out), n_in, n_out


@numba.njit(fastmath=True, cache=True)
def _dot(row, q, f):  # type: ignore[no-untyped-def]
    """``Σ_j |row_j|^q f_j`` in float64."""
    acc = 0.0
    for j in range(row.size):
        acc += _pw(np.float64(row[j]), q) * f[j]
    return acc


@numba.njit(cache=True)
def _costs(i, X, Y, k):  # type: ignore[no-untyped-def]
    """``(IN_i, OUT_i)`` at the factors ``X = e^{−p c u}``, ``Y = e^{p u}``."""
    _, lo, hi, unit_layer, _, const_in, const_out, rows, layer_geom, layer_power = k
    h = unit_layer[i]
    start, n_in, n_out = _stretch(i, lo, unit_layer, layer_geom)
    a = const_in[i]
    if n_in > 0:
        a += layer_power[h, 1] * _dot(rows[start:start + n_in], layer_power[h, 0], X[lo[h - 1]:hi[h - 1]])
    b = const_out[i]
    if n_out > 0:
        b += layer_power[h, 3] * _dot(rows[start + n_in:start + n_in + n_out], layer_power[h, 2],
                                      Y[lo[h + 1]:hi[h + 1]])
    return a * Y[i], b * X[i]


@numba.njit(cache=True)
def chain_step(i, u, X, Y, theta, k):  # type: ignore[no-untyped-def]
    """Balance unit ``i`` (:mod:`synbal._solvers.steps`), refreshing its cached factors."""
    a, b = _costs(i, X, Y, k)
    if a <= 0.0 or b <= 0.0:
        return  # dead unit: left alone
    p = k[0]
    c = k[4][i]
    u[i] += theta * closed_log_step(a, b, c, p)
    Y[i], X[i] = _factors(p, c, u[i])


@numba.njit(cache=True)
def chain_prefetch(i, k):  # type: ignore[no-untyped-def]
    """Ask for unit ``i``'s stretch ahead of time (the schedule knows the next unit)."""
    lo, unit_layer, rows, layer_geom = k[1], k[3], k[7], k[8]
    start, n_in, n_out = _stretch(i, lo, unit_layer, layer_geom)
    for j in range(start, start + n_in + n_out, 64 // rows.itemsize):
        prefetch(rows, j)  # type: ignore[call-arg]  # numba supplies the typing context


@numba.njit(cache=True)
def chain_max_rel(free, X, Y, k):  # type: ignore[no-untyped-def]
    """``max |IN − c·OUT| / (IN + c·OUT)`` over the units in ``free``."""
    worst = 0.0
    for q in range(free.size):
        i = free[q]
        a, b = _costs(i, X, Y, k)
        c = k[4][i]
        den = a + c * b
        if den > 0.0:
            worst = max(worst, abs(a - c * b) / den)
    return worst


# ---------------------------------------------------------------------- both layouts
# the stand-ins for the layout a call does not use (empty arrays of the real ones' types)
NO_GRAPH: GraphArrays = (np.zeros(0), np.zeros(0), np.zeros(1, np.int64), np.zeros(0, np.int32),
                         np.zeros((0, 1)), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros((0, 1)))
NO_CHAIN: ChainArrays = (1.0, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                         np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, 3), np.int64), np.zeros((0, 4)))


@numba.njit(cache=True)
def max_rel(kind, free, X, Y, graph, chain):  # type: ignore[no-untyped-def]
    """``max |IN − c·OUT| / (IN + c·OUT)`` over the units in ``free``."""
    if kind == GRAPH:
        return graph_max_rel(free, X, Y, graph)
    return chain_max_rel(free, X[0], Y[0], chain)


@numba.njit(cache=True)
def run_steps(kind, order, u, X, Y, theta, ahead, graph, chain):  # type: ignore[no-untyped-def]
    """Balance the units in ``order`` one after the other (``ahead``: prefetch the next units' rows).

    The layout is chosen once, outside the loop: each layout's loop then calls its own step with
    nothing between (a choice per step, or a view of the chain's factor row per step, costs as
    much as a small step). These two loops are the one place the step loop is written twice: one
    loop taking the prefetch and step functions as arguments would make its callers uncacheable
    (numba 0.68 refuses to cache a function that passes compiled functions on: "uses dynamic
    globals"), so every process would compile the driver again.
    """
    if kind == GRAPH:
        _graph_loop(order, u, X, Y, theta, ahead, graph)
    else:
        _chain_loop(order, u, X[0], Y[0], theta, ahead, chain)


# _graph_loop and _chain_loop: the same loop over two layouts' steps, written twice on purpose (see run_steps)
@numba.njit(cache=True)
def _graph_loop(order, u, X, Y, theta, ahead, g):  # type: ignore[no-untyped-def]
    for q in range(min(PREFETCH_AHEAD, order.size) if ahead else 0):
        graph_prefetch(order[q], g)
    for q in range(order.size):
        if ahead and q + PREFETCH_AHEAD < order.size:
            graph_prefetch(order[q + PREFETCH_AHEAD], g)
        graph_step(order[q], u, X, Y, theta, g)


@numba.njit(cache=True)
def _chain_loop(order, u, X, Y, theta, ahead, k):  # type: ignore[no-untyped-def]
    for q in range(min(PREFETCH_AHEAD, order.size) if ahead else 0):
        chain_prefetch(order[q], k)
    for q in range(order.size):
        if ahead and q + PREFETCH_AHEAD < order.size:
            chain_prefetch(order[q + PREFETCH_AHEAD], k)
        chain_step(order[q], u, X, Y, theta, k)
