"""The compiled chain path of ``exact``: same state as the general solvers, fallbacks, names."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import synbal
from synbal._adapters.dense import DenseNetAdapter, _all_finite
from synbal._adapters.graph import GraphAdapter
from synbal._compiled.chain import chain_of, solve_chain
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal._solvers.exact import _newton, _two_level


def _net(widths: list[int], seed: int = 0, dtype: type = np.float64, activation: object = "relu",
         biases: bool = True, spread: float = 0.0) -> synbal.DenseNet:
    rng = np.random.default_rng(seed)
    Ws = []
    for k in range(len(widths) - 1):
        W = rng.normal(size=(widths[k + 1], widths[k]))
        if spread:
            W *= np.exp(rng.uniform(-spread, spread, size=W.shape))
        Ws.append(W.astype(dtype))
    bs = [rng.normal(size=widths[k + 1]).astype(dtype) for k in range(len(widths) - 1)] if biases else []
    return synbal.DenseNet(Ws, bs, activation)  # type: ignore[arg-type]


@pytest.mark.parametrize("reg", ["l2", "l1", "l0.5", "l3"])
@pytest.mark.parametrize("activation", ["relu", {"type": "bipu", "c": 2.0, "C": 1.0, "D": 0.0}])
def test_chain_reaches_the_newton_state(reg: str, activation: object) -> None:
    net = _net([5, 7, 6, 8, 4, 3], seed=1, activation=activation, spread=3.0)
    r = parse_regularizer(reg)
    problem = DenseNetAdapter(net).problem(r)
    assert chain_of(problem) is not None
    res = solve_chain(problem, SolveOptions(tol=1e-12))
    assert res is not None and res.converged
    assert problem.max_relative_deficit(res.u) <= 1e-12
    reference = _newton(problem, SolveOptions(tol=1e-13))
    np.testing.assert_allclose(res.u, reference.u, atol=1e-9)
    values = [h.regularizer for h in res.history]
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(values))
    if activation != "relu":  # BiPU: IN = c·OUT at the end
        IN, OUT = problem.in_out(res.u)
        np.testing.assert_allclose(IN, 2.0 * OUT, rtol=1e-11)


def test_chain_matches_the_python_two_level_iteration_step_by_step() -> None:
    problem = DenseNetAdapter(_net([9, 12, 10, 11, 12, 4], seed=2, dtype=np.float32)).problem(parse_regularizer("l2"))
    fast = solve_chain(problem, SolveOptions(tol=1e-11))
    slow = _two_level(problem, SolveOptions(tol=1e-11))
    assert fast is not None and fast.sweeps == slow.sweeps
    np.testing.assert_allclose(fast.u, slow.u, atol=1e-12)
    np.testing.assert_allclose([h.max_relative_deficit for h in fast.history],
                               [h.max_relative_deficit for h in slow.history], rtol=1e-6, atol=1e-15)


def test_callback_and_one_call_give_the_same_iterations() -> None:
    problem = DenseNetAdapter(_net([6, 8, 8, 8, 2], seed=3)).problem(parse_regularizer("l2"))
    seen: list[int] = []
    stepped = solve_chain(problem, SolveOptions(tol=1e-12, callback=lambda it, u: seen.append(it)))
    whole = solve_chain(problem, SolveOptions(tol=1e-12))
    assert stepped is not None and whole is not None
    assert seen == list(range(1, whole.sweeps + 1))
    np.testing.assert_array_equal(stepped.u, whole.u)
    capped = solve_chain(problem, SolveOptions(tol=1e-12, max_sweeps=2))
    assert capped is not None and not capped.converged and capped.sweeps == 2


def test_weights_across_sixteen_orders_of_magnitude() -> None:
    net = _net([4, 6, 6, 6, 3], seed=4, spread=18.0)  # |w| from ~1e-8 to ~1e8
    problem = DenseNetAdapter(net).problem(parse_regularizer("l2"))
    res = solve(problem, parse_regularizer("l2"), "exact", SolveOptions(tol=1e-12))
    assert res.converged and problem.max_relative_deficit(res.u) <= 1e-12


def test_dead_units_and_non_chains_go_to_the_general_path() -> None:
    net = _net([4, 5, 5, 3], seed=5, biases=False)
    net.weights[1][:, 2] = 0.0  # unit 2 of the first hidden layer has no outgoing weights
    problem = DenseNetAdapter(net).problem(parse_regularizer("l2"))
    assert chain_of(problem) is not None and solve_chain(problem, SolveOptions()) is None
    res = synbal.balance(net, "l2")
    assert res.converged
    # two powers (a sum of regularizers) and a problem without layers are not chains
    assert chain_of(DenseNetAdapter(net).problem(parse_regularizer("1*l2+0.1*l1"))) is None
    block = CostBlock(2.0, [0], [-1], [[1.0]])
    assert chain_of(BalanceProblem(np.ones(1), [block])) is None
    # a block that skips a layer
    skip = BalanceProblem(np.ones(3), [CostBlock(2.0, [0], [-1], [[1.0]]), CostBlock(2.0, [2], [0], [[2.0]]),
                                       CostBlock(2.0, [1], [0], [[1.0]]), CostBlock(2.0, [-1], [2], [[1.0]]),
                                       CostBlock(2.0, [-1], [1], [[1.0]])],
                          layers=[np.array([0]), np.array([1]), np.array([2])])
    assert chain_of(skip) is None


def test_sparse_layered_graphs_stay_on_the_general_path() -> None:
    g = synbal.Graph.from_dict({
        "format": "synbal.graph/1",
        "units": [{"name": "x", "role": "input"}, {"name": "a", "role": "hidden", "activation": "relu"},
                  {"name": "b", "role": "hidden", "activation": "relu"}, {"name": "y", "role": "output"}],
        "edges": [["x", "a", 3.0], ["a", "b", 0.5], ["b", "y", 2.0]],
    })
    problem = GraphAdapter(g).problem(parse_regularizer("l2"))
    assert chain_of(problem) is None  # sparse cost blocks
    res = solve(problem, parse_regularizer("l2"), "exact", SolveOptions(tol=1e-13))
    assert res.converged
    IN, OUT = problem.in_out(res.u)
    np.testing.assert_allclose(IN, OUT, rtol=1e-12)


def test_dense_names_and_finite_check() -> None:
    adapter = DenseNetAdapter(_net([3, 2, 4, 1]))
    assert list(adapter.names) == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer2.2", "layer2.3"]
    assert adapter.names[-1] == "layer2.3" and adapter.names[1:3] == ["layer1.1", "layer2.0"]
    with pytest.raises(IndexError):
        adapter.names[6]
    huge = np.full((4, 4), 3e38, dtype=np.float32)  # the sum overflows, the entries are finite
    with np.errstate(over="ignore", invalid="ignore"):
        assert _all_finite(huge)
        huge[1, 2] = np.nan
        assert not _all_finite(huge)


# ----------------------------------------------------------------------------- single-unit steps
def test_chain_steps_follow_the_general_kernel_step_for_step() -> None:
    from synbal._compiled.chain_steps import ChainSteps, step_kernel
    from synbal._compiled.unit_graph import UnitGraph

    for activation in ("relu", {"type": "bipu", "c": 2.0, "C": 1.0, "D": 0.0}):
        problem = DenseNetAdapter(_net([5, 7, 6, 8, 3], seed=6, dtype=np.float32, activation=activation)
                                  ).problem(parse_regularizer("l1"))
        kernel = step_kernel(problem)
        assert isinstance(kernel, ChainSteps)
        order = np.random.default_rng(0).integers(0, problem.n, size=400)
        u_fast, u_ref = np.zeros(problem.n), np.zeros(problem.n)
        kernel.run_steps(u_fast, order, 0.5)
        UnitGraph.build(problem).run_steps(u_ref, order, 0.5)
        np.testing.assert_allclose(u_fast, u_ref, atol=1e-13)
        kernel.prefetch = True  # the prefetching loop computes the same steps
        u_pf = np.zeros(problem.n)
        kernel.run_steps(u_pf, order, 0.5)
        np.testing.assert_array_equal(u_pf, u_fast)
        assert kernel.max_relative_deficit(u_fast, np.arange(problem.n)) == pytest.approx(
            problem.max_relative_deficit(u_fast), rel=1e-9)


def test_chain_many_stochastic_runs_reach_the_exact_state() -> None:
    from synbal._compiled.chain_steps import step_kernel
    from synbal._compiled.unit_graph import UnitGraph

    problem = DenseNetAdapter(_net([4, 6, 5, 6, 3], seed=7)).problem(parse_regularizer("l2"))
    free = np.arange(problem.n)
    U, sweeps, snaps = step_kernel(problem).many_stochastic(np.zeros(problem.n), free, 6, 3, 1e-11, 5000, 1.0,
                                                            record_every=5)
    assert (sweeps > 0).all() and snaps.shape == (6, 1001, problem.n)
    exact = solve(problem, parse_regularizer("l2"), "exact", SolveOptions(tol=1e-13)).u
    np.testing.assert_allclose(U, np.tile(exact, (6, 1)), atol=1e-8)
    U2, sweeps2, _ = UnitGraph.build(problem).many_stochastic(np.zeros(problem.n), free, 6, 3, 1e-11, 5000, 1.0)
    np.testing.assert_array_equal(sweeps2, sweeps)  # the same random streams
    np.testing.assert_allclose(U2, U, atol=1e-12)


def test_dead_units_are_left_alone_by_chain_steps() -> None:
    from synbal._compiled.chain_steps import step_kernel

    net = _net([4, 5, 5, 3], seed=8, biases=False)
    net.weights[1][:, 2] = 0.0
    problem = DenseNetAdapter(net).problem(parse_regularizer("l2"))
    u = np.zeros(problem.n)
    step_kernel(problem).run_steps(u, np.arange(problem.n).repeat(3), 1.0)
    assert u[2] == 0.0 and np.any(u != 0.0)
    res = synbal.balance(net, "l2", method="stochastic", seed=1)
    assert res.converged
