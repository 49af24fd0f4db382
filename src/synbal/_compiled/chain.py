"""The ``exact`` solver's compiled fast path for layered chains (MLPs, the paper's layered nets).

A *chain* is a problem whose scalable units form ordered hidden layers ``0 … H−1`` (each a
contiguous index range, one degree ``c`` per layer) and whose cost blocks are of three kinds:

* *constant-side* blocks, whose sources or destinations are all fixed units (the input layer,
  the output layer, the constant unit that biases hang from). Their products never change with
  ``u`` beyond a per-unit factor, so they are read **once**: their row or column sums
  ``const_in``/``const_out`` give ``IN_i ∋ const_in_i·e^{p u_i}`` and
  ``OUT_i ∋ const_out_i·e^{−p c u_i}`` at every ``u``;
* *interior* blocks from hidden layer ``h−1`` to ``h`` (at most one into and one out of each
  layer), matrix-free ``coef·|W|^p`` blocks read once per iteration by a fused kernel that
  returns both ``A x`` and ``Aᵀ y``;
* blocks between two fixed units, a constant of ``R``.

On a chain, the two-level iteration of :mod:`synbal._solvers.exact` (balance one parity class
of layers exactly, then solve the tied one-shift-per-layer problem exactly) runs entirely in
compiled code: the coarse problem's Hessian is tridiagonal and Newton solves it in ``O(H)``.
Each iteration reads the interior weights once; nothing else touches the weights, so the
whole solve costs a handful of weight reads also on small nets, where a Python loop per layer
would dominate. A chain with a dead unit (zero IN or OUT) is handed back to the general path.

>>> import numpy as np
>>> from synbal._adapters.dense import DenseNet, DenseNetAdapter
>>> from synbal._problem.regularizers import parse_regularizer
>>> from synbal._solvers.base import SolveOptions
>>> rng = np.random.default_rng(0)
>>> net = DenseNet([rng.standard_normal((5, 3)), rng.standard_normal((4, 5)), rng.standard_normal((2, 4))])
>>> problem = DenseNetAdapter(net).problem(parse_regularizer("l2"))
>>> res = solve_chain(problem, SolveOptions(tol=1e-13))
>>> res.converged, bool(problem.max_relative_deficit(res.u) < 1e-13)
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from tqdm.auto import tqdm

from synbal._compiled.lowlevel import MatrixTable, matrix_at
from synbal._compiled.powermatrix import PowerMatrix, _fused
from synbal._problem.problem import BalanceProblem
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult

__all__ = ["Chain", "chain_of", "solve_chain"]

#: Newton iterations allowed on the coarse (one shift per layer) problem.
COARSE_ITERATIONS = 60
#: The compiled path runs only while every unit's IN and OUT and the total ``R`` lie within
#: ``[1/SAFE_COST, SAFE_COST]``: its steps multiply and divide such sums without range checks.
SAFE_COST = 1e250


@dataclass
class Chain:
    """A problem's chain structure (see the module docstring); built by :func:`chain_of`."""

    power: float
    layer_lo: np.ndarray  # first unit of each hidden layer
    layer_hi: np.ndarray  # one past its last unit
    c_layer: np.ndarray  # degree of each hidden layer
    c_unit: np.ndarray  # degree of each unit
    mats: list[np.ndarray]  # interior weight matrices (one dtype), shape (|layer h|, |layer h-1|)
    mat_power: np.ndarray  # the power each interior kernel raises |w| to
    mat_coef: np.ndarray  # and its coefficient
    mat_dst: np.ndarray  # hidden layer each interior block ends in (it starts in the one before)
    const_in: np.ndarray  # per unit: summed costs from fixed units at u = 0
    const_out: np.ndarray  # per unit: summed costs into fixed units at u = 0
    r_const: float  # costs between fixed units


def _layer_of_indices(idx: np.ndarray, sizes: np.ndarray, start_to_layer: dict[int, int]) -> int | None:
    """The hidden layer ``idx`` lists in order (``-1`` for all-fixed, ``None`` for anything else)."""
    if idx.size == 0:
        return None
    first = int(idx[0])
    if first < 0:
        return -1 if bool((idx < 0).all()) else None
    h = start_to_layer.get(first)
    if h is None or idx.size != sizes[h] or int(idx[-1]) != first + idx.size - 1:
        return None
    return h if idx.size == 1 or bool((idx[1:] > idx[:-1]).all()) else None  # increasing: the exact range


