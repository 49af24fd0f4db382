"""Algorithm properties on random balance problems (float64)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from problem_factory import layered_problem, random_problem
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal._solvers.schedules import tied_layer_closed_form
from synbal._solvers.steps import delta_r_closed_form, optimal_log_steps

L2 = parse_regularizer("l2")


def weight_log_factors(problem, u):
    """log of every aggregated weight's scale factor exp(u_i - c_j u_j)."""
    ue = np.append(u, 0.0)
    ce = np.append(problem.degree, 1.0)
    out = []
    for b in problem.blocks:
        out.append((ue[b.dst][:, None] - (ce[b.src] * ue[b.src])[None, :]).ravel())
    return np.concatenate(out)


def assert_same_weights(problem, u1, u2, rtol=1e-8):
    diff = np.abs(weight_log_factors(problem, u1) - weight_log_factors(problem, u2))
    assert diff.max() <= rtol, diff.max()


def reg_for(powers):
    return parse_regularizer("+".join(f"{1.0 / (k + 1)}*l{p}" for k, p in enumerate(powers)))


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_reaches_machine_precision_on_hard_recurrent_bipu_graphs(p, seed):
    rng = np.random.default_rng(seed)
    prob = random_problem(rng, n=25, n_fixed=5, powers=(p,), bipu=True, log10_range=8.0)
    res = solve(prob, reg_for((p,)), "exact", SolveOptions(tol=1e-12))
    assert res.converged
    assert prob.max_relative_deficit(res.u) <= 1e-12


@pytest.mark.parametrize("method", ["stochastic", "cyclic", "layer", "partial"])
@pytest.mark.parametrize("seed", range(3))
def test_every_schedule_ends_at_the_exact_state(method, seed):
    rng = np.random.default_rng(100 + seed)
    prob = random_problem(rng, n=10, n_fixed=3, bipu=True, powers=(2.0,), log10_range=1.0)
    ref = solve(prob, L2, "exact", SolveOptions(tol=1e-13)).u
    name, theta = ("cyclic", 0.5) if method == "partial" else (method, 1.0)
    res = solve(prob, L2, name, SolveOptions(tol=1e-12, seed=seed, theta=theta, max_sweeps=200_000))
    assert res.converged
    assert_same_weights(prob, res.u, ref)


@pytest.mark.parametrize("seed", range(20))
def test_twenty_stochastic_seeds_agree_with_exact(seed):
    prob = layered_problem(np.random.default_rng(7), [6, 5, 4, 5, 3])
    ref = solve(prob, L2, "exact", SolveOptions(tol=1e-13)).u
    res = solve(prob, L2, "stochastic", SolveOptions(tol=1e-12, seed=seed, max_sweeps=100_000))
    assert res.converged
    assert_same_weights(prob, res.u, ref)


@pytest.mark.parametrize("method", ["exact", "stochastic", "cyclic", "layer", "alternating", "tied"])
def test_layered_methods_and_monotone_regularizer(method):
    prob = layered_problem(np.random.default_rng(3), [7, 6, 5, 6, 4], p=1.0)
    reg = parse_regularizer("l1")
    res = solve(prob, reg, method, SolveOptions(tol=1e-11, seed=0, max_sweeps=100_000))
    assert res.converged
    values = np.array([h.regularizer for h in res.history])
    assert np.all(np.diff(values) <= 1e-12 * values[:-1])
    if method not in ("exact", "tied"):
        ref = solve(prob, reg, "exact", SolveOptions(tol=1e-13)).u
        assert_same_weights(prob, res.u, ref)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), powers=st.sampled_from([(2.0,), (1.0,), (0.5,), (3.0,), (2.0, 1.0)]),
       bipu=st.booleans(), method=st.sampled_from(["stochastic", "cyclic", "layer"]))
def test_regularizer_never_increases_and_balancing_is_idempotent(seed, powers, bipu, method):
    rng = np.random.default_rng(seed)
    prob = random_problem(rng, n=8, n_fixed=3, powers=powers, bipu=bipu, log10_range=1.5)
    reg = reg_for(powers)
    res = solve(prob, reg, method, SolveOptions(tol=1e-10, seed=seed, max_sweeps=20_000))
    values = np.array([h.regularizer for h in res.history])
    assert np.all(np.diff(values) <= 1e-12 * values[:-1])
    # idempotence: the exact state is a fixed point of every step
    exact = solve(prob, reg, "exact", SolveOptions(tol=1e-13))
    assert exact.converged
    from synbal._compiled.unit_graph import UnitGraph

    u = exact.u.copy()
    UnitGraph.build(prob).run_steps(u, np.flatnonzero(prob.free_mask()), 1.0)
    assert_same_weights(prob, u, exact.u, rtol=1e-9)


