"""``exact``: go straight to the unique balanced state.

In log-scales the regularizer ``R(u) = Σ_edges A_ij exp(p(u_i − c_j u_j))`` is convex, and
strictly convex on every direction that moves a weight; its gradient is ``p(IN − c·OUT)``, so the
balanced state is its unique minimiser (Theorem 9.1 of the synaptic-balance paper). Two solvers:

* **Newton** (general graphs — recurrent, non-layered, BiPU — up to a few million unit pairs):
  the Hessian is a weighted graph Laplacian grounded at the fixed units; it is assembled sparse,
  Jacobi-scaled and factorised directly; steps are damped by an Armijo line search on ``R``.
  Converges quadratically, to a max relative deficit near machine precision.
* **Two-level sweeps** (layered nets, also with signed rows; compiled end to end for chains such as MLPs, see
  :mod:`synbal._compiled.chain`): Gauss–Seidel sweeps over the layers (each layer is
  an independent set, balanced in closed form) remove the within-layer error fast, while the
  slow error mode — one shift per layer, which plain sweeps spread over ~D² sweeps — is removed
  after every sweep by solving the tied (one λ per layer) problem exactly with Newton on the
  small coarse problem. This is the Appendix-B closed form generalised to biases and BiPUs.

For a custom cost ``g``: L-BFGS on ``u`` with the analytic gradient, then cyclic sweeps.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> from synbal._problem.regularizers import parse_regularizer
>>> from synbal._solvers.base import SolveOptions
>>> prob = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [-1], [[4.0]]),
...     CostBlock(2.0, [1], [0], [[1.0]]), CostBlock(2.0, [-1], [1], [[0.25]])])
>>> res = solve_exact(prob, parse_regularizer("l2"), SolveOptions(tol=1e-14))
>>> res.converged, np.round(np.exp(res.u), 12).tolist()
(True, [0.5, 0.5])
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from tqdm.auto import tqdm

from synbal._compiled.chain import solve_chain
from synbal._compiled.sparse_cg import conjugate_gradients
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal._problem.regularizers import Regularizer
from synbal._solvers.banded import BandedSolver
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult, check_range
from synbal._solvers.far_steps import far_unit_steps
from synbal._solvers.hessian_pattern import HessianPattern
from synbal._solvers.steps import balance_in_order, optimal_log_steps

__all__ = ["STALLED", "full_step", "hessian", "solve_exact"]

#: Problems with at most this many unit pairs are solved by Newton with a direct solver.
DIRECT_LIMIT = 3_000_000
#: Two-level sweeps allowed before a Newton polish takes over (problems under DIRECT_LIMIT).
TWO_LEVEL_SWEEPS = 30


def hessian(problem: BalanceProblem, u: np.ndarray) -> sp.csr_array:
    """The Hessian of ``R`` at ``u`` as a sparse ``n×n`` matrix (a grounded weighted Laplacian; with
    signed rows a sum of rank-one terms, see :mod:`synbal._problem.signed`)."""
    ue = np.append(u, 0.0)
    ce = np.append(problem.degree, 1.0)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for b in problem.blocks:
        p = b.power
        x, y = b.factors(ue, ce)
        coo = sp.coo_array(b.explicit())
        r = b.dst[coo.row]
        c = b.src[coo.col]
        keep = (r >= 0) & (c >= 0) & (r != c) & (coo.data > 0)
        v = coo.data[keep] * y[coo.row[keep]] * x[coo.col[keep]]
        off = -p * p * b.row_sign * ce[c[keep]] * v  # see synbal._problem.signed
        rows += [r[keep], c[keep]]
        cols += [c[keep], r[keep]]
        vals += [off, off]
    n = problem.n
    diag = problem.hessian_diagonal(u)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    return sp.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(n, n)).tocsr()


def _pairs(problem: BalanceProblem) -> int:
    total = 0
    for b in problem.blocks:
        total += b.matrix.nnz if sp.issparse(b.matrix) else b.matrix.size
    return total


def solve_exact(problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
    """Minimise ``R`` over the log-scales of the free units (see the module docstring)."""
    if problem.custom is not None:
        return _solve_custom(problem, options)
    small = _pairs(problem) <= DIRECT_LIMIT
    limit = TWO_LEVEL_SWEEPS if small else None
    chained = solve_chain(problem, options, limit=limit) if problem.layers is not None else None
    if chained is not None or (problem.layers is not None and _coarse_ok(problem)):
        first = chained or _two_level(problem, options, limit=limit)
        if first.converged or not small:
            return first
        polish = _newton(problem, options, u0=first.u)
        offset = first.sweeps
        history = first.history + [
            HistoryEntry(h.sweep + offset, h.regularizer, h.max_relative_deficit) for h in polish.history[1:]
        ]
        return SolveResult(polish.u, polish.converged, history, steps=first.steps + polish.steps, notes=polish.notes)
    return _newton(problem, options)


def _newton(problem: BalanceProblem, options: SolveOptions, u0: np.ndarray | None = None,
            guard: bool = True) -> SolveResult:
    free = problem.free_mask()
    idx = np.flatnonzero(free)
    u = np.zeros(problem.n) if u0 is None else u0.copy()
    value = problem.value(u)
    grad, scale = problem.gradient_parts(u)
    rel = _max_rel(grad, scale, free)
    history = [HistoryEntry(0, value, rel)]
    bar = tqdm(desc="exact balancing", disable=not options.progress, leave=False)
    it = 0
    direct: BandedSolver | bool | None = None
    pattern = HessianPattern(problem, idx) if idx.size else None
    notes: list[str] = []
    while rel > options.tol and it < max(options.max_sweeps, 1) and pattern is not None:
        it += 1
        H = pattern.at(u)
        d = np.sqrt(np.maximum(H.diagonal(), np.finfo(float).tiny))
        Hs = _jacobi_scaled(H, 1.0 / d)
        if direct is None:
            direct = _direct_pays(Hs)
        banded = direct.solve(Hs, -grad[idx] / d) if isinstance(direct, BandedSolver) else None
        z = banded if banded is not None else _newton_direction(Hs, -grad[idx] / d, bool(direct),
                                                                rtol=_forcing(rel, options.tol))
        step = np.zeros(problem.n)
        step[idx] = z / d
        full = full_step(problem, u, step, rel, free)
        if full is not None:
            u, grad, scale, rel = full
        else:
            alpha = _line_search(problem, u, step, float(grad @ step))
            stalled = _below_rounding(alpha * step, u)
            u = u + alpha * step
            grad, scale = problem.gradient_parts(u)
            # units far from balance on a scale R's rounding hides: balance them exactly
            moved = far_unit_steps(problem, u, _rel(grad, scale), free)
            if moved:
                grad, scale = problem.gradient_parts(u)
            rel = _max_rel(grad, scale, free)
            if stalled and not moved:  # the next iteration would repeat this one: float64 can go no further
                notes.append(STALLED.format(it=it, rel=rel))
                break
        if guard:
            check_range(problem, u)
        value = problem.value(u)
        history.append(HistoryEntry(it, value, rel))
        bar.update(1)
        bar.set_postfix(deficit=f"{rel:.2e}")
        if options.callback is not None:
            options.callback(it, u)
    bar.close()
    return SolveResult(u, rel <= options.tol, history, steps=it, notes=notes)


#: The note of a Newton search that stopped because its steps fell below the rounding of ``u``.
STALLED = ("exact stopped after {it} iterations at max relative deficit {rel:.3g}: its steps no longer "
           "change the log-scales in float64 (the balanced state may lie beyond float64's range)")


def _below_rounding(move: np.ndarray, u: np.ndarray) -> bool:
    """Whether adding ``move`` to ``u`` changes no log-scale by more than a few units in the last
    place: a Newton iteration that moves that little is repeated identically after it.

    >>> _below_rounding(np.array([1e-15, 0.0]), np.array([300.0, 1.0]))
    True
    >>> _below_rounding(np.array([1e-12, 0.0]), np.array([300.0, 1.0]))
    False
    """
    return bool(np.all(np.abs(move) <= 4.0 * np.spacing(np.abs(u))))


#: Up to this many units, or this reverse-Cuthill–McKee bandwidth, Newton steps use a direct solve.
DIRECT_UNITS = 2_000
DIRECT_BANDWIDTH = 64
#: Up to this bandwidth (a chain has 1) the direct solve is a banded Cholesky in the RCM order.
BANDED_WIDTH = 8


def _forcing(rel: float, tol: float) -> float:
    """Relative residual for an iterative Newton solve (inexact Newton): ``rel²`` keeps the
    convergence quadratic, but no tighter than a hundredth of what the last step needs to reach
    ``tol`` (the next deficit is about ``residual·rel``), within ``[1e-12, 0.1]``."""
    return min(0.1, max(1e-12, rel * rel, 0.01 * tol / max(rel, tol)))


def _direct_pays(H: sp.csr_array) -> BandedSolver | bool:
    """Whether a sparse direct factorisation of ``H`` stays cheap: small, or of small bandwidth
    once reordered (chains, trees of layers). Random sparse graphs fill in: CG is used there.
    Beyond ``DIRECT_UNITS`` a narrow band is returned as its :class:`BandedSolver`."""
    if H.shape[0] <= DIRECT_UNITS:
        return True
    banded = BandedSolver(H)
    return banded if banded.bandwidth <= BANDED_WIDTH else banded.bandwidth <= DIRECT_BANDWIDTH


def _newton_direction(Hs: sp.csr_array, rhs: np.ndarray, direct: bool, rtol: float = 1e-12) -> np.ndarray:
    """Solve ``Hs z = rhs`` (symmetric positive definite, unit diagonal); an iterative solve stops at
    relative residual ``rtol`` (inexact Newton: loose far from the minimum, tight near it)."""
    if not direct:
        z = conjugate_gradients(Hs, rhs, rtol=rtol)
        if z is not None:
            return z
    try:  # Hs is symmetric: its CSR arrays are also its CSC arrays
        with warnings.catch_warnings():  # SuperLU reports an exactly singular matrix by a warning and NaNs
            warnings.simplefilter("error", spla.MatrixRankWarning)
            z = np.asarray(spla.spsolve(sp.csc_array((Hs.data, Hs.indices, Hs.indptr), shape=Hs.shape), rhs,
                                        permc_spec="MMD_AT_PLUS_A"))
        if np.all(np.isfinite(z)):
            return z
    except (RuntimeError, spla.MatrixRankWarning):  # singular: a floating component the pinning missed
        pass
    return np.asarray(spla.lsqr(Hs, rhs, atol=1e-14, btol=1e-14)[0])


def _jacobi_scaled(H: sp.csr_array, dinv: np.ndarray) -> sp.csr_array:
    """``diag(dinv) · H · diag(dinv)`` without sparse products (``H`` CSR)."""
    rows = np.repeat(np.arange(H.shape[0]), np.diff(H.indptr))
    return sp.csr_array((H.data * dinv[rows] * dinv[H.indices], H.indices, H.indptr), shape=H.shape)


def _line_search(problem: BalanceProblem, u: np.ndarray, step: np.ndarray, slope: float) -> float:
    """A step length along the Newton direction using only directional derivatives.

    ``φ(α) = R(u + α·step)`` is convex with ``φ'(0) = slope < 0``. Differences of ``R`` vanish
    below its rounding level long before the deficit is at machine precision, so the search
    works on ``φ'`` (accurate to the precision of the gradient): accept ``α = 1`` when
    ``φ'(1) ≤ 0``, else bracket the root of ``φ'`` and stop once ``|φ'| ≤ |slope|/2``. While
    ``φ'`` is still below ``slope/1000`` the step is lengthened fourfold (as long as ``φ' ≤ 0``).
    """
    if not slope < 0:
        return 0.0

    def dphi(a: float) -> float:
        with np.errstate(over="ignore", invalid="ignore"):
            g = problem.gradient(u + a * step)
        val = float(g @ step)
        return val if np.isfinite(val) else np.inf

    lo, d_lo, hi = 0.0, slope, 1.0
    d_hi = dphi(hi)
    if d_hi <= 0:
        # Far from the minimum a sum of exponentials makes Newton steps short (about one e-fold
        # of the dominant term per step): while the slope is still steep, go four times further.
        while d_hi < 1e-3 * slope and hi < 2.0**40:
            d_next = dphi(4.0 * hi)
            if d_next > 0:
                break
            hi, d_hi = 4.0 * hi, d_next
        return hi
    alpha = hi
    for _ in range(60):
        if np.isfinite(d_hi):
            alpha = lo + (hi - lo) * d_lo / (d_lo - d_hi)  # secant (regula falsi)
            alpha = min(max(alpha, lo + 0.01 * (hi - lo)), hi - 0.01 * (hi - lo))
        else:
            alpha = 0.5 * (lo + hi)
        d = dphi(alpha)
        if abs(d) <= 0.5 * abs(slope) or d == 0:
            return alpha
        if d < 0:
            lo, d_lo = alpha, d
        else:
            hi, d_hi = alpha, d
    return lo


def full_step(problem: BalanceProblem, u: np.ndarray, step: np.ndarray, rel: float, free: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """``(u + step, gradient, scale, max relative deficit)`` there if the full Newton step halves the
    deficit, else ``None`` (then search along it). The full step comes first, judged by the relative
    deficits: R's directional derivative is dominated by the units with the largest costs, so a search
    on it alone cannot see the progress of units whose costs are 1e-60 of theirs (and converges
    linearly for them)."""
    with np.errstate(over="ignore", invalid="ignore"):
        grad, scale = problem.gradient_parts(u + step)
        new_rel = _max_rel(grad, scale, free)  # NaN where the trial overflows: not taken
    return (u + step, grad, scale, new_rel) if new_rel < 0.5 * rel else None


def _rel(grad: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.divide(np.abs(grad), scale, out=np.zeros_like(grad), where=scale > 0)


def _max_rel(grad: np.ndarray, scale: np.ndarray, free: np.ndarray) -> float:
    return float(_rel(grad, scale)[free].max()) if free.any() else 0.0


# ---------------------------------------------------------------------- two-level sweeps
def _layer_index(problem: BalanceProblem) -> np.ndarray:
    """The layer of every unit (``-1``: in none, and for the fixed slot at the end)."""
    layer_of = np.full(problem.n + 1, -1, dtype=np.int64)
    layers = problem.layers or []
    if layers:
        sizes = np.array([layer.size for layer in layers])
        layer_of[np.concatenate(layers)] = np.repeat(np.arange(len(layers)), sizes)
    return layer_of


def _coarse_ok(problem: BalanceProblem) -> bool:
    """Coarse correction applies when every block joins whole layers of one degree each."""
    if not problem.free_mask().all():
        return False
    for b in problem.blocks:  # cheap test first: every block must lie between two groups of units
        if b.dst.size and b.src.size and (b.dst < 0).any() and (b.dst >= 0).any():
            return False
    layer_of = _layer_index(problem)[:-1]
    if (layer_of < 0).any():
        return False  # not every unit is in a layer
    first = np.array([layer[0] if layer.size else 0 for layer in problem.layers or []], dtype=np.int64)
    if (problem.degree != problem.degree[first[layer_of]]).any():
        return False  # a layer mixes degrees
    layer_of = np.append(layer_of, -1)
    for b in problem.blocks:
        dl = np.unique(layer_of[b.dst])
        sl = np.unique(layer_of[b.src])
        if dl.size != 1 or sl.size != 1:
            return False
    return _layer_classes(problem) is not None  # the two classes must be independent sets


def _layer_classes(problem: BalanceProblem) -> np.ndarray | None:
    """Two classes of layers (0/1, one per layer) with every block between the two, or ``None``.

    A 2-colouring of the graph of layers joined by a block, each part started at its lowest layer
    with that layer's parity: a chain gets its odd/even layers; a layer of query/key units beside
    the value units both fed by one norm gets the class of the value units.
    """
    layers = problem.layers or []
    layer_of = _layer_index(problem)
    adjacent: list[set[int]] = [set() for _ in layers]
    for b in problem.blocks:
        for d in np.unique(layer_of[b.dst]).tolist():
            for s in np.unique(layer_of[b.src]).tolist():
                if d >= 0 and s >= 0:
                    adjacent[d].add(s)
                    adjacent[s].add(d)
    colour = np.full(len(layers), -1, dtype=np.int64)
    for start in range(len(layers)):
        if colour[start] >= 0:
            continue
        colour[start] = start % 2
        stack = [start]
        while stack:
            k = stack.pop()
            for m in adjacent[k]:
                if colour[m] < 0:
                    colour[m] = 1 - colour[k]
                    stack.append(m)
                elif colour[m] == colour[k]:
                    return None
    return colour


def _unit_classes(problem: BalanceProblem) -> np.ndarray:
    """The class (0/1) of every unit's layer, see :func:`_layer_classes` (``-1``: in no layer)."""
    parity = np.full(problem.n, -1, dtype=np.int64)
    classes = _layer_classes(problem)
    assert classes is not None  # _coarse_ok checked it
    for k, layer in enumerate(problem.layers or []):
        parity[layer] = classes[k]
    return parity