def chain_of(problem: BalanceProblem) -> Chain | None:
    """The chain structure of ``problem``, or ``None`` when it is not a chain.

    Reads each constant-side block once (its row or column sums).
    """
    if problem.custom is not None or problem.layers is None or len(problem.powers) != 1 or problem.signed:
        return None  # (rows of sign -1 are not in the chain kernels)
    if any(b.dst.size and (b.dst < 0).any() and (b.dst >= 0).any() for b in problem.blocks):
        return None  # a block mixing fixed and scalable destinations (one all-units block, say)
    layers = problem.layers
    n = problem.n
    lo = np.array([int(layer[0]) if layer.size else -1 for layer in layers], dtype=np.int64)
    hi = np.array([int(layer[0]) + layer.size if layer.size else -1 for layer in layers], dtype=np.int64)
    if (lo < 0).any() or int((hi - lo).sum()) != n:
        return None
    sizes = hi - lo
    order = np.argsort(lo)
    if (lo[order][1:] < hi[order][:-1]).any():
        return None  # overlapping layers
    start_to_layer: dict[int, int] = {}
    for h, layer in enumerate(layers):
        if layer.size > 1 and not bool((layer[1:] - layer[:-1] == 1).all()):
            return None
        start_to_layer[int(lo[h])] = h
    c_unit = problem.degree
    c_layer = c_unit[lo]
    if layers and (c_unit[np.concatenate(layers)] != np.repeat(c_layer, sizes)).any():
        return None
    seen: dict[int, tuple[np.ndarray, int | None]] = {}  # adapters share index arrays between blocks

    def layer_of(idx: np.ndarray) -> int | None:
        hit = seen.get(id(idx))
        if hit is not None and hit[0] is idx:
            return hit[1]
        h = _layer_of_indices(idx, sizes, start_to_layer)
        seen[id(idx)] = (idx, h)
        return h

    parts = _classify_blocks(problem, layer_of, lo, hi)
    if parts is None:
        return None
    interior, const_in, const_out, r_const = parts
    mats = [interior[d].W for d in sorted(interior)]
    if len({m.dtype for m in mats}) > 1:
        return None
    return Chain(
        power=problem.powers[0], layer_lo=lo, layer_hi=hi, c_layer=c_layer, c_unit=c_unit.copy(), mats=mats,
        mat_power=np.array([interior[d].p for d in sorted(interior)]),
        mat_coef=np.array([interior[d].coef for d in sorted(interior)]),
        mat_dst=np.array(sorted(interior), dtype=np.int64),
        const_in=const_in, const_out=const_out, r_const=r_const,
    )


def _classify_blocks(problem: BalanceProblem, layer_of: Callable[[np.ndarray], int | None], lo: np.ndarray,
                     hi: np.ndarray) -> tuple[dict[int, PowerMatrix], np.ndarray, np.ndarray, float] | None:
    """Interior blocks by destination layer, and the constant-side blocks' row/column sums and
    constant (``None`` when a block does not fit the chain)."""
    n = problem.n
    const_in = np.zeros(n)
    const_out = np.zeros(n)
    r_const = 0.0
    interior: dict[int, PowerMatrix] = {}
    for b in problem.blocks:
        d = layer_of(b.dst)
        s = layer_of(b.src)
        if d is None or s is None:
            return None
        if d >= 0 and s >= 0:
            matrix = b.matrix
            if isinstance(matrix, np.ndarray):
                matrix = PowerMatrix(matrix, 1.0)  # explicit costs are already |w|^p >= 0
            if not isinstance(matrix, PowerMatrix) or d != s + 1 or d in interior:
                return None
            interior[d] = matrix
            continue
        if d >= 0 and isinstance(b.matrix, PowerMatrix) and b.matrix.shape[1] == 1:  # a bias column
            const_in[lo[d]:hi[d]] += np.abs(b.matrix.W[:, 0], dtype=np.float64) ** b.matrix.p * b.matrix.coef
        elif d >= 0:
            const_in[lo[d]:hi[d]] += b.matrix @ np.ones(b.src.size)  # row sums
        elif s >= 0:
            const_out[lo[s]:hi[s]] += b.matrix.T @ np.ones(b.dst.size)  # column sums
        else:
            r_const += b.total()
    return interior, const_in, const_out, r_const


