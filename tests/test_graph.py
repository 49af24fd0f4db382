"""Explicit networks: JSON round trip, simulation, the adapter, and invariance under balancing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings

import synbal
from graph_factory import function_gap, graph_seeds, random_graph, random_inputs, random_layered_graph
from synbal._adapters.graph import Graph, GraphAdapter, Unit
from synbal._problem.regularizers import CustomRegularizer, parse_regularizer
from synbal.errors import SynbalError
from synbal.examples import example_names, example_path, load_example

ISSUE_EXAMPLE = {
    "format": "synbal.graph/1",
    "units": [
        {"name": "x0", "role": "input"},
        {"name": "h0", "role": "hidden", "activation": "relu"},
        {"name": "h1", "role": "hidden", "activation": {"type": "bilu", "a": 0.2, "b": 1.0}},
        {"name": "h2", "role": "hidden", "activation": {"type": "bipu", "c": 2.0, "C": 1.0, "D": 0.0}},
        {"name": "h3", "role": "hidden", "activation": "tanh"},
        {"name": "y0", "role": "output"},
    ],
    "edges": [["x0", "h0", 0.5], ["h0", "h0", -0.2], ["h0", "y0", 1.5]],
    "biases": {"h0": 0.1},
}

PROPERTY = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- JSON round trip
def test_issue_example_round_trips_exactly(tmp_path):
    g = Graph.from_dict(ISSUE_EXAMPLE)
    assert json.dumps(g.to_dict()) == json.dumps(ISSUE_EXAMPLE)  # same keys, order and values
    g.save(tmp_path / "g.json")
    assert json.loads((tmp_path / "g.json").read_text()) == ISSUE_EXAMPLE
    assert Graph.load(tmp_path / "g.json") == g
    assert g.edges == [("x0", "h0", 0.5), ("h0", "h0", -0.2), ("h0", "y0", 1.5)]
    assert g.biases == {"h0": 0.1}
    assert g.inputs == ["x0"] and g.outputs == ["y0"]


def test_shipped_issue_example_is_the_issue_text():
    assert json.loads(example_path("issue_example").read_text()) == ISSUE_EXAMPLE


def test_extra_fields_and_cost_coefficients_are_preserved(tmp_path):
    doc = json.loads(json.dumps(ISSUE_EXAMPLE))
    doc["units"][1]["comment"] = {"note": "kept", "list": [1, 2]}
    doc["description"] = "a net"
    doc["cost_coefficients"] = [["h0", "y0", 0.5], ["x0", "h0", 0.0]]
    doc["bias_cost_coefficients"] = {"h0": 2.0}
    doc["metadata"] = {"author": "me", "version": [1, 0]}
    g = Graph.from_dict(doc)
    assert g.to_dict() == doc
    assert g.edge_costs == {("h0", "y0"): 0.5, ("x0", "h0"): 0.0}
    g.save(tmp_path / "g.json")
    assert json.loads((tmp_path / "g.json").read_text()) == doc
    assert g.copy().to_dict() == doc


@PROPERTY
@given(seed=graph_seeds())
def test_random_graphs_round_trip(seed):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, recurrent=bool(seed % 2), bipu=True, mixed=True)
    doc = g.to_dict()
    assert Graph.from_dict(json.loads(g.to_json())).to_dict() == doc
    assert Graph.from_dict(doc) == g


def test_from_layers_builds_a_layered_net():
    w1 = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    w2 = np.array([[1.0, 1.0, -1.0]])
    g = Graph.from_layers([w1, w2], [np.array([0.1, 0.2, 0.3]), None], "abs")
    assert [u.name for u in g.units] == ["x0", "x1", "h1_0", "h1_1", "h1_2", "y0"]
    assert len(g.edges) == 9 and g.biases == {"h1_0": 0.1, "h1_1": 0.2, "h1_2": 0.3}
    x = np.array([[1.0, 2.0], [-1.0, 0.5]])
    expected = np.abs(x @ w1.T + [0.1, 0.2, 0.3]) @ w2.T
    np.testing.assert_allclose(g.simulate(x), expected, rtol=1e-15)


# ----------------------------------------------------------------------------- simulation
def _hand_dag() -> Graph:
    return Graph(
        [
            Unit("x0", "input"),
            Unit("x1", "input"),
            Unit("h0", "hidden", "relu"),
            Unit("h1", "hidden", {"type": "bipu", "c": 2.0, "C": 1.0, "D": -0.5}),
            Unit("t", "hidden", "tanh"),
            Unit("y0", "output"),
        ],
        [
            ("x0", "h0", 2.0), ("x1", "h0", -1.0), ("h0", "h1", 0.5), ("x1", "h1", 1.0),
            ("h1", "t", 1.0), ("x0", "t", -1.0), ("h0", "y0", 3.0), ("t", "y0", 1.0), ("x1", "y0", 1.0),
        ],
        {"h0": 0.5, "y0": -0.25},
    )


def test_simulate_dag_matches_hand_computation():
    g = _hand_dag()
    out = g.simulate(np.array([[1.0, 2.0], [-1.0, 1.0], [0.0, -1.0]]))
    # x=(1,2): h0=relu(0.5)=0.5, h1=(0.25+2)^2=5.0625, t=tanh(5.0625-1), y=1.5+t+2-0.25
    # x=(-1,1): h0=0, h1=1, t=tanh(2), y=t+1-0.25
    # x=(0,-1): h0=relu(1.5)=1.5, z1=0.75-1=-0.25 -> h1=-0.5*0.0625, t=tanh(h1), y=4.5+t-1-0.25
    h1 = -0.5 * 0.0625
    expected = [[1.5 + math.tanh(4.0625) + 1.75], [math.tanh(2.0) + 0.75], [4.5 + math.tanh(h1) - 1.25]]
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    assert not g.is_recurrent
    # synchronous steps reach the same values once they cover the depth (4 here)
    np.testing.assert_allclose(g.simulate(np.array([[1.0, 2.0]]), steps=4), out[:1], rtol=1e-15)


def test_simulate_recurrent_matches_hand_computation():
    g = Graph(
        [Unit("x", "input"), Unit("h", "hidden", "relu"), Unit("y", "output")],
        [("x", "h", 1.0), ("h", "h", 0.5), ("h", "y", 2.0)],
        {"h": 1.0},
    )
    assert g.is_recurrent
    x = np.array([[1.0], [-4.0]])
    # x=1: h(1)=2, h(2)=1+1+1=3 -> y(1)=0, y(2)=4, y(3)=6;  x=-4: h stays 0
    assert g.simulate(x, steps=1).tolist() == [[0.0], [0.0]]
    assert g.simulate(x, steps=2).tolist() == [[4.0], [0.0]]
    assert g.simulate(x, steps=3).tolist() == [[6.0], [0.0]]
    with pytest.raises(SynbalError, match="recurrent"):
        g.simulate(x)


def test_simulate_checks_its_inputs():
    g = _hand_dag()
    with pytest.raises(SynbalError, match=r"shape \(batch, 2\)"):
        g.simulate(np.zeros((3, 3)))
    with pytest.raises(SynbalError, match="steps"):
        g.simulate(np.zeros((1, 2)), steps=-1)


# ----------------------------------------------------------------------------- the adapter
def _direct_in_out(g: Graph, p: float) -> tuple[dict[str, float], dict[str, float]]:
    IN = {u.name: 0.0 for u in g.units}
    OUT = {u.name: 0.0 for u in g.units}
    for s, d, w in g.edges:
        IN[d] += abs(w) ** p
        OUT[s] += abs(w) ** p
    for name, b in g.biases.items():
        IN[name] += abs(b) ** p
    return IN, OUT


@PROPERTY
@given(seed=graph_seeds())
def test_problem_costs_match_a_direct_count(seed):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, recurrent=bool(seed % 2), bipu=True, mixed=True)
    for p in (2.0, 0.5):
        prob = GraphAdapter(g).problem(parse_regularizer(f"l{p}"))
        IN, OUT = _direct_in_out(g, p)
        total = sum(abs(w) ** p for _, _, w in g.edges) + sum(abs(b) ** p for b in g.biases.values())
        assert prob.value(np.zeros(prob.n)) == pytest.approx(total, rel=1e-13)
        got_in, got_out = prob.in_out(np.zeros(prob.n))
        assert prob.names == [u.name for u in g.units if u.scalable]
        np.testing.assert_allclose(got_in, [IN[n] for n in prob.names], rtol=1e-13)
        np.testing.assert_allclose(got_out, [OUT[n] for n in prob.names], rtol=1e-13)
        np.testing.assert_array_equal(prob.degree, [g.unit(n).act.degree for n in prob.names])


def test_blocks_cover_every_weight_with_stable_fixed_ids():
    g = Graph.from_dict(ISSUE_EXAMPLE)
    prob = GraphAdapter(g).problem(parse_regularizer("1*l2+0.5*l1"))
    assert prob.names == ["h0", "h1", "h2"]  # h3 (tanh) is fixed
    assert sorted(b.power for b in prob.blocks) == [1.0, 1.0, 2.0, 2.0]
    edge_blocks = [b for b in prob.blocks if not b.bias]
    for b in edge_blocks:
        assert b.matrix.shape == (6, 6)
        # scalable units carry their index, fixed units (x0, h3, y0) ids 3, 4, 5
        assert b.dst.tolist() == [-1, 0, 1, 2, -1, -1]
        assert b.fixed_ids.tolist() == [3, 0, 1, 2, 4, 5]
    bias = [b for b in prob.blocks if b.bias]
    assert [(b.power, b.src.tolist(), b.dst.tolist(), b.total()) for b in bias] == [
        (2.0, [-1], [0], pytest.approx(0.01)), (1.0, [-1], [0], pytest.approx(0.05))
    ]
    assert prob.value(np.zeros(3)) == pytest.approx(0.25 + 0.04 + 2.25 + 0.01 + 0.5 * (0.5 + 0.2 + 1.5 + 0.1))


def test_fixed_to_fixed_weights_are_costed():
    g = Graph([Unit("x", "input"), Unit("t", "hidden", "sigmoid"), Unit("y", "output")],
              [("x", "t", 2.0), ("t", "y", 3.0), ("x", "y", 1.0)])
    prob = GraphAdapter(g).problem(parse_regularizer("l2"))
    assert prob.n == 0 and prob.value(np.zeros(0)) == pytest.approx(14.0)
    assert GraphAdapter(g).excluded() == {"t": "activation sigmoid is not positively homogeneous"}


def test_cost_coefficients_multiply_the_costs():
    doc = json.loads(json.dumps(ISSUE_EXAMPLE))
    doc["cost_coefficients"] = [["h0", "y0", 0.5], ["x0", "h0", 0.0]]
    doc["bias_cost_coefficients"] = {"h0": 3.0}
    prob = GraphAdapter(Graph.from_dict(doc)).problem(parse_regularizer("2*l2"))
    IN, OUT = prob.in_out(np.zeros(prob.n))
    assert IN[0] == pytest.approx(2 * (0.0 * 0.25 + 0.04 + 3.0 * 0.01))
    assert OUT[0] == pytest.approx(2 * (0.5 * 2.25 + 0.04))
    custom = GraphAdapter(Graph.from_dict(doc)).problem(CustomRegularizer(g=np.square, dg=lambda x: 2 * x))
    np.testing.assert_allclose(custom.in_out(np.zeros(prob.n))[0], IN / 2, rtol=1e-14)


def test_custom_regularizer_lists_every_weight():
    g = Graph.from_dict(ISSUE_EXAMPLE)
    prob = GraphAdapter(g).problem(CustomRegularizer(g=np.abs, dg=np.sign))
    assert prob.blocks == [] and prob.custom is not None
    assert prob.custom.magnitude.tolist() == [0.5, 0.2, 1.5, 0.1]
    assert prob.custom.dst.tolist() == [0, 0, -1, 0] and prob.custom.src.tolist() == [-1, 0, 0, -1]
    assert prob.value(np.zeros(3)) == pytest.approx(2.3)


def test_layers_found_for_layered_nets_only():
    rng = np.random.default_rng(0)
    layered = random_layered_graph(rng, [3, 4, 5, 2])
    prob = GraphAdapter(layered).problem(parse_regularizer("l2"))
    assert [[prob.names[i] for i in layer] for layer in prob.layers] == [
        [f"h1_{k}" for k in range(4)], [f"h2_{k}" for k in range(5)]
    ]
    # one block per pair of layers (fixed units = inputs and outputs) and one bias block per layer
    assert len([b for b in prob.blocks if not b.bias]) == 3
    assert len([b for b in prob.blocks if b.bias]) == 3
    # a skip edge from the inputs keeps it layered; an edge skipping a hidden layer does not
    skip_in = Graph(layered.units, [*layered.edges, ("x0", "h2_0", 1.0)], layered.biases)
    assert GraphAdapter(skip_in).problem(parse_regularizer("l2")).layers is not None
    skip = Graph(layered.units, [*layered.edges, ("h1_0", "y0", 0.0), ("h1_1", "h1_1", 1.0)], layered.biases)
    assert GraphAdapter(skip).problem(parse_regularizer("l2")).layers is None
    recurrent = random_graph(rng, recurrent=True, p_edge=0.6)
    assert GraphAdapter(recurrent).problem(parse_regularizer("l2")).layers is None


def test_degenerate_networks_balance_cleanly():
    only_fixed = Graph([Unit("x", "input"), Unit("t", "hidden", "sigmoid"), Unit("y", "output")],
                       [("x", "t", 2.0), ("t", "y", 3.0), ("x", "y", 1.0)])
    res = synbal.balance(only_fixed)
    assert res.scales == {} and res.converged and res.net == only_fixed
    no_edges = Graph([Unit("x", "input"), Unit("h", "hidden", "relu"), Unit("y", "output")], [])
    assert synbal.balance(no_edges).scales == {"h": 1.0}
    assert synbal.deficit(no_edges).dead == ["h"]
    # a closed cycle a <-> b touching no visible unit: scaling both alike moves nothing, so a is
    # pinned and b balanced against it (2 and 3 become sqrt(6) each); the unconnected c is dead
    cycle = Graph([Unit("x", "input"), Unit("a", "hidden", "relu"), Unit("b", "hidden", "relu"),
                   Unit("c", "hidden", {"type": "bipu", "c": 2.0}), Unit("y", "output")],
                  [("a", "b", 2.0), ("b", "a", 3.0), ("x", "y", 1.0)])
    res = synbal.balance(cycle)
    assert res.scales["a"] == 1.0 and res.scales["c"] == 1.0
    ab, ba = (w for s, _, w in res.net.edges if s in "ab")
    assert ab == pytest.approx(math.sqrt(6.0), rel=1e-12) and ba == pytest.approx(math.sqrt(6.0), rel=1e-12)
    statuses = {u.name: u.status for u in synbal.deficit(cycle).units}
    assert statuses == {"a": "pinned", "b": "free", "c": "dead"}


def test_tied_closed_form_runs_on_a_layered_graph():
    g = random_layered_graph(np.random.default_rng(3), [3, 5, 4, 6, 2], bias=False)
    res = synbal.balance(g, "l2", "tied", closed_form=True, tol=1e-12)
    sources = ("x", "h1_", "h2_", "h3_")
    costs = [sum(w * w for s, _, w in res.net.edges if s.startswith(src)) for src in sources]
    np.testing.assert_allclose(costs, np.full(4, np.mean(costs)), rtol=1e-10)  # Appendix B: equal layer costs


# ----------------------------------------------------------------------------- apply
def test_apply_scales_every_weight_by_the_formula():
    rng = np.random.default_rng(5)
    g = random_graph(rng, recurrent=True, bipu=True, mixed=True)
    adapter = GraphAdapter(g)
    u = rng.normal(size=len(adapter.names))
    scaled = adapter.apply(u)
    log_scale = dict(zip(adapter.names, u, strict=True))
    for (s, d, w), (s2, d2, w2) in zip(g.edges, scaled.edges, strict=True):
        c = g.unit(s).act.degree if g.unit(s).scalable else 1.0
        assert (s, d) == (s2, d2)
        assert w2 == pytest.approx(w * math.exp(log_scale.get(d, 0.0) - c * log_scale.get(s, 0.0)), rel=1e-14)
    for name, b in g.biases.items():
        assert scaled.biases[name] == pytest.approx(b * math.exp(log_scale.get(name, 0.0)), rel=1e-14)


def test_apply_copies_unless_inplace():
    g = Graph.from_dict(ISSUE_EXAMPLE)
    before = g.to_dict()
    edges = g.edges
    out = GraphAdapter(g).apply(np.log([2.0, 1.0, 1.0]), inplace=False)
    assert out is not g and g.to_dict() == before
    assert out.edges == [("x0", "h0", 1.0), ("h0", "h0", -0.2), ("h0", "y0", 0.75)]
    same = GraphAdapter(g).apply(np.log([2.0, 1.0, 1.0]), inplace=True)
    assert same is g and g.edges is edges and g.edges == out.edges and g.biases == {"h0": 0.2}
    res = synbal.balance(Graph.from_dict(ISSUE_EXAMPLE))
    assert res.net.to_dict() != ISSUE_EXAMPLE
    with pytest.raises(SynbalError, match="expected 3 log-scales"):
        GraphAdapter(g).apply(np.zeros(2))


@PROPERTY
@given(seed=graph_seeds())
def test_scalings_compose_and_invert(seed):
    rng = np.random.default_rng(seed)
    g = random_graph(rng, recurrent=bool(seed % 2), bipu=True, mixed=True)
    adapter = GraphAdapter(g)
    u1, u2 = rng.normal(size=(2, len(adapter.names)))
    twice = GraphAdapter(adapter.apply(u1)).apply(u2)
    once = adapter.apply(u1 + u2)
    np.testing.assert_allclose([w for *_, w in twice.edges], [w for *_, w in once.edges], rtol=1e-13)
    np.testing.assert_allclose(list(twice.biases.values()), list(once.biases.values()), rtol=1e-13)
    back = GraphAdapter(adapter.apply(u1)).apply(-u1)
    np.testing.assert_allclose([w for *_, w in back.edges], [w for *_, w in g.edges], rtol=1e-13)


@PROPERTY
@given(seed=graph_seeds())
def test_balancing_is_idempotent(seed):
    g = random_graph(np.random.default_rng(seed), recurrent=bool(seed % 2), bipu=True, mixed=True)
    first = synbal.balance(g, "l2", tol=1e-12)
    second = synbal.balance(first.net, "l2", tol=1e-12)
    np.testing.assert_allclose(list(second.scales.values()), 1.0, rtol=1e-9)
    np.testing.assert_allclose([w for *_, w in second.net.edges], [w for *_, w in first.net.edges], rtol=1e-9)


# ----------------------------------------------------------------------------- invariance
def _invariance(g: Graph, seed: int, method: str = "exact", reg: str = "l2") -> None:
    rng = np.random.default_rng(seed)
    steps = 4 if g.is_recurrent else None
    res = synbal.balance(g, reg, method, seed=seed, tol=1e-11)
    x = random_inputs(rng, g)
    assert function_gap(g, res.net, x, steps) <= 1e-10
    assert res.converged and res.max_relative_deficit <= 1e-11
    assert res.regularizer_after <= res.regularizer_before * (1 + 1e-12)
    scaled = GraphAdapter(g).apply(rng.normal(scale=2.0, size=len(res.scales)))
    assert function_gap(g, scaled, x, steps) <= 1e-10


@PROPERTY
@given(seed=graph_seeds())
def test_balancing_a_random_dag_keeps_its_function(seed):
    g = random_graph(np.random.default_rng(seed), n_hidden=10, bipu=True, mixed=True)
    _invariance(g, seed)


@PROPERTY
@given(seed=graph_seeds())
def test_balancing_a_random_recurrent_graph_keeps_its_function(seed):
    g = random_graph(np.random.default_rng(seed), n_hidden=8, recurrent=True, bipu=True, mixed=True)
    _invariance(g, seed)


@pytest.mark.parametrize("method", ["stochastic", "cyclic", "layer"])
@pytest.mark.parametrize("reg", ["l1", "l3", "1*l2+0.1*l0.5"])
def test_schedules_keep_the_function(method, reg):
    g = random_graph(np.random.default_rng(11), n_hidden=7, recurrent=True, bipu=True, mixed=True)
    _invariance(g, 11, method, reg)


@pytest.mark.parametrize("reg", ["l0.5", "l1", "l2", "l3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_reaches_1e12_on_weights_spanning_1e8(reg, seed):
    g = random_graph(np.random.default_rng(seed), n_hidden=12, recurrent=seed != 0, bipu=True, mixed=True,
                     weight_range=(1e-8, 1e8))
    res = synbal.balance(g, reg, tol=1e-12)
    assert res.converged and res.max_relative_deficit <= 1e-12
    assert synbal.deficit(res.net, reg).max_relative_deficit <= 1e-11  # measured again on the written weights


def test_bipu_units_end_with_in_equal_c_out():
    g = random_graph(np.random.default_rng(2), n_hidden=10, recurrent=True, bipu=True)
    res = synbal.balance(g, "l2", tol=1e-12)
    report = synbal.deficit(res.net, "l2")
    bipu = [u for u in report.units if u.degree != 1.0]
    assert bipu
    for u in bipu:
        assert abs(u.IN - u.degree * u.OUT) <= 1e-10 * u.IN


def test_balancing_the_shipped_examples():
    assert set(example_names()) >= {"issue_example", "recurrent_mixed", "layered"}
    for name in example_names():
        g = load_example(name)
        res = synbal.balance(g, "l2")
        assert res.converged
        x = random_inputs(np.random.default_rng(0), g)
        assert function_gap(g, res.net, x, 6 if g.is_recurrent else None) <= 1e-10
    report = synbal.deficit(load_example("issue_example"))
    assert report.dead == ["h1", "h2"]
    assert report.excluded == {"h3": "activation tanh is not positively homogeneous"}