def _coarse_problem(problem: BalanceProblem, totals: np.ndarray, block_layers: np.ndarray) -> BalanceProblem:
    layers = problem.layers or []
    blocks = [
        CostBlock(b.power, block_layers[k, :1], block_layers[k, 1:], np.array([[totals[k]]]), row_sign=b.row_sign)
        for k, b in enumerate(problem.blocks)
    ]
    degree = np.array([problem.degree[layer[0]] for layer in layers])
    return BalanceProblem(degree, blocks, names=[f"layer{k}" for k in range(len(layers))])


def _read_costs(problem: BalanceProblem, u: np.ndarray, degree_ext: np.ndarray
                ) -> tuple[dict[float, np.ndarray], dict[float, np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """One read of every weight: per power IN and OUT of every unit (fixed unit last), and per
    block its rows' incoming and its columns' outgoing costs."""
    ue = np.append(u, 0.0)
    IN = {p: np.zeros(problem.n + 1) for p in problem.powers}
    OUT = {p: np.zeros(problem.n + 1) for p in problem.powers}
    rins: list[np.ndarray] = []
    routs: list[np.ndarray] = []
    for b, (r, s) in zip(problem.blocks, problem.block_products(u), strict=True):
        x, y = b.factors(ue, degree_ext)
        rins.append(y * r)
        routs.append(x * s)
        (IN if b.row_sign > 0 else OUT)[b.power][b.dst] += rins[-1]  # key rows scale down: outgoing
        OUT[b.power][b.src] += routs[-1]
    return IN, OUT, rins, routs


def _two_level(problem: BalanceProblem, options: SolveOptions, limit: int | None = None) -> SolveResult:
    """Alternating (odd/even layer) balancing with an exact tied coarse correction.

    Each iteration reads every weight once, computing ``A x`` and ``Aᵀ y`` together: that
    gives every unit's IN/OUT (so the convergence test and ``R`` are free), the exact
    balancing step of one parity class of layers (units of a class are independent), and the
    block totals after the step in closed form — from which the coarse problem (one shift per
    layer, a convex problem in D variables) is solved by Newton and applied, again updating the
    totals in closed form. The slow mode of plain sweeps (whole layers drifting, which needs
    ~D² sweeps) is thus removed at every iteration.
    """
    layers = problem.layers or []
    layer_of = _layer_index(problem)
    block_layers = np.array([[layer_of[b.dst[0]], layer_of[b.src[0]]] for b in problem.blocks], dtype=np.int64)
    parity = _unit_classes(problem)
    degree_ext = np.append(problem.degree, 1.0)
    free = problem.free_mask()
    powers = problem.powers
    coarse_opts = SolveOptions(tol=1e-15, max_sweeps=30)  # a correction: need not be exact
    u = np.zeros(problem.n)
    history: list[HistoryEntry] = []
    bar = tqdm(desc="exact balancing", disable=not options.progress, leave=False)
    max_iter = options.max_sweeps if limit is None else min(limit, options.max_sweeps)
    it = 0
    rel = np.inf
    while True:
        IN, OUT, rins, routs = _read_costs(problem, u, degree_ext)
        grad = sum((p * (IN[p][:-1] - problem.degree * OUT[p][:-1]) for p in powers), np.zeros(problem.n))
        scale = sum((p * (IN[p][:-1] + problem.degree * OUT[p][:-1]) for p in powers), np.zeros(problem.n))
        rel = _max_rel(grad, scale, free)
        totals = np.array([float(ri.sum()) for ri in rins])
        history.append(HistoryEntry(it, float(totals.sum()), rel))
        bar.update(1)
        bar.set_postfix(deficit=f"{rel:.2e}")
        if rel <= options.tol or it >= max_iter:
            break
        it += 1
        # exact step of one parity class
        members = np.flatnonzero((parity == it % 2) & free)
        c = problem.degree[members]
        costs = {p: (IN[p][members], OUT[p][members], np.zeros(members.size)) for p in powers}
        t = np.zeros(problem.n + 1)
        t[members] = optimal_log_steps(costs, c)
        u += t[:-1]
        for k, b in enumerate(problem.blocks):
            p = b.power
            if t[b.dst].any():
                totals[k] = float(rins[k] @ np.exp(b.row_sign * p * t[b.dst]))
            elif t[b.src].any():
                totals[k] = float(routs[k] @ np.exp(-p * degree_ext[b.src] * t[b.src]))
        # coarse correction: one shift per layer, solved exactly
        shift = np.append(_newton(_coarse_problem(problem, totals, block_layers), coarse_opts, guard=False).u, 0.0)
        for k, layer in enumerate(layers):
            u[layer] += shift[k]
        if options.callback is not None:
            options.callback(it, u)
    bar.close()
    return SolveResult(u, rel <= options.tol, history, steps=it)


# ---------------------------------------------------------------------- custom g
def _solve_custom(problem: BalanceProblem, options: SolveOptions) -> SolveResult:
    from scipy.optimize import minimize

    free = problem.free_mask()
    idx = np.flatnonzero(free)
    u = np.zeros(problem.n)
    history = [HistoryEntry(0, problem.value(u), problem.max_relative_deficit(u))]

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        full = np.zeros(problem.n)
        full[idx] = z
        return problem.value(full), problem.gradient(full)[idx]

    if idx.size:
        res = minimize(fun, np.zeros(idx.size), jac=True, method="L-BFGS-B",
                       options={"maxiter": 10_000, "gtol": 1e-14, "ftol": 1e-16})
        u[idx] = res.x
    history.append(HistoryEntry(1, problem.value(u), problem.max_relative_deficit(u)))
    sweep = 1
    while history[-1].max_relative_deficit > options.tol and sweep < options.max_sweeps:
        sweep += 1
        balance_in_order(problem, u, idx, 1.0)
        history.append(HistoryEntry(sweep, problem.value(u), problem.max_relative_deficit(u)))
    return SolveResult(u, history[-1].max_relative_deficit <= options.tol, history, steps=sweep)