def test_bipu_units_end_with_in_equal_c_out():
    prob = random_problem(np.random.default_rng(5), n=15, bipu=True, powers=(2.0,))
    res = solve(prob, L2, "exact", SolveOptions(tol=1e-13))
    IN, OUT = prob.in_out(res.u)
    free = prob.free_mask()
    assert np.any(prob.degree[free] != 1.0)
    np.testing.assert_allclose(IN[free], prob.degree[free] * OUT[free], rtol=1e-11)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0])
def test_delta_r_matches_closed_form(p):
    rng = np.random.default_rng(11)
    prob = random_problem(rng, n=6, powers=(p,), recurrent=False)
    u = np.zeros(prob.n)
    for i in np.flatnonzero(prob.free_mask()):
        IN, OUT = prob.in_out(u)
        before = prob.value(u)
        loops = prob.self_loop_costs()[p][i]
        costs = {p: (np.array([IN[i] - loops]), np.array([OUT[i] - loops]), np.array([loops]))}
        u[i] += optimal_log_steps(costs, prob.degree[i : i + 1])[0]
        np.testing.assert_allclose(before - prob.value(u), delta_r_closed_form(IN[i] - loops, OUT[i] - loops),
                                   rtol=1e-9, atol=1e-12 * before)


def test_tied_matches_iteration_and_corrected_closed_form():
    prob = layered_problem(np.random.default_rng(9), [5, 4, 6, 3, 4, 2], p=2.0, bias=False)
    it = solve(prob, L2, "tied", SolveOptions(tol=1e-14, max_sweeps=100_000))
    assert it.converged
    closed = tied_layer_closed_form(prob)
    np.testing.assert_allclose(it.u, closed, atol=1e-10)
    # every layer ends with the same Lp cost (THEORY.md: M_l = G / ||A_l||_p)
    totals = []
    ue = np.append(closed, 0.0)
    for b in prob.blocks:
        x = np.exp(-2 * ue[b.src])
        y = np.exp(2 * ue[b.dst])
        totals.append(float(y @ (b.matrix @ x)))
    np.testing.assert_allclose(totals, totals[0], rtol=1e-10)
    # the printed eq. 12.7 gives M_l squared, which is not optimal
    wrong = 2 * closed
    assert prob.value(wrong) > prob.value(closed)


def test_dead_and_floating_units_are_left_alone():
    from synbal._problem.problem import BalanceProblem, CostBlock

    # unit 0: normal; unit 1: no outgoing weights (dead); units 2, 3: a closed BiLU cycle
    A = np.zeros((5, 5))
    A[0, 4] = 4.0  # fixed(4) -> 0
    A[4, 0] = 1.0  # 0 -> fixed
    A[1, 4] = 2.0  # fixed -> 1, nothing out of 1
    A[2, 3] = 3.0
    A[3, 2] = 0.5
    ids = np.array([0, 1, 2, 3, -1])
    prob = BalanceProblem(np.ones(4), [CostBlock(2.0, ids, ids, A)])
    assert prob.dead_mask().tolist() == [False, True, False, False]
    floating, pinned = prob.grounding()
    assert pinned.tolist() == [False, False, True, False] and not floating.any()
    res = solve(prob, L2, "exact", SolveOptions(tol=1e-13))
    assert res.converged and res.u[1] == 0.0 and res.u[2] == 0.0
    IN, OUT = prob.in_out(res.u)
    np.testing.assert_allclose(IN[[0, 2, 3]], OUT[[0, 2, 3]], rtol=1e-12)


@pytest.mark.parametrize("bipu", [False, True])
def test_unit_graph_prefetching_and_screened_check_change_nothing(bipu):
    """The prefetching step loops and the sampled convergence test give the plain kernel's results."""
    import dataclasses

    from synbal._compiled.unit_graph import UnitGraph
    from synbal._compiled.unit_steps import graph_max_rel

    prob = random_problem(np.random.default_rng(9), n=40, n_fixed=4, powers=(2.0,), bipu=bipu,
                          log10_range=1.0)
    plain = UnitGraph.build(prob)
    assert not plain.prefetch  # a small graph: no prefetching by default
    ahead = dataclasses.replace(plain, prefetch=True)
    free = np.flatnonzero(prob.free_mask())
    order = np.random.default_rng(1).choice(free, size=500)
    u1, u2 = np.zeros(prob.n), np.zeros(prob.n)
    plain.run_steps(u1, order, 0.7)
    ahead.run_steps(u2, order, 0.7)
    np.testing.assert_array_equal(u1, u2)
    # the single-power convergence test is the problem's own max relative deficit (self-loops included)
    X, Y = plain.factors(u1)
    got = graph_max_rel(free, X, Y, plain.arrays)
    assert got == pytest.approx(prob.max_relative_deficit(u1), rel=1e-10)
    runs = [g.many_stochastic(np.zeros(prob.n), free, 4, 5, 1e-11, 20_000, 1.0) for g in (plain, ahead)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert (runs[0][1] > 0).all()
    # each run stopped at the first sweep whose full max relative deficit is within tolerance
    for U in runs[0][0]:
        assert prob.max_relative_deficit(U) <= 1e-11
