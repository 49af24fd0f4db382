"""Signed unit coefficients in the problem core (queries against keys, issue 12).

A block with ``row_sign = -1`` scales its rows by ``exp(-u_i - c_j u_j)``. The value, IN/OUT, gradient
and Hessian are checked against the per-weight definition and finite differences; ``exact`` and the
local schedules reach one state; the methods whose kernels assume the unsigned form refuse.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import synbal
from synbal._compiled.unit_graph import UnitGraph
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal._solvers import SolveOptions, solve
from synbal._solvers.exact import hessian
from synbal._solvers.hessian_pattern import HessianPattern
from synbal.errors import GraphFormatError, UnsupportedProblemError

L2 = synbal.parse_regularizer("l2")


def _qk_problem(seed: int, power: float = 2.0) -> BalanceProblem:
    """Norm-gain units 0..3 (degree 1.5 for unit 3) read by Q rows (+) and K rows (-) of units 4..6, and by a
    value unit 7 whose outgoing weights reach a fixed output."""
    rng = np.random.default_rng(seed)
    gains, qk, value = np.arange(4), np.arange(4, 7), np.array([7])
    degree = np.ones(8)
    degree[3] = 1.5
    pos = lambda shape: rng.uniform(0.1, 2.0, shape)  # noqa: E731
    blocks = [
        CostBlock(power, gains, [-1], pos((4, 1))),  # the gains (from the constant unit)
        CostBlock(power, qk, gains, pos((3, 4))),  # W_Q rows
        CostBlock(power, qk, [-1], pos((3, 1)), bias=True),  # Q bias
        CostBlock(power, qk, gains, pos((3, 4)), row_sign=-1.0),  # W_K rows
        CostBlock(power, qk, [-1], pos((3, 1)), bias=True, row_sign=-1.0),  # K bias
        CostBlock(power, value, gains, pos((1, 4))),
        CostBlock(power, [-1, -1], value, pos((2, 1))),
    ]
    return BalanceProblem(degree, blocks)


def _per_weight_value(prob: BalanceProblem, u: np.ndarray) -> float:
    ue, ce = np.append(u, 0.0), np.append(prob.degree, 1.0)
    total = 0.0
    for b in prob.blocks:
        for r, i in enumerate(b.dst):
            for k, j in enumerate(b.src):
                total += b.explicit()[r, k] * np.exp(b.power * (b.row_sign * ue[i] - ce[j] * ue[j]))
    return total


@pytest.mark.parametrize("power", [2.0, 1.0, 3.0])
def test_value_gradient_and_hessian_match_the_definition_and_finite_differences(power: float) -> None:
    prob = _qk_problem(0, power)
    rng = np.random.default_rng(1)
    u = rng.normal(scale=0.3, size=prob.n)
    assert prob.value(u) == pytest.approx(_per_weight_value(prob, u), rel=1e-13)
    h = 1e-6
    eye = np.eye(prob.n)
    fd_grad = np.array([(prob.value(u + h * e) - prob.value(u - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(prob.gradient(u), fd_grad, rtol=1e-7, atol=1e-8)
    H = hessian(prob, u).toarray()
    fd_hess = np.array([(prob.gradient(u + h * e) - prob.gradient(u - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(H, fd_hess, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(HessianPattern(prob, np.arange(prob.n)).at(u).toarray(), H, rtol=1e-13)
    np.testing.assert_allclose(np.diag(H), prob.hessian_diagonal(u), rtol=1e-13)
    assert np.linalg.eigvalsh(H).min() > 0  # positive definite: every unit is tied to a fixed one
    assert (H[4:7, :4] > 0).any()  # a key row makes an off-diagonal entry positive: not a Laplacian


def test_in_counts_rows_scaled_up_and_out_rows_scaled_down() -> None:
    prob = _qk_problem(2)
    u = np.random.default_rng(3).normal(scale=0.2, size=prob.n)
    IN, OUT = prob.in_out(u)
    ue, ce = np.append(u, 0.0), np.append(prob.degree, 1.0)
    for k in range(4, 7):  # a Q/K unit: IN = its Q row and bias, OUT = its K row and bias
        q = sum(b.explicit()[list(b.dst).index(k)] @ np.exp(-2 * ce[b.src] * ue[b.src]) * np.exp(2 * b.row_sign * u[k])
                for b in prob.blocks if k in b.dst and b.row_sign > 0)
        kk = sum(b.explicit()[list(b.dst).index(k)] @ np.exp(-2 * ce[b.src] * ue[b.src]) * np.exp(-2 * u[k])
                 for b in prob.blocks if k in b.dst and b.row_sign < 0)
        assert IN[k] == pytest.approx(float(q), rel=1e-13)
        assert OUT[k] == pytest.approx(float(kk), rel=1e-13)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_and_local_schedules_reach_the_same_balanced_state(seed: int) -> None:
    prob = _qk_problem(seed)
    exact = solve(prob, L2, "exact", SolveOptions(tol=1e-12))
    assert exact.converged and prob.max_relative_deficit(exact.u) <= 1e-12
    assert prob.free_mask().all()
    for method in ("layer", "alternating", "cyclic", "stochastic"):
        res = solve(prob, L2, method, SolveOptions(tol=1e-11, max_sweeps=20000, seed=seed))
        assert res.converged, method
        np.testing.assert_allclose(res.u, exact.u, atol=1e-8, err_msg=method)
        values = [h.regularizer for h in res.history]
        assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values)), method


def test_methods_that_assume_unsigned_rows_refuse_with_a_typed_error() -> None:
    prob = _qk_problem(0)
    with pytest.raises(UnsupportedProblemError, match="signed unit coefficients"):
        solve(prob, L2, "tied", SolveOptions(sets=[[4, 5]]))
    with pytest.raises(UnsupportedProblemError, match="signed unit coefficients"):
        solve(prob, synbal.parse_regularizer("l2,1"), "multiplicative", SolveOptions())
    with pytest.raises(UnsupportedProblemError, match="compiled unit kernels"):
        UnitGraph.build(prob)


def test_invalid_signed_blocks_are_refused() -> None:
    with pytest.raises(GraphFormatError, match="row_sign"):
        CostBlock(2.0, [0], [-1], [[1.0]], row_sign=0.5)
    with pytest.raises(GraphFormatError, match="joins a unit to itself"):
        CostBlock(2.0, [0], [0], [[1.0]], row_sign=-1.0)
    with pytest.raises(GraphFormatError, match="degree"):
        BalanceProblem(np.array([2.0]), [CostBlock(2.0, [0], [-1], [[1.0]], row_sign=-1.0)])


def test_a_free_component_with_signed_rows_is_not_pinned_and_drift_is_found_by_the_signed_flow() -> None:
    # unit 0: Q row from unit 1, K row from the constant unit, a weight 0 -> 1. Shifting both units by t > 0
    # keeps the Q row and 0 -> 1 and lowers the K row: R decreases for ever although no unit is dead
    drifting = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [1], [[1.0]]),
                                           CostBlock(2.0, [0], [-1], [[1.0]], row_sign=-1.0),
                                           CostBlock(2.0, [1], [0], [[1.0]])])
    assert not drifting.dead_mask().any()
    assert drifting.drifting_mask().all() and not drifting.free_mask().any()
    # a Q bias (a weight from the constant unit into unit 0) stops it: all free, and exact balances it
    grounded = BalanceProblem(np.ones(2), [*drifting.blocks, CostBlock(2.0, [0], [-1], [[3.0]], bias=True)])
    assert grounded.free_mask().all()
    res = solve(grounded, L2, "exact", SolveOptions(tol=1e-12))
    assert res.converged and grounded.max_relative_deficit(res.u) <= 1e-12
    # no fixed unit at all: Q and K rows of unit 0 read unit 1; shifting both is no symmetry, so nothing is pinned
    floating = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [1], [[1.0]]),
                                           CostBlock(2.0, [0], [1], [[2.0]], row_sign=-1.0),
                                           CostBlock(2.0, [1], [0], [[1.0]])])
    assert not floating.grounding()[1].any()


@pytest.mark.parametrize("split", [False, True])
def test_two_level_sweeps_take_signed_rows_and_reach_the_newton_state(split: bool) -> None:
    """Layers {gains} and {Q/K units, value unit}, or {gains}, {Q/K units}, {value unit} (both fed by the gains:
    the classes are a 2-colouring of the layer graph, not odd/even indices): ``exact`` runs its two-level sweeps
    (coarse problem with signed blocks) and ends where plain Newton (no layers given) ends."""
    from synbal._solvers.exact import _coarse_ok, _layer_classes, _two_level

    base = _qk_problem(4)
    degree = np.ones(base.n)
    layers = [np.arange(4), np.arange(4, 7), np.arange(7, 8)] if split else [np.arange(4), np.arange(4, 8)]
    layered = BalanceProblem(degree, base.blocks, layers=layers)
    classes = _layer_classes(layered)
    assert classes is not None and classes.tolist() == ([0, 1, 1] if split else [0, 1])
    plain = BalanceProblem(degree, base.blocks)
    assert _coarse_ok(layered) and layered.free_mask().all()
    two = _two_level(layered, SolveOptions(tol=1e-12, max_sweeps=500))
    newton = solve(plain, L2, "exact", SolveOptions(tol=1e-12))
    assert two.converged and newton.converged
    np.testing.assert_allclose(two.u, newton.u, atol=1e-9)
