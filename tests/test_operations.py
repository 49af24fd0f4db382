"""Scaling and single-unit balancing on explicit graphs: invariance, commutation, composition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synbal
from graph_factory import random_graph, random_inputs
from synbal._solvers.operations import balance_units, scale_units
from synbal.errors import SynbalError


def weights(g):
    return np.array([w for _, _, w in g.edges] + [g.biases[k] for k in sorted(g.biases)])


def scalable_hidden(g):
    return [u.name for u in synbal.deficit(g, "l2").units]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), recurrent=st.booleans())
def test_scalings_commute_compose_and_keep_the_function(seed, recurrent):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, recurrent=recurrent, bipu=True, mixed=True)
    names = scalable_hidden(g)
    a, b = rng.choice(names, 2, replace=len(names) < 2)
    la, lb = np.exp(rng.normal(size=2))
    ab = scale_units(scale_units(g, {a: la}), {b: lb})
    ba = scale_units(scale_units(g, {b: lb}), {a: la})
    np.testing.assert_allclose(weights(ab), weights(ba), rtol=1e-12)
    composed = scale_units(scale_units(g, {a: la}), {a: lb})
    np.testing.assert_allclose(weights(composed), weights(scale_units(g, {a: la * lb})), rtol=1e-12)
    inverse = scale_units(scale_units(g, {a: la}), {a: 1 / la})
    np.testing.assert_allclose(weights(inverse), weights(g), rtol=1e-12)
    x = random_inputs(rng, g)
    steps = 5 if g.is_recurrent else None
    np.testing.assert_allclose(ab.simulate(x, steps=steps), g.simulate(x, steps=steps), rtol=1e-10, atol=1e-12)


def test_balancing_connected_units_does_not_commute_but_disjoint_ones_do():
    g = synbal.Graph.from_dict({
        "format": "synbal.graph/1",
        "units": [{"name": "x", "role": "input"}, {"name": "a", "role": "hidden", "activation": "relu"},
                  {"name": "b", "role": "hidden", "activation": "relu"},
                  {"name": "c", "role": "hidden", "activation": "relu"}, {"name": "y", "role": "output"}],
        "edges": [["x", "a", 3.0], ["a", "b", 0.5], ["b", "y", 2.0], ["x", "c", 0.1], ["c", "y", 4.0]],
    })
    ab = balance_units(g, ["a", "b"], "l2").net
    ba = balance_units(g, ["b", "a"], "l2").net
    assert not np.allclose(weights(ab), weights(ba))
    ac = balance_units(g, ["a", "c"], "l2").net
    ca = balance_units(g, ["c", "a"], "l2").net
    np.testing.assert_allclose(weights(ac), weights(ca), rtol=1e-14)


@pytest.mark.parametrize("reg", ["l2", "l1", "l0.5", "l3"])
def test_single_step_delta_r_closed_form_and_partial_steps(reg):
    rng = np.random.default_rng(4)
    g = random_graph(rng, n_hidden=6, recurrent=False)
    rep = synbal.deficit(g, reg)
    unit = next(u for u in rep.units if u.status == "free")
    step = balance_units(g, [unit.name], reg)
    assert step.delta_regularizer == pytest.approx((np.sqrt(unit.IN) - np.sqrt(unit.OUT)) ** 2, rel=1e-9)
    after = synbal.deficit(step.net, reg)
    u2 = next(u for u in after.units if u.name == unit.name)
    assert pytest.approx(u2.OUT, rel=1e-10) == u2.IN
    half = balance_units(g, [unit.name], reg, theta=0.5)
    assert half.scales[unit.name] == pytest.approx(step.scales[unit.name] ** 0.5, rel=1e-12)
    assert 0 < half.delta_regularizer < step.delta_regularizer


def test_bad_operations_raise():
    g = random_graph(np.random.default_rng(0))
    with pytest.raises(SynbalError, match="not scalable"):
        scale_units(g, {"x0": 2.0})
    with pytest.raises(SynbalError, match="> 0"):
        scale_units(g, {"h0": -1.0})
    with pytest.raises(SynbalError, match="theta"):
        balance_units(g, ["h0"], theta=0.0)