# ---------------------------------------------------------------------- compiled core
@numba.njit(cache=True)
def _factors(p, c, u):  # type: ignore[no-untyped-def]
    """``(e^{p u}, e^{−p c u})``: one exp when ``c = 1``."""
    ey = np.exp(p * u)
    return ey, (1.0 / ey if c == 1.0 else np.exp(-p * c * u))


@numba.njit(cache=True)
def _evaluate(blocks, layout, state):  # type: ignore[no-untyped-def]
    """``e^{p u}``, ``e^{−p c u}``, IN, OUT and interior block totals ``T`` at ``u`` (one read of the
    interior weights); returns ``(R, max relative deficit)``. Arguments: see :func:`solve_chain`."""
    addr, shapes, like, mat_power, mat_coef, mat_dst = blocks
    lo, hi, _, c_unit, const_in, const_out, r_const, p = layout
    u, ey, ex, win, wout, T, IN, OUT = state
    n = u.size
    for i in range(n):
        ey[i], ex[i] = _factors(p, c_unit[i], u[i])
        win[i] = 0.0
        wout[i] = 0.0
    for b in range(addr.size):
        W = matrix_at(addr, shapes, like, b)
        d = mat_dst[b]
        s = d - 1
        rows, cols = W.shape
        x = ex[lo[s]:hi[s]]
        y = ey[lo[d]:hi[d]]
        r = np.empty(rows)
        parts = np.empty((1, cols))
        _fused(W, mat_power[b], x, y, r, parts, True)
        total = 0.0
        k = mat_coef[b]
        for i in range(rows):
            v = k * y[i] * r[i]
            win[lo[d] + i] = v
            total += v
        for j in range(cols):
            wout[lo[s] + j] = k * x[j] * parts[0, j]
        T[b] = total
    R = r_const
    rel = 0.0
    for i in range(n):
        a = const_in[i] * ey[i] + win[i]
        o = const_out[i] * ex[i] + wout[i]
        IN[i] = a
        OUT[i] = o
        R += const_in[i] * ey[i] + const_out[i] * ex[i] + win[i]
        den = a + c_unit[i] * o
        if den > 0:
            q = abs(a - c_unit[i] * o) / den
            if q > rel:
                rel = q
    return R, rel


@numba.njit(cache=True)
def _coarse_terms(s, T, mat_dst, cin, cout, c_layer, p, g, scale, diag, off):  # type: ignore[no-untyped-def]
    """Gradient, its scale and the tridiagonal Hessian of the coarse problem at shifts ``s``."""
    H = s.size
    for h in range(H):
        a = cin[h] * np.exp(p * s[h])
        o = cout[h] * np.exp(-p * c_layer[h] * s[h])
        g[h] = p * a - p * c_layer[h] * o
        scale[h] = p * a + p * c_layer[h] * o
        diag[h] = p * p * a + p * p * c_layer[h] * c_layer[h] * o
        off[h] = 0.0
    for b in range(mat_dst.size):
        d = mat_dst[b]
        e = T[b] * np.exp(p * (s[d] - c_layer[d - 1] * s[d - 1]))
        g[d] += p * e
        scale[d] += p * e
        diag[d] += p * p * e
        g[d - 1] -= p * c_layer[d - 1] * e
        scale[d - 1] += p * c_layer[d - 1] * e
        diag[d - 1] += p * p * c_layer[d - 1] * c_layer[d - 1] * e
        off[d] = -p * p * c_layer[d - 1] * e  # couples d and d - 1


@numba.njit(cache=True)
def _slope_at(s, step, alpha, T, mat_dst, cin, cout, c_layer, p, trial, g, scale, diag, off):  # type: ignore[no-untyped-def]
    """Directional derivative of the coarse objective at ``s + alpha·step`` (``inf`` on overflow)."""
    for h in range(s.size):
        trial[h] = s[h] + alpha * step[h]
    _coarse_terms(trial, T, mat_dst, cin, cout, c_layer, p, g, scale, diag, off)
    d = 0.0
    for h in range(s.size):
        d += g[h] * step[h]
    return d if np.isfinite(d) else np.inf


