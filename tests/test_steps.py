"""One balancing step, one module: the Python steps and the compiled kernels agree."""

from __future__ import annotations

import numpy as np
import pytest

import synbal
from problem_factory import random_problem
from synbal._compiled.lowlevel import MatrixTable
from synbal._compiled.unit_graph import UnitGraph
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers.operations import balance_units
from synbal._solvers.steps import SetCosts, balance_in_order, closed_log_step, log_step, optimal_log_steps, step_set


def _brute_force_step(a: np.ndarray, b: np.ndarray, s: np.ndarray, c: float, powers: np.ndarray) -> float:
    """The minimiser of ``f(t)`` on a fine grid refined twice (independent of the Newton code)."""
    lo, hi = -20.0, 20.0
    for _ in range(4):
        t = np.linspace(lo, hi, 4001)
        f = sum(a[k] * np.exp(p * t) + b[k] * np.exp(-p * c * t) + s[k] * np.exp(p * (1 - c) * t)
                for k, p in enumerate(powers))
        k = int(np.argmin(f))
        lo, hi = t[max(k - 1, 0)], t[min(k + 1, t.size - 1)]
    return float(0.5 * (lo + hi))


@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_step_minimises_the_unit_cost(seed: int) -> None:
    rng = np.random.default_rng(seed)
    powers = np.array([2.0, 1.0, 0.5])[: 1 + seed % 3]
    a, b, s = (rng.uniform(0.1, 5.0, powers.size) for _ in range(3))
    c = float(rng.choice([1.0, 2.0, 0.5]))
    t = log_step(a, b, s, c, powers)
    assert t == pytest.approx(_brute_force_step(a, b, s, c, powers), abs=1e-4)
    costs = {float(p): (a[k:k + 1], b[k:k + 1], s[k:k + 1]) for k, p in enumerate(powers)}
    assert optimal_log_steps(costs, np.array([c]), 0.5)[0] == pytest.approx(0.5 * t, rel=1e-15)


def test_closed_form_and_dead_units() -> None:
    assert closed_log_step(4.0, 1.0, 1.0, 2.0) == pytest.approx(np.log(0.25) / 4)
    costs = {2.0: (np.array([0.0, 4.0]), np.array([1.0, 0.0]), np.zeros(2))}
    assert optimal_log_steps(costs, np.ones(2)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("powers", [(2.0,), (2.0, 1.0)])
def test_python_steps_and_the_compiled_kernel_take_the_same_steps(powers: tuple[float, ...]) -> None:
    prob = random_problem(np.random.default_rng(4), n=30, n_fixed=4, powers=powers, bipu=True, log10_range=1.0)
    order = np.random.default_rng(2).choice(np.flatnonzero(prob.free_mask()), size=200)
    u_py, u_nb = np.zeros(prob.n), np.zeros(prob.n)
    balance_in_order(prob, u_py, order, 0.8)
    UnitGraph.build(prob).run_steps(u_nb, order, 0.8)
    np.testing.assert_allclose(u_py, u_nb, rtol=0, atol=1e-9)
    assert prob.value(u_py) < prob.value(np.zeros(prob.n))


def test_a_tied_step_is_one_unit_of_the_set_costs() -> None:
    rng = np.random.default_rng(1)
    g = synbal.Graph.from_layers([rng.normal(size=(3, 2)), rng.normal(size=(4, 3)), rng.normal(size=(1, 4))])
    names = ["h1_0", "h1_1", "h1_2"]
    op = balance_units(g, names, "l2", tied=True)
    prob = synbal._adapters.graph.GraphAdapter(g).problem(parse_regularizer("l2"))
    u = np.zeros(prob.n)
    step_set(prob, u, np.arange(3), 1.0, tied=True, costs=SetCosts(prob))
    assert [op.scales[n] for n in names] == pytest.approx(np.exp(u[:3]).tolist(), rel=1e-12)
    assert len(set(op.scales.values())) == 1 and op.delta_regularizer > 0


def test_the_one_driver_serves_both_kernels_with_the_same_draws() -> None:
    from synbal._adapters.dense import DenseNet, DenseNetAdapter
    from synbal._compiled.chain_steps import ChainSteps, step_kernel

    rng = np.random.default_rng(3)
    net = DenseNet([rng.standard_normal((6, 4)), rng.standard_normal((5, 6)), rng.standard_normal((3, 5))])
    prob = DenseNetAdapter(net).problem(parse_regularizer("l2"))
    free = np.flatnonzero(prob.free_mask())
    chain = step_kernel(prob)
    assert isinstance(chain, ChainSteps)
    Uc, sc, snaps = chain.many_stochastic(np.zeros(prob.n), free, 3, 7, 1e-11, 5000, 1.0, record_every=2)
    Ug, sg, _ = UnitGraph.build(prob).many_stochastic(np.zeros(prob.n), free, 3, 7, 1e-11, 5000, 1.0)
    assert (sc > 0).all() and sc.tolist() == sg.tolist()  # the same units drawn, the same sweeps
    np.testing.assert_allclose(Uc, Ug, atol=1e-10)
    assert snaps.shape == (3, 5000 // 2 + 1, prob.n) and np.array_equal(snaps[:, -1], Uc)


def test_matrix_table_holds_its_matrices_and_refuses_views() -> None:
    mats = [np.ones((2, 3)), np.zeros((4, 1))]
    table = MatrixTable(mats)
    addresses, shapes, like = table.arrays
    assert like.dtype == np.float64 and like.size == 0
    assert table.mats[0] is mats[0] and addresses[1] == mats[1].ctypes.data and shapes.tolist() == [[2, 3], [4, 1]]
    with pytest.raises(ValueError, match="C-contiguous"):
        MatrixTable([np.ones((3, 3))[:, ::2]])
