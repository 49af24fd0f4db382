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

import numpy as np
from tqdm.auto import tqdm

from synbal._problem.lpq import LpqRegularizer
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal._problem.unit_norms import UnitNorms, max_stationarity, multiplicative_step, norm_at
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import RegularizerError

__all__ = ["UnitNorms", "as_lpq", "lpq_max_stationarity", "lpq_norm", "multiplicative_step", "solve_multiplicative"]


def as_lpq(reg: object) -> LpqRegularizer:
    """The ℓ_{p,q} regularizer behind ``reg``: itself, or ``"lP"`` as ``ℓ_{p,p}`` with biases."""
    lpq = LpqRegularizer.of(reg)
    if lpq is not None:
        return lpq
    if isinstance(reg, RegularizerBehaviour) and reg.additive:  # a sum of powers, a custom cost
        raise RegularizerError(
            f"method 'multiplicative' needs an ℓ_{{p,q}} regularizer such as 'l2,1' or a single "
            f"power 'lP'; got {reg}"
        )
    raise RegularizerError(f"method 'multiplicative' cannot use regularizer {reg!r}")


def lpq_norm(problem: BalanceProblem, reg: object, u: np.ndarray | None = None) -> float:
    """``‖W‖_{p,q}`` of the problem's weights at log-scales ``u`` (default 0)."""
    return norm_at(problem, as_lpq(reg), u)


def lpq_max_stationarity(problem: BalanceProblem, reg: object, u: np.ndarray | None = None) -> float:
    """Largest relative stationarity of the free units at ``u`` (0 at the ℓ_{p,q} minimum)."""
    return max_stationarity(problem, as_lpq(reg), u)


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