@numba.njit(cache=True)
def _coarse_shifts(T, mat_dst, cin, cout, c_layer, p):  # type: ignore[no-untyped-def]
    """Exact minimiser of ``Σ_b T_b e^{p(s_d − c s_{d−1})} + Σ_h cin_h e^{p s_h} + cout_h e^{−p c s_h}``.

    Newton with a tridiagonal solve (Thomas algorithm: the Hessian is positive definite) and a
    line search on the directional derivative.
    """
    H = c_layer.size
    s = np.zeros(H)
    g = np.empty(H)
    scale = np.empty(H)
    diag = np.empty(H)
    off = np.empty(H)
    step = np.empty(H)
    cp = np.empty(H)
    trial = np.empty(H)
    g2 = np.empty(H)
    for _it in range(COARSE_ITERATIONS):
        _coarse_terms(s, T, mat_dst, cin, cout, c_layer, p, g, scale, diag, off)
        worst = 0.0
        for h in range(H):
            if scale[h] > 0:
                worst = max(worst, abs(g[h]) / scale[h])
        if worst <= 1e-15:
            break
        # Thomas: (diag, off) tridiagonal, off[h] couples h and h-1
        for h in range(H):
            m = diag[h] - (off[h] * cp[h - 1] if h > 0 else 0.0)
            cp[h] = off[h + 1] / m if h + 1 < H else 0.0
            step[h] = (-g[h] - (off[h] * step[h - 1] if h > 0 else 0.0)) / m
        for h in range(H - 2, -1, -1):
            step[h] -= cp[h] * step[h + 1]
        slope = 0.0
        for h in range(H):
            slope += g[h] * step[h]
        if not slope < 0:
            break
        alpha = 1.0
        d_hi = _slope_at(s, step, 1.0, T, mat_dst, cin, cout, c_layer, p, trial, g2, scale, diag, off)
        if d_hi > 0:  # bracket the root of the directional derivative (regula falsi)
            lo_a, hi_a, d_lo = 0.0, 1.0, slope
            for _ls in range(40):
                if np.isfinite(d_hi):
                    alpha = lo_a + (hi_a - lo_a) * d_lo / (d_lo - d_hi)
                    alpha = min(max(alpha, lo_a + 0.01 * (hi_a - lo_a)), hi_a - 0.01 * (hi_a - lo_a))
                else:
                    alpha = 0.5 * (lo_a + hi_a)
                d = _slope_at(s, step, alpha, T, mat_dst, cin, cout, c_layer, p, trial, g2, scale, diag, off)
                if abs(d) <= 0.5 * abs(slope):
                    break
                if d < 0:
                    lo_a, d_lo = alpha, d
                else:
                    hi_a, d_hi = alpha, d
        for h in range(H):
            s[h] += alpha * step[h]
    return s


