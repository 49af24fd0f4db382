r"""``multiplicative``: ℓ_{p,q} balancing by parallel, learning-rate-free multiplicative updates.

Every hidden unit ``i`` gets one rescaling factor ``Λ_i = e^{u_i}``; all are updated at once by
``Λ_i ← Λ_i · ρ_i`` with a closed-form ratio ``ρ_i`` built from the current weights only. The
ℓ_{p,q} norm (:mod:`synbal._problem.lpq`) never increases, and the iteration converges to its global
minimiser over rescalings. This is what Saul's abstract ("Weight-balancing fixes and flows",
TMLR 2023) describes; only the abstract is available, so the derivation below is ours.

Notation
--------
A weight from ``j`` to ``k`` costs ``a_kj = |w_kj|^p e^{p(u_k − c_j u_j)}`` at log-scales ``u``
(``c_j`` the degree of unit ``j``; ``u = 0`` and ``c = 1`` for fixed units: inputs, outputs,
non-homogeneous units, the constant 1 of biases). Unit ``k``'s incoming cost is
``S_k = Σ_j a_kj`` (fixed units included: an output's ``S`` depends on the scales of the units
feeding it). With ``r = q/p`` we minimise

    F(u) = Σ_k S_k(u)^r   (= ‖W‖_{p,q}^q),

which is convex in ``u``: each ``S_k`` is a sum of exponentials of linear functions, hence
log-convex, and ``S^r = exp(r log S)`` is then convex. Its gradient is

    ∂F/∂u_i = r p (IN^ρ_i − c_i OUT^ρ_i),   IN^ρ_i = S_i^r,   OUT^ρ_i = Σ_k S_k^{r−1} a_ki,

a *weighted* balance condition: each unit's incoming cost weighted by ``S_i^{r−1}`` must equal
``c_i`` times its outgoing costs, each weighted by the ``S_k^{r−1}`` of the unit it feeds. For
``q = p`` (``r = 1``) the weights are 1 and this is the ordinary ``IN = c·OUT`` of ``"lP"``.

Derivation: an auxiliary (majorising) function
-----------------------------------------------
Write the update as ``u → u + δ`` (``δ = 0`` on fixed units) and ``s = max(p, q)``.

1. *Remove the outer power.* If ``r ≤ 1``, ``S ↦ S^r`` is concave and lies below its tangent:
   ``S_k(u+δ)^r ≤ S_k^r + r S_k^{r−1}(S_k(u+δ) − S_k)``, so up to constants
   ``F(u+δ) ≤ r Σ_k S_k^{r−1} Σ_j a_kj e^{p(δ_k − c_j δ_j)}``.
   If ``r ≥ 1``, ``t ↦ t^r`` is convex and Jensen's inequality with the weights
   ``π_kj = a_kj/S_k`` gives ``S_k(u+δ)^r = S_k^r (Σ_j π_kj e^{p(δ_k − c_j δ_j)})^r
   ≤ S_k^{r−1} Σ_j a_kj e^{q(δ_k − c_j δ_j)}``.
   In both cases (exponent ``s``, equality at ``δ = 0``)::

       F(u+δ) ≤ const + κ Σ_k S_k^{r−1} Σ_j a_kj e^{s(δ_k − c_j δ_j)}.

2. *Decouple the units.* By convexity of ``exp``,
   ``e^{s(δ_k − c_j δ_j)} ≤ ½ e^{2sδ_k} + ½ e^{−2s c_j δ_j}`` (also for self-loops and for a
   fixed endpoint, where the corresponding ``δ`` is 0), with equality at ``δ = 0``. Hence::

       F(u+δ) ≤ G(δ) = const + (κ/2) Σ_i [ IN^ρ_i e^{2sδ_i} + OUT^ρ_i e^{−2s c_i δ_i} ],

   a separable auxiliary function with ``G(0) = F(u)``.

3. *Minimise it.* Each term is a convex function of one ``δ_i`` with minimiser::

       δ_i = log(c_i OUT^ρ_i / IN^ρ_i) / (2s(1 + c_i)),
       i.e.  Λ_i ← Λ_i · (c_i OUT^ρ_i / IN^ρ_i)^{1/(2s(1+c_i))}       (BiLU: exponent 1/(4s)).

   ``F(u+δ) ≤ G(δ) ≤ G(0) = F(u)``: the norm never increases, whatever the net. Any step
   ``θδ`` with ``0 < θ ≤ 1`` (``theta`` option) also lowers each convex term, so it is monotone
   too; a unit left alone (``δ_i = 0``) keeps its term.

Convergence: the update map is continuous, ``F`` decreases strictly unless ``δ = 0``, and
``δ = 0`` exactly when ``IN^ρ = c·OUT^ρ`` for every free unit, i.e. ``∇F = 0``. As ``F`` is
convex (strictly so along directions that move a weight), every limit point is the global
minimiser (the usual MM / Zangwill argument, as for NMF's multiplicative updates). For
``p = q`` the update is a *half* step of the per-unit closed form ``(OUT/IN)^{1/(2p)}``, taken
by all units in parallel, and it converges to the same state as ``method="exact"``.

The max-norm (``q = ∞``)
------------------------
Let ``r → ∞`` in the update (``s = q = rp``)::

    δ_i = [log c_i + log Σ_k S_k^{r−1} a_ki − r log S_i] / (2rp(1 + c_i))
        → log(m_i / S_i) / (2p(1 + c_i)),      m_i = max{S_k : unit i feeds k}.

So each unit moves its incoming cost toward the largest incoming cost among the units it feeds.
This limit has its own monotonicity proof for ``M = max_k S_k``: by step 2 (exponent ``p``)
``S_k(u+δ) ≤ ½ S_k e^{2pδ_k} + ½ Σ_j a_kj e^{−2p c_j δ_j}``; with the update,
``S_k e^{2pδ_k} = S_k (m_k/S_k)^{1/(1+c_k)} ≤ M`` and, because ``k`` is among the units ``j``
feeds (``m_j ≥ S_k``), ``e^{−2p c_j δ_j} = (S_j/m_j)^{c_j/(1+c_j)} ≤ (M/S_k)^{c_j/(1+c_j)}
≤ M/S_k``; the sum is then ``≤ ½M + ½M``. Hence ``max_k S_k`` never increases. The fixed points
satisfy ``S_i = m_i`` for every free unit; there the multipliers ``μ`` obtained backwards from
the largest outputs (``μ_i S_i = c_i Σ_k μ_k a_ki``) are ``≥ 0`` and supported on units at the
maximum, which is the optimality condition ``0 ∈ ∂ max_k S_k`` of the convex max-norm
problem: fixed points are global minimisers (the minimiser of a max-norm need not be unique;
this iteration picks the limit of the ℓ_{p,q} minimisers as ``q → ∞``).

Stopping: on the relative stationarity ``|IN^ρ − c·OUT^ρ| / (IN^ρ + c·OUT^ρ)`` of the free
units (``|m − S|/(m + S)`` for ``q = ∞``), never on changes of the norm. Weights ``S^{r−1}`` are
handled in the log domain (shifted by the largest ``S``), so large ``q/p`` does not overflow.
History entries record ``‖W‖_{p,q}`` itself (not a power of it).

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> from synbal._problem.lpq import parse_lpq
>>> from synbal._solvers.base import SolveOptions
>>> # input -(w=4)-> h -(w=1/4)-> output: l2,2 optimum is w = 1, 1 (Λ = 1/4)
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[16.0]]),
...                                    CostBlock(2.0, [-1], [0], [[1 / 16]])])
>>> res = solve_multiplicative(prob, parse_lpq("l2,2"), SolveOptions(tol=1e-12))
>>> res.converged, round(float(np.exp(res.u[0])), 9)
(True, 0.25)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from synbal._problem.lpq import LpqRegularizer
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal._problem.regularizers import CustomRegularizer, PowerRegularizer
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import RegularizerError

__all__ = ["UnitNorms", "as_lpq", "lpq_max_stationarity", "lpq_norm", "multiplicative_step", "solve_multiplicative"]


def as_lpq(reg: object) -> LpqRegularizer:
    """The ℓ_{p,q} regularizer behind ``reg``: itself, or ``"lP"`` as ``ℓ_{p,p}`` with biases."""
    if isinstance(reg, LpqRegularizer):
        return reg
    if isinstance(reg, PowerRegularizer) and reg.single_power is not None:
        return LpqRegularizer(reg.single_power, reg.single_power, include_bias=True)
    if isinstance(reg, (PowerRegularizer, CustomRegularizer)):
        raise RegularizerError(
            f"method 'multiplicative' needs an ℓ_{{p,q}} regularizer such as 'l2,1' or a single "
            f"power 'lP'; got {reg}"
        )
    raise RegularizerError(f"method 'multiplicative' cannot use regularizer {reg!r}")


@dataclass
class _Rows:
    """One cost block with the global row index (unit of the ℓ_{p,q} norm) of each row."""

    block: CostBlock
    rows: np.ndarray  # index into S (scalable units first, then fixed units)
    _pattern: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None

    @property
    def pattern(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Where ``A > 0`` (for the max-norm's ``m_i``): a dense mask or ``(rows, cols)``; cached."""
        if self._pattern is None:
            if self.block.is_sparse:
                coo = sp.coo_array(self.block.matrix)
                keep = coo.data > 0
                self._pattern = (coo.row[keep], coo.col[keep])
            else:  # dense or matrix-free: materialised once
                self._pattern = np.asarray(self.block.explicit()) > 0
        return self._pattern


