"""ℓ_{p,q} balancing by parallel multiplicative updates (float64, balance problems built directly)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from problem_factory import layered_problem, random_problem
from synbal._problem.lpq import LpqRegularizer
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal._problem.regularizers import CustomRegularizer, parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal._solvers.multiplicative import UnitNorms, as_lpq, lpq_max_stationarity, lpq_norm, solve_multiplicative
from synbal.errors import RegularizerError

PQ = [(1, 1), (2, 2), (1, 2), (2, 1), (2, 4), (1, math.inf), (2, math.inf)]
PQ_IDS = [f"l{p},{q}" for p, q in PQ]


def mlp_problem(rng: np.random.Generator, widths: list[int], p: float, *, bias: bool = True,
                output_bias: bool = True) -> BalanceProblem:
    """A dense ReLU MLP whose output units are fixed rows identified by ``fixed_ids`` in every block."""
    hidden = []
    off = 0
    for w in widths[1:-1]:
        hidden.append(np.arange(off, off + w))
        off += w
    out_ids = np.arange(1000, 1000 + widths[-1])
    idx = [np.full(widths[0], -1), *hidden, np.full(widths[-1], -1)]
    blocks = []
    for k in range(1, len(widths)):
        W = rng.normal(size=(widths[k], widths[k - 1])) * np.exp(rng.normal(size=(widths[k], 1)))
        last = k == len(widths) - 1
        fids = out_ids if last else idx[k]
        blocks.append(CostBlock(p, idx[k], idx[k - 1], np.abs(W) ** p, fixed_ids=fids))
        if bias and (output_bias or not last):
            b = np.abs(rng.normal(size=(widths[k], 1))) ** p
            blocks.append(CostBlock(p, idx[k], [-1], b, bias=True, fixed_ids=fids))
    return BalanceProblem(np.ones(off), blocks, layers=hidden)


def reference_norm(problem: BalanceProblem, reg: LpqRegularizer, u: np.ndarray) -> float:
    """‖W‖_{p,q} at ``u`` computed weight by weight (independent of UnitNorms)."""
    ue = np.append(u, 0.0)
    ce = np.append(problem.degree, 1.0)
    per_unit: dict[tuple[str, int], float] = {}
    anon = 0
    for b in problem.blocks:
        if b.bias and not reg.include_bias:
            continue
        M = b.matrix.toarray() if b.is_sparse else b.matrix
        scaled = M * np.exp(reg.p * (ue[b.dst][:, None] - (ce[b.src] * ue[b.src])[None, :]))
        for r in range(M.shape[0]):
            if b.dst[r] >= 0:
                key = ("h", int(b.dst[r]))
            elif b.fixed_ids is not None:
                key = ("f", int(b.fixed_ids[r]))
            else:
                anon += 1
                key = ("a", anon)
            per_unit[key] = per_unit.get(key, 0.0) + float(scaled[r].sum())
    s = np.array([v for v in per_unit.values() if v > 0])
    if math.isinf(reg.q):
        return float(s.max() ** (1 / reg.p))
    return float(np.sum(s ** (reg.q / reg.p)) ** (1 / reg.q))


def run(problem: BalanceProblem, reg: LpqRegularizer, tol: float = 1e-10, max_sweeps: int = 20_000,
        theta: float = 1.0):
    return solve(problem, reg, "multiplicative", SolveOptions(tol=tol, max_sweeps=max_sweeps, theta=theta))


def nets(p: float) -> list[BalanceProblem]:
    rng = np.random.default_rng(int(10 * p) + 3)
    return [
        mlp_problem(rng, [5, 7, 6, 4, 3], p),
        mlp_problem(rng, [4, 9, 3], p, bias=False),
        random_problem(rng, n=10, n_fixed=4, powers=(p,), recurrent=True, bias=True),
        random_problem(rng, n=8, n_fixed=3, powers=(p,), bipu=True, recurrent=False, bias=False),
    ]


# --------------------------------------------------------------------------- the regularizer
def test_parse_and_union() -> None:
    reg = parse_regularizer("l2,1")
    assert isinstance(reg, LpqRegularizer) and (reg.p, reg.q, reg.include_bias) == (2.0, 1.0, False)
    assert parse_regularizer("l1,inf+bias") == LpqRegularizer(1.0, math.inf, True)
    assert parse_regularizer(reg) is reg
    assert [(t.coef, t.power) for t in reg.terms] == [(1.0, 2.0)]
    for bad in ("l2,", "l0,1", "l2,-1", "l2,1,3", "x2,1", "l2,nan"):
        with pytest.raises(RegularizerError, match="l"):
            parse_regularizer(bad)


def test_norm_values() -> None:
    s = np.array([9.0, 16.0, 0.0])
    assert LpqRegularizer(2, 2).norm_from_unit_costs(s) == pytest.approx(5.0)
    assert LpqRegularizer(2, 1).norm_from_unit_costs(s) == pytest.approx(7.0)
    assert LpqRegularizer(2, math.inf).norm_from_unit_costs(s) == pytest.approx(4.0)
    assert LpqRegularizer(1, 3).norm_from_unit_costs(s) == pytest.approx((9.0**3 + 16.0**3) ** (1 / 3))
    # huge q/p: no overflow, tends to the max
    huge = LpqRegularizer(1, 5000).norm_from_unit_costs(np.array([1e200, 3e200]))
    assert huge == pytest.approx(3e200, rel=1e-3)
    with pytest.raises(RegularizerError):
        LpqRegularizer(2, 1).norm_from_unit_costs(np.array([1.0, np.nan]))


@pytest.mark.parametrize(("p", "q"), PQ, ids=PQ_IDS)
def test_unit_norms_match_reference(p: float, q: float) -> None:
    for problem in nets(p):
        for include_bias in (False, True):
            reg = LpqRegularizer(p, q, include_bias)
            u = np.random.default_rng(0).normal(size=problem.n) * 0.3
            norms = UnitNorms(problem, p, include_bias)
            expected = reference_norm(problem, reg, u)
            assert reg.norm_from_unit_costs(norms.costs(u)) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- the claims
@pytest.mark.parametrize(("p", "q"), PQ, ids=PQ_IDS)
def test_monotone_decrease_every_update(p: float, q: float) -> None:
    for k, problem in enumerate(nets(p)):
        reg = LpqRegularizer(p, q, include_bias=k % 2 == 0)
        seen: list[float] = []

        def record(_: int, u: np.ndarray, problem: BalanceProblem = problem, reg: LpqRegularizer = reg,
                   seen: list[float] = seen) -> None:
            seen.append(reference_norm(problem, reg, u))

        res = solve_multiplicative(problem, reg, SolveOptions(tol=1e-9, max_sweeps=400, callback=record))
        norms = np.array([h.regularizer for h in res.history])
        assert norms.size > 5
        assert np.all(np.diff(norms) <= 1e-13 * norms[:-1]), f"norm increased on net {k}"
        assert np.allclose(norms[1:], seen, rtol=1e-12)
        assert norms[-1] < norms[0]


@pytest.mark.parametrize(("p", "q"), PQ, ids=PQ_IDS)
def test_stationary_at_the_end(p: float, q: float) -> None:
    """No single-unit rescaling lowers the norm to first order once converged."""
    for k, problem in enumerate(nets(p)[:3]):
        reg = LpqRegularizer(p, q, include_bias=k == 1)
        res = run(problem, reg, tol=1e-9, max_sweeps=50_000)
        assert res.converged, (k, res.history[-1])
        free = UnitNorms(problem, p, reg.include_bias).problem.free_mask()
        base = reference_norm(problem, reg, res.u)
        eps = 1e-4
        for i in np.flatnonzero(free):
            for sign in (1.0, -1.0):
                v = res.u.copy()
                v[i] += sign * eps
                # a first-order decrease would be ~ eps * base; allow only second-order effects
                assert reference_norm(problem, reg, v) >= base * (1 - 10 * eps**2), (k, i, sign)


@pytest.mark.parametrize("p", [1.0, 2.0, 0.5, 3.0])
def test_p_equals_q_matches_exact(p: float) -> None:
    for problem in nets(p):
        exact = solve(problem, parse_regularizer(f"l{p:g}"), "exact", SolveOptions(tol=1e-12))
        mult = run(problem, LpqRegularizer(p, p, include_bias=True), tol=1e-11, max_sweeps=50_000)
        assert exact.converged and mult.converged
        assert problem.value(mult.u) == pytest.approx(problem.value(exact.u), rel=1e-12)
        free = problem.free_mask()
        np.testing.assert_allclose(mult.u[free], exact.u[free], atol=1e-7)
    # a plain "lP" string is accepted as ℓ_{p,p} with biases
    assert as_lpq(parse_regularizer("l2")) == LpqRegularizer(2.0, 2.0, True)


@pytest.mark.parametrize(("p", "q"), [(2, 1), (1, 2), (2, 4), (1, 3)], ids=["l2,1", "l1,2", "l2,4", "l1,3"])
def test_global_minimum_matches_generic_optimizer(p: float, q: float) -> None:
    """The fixed point is the global minimiser: a generic optimiser on log ‖W‖ finds nothing lower."""
    problem = nets(p)[0]
    reg = LpqRegularizer(p, q)
    res = run(problem, reg, tol=1e-11, max_sweeps=50_000)
    free = UnitNorms(problem, p, False).problem.free_mask()
    idx = np.flatnonzero(free)

    def f(z: np.ndarray) -> float:
        u = np.zeros(problem.n)
        u[idx] = z
        return math.log(reference_norm(problem, reg, u))

    best = minimize(f, np.zeros(idx.size), method="BFGS", options={"gtol": 1e-10})
    assert res.history[-1].regularizer <= math.exp(best.fun) * (1 + 1e-9)
    assert res.history[-1].regularizer == pytest.approx(math.exp(best.fun), rel=1e-7)


def test_max_norm_is_limit_of_large_q() -> None:
    problem = nets(2.0)[1]
    inf = run(problem, LpqRegularizer(2, math.inf), tol=1e-10, max_sweeps=50_000)
    big = run(problem, LpqRegularizer(2, 64), tol=1e-9, max_sweeps=50_000)
    reg = LpqRegularizer(2, math.inf)
    # the ℓ_{2,64} minimiser is nearly optimal for the max-norm, never better than its fixed point
    assert reference_norm(problem, reg, inf.u) <= reference_norm(problem, reg, big.u) * (1 + 1e-9)
    assert reference_norm(problem, reg, big.u) == pytest.approx(reference_norm(problem, reg, inf.u), rel=0.05)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), theta=st.floats(0.2, 1.0),
       pq=st.sampled_from(PQ), bipu=st.booleans())
def test_monotone_property(seed: int, theta: float, pq: tuple[float, float], bipu: bool) -> None:
    p, q = pq
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, n=8, n_fixed=3, powers=(float(p),), bipu=bipu, recurrent=True, bias=True)
    reg = LpqRegularizer(p, q, include_bias=bool(seed % 2))
    res = run(problem, reg, tol=1e-8, max_sweeps=60, theta=theta)
    norms = np.array([h.regularizer for h in res.history])
    assert np.all(np.diff(norms) <= 1e-12 * norms[:-1])


def test_layered_problem_without_fixed_ids_and_dead_units() -> None:
    rng = np.random.default_rng(5)
    problem = layered_problem(rng, [4, 6, 5, 3], p=1.0, bias=True)
    # a hidden unit with only a bias coming in: dead for the bias-free norm, left alone
    problem.blocks[0].matrix[2] = 0.0
    res = run(problem, LpqRegularizer(1, 2), tol=1e-9)
    assert res.converged and res.u[2] == 0.0
    assert res.history[-1].regularizer < res.history[0].regularizer


def test_bad_inputs() -> None:
    problem = nets(2.0)[0]
    opts = SolveOptions()
    with pytest.raises(RegularizerError, match="power"):
        solve_multiplicative(problem, LpqRegularizer(1.0, 2.0), opts)
    with pytest.raises(RegularizerError, match="multiplicative"):
        solve_multiplicative(problem, parse_regularizer("l2+l1"), opts)
    with pytest.raises(RegularizerError, match="multiplicative"):
        solve_multiplicative(problem, CustomRegularizer(np.abs, np.sign), opts)


def test_history_and_budget() -> None:
    problem = nets(2.0)[0]
    res = run(problem, LpqRegularizer(2, 1), tol=1e-14, max_sweeps=7)
    assert not res.converged and res.sweeps == 7 and len(res.history) == 8
    assert res.steps == 7 * int(problem.free_mask().sum())
    already = run(problem, LpqRegularizer(2, 1), tol=1e-8)
    again = BalanceProblem(problem.degree, [
        CostBlock(b.power, b.dst, b.src, b.matrix * np.exp(b.power * (
            np.append(already.u, 0)[b.dst][:, None] - np.append(already.u, 0)[b.src][None, :])),
            bias=b.bias, fixed_ids=b.fixed_ids) for b in problem.blocks], layers=problem.layers)
    idem = run(again, LpqRegularizer(2, 1), tol=1e-8)
    assert idem.sweeps == 0 and idem.converged and np.all(idem.u == 0)


# --------------------------------------------------------------------------- through the engine
def graph_lpq_norm(graph, reg: LpqRegularizer) -> float:  # type: ignore[no-untyped-def]
    """‖W‖_{p,q} of a synbal.Graph straight from its edge list (independent of every adapter)."""
    per_unit: dict[str, float] = {}
    for _, dst, w in graph.edges:
        per_unit[dst] = per_unit.get(dst, 0.0) + abs(w) ** reg.p
    if reg.include_bias:
        for name, b in graph.biases.items():
            per_unit[name] = per_unit.get(name, 0.0) + abs(b) ** reg.p
    return reg.norm_from_unit_costs(np.array(list(per_unit.values())))


@pytest.mark.parametrize("spec", ["l2,1", "l1,2", "l1,inf", "l2,4+bias"])
@pytest.mark.parametrize("kind", ["dag", "bipu-mixed", "recurrent"])
def test_balance_graph_function_unchanged(spec: str, kind: str) -> None:
    import synbal
    from graph_factory import random_graph, random_inputs

    rng = np.random.default_rng(abs(hash((spec, kind))) % 2**32)
    graph = random_graph(rng, n_inputs=3, n_hidden=9, n_outputs=2, recurrent=kind == "recurrent",
                         bipu=kind == "bipu-mixed", mixed=kind == "bipu-mixed")
    x = random_inputs(rng, graph)
    steps = 12 if kind == "recurrent" else None
    res = synbal.balance(graph, spec, method="multiplicative", tol=1e-10, max_sweeps=50_000)
    assert res.converged
    np.testing.assert_allclose(res.net.simulate(x, steps), graph.simulate(x, steps), rtol=1e-9, atol=1e-12)
    reg = parse_regularizer(spec)
    assert isinstance(reg, LpqRegularizer)
    before, after = graph_lpq_norm(graph, reg), graph_lpq_norm(res.net, reg)
    assert after <= before * (1 + 1e-12)
    assert res.history[0].regularizer == pytest.approx(before, rel=1e-10)
    assert res.history[-1].regularizer == pytest.approx(after, rel=1e-10)
    assert lpq_norm(res.problem, reg, res.log_scales) == pytest.approx(after, rel=1e-10)
    assert lpq_max_stationarity(res.problem, reg, res.log_scales) <= 1e-10 < lpq_max_stationarity(res.problem, reg)


def test_balance_graph_p_equals_q_matches_exact() -> None:
    import synbal
    from graph_factory import random_graph

    graph = random_graph(np.random.default_rng(11), n_hidden=10, bipu=True)
    mult = synbal.balance(graph, "l2,2+bias", method="multiplicative", tol=1e-11, max_sweeps=50_000)
    exact = synbal.balance(graph, "l2", method="exact", tol=1e-12)
    assert mult.converged and exact.converged
    for name, scale in exact.scales.items():
        assert mult.scales[name] == pytest.approx(scale, rel=1e-7)


def test_public_api_reports_the_lpq_norm_and_refuses_additive_methods():
    import synbal
    from synbal.errors import RegularizerError

    rng = np.random.default_rng(3)
    mats = [rng.normal(size=(4, 3)), rng.normal(size=(5, 4)), rng.normal(size=(2, 5))]
    for net in (synbal.Graph.from_layers(mats), synbal.DenseNet([m.copy() for m in mats])):
        res = synbal.balance(net, "l2,1", method="multiplicative", tol=1e-10)
        assert res.converged and res.regularizer_after < res.regularizer_before
        report = synbal.deficit(res.net, "l2,1")
        assert report.max_relative_deficit <= 1e-9
        assert report.regularizer_value == pytest.approx(res.regularizer_after, rel=1e-12)
        with pytest.raises(RegularizerError, match="multiplicative"):
            synbal.balance(net, "l2,1", method="exact")