@numba.njit(cache=True)
def _iterate(blocks, layout, state, rel, first, count, tol, hist_R, hist_rel):  # type: ignore[no-untyped-def]
    """Up to ``count`` two-level iterations from an evaluated state; returns how many ran.

    A step ``t`` of unit ``i`` multiplies its incoming costs by ``e^{p t} = (c·OUT/IN)^{1/(1+c)}``
    and its outgoing ones by ``e^{−p c t}``; these factors give the block totals after the step.
    This is the closed-form step of :mod:`synbal._solvers.steps`, written out here because the
    factors come from the ratio without an ``exp`` (the one copy of that formula).
    """
    mat_dst = blocks[5]
    lo, hi, c_layer, _, const_in, const_out, _, p = layout
    u, ey, ex, win, wout, T, IN, OUT = state
    H = c_layer.size
    n = u.size
    grow = np.ones(n)  # e^{p t} of this iteration's step
    shrink = np.ones(n)  # e^{-p c t}
    cin = np.empty(H)
    cout = np.empty(H)
    done = 0
    while done < count and rel > tol:
        parity = (first + done) % 2
        for h in range(H):
            c = c_layer[h]
            moved = h % 2 == parity
            a = 0.0
            o = 0.0
            for i in range(lo[h], hi[h]):
                if moved:
                    ratio = c * OUT[i] / IN[i]
                    if c == 1.0:
                        g = np.sqrt(ratio)
                        grow[i], shrink[i] = g, 1.0 / g
                    else:
                        g = ratio ** (1.0 / (1.0 + c))
                        grow[i], shrink[i] = g, g ** (-c)
                    u[i] += np.log(ratio) / (p * (1.0 + c))
                else:
                    grow[i], shrink[i] = 1.0, 1.0
                a += const_in[i] * ey[i] * grow[i]
                o += const_out[i] * ex[i] * shrink[i]
            cin[h] = a
            cout[h] = o
        for b in range(mat_dst.size):  # interior totals after the step, in closed form
            d = mat_dst[b]
            total = 0.0
            if d % 2 == parity:
                for i in range(lo[d], hi[d]):
                    total += win[i] * grow[i]
            else:
                for i in range(lo[d - 1], hi[d - 1]):
                    total += wout[i] * shrink[i]
            T[b] = total
        shift = _coarse_shifts(T, mat_dst, cin, cout, c_layer, p)
        for h in range(H):
            for i in range(lo[h], hi[h]):
                u[i] += shift[h]
        R, rel = _evaluate(blocks, layout, state)
        hist_R[done] = R
        hist_rel[done] = rel
        done += 1
    return done


def solve_chain(problem: BalanceProblem, options: SolveOptions, limit: int | None = None) -> SolveResult | None:
    """Two-level ``exact`` iterations on a chain; ``None`` when the problem is not a chain or has
    a dead unit (the general solvers handle those).

    The compiled iteration takes three tuples: ``blocks`` (the interior matrices as a
    :class:`~synbal._compiled.lowlevel.MatrixTable`, their powers, coefficients and destination
    layers), ``layout`` (layer ranges, degrees per layer and unit, costs to and from fixed units,
    the constant ``R``, the power) and ``state`` (``u``, ``e^{pu}``, ``e^{−pcu}``, interior IN and
    OUT, block totals, IN, OUT — updated in place).
    """
    chain = chain_of(problem)
    if chain is None:
        return None
    n = problem.n
    table = MatrixTable(chain.mats)  # holds the matrices for as long as the compiled code reads them
    blocks = (*table.arrays, chain.mat_power, chain.mat_coef, chain.mat_dst)
    layout = (chain.layer_lo, chain.layer_hi, chain.c_layer, chain.c_unit, chain.const_in, chain.const_out,
              chain.r_const, chain.power)
    state = (np.zeros(n), *(np.empty(n) for _ in range(4)), np.empty(len(chain.mats)), np.empty(n), np.empty(n))
    u, IN, OUT = state[0], state[6], state[7]
    R, rel = _evaluate(blocks, layout, state)
    if not (np.isfinite(R) and R < SAFE_COST) or not ((IN > 1.0 / SAFE_COST) & (OUT > 1.0 / SAFE_COST)).all():
        return None  # dead units, or costs near the ends of float64: the general path handles them
    history = [HistoryEntry(0, R, rel)]
    max_iter = options.max_sweeps if limit is None else min(limit, options.max_sweeps)
    hist_R, hist_rel = np.empty(max_iter), np.empty(max_iter)
    stepwise = options.callback is not None or options.progress
    bar = tqdm(desc="exact balancing", leave=False) if options.progress else None  # costs a few reads of a small net
    it = 0
    while it < max_iter and rel > options.tol:
        count = 1 if stepwise else max_iter - it
        try:
            done = _iterate(blocks, layout, state, rel, 1 + it, count, options.tol, hist_R[it:], hist_rel[it:])
        except ZeroDivisionError:  # a cost under- or overflowed on the way: the general path takes over
            return None
        if done == 0:
            break
        for k in range(done):
            history.append(HistoryEntry(it + k + 1, float(hist_R[it + k]), float(hist_rel[it + k])))
        it += done
        rel = history[-1].max_relative_deficit
        if bar is not None:
            bar.update(done)
            bar.set_postfix(deficit=f"{rel:.2e}")
        if options.callback is not None:
            options.callback(it, u)
    if bar is not None:
        bar.close()
    return SolveResult(u, rel <= options.tol, history, steps=it)