class UnitNorms:
    """Per-unit incoming costs ``S_k(u)`` of a balance problem and the update's weighted sums.

    ``S`` has one entry per scalable unit followed by one per fixed unit that receives weights
    (fixed rows are merged by their ``fixed_ids``; without ids every fixed row is its own
    unit). Bias blocks are dropped unless ``include_bias``.

    >>> import numpy as np
    >>> from synbal._problem.problem import CostBlock
    >>> blocks = [CostBlock(2.0, [0, 1], [-1], [[1.0], [4.0]]),
    ...           CostBlock(2.0, [-1], [0, 1], [[9.0, 16.0]], fixed_ids=np.array([7]))]
    >>> norms = UnitNorms(BalanceProblem(np.ones(2), blocks), p=2.0, include_bias=False)
    >>> norms.costs(np.zeros(2)).tolist()   # h0, h1, the output (id 7)
    [1.0, 4.0, 25.0]
    """

    def __init__(self, problem: BalanceProblem, p: float, include_bias: bool) -> None:
        blocks = [b for b in problem.blocks if include_bias or not b.bias]
        bad = sorted({b.power for b in blocks if b.power != p})
        if bad:
            raise RegularizerError(
                f"ℓ_{{p,q}} balancing with p={p:g} got cost blocks of power(s) "
                f"{', '.join(f'{x:g}' for x in bad)}; the adapter must aggregate |w|^{p:g}"
            )
        self.p = float(p)
        self.n = problem.n
        self.degree = problem.degree
        # the problem the update lives on: its free mask treats units whose penalised
        # incoming or outgoing cost is zero as dead (their optimal scale is 0 or ∞).
        self.problem = BalanceProblem(problem.degree, blocks, names=problem.names, layers=problem.layers)
        fixed_index: dict[int, int] = {}
        self._rows: list[_Rows] = []
        anonymous = -1
        for b in blocks:
            rows = b.dst.copy()
            fixed = np.flatnonzero(b.dst < 0)
            for r in fixed:
                if b.fixed_ids is not None:
                    key = int(b.fixed_ids[r])
                else:
                    key = anonymous  # a fresh fixed unit per anonymous row
                    anonymous -= 1
                if b.fixed_ids is not None and key < 0:
                    key = anonymous  # negative ids are treated as anonymous too
                    anonymous -= 1
                rows[r] = self.n + fixed_index.setdefault(key, len(fixed_index))
            self._rows.append(_Rows(b, rows))
        self.size = self.n + len(fixed_index)

    def _xy(self, b: CostBlock, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ue = np.append(u, 0.0)
        ce = np.append(self.degree, 1.0)
        return np.exp(-self.p * ce[b.src] * ue[b.src]), np.exp(self.p * ue[b.dst])

    def costs(self, u: np.ndarray) -> np.ndarray:
        """``S_k(u)`` for every unit of the norm (scalable units first), accumulated in float64."""
        s = np.zeros(self.size)
        for r in self._rows:
            x, y = self._xy(r.block, u)
            np.add.at(s, r.rows, y * (r.block.matrix @ x))
        return s

    def weighted_out(self, u: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``Σ_k weight_k a_ki`` for every scalable unit ``i`` (costs of its outgoing weights)."""
        out = np.zeros(self.n + 1)
        for r in self._rows:
            x, y = self._xy(r.block, u)
            col = r.block.matrix.T @ (weight[r.rows] * y)
            np.add.at(out, r.block.src, x * col)
        return out[:-1]

    def out_max(self, s: np.ndarray) -> np.ndarray:
        """``m_i = max{S_k : unit i feeds k}`` for every scalable unit (0 if it feeds none)."""
        out = np.zeros(self.n + 1)
        for r in self._rows:
            srow = s[r.rows]
            pattern = r.pattern
            if isinstance(pattern, np.ndarray):
                col = (pattern * srow[:, None]).max(axis=0) if srow.size else np.zeros(pattern.shape[1])
            else:
                pr, pc = pattern
                col = np.zeros(r.block.src.size)
                np.maximum.at(col, pc, srow[pr])
            np.maximum.at(out, r.block.src, col)
        return out[:-1]


def multiplicative_step(
    norms: UnitNorms, reg: LpqRegularizer, u: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(δ, stationarity, S)`` at ``u``: the update's log-step and relative stationarity of
    every unit (0 outside ``free``), and the per-unit costs ``S`` of the norm at ``u``.

    ``u + δ`` is one parallel multiplicative update (see the module docstring).
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # dead units: log 0, −∞ − (−∞)
        return _step(norms, reg, u, free)


def _step(
    norms: UnitNorms, reg: LpqRegularizer, u: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = reg.p
    c = norms.degree
    s = norms.costs(u)
    log_s = np.log(s)
    if reg.is_max_norm:
        log_gap = np.log(norms.out_max(s)) - log_s[: norms.n]
        step_scale = 2.0 * p * (1.0 + c)
    else:
        r = reg.q / p
        live = s > 0
        top = float(log_s[live].max()) if live.any() else 0.0
        # weights S^{r-1}, shifted by the largest S (the shift cancels in the ratio)
        weight = np.where(live, np.exp((r - 1.0) * (np.where(live, log_s, top) - top)), 0.0)
        log_in = r * (log_s[: norms.n] - top) + top  # log(S_i^r) − (r−1)·top
        log_out = np.log(c) + np.log(norms.weighted_out(u, weight))
        log_gap = log_out - log_in
        step_scale = 2.0 * max(p, reg.q) * (1.0 + c)
    ok = free & np.isfinite(log_gap)
    delta = np.where(ok, log_gap / step_scale, 0.0)
    stationarity = np.where(ok, np.abs(np.tanh(np.where(ok, log_gap, 0.0) / 2.0)), 0.0)
    return delta, stationarity, s


def lpq_norm(problem: BalanceProblem, reg: object, u: np.ndarray | None = None) -> float:
    """``‖W‖_{p,q}`` of the problem's weights at log-scales ``u`` (default 0)."""
    lpq = as_lpq(reg)
    v = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    return lpq.norm_from_unit_costs(UnitNorms(problem, lpq.p, lpq.include_bias).costs(v))


def lpq_max_stationarity(problem: BalanceProblem, reg: object, u: np.ndarray | None = None) -> float:
    """Largest relative stationarity of the free units at ``u`` (0 at the ℓ_{p,q} minimum)."""
    lpq = as_lpq(reg)
    v = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    norms = UnitNorms(problem, lpq.p, lpq.include_bias)
    _, stat, _ = multiplicative_step(norms, lpq, v, norms.problem.free_mask())
    return float(stat.max()) if stat.size else 0.0


def solve_multiplicative(problem: BalanceProblem, reg: object, options: SolveOptions) -> SolveResult:
    """Minimise ``‖W‖_{p,q}`` over rescalings by parallel multiplicative updates.

    ``reg`` is an :class:`~synbal._problem.lpq.LpqRegularizer` (or a single power ``"lP"``, treated as
    ``ℓ_{p,p}`` with biases). One history entry per update: ``regularizer`` is ``‖W‖_{p,q}``,
    ``max_relative_deficit`` the largest relative stationarity; ``options.theta`` scales every
    step (still monotone); ``steps`` counts unit updates.
    """
    lpq = as_lpq(reg)
    if problem.custom is not None:
        raise RegularizerError("method 'multiplicative' needs power costs, not a custom cost g")
    norms = UnitNorms(problem, lpq.p, lpq.include_bias)
    free = norms.problem.free_mask()
    u = np.zeros(problem.n)
    delta, stat, s = multiplicative_step(norms, lpq, u, free)
    measure = float(stat.max()) if stat.size else 0.0
    history = [HistoryEntry(0, lpq.norm_from_unit_costs(s), measure)]
    n_free = int(free.sum())
    steps = 0
    bar = tqdm(total=options.max_sweeps, desc="multiplicative ℓ_{p,q}", disable=not options.progress,
               leave=False)
    it = 0
    while measure > options.tol and it < options.max_sweeps and n_free:
        it += 1
        u = u + options.theta * delta
        steps += n_free
        delta, stat, s = multiplicative_step(norms, lpq, u, free)
        measure = float(stat.max())
        history.append(HistoryEntry(it, lpq.norm_from_unit_costs(s), measure))
        if options.callback is not None:
            options.callback(it, u)
        bar.update(1)
        bar.set_postfix(stationarity=f"{measure:.2e}")
    bar.close()
    if not math.isfinite(history[-1].regularizer):
        raise RegularizerError("ℓ_{p,q} norm became non-finite; are there NaN or infinite weights?")
    return SolveResult(u, measure <= options.tol, history, steps=steps)
