"""Hostile magnitudes, overflow and degenerate costs (issue 17, numerics side).

Weights from 1e-300 to 1e300 balance for any power; a state float64 cannot hold is a typed
error, never a result with a zero/infinite scale or a non-finite R; the function check fails
when the balanced net overflows where the original does not; units whose cost has no minimum
are found up front.
"""

from __future__ import annotations

import json
import math
from importlib.resources import files

import numpy as np
import pytest

import synbal
from synbal._adapters.graph import Graph, GraphAdapter, Unit, function_gap, verify_same_function
from synbal._problem.conditioning import condition, needs_conditioning, scale_weights
from synbal._problem.regularizers import parse_regularizer
from synbal.errors import ActivationError, NumericRangeError, VerificationError

METHODS = ("exact", "stochastic", "cyclic", "layer")


def chain(*weights: float, activation: object = "relu") -> Graph:
    """``x -> h0 -> ... -> y`` with the given weights."""
    names = ["x", *[f"h{k}" for k in range(len(weights) - 1)], "y"]
    units = [{"name": "x", "role": "input"}, *[{"name": n, "role": "hidden", "activation": activation}
                                               for n in names[1:-1]], {"name": "y", "role": "output"}]
    return Graph.from_dict({"format": "synbal.graph/1", "units": units,
                            "edges": [[a, b, w] for a, b, w in zip(names[:-1], names[1:], weights, strict=True)]})


def assert_sound(g: Graph, res: synbal.BalanceResult) -> None:
    scales = np.array(list(res.scales.values()))
    assert np.all(np.isfinite(scales)) and np.all(scales > 0)
    assert math.isfinite(res.regularizer_after) and math.isfinite(res.max_relative_deficit)
    gap = verify_same_function(g, res.net, steps=6)
    assert gap is None or gap <= 1e-8


# ------------------------------------------------------------------ x -> h -> y at 1e±150
@pytest.mark.parametrize("reg", ["l0.5", "l1", "l2", "l3", "1*l2+0.01*l1"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("weights", [(1e150, 1e-150), (1e-150, 1e150)])
def test_two_weights_150_orders_apart_balance(reg: str, method: str, weights: tuple[float, float]) -> None:
    g = chain(*weights)
    res = synbal.balance(g, reg, method, seed=0)
    assert res.converged
    assert res.scales["h0"] == pytest.approx(weights[1], rel=1e-12)  # both weights become 1
    assert [w for _, _, w in res.net.edges] == pytest.approx([1.0, 1.0], rel=1e-12)
    coefs = sum(t.coef for t in parse_regularizer(reg).terms)
    assert res.regularizer_after == pytest.approx(2.0 * coefs, rel=1e-12)
    assert_sound(g, res)


def test_3_5_5_2_net_spanning_1e141_converges_with_every_method() -> None:
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (5, 5), (2, 5)]
    weights = [10.0 ** rng.uniform(-141, 141, s) * rng.choice([-1.0, 1.0], s) for s in shapes]
    g = Graph.from_layers(weights)
    results = {m: synbal.balance(g, "l2", m, seed=0, tol=1e-9) for m in ("exact", "stochastic", "layer")}
    for res in results.values():
        assert res.converged
        assert_sound(g, res)
    for m in ("stochastic", "layer"):  # one balanced state (Theorem 9.1)
        assert results[m].log_scales == pytest.approx(results["exact"].log_scales, abs=1e-6)


def test_conditioning_only_when_needed_and_balanced_state_is_the_same() -> None:
    g = chain(3.0, 0.5, 2.0)
    assert GraphAdapter(g).problem(parse_regularizer("l2")).origin is None  # ordinary weights: untouched
    big = Graph.from_layers([np.array([[1e140], [2e140]]), np.array([[3e-140, 1e-139]])])
    problem = GraphAdapter(big).problem(parse_regularizer("l3"))
    assert problem.origin is not None
    assert math.isinf(problem.origin_value or 0.0)  # (1e140)^3 leaves float64: reported as inf
    res = synbal.balance(big, "l3")
    assert res.converged and math.isinf(res.regularizer_before) and math.isfinite(res.regularizer_after)
    assert_sound(big, res)


def test_scale_weights_and_needs_conditioning() -> None:
    assert scale_weights(np.array([1e-320, -5e-324]), np.array([720.0, 745.0])) == pytest.approx(
        [math.exp(math.log(1e-320) + 720.0), -math.exp(math.log(5e-324) + 745.0)], rel=1e-10)
    assert scale_weights(np.array([1e300]), np.array([-2000.0]))[0] == 0.0  # the result itself underflows
    assert not needs_conditioning(np.log(np.array([1e-10, 1e10])), 0.0, [(1.0, 3.0)])
    assert needs_conditioning(np.log(np.array([1e-10, 1e100])), 0.0, [(1.0, 3.0)])
    u0 = condition(np.array([0, 1, -1]), np.array([-1, 0, 1]), np.log(np.array([1e200, 1.0, 1e-200])),
                   np.ones(2))
    assert np.all(np.abs(np.log(scale_weights(np.array([1e200, 1.0, 1e-200]),
                                              np.array([u0[0], u0[1] - u0[0], -u0[1]])))) < 3.0)


# ------------------------------------------------------------------ states float64 cannot hold
def test_cost_that_overflows_after_rescaling_is_a_typed_error() -> None:
    g = Graph.from_dict({"format": "synbal.graph/1",
                         "units": [{"name": "x", "role": "input"},
                                   {"name": "h", "role": "hidden", "activation": "relu"},
                                   {"name": "y", "role": "output"}],
                         "edges": [["x", "h", 1.0], ["h", "y", 1.0], ["x", "y", 1e200]]})
    with pytest.raises(NumericRangeError, match="x -> y"):
        synbal.balance(g, "l2")
    report = synbal.deficit(g, "l2")  # the report still describes the weights as given
    assert math.isinf(report.regularizer_value)


@pytest.mark.parametrize("method", METHODS)
def test_scale_beyond_float64_is_a_typed_error(method: str) -> None:
    # balanced weights are 1e-10 each, but h's scale would be 1e310; with a second unit in
    # series the iterates run off the end of float64 first (the solvers stop there at once)
    for g in (chain(1e-320, 1e300), chain(1e-320, 1.0, 1e300)):
        with pytest.raises(NumericRangeError, match=r"'h[01]'"):
            synbal.balance(g, "l1", method, seed=0)


def test_a_nan_log_scale_is_named_as_nan_not_as_a_huge_scale() -> None:
    from problem_factory import layered_problem
    from synbal._solvers.base import check_range

    problem = layered_problem(np.random.default_rng(0), [2, 3, 2])
    u = np.zeros(problem.n)
    check_range(problem, u)  # finite and small: nothing to say
    u[1] = np.nan
    with pytest.raises(NumericRangeError, match=r"log-scale of unit .* became NaN on the way") as info:
        check_range(problem, u)
    assert "e^nan" not in str(info.value)
    u[1] = 900.0
    with pytest.raises(NumericRangeError, match=r"passed e\^900 on the way"):
        check_range(problem, u)


def test_bipu_degree_range_is_validated() -> None:
    for c in (1e-320, 0.0, -1.0, 0.001, 1e3, 1e300):
        with pytest.raises(ActivationError, match=r"between 0\.01 and 100"):
            chain(2.0, 0.5, activation={"type": "bipu", "c": c})
    for c in (0.01, 100.0):
        res = synbal.balance(chain(2.0, 0.5, activation={"type": "bipu", "c": c}), "l2")
        assert res.converged and res.scales["h0"] > 0 and math.isfinite(res.scales["h0"])
    from synbal._problem.activations import Activation

    with pytest.raises(ActivationError, match="degree c"):
        Unit("h", "hidden", Activation("odd", 1e-320, lambda x: x))


def test_activation_parameter_too_large_for_float_is_typed() -> None:
    with pytest.raises(ActivationError, match="an integer of 1392 bits"):
        chain(1.0, 1.0, activation={"type": "bilu", "a": 10**419, "b": 1.0})


def test_subnormal_weights_keep_the_function() -> None:
    g = chain(5e-324, 1e-310, 2.0, 3e-320)
    for reg in ("l1", "l2", "l0.5"):
        res = synbal.balance(g, reg)
        assert_sound(g, res)


# ------------------------------------------------------------------ the function check
def test_overflow_of_the_balanced_net_fails_the_check() -> None:
    d = json.loads(files("synbal.examples").joinpath("recurrent_mixed.json").read_text())
    g = Graph.from_dict(d)
    res = synbal.balance(g, "l0.5")
    # the balanced net, with one unit scaled by e^709: its activations overflow on random inputs
    blown = GraphAdapter(g).apply(res.log_scales + np.where(np.arange(res.log_scales.size) == 4, 709.0, 0.0))
    with pytest.raises(VerificationError, match="overflow"):
        verify_same_function(g, blown)
    assert function_gap(g, blown, np.random.default_rng(0).standard_normal((16, 3)), 6) == math.inf


def test_issue_example_h4_h5_1e200_balances_and_keeps_the_function() -> None:
    d = json.loads(files("synbal.examples").joinpath("recurrent_mixed.json").read_text())
    d["edges"] = [[s, t, 1e200 if (s, t) == ("h4", "h5") else w] for s, t, w in d["edges"]]
    g = Graph.from_dict(d)
    res = synbal.balance(g, "l0.5")
    assert res.converged
    assert_sound(g, res)  # checked, not skipped: the original's outputs are finite


def test_function_gap_does_not_blame_the_original_rounding() -> None:
    # on y0, x * 5e-324 flushes to 0 in float64 while the balanced net computes the true tiny
    # value: that output is not compared; y1 (ordinary weights) is
    g = Graph.from_dict({"format": "synbal.graph/1",
                         "units": [{"name": "x", "role": "input"},
                                   {"name": "h0", "role": "hidden", "activation": "relu"},
                                   {"name": "h1", "role": "hidden", "activation": "relu"},
                                   {"name": "y0", "role": "output"}, {"name": "y1", "role": "output"}],
                         "edges": [["x", "h0", 5e-324], ["h0", "y0", -1e200], ["x", "h1", 2.0], ["h1", "y1", 3.0]]})
    res = synbal.balance(g, "l2")
    x = np.array([[0.3], [0.2]])
    assert np.all(g.simulate(x)[:, 0] == 0.0) and np.all(res.net.simulate(x)[:, 0] != 0.0)
    assert function_gap(g, res.net, x) <= 1e-15
    assert verify_same_function(g, res.net) is not None
    tampered = res.net.copy()
    tampered.edges[2] = ("x", "h1", tampered.edges[2][2] * 2.0)
    assert function_gap(g, tampered, x) > 0.1


# ------------------------------------------------------------------ no minimum
def drifting_graph() -> Graph:
    """``h1 <-> h2`` fed by the input with no path to an output: scaling both down lowers R forever."""
    return Graph.from_dict({"format": "synbal.graph/1",
                            "units": [{"name": "x", "role": "input"},
                                      *[{"name": f"h{k}", "role": "hidden", "activation": "relu"} for k in range(4)],
                                      {"name": "y", "role": "output"}],
                            "edges": [["x", "h0", 2.0], ["h0", "y", 0.5], ["x", "h1", 1.0], ["h1", "h2", 3.0],
                                      ["h2", "h1", 0.7], ["h0", "h3", 1.0], ["h3", "h0", 2.0]]})


@pytest.mark.parametrize("method", METHODS)
def test_units_without_a_minimum_are_found_up_front(method: str) -> None:
    g = drifting_graph()
    res = synbal.balance(g, "l2", method, seed=0, max_sweeps=10_000)
    assert res.converged and res.sweeps < 500
    assert res.scales["h1"] == res.scales["h2"] == 1.0
    assert set(res.excluded) == {"h1", "h2"} and "no balanced state" in res.excluded["h1"]
    assert res.scales["h0"] == pytest.approx(0.5) and res.scales["h3"] == pytest.approx(2**-0.5)
    status = {u.name: u.status for u in synbal.deficit(g).units}
    assert status == {"h0": "free", "h1": "drifting", "h2": "drifting", "h3": "free"}


def test_drift_towards_infinity_and_bipu_closures() -> None:
    # h1 <-> h2 feeding the output but fed by nothing visible: scaling both up lowers R forever
    g = Graph.from_dict({"format": "synbal.graph/1",
                         "units": [{"name": "x", "role": "input"},
                                   {"name": "h0", "role": "hidden", "activation": "relu"},
                                   {"name": "h1", "role": "hidden", "activation": "relu"},
                                   {"name": "h2", "role": "hidden", "activation": "abs"},
                                   {"name": "y", "role": "output"}],
                         "edges": [["x", "h0", 2.0], ["h0", "y", 0.5], ["h1", "h2", 3.0], ["h2", "h1", 0.7],
                                   ["h2", "y", 4.0]]})
    problem = GraphAdapter(g).problem(parse_regularizer("l2"))
    assert problem.drifting_mask().tolist() == [False, True, True]
    assert problem.free_mask().tolist() == [True, False, False]


def test_dense_chain_at_1e150_does_not_divide_by_zero() -> None:
    """The compiled chain path hands extreme costs to the general solver (was ZeroDivisionError)."""
    from synbal._adapters.dense import DenseNet

    net = DenseNet([np.full((2, 1), 1e150), np.full((1, 2), 1e-150)])
    res = synbal.balance(net, "l2")
    assert res.converged and res.scales["layer1.0"] == pytest.approx(1e-150, rel=1e-12)
    # (1e150)^3 overflows: the costs are taken at a conditioned origin (tests/test_dense_range.py)
    res3 = synbal.balance(net, "l3")
    assert res3.converged and res3.scales["layer1.0"] == pytest.approx(1e-150, rel=1e-12)


def test_weight_flushed_to_zero_by_scaling_is_a_typed_error() -> None:
    """Scaling h by 1e-10 would turn its 5e-324 input weight into 0: an edge silently lost."""
    g = Graph.from_dict({"format": "synbal.graph/1",
                         "units": [{"name": "x0", "role": "input"}, {"name": "x1", "role": "input"},
                                   {"name": "h", "role": "hidden", "activation": "relu"},
                                   {"name": "y", "role": "output"}],
                         "edges": [["x0", "h", 5e-324], ["x1", "h", 1e10], ["h", "y", 1e-10]]})
    with pytest.raises(NumericRangeError, match="x0 -> h underflows"):
        synbal.balance(g, "l2")
