"""BiPU units without a balanced state are found up front, as BiLU ones are (issue 17).

``x -> h1 <-> h2`` with no path to an output: with ReLUs only, scaling both down lowers R for
ever. With a BiPU ``h1`` of degree ``c`` the gains decide (see ``synbal._problem.drift``): a flow
``1`` on ``x -> h1``, ``f`` on ``h1 -> h2`` and ``h2 -> h1`` conserves at ``h1`` iff
``1 + f = c·f``, which has a solution ``f > 0`` iff ``c > 1``. So ``c = 0.5`` drifts and ``c = 2``
has a unique balanced state.
"""

from __future__ import annotations

import numpy as np
import pytest

import synbal
from synbal import Graph
from synbal._adapters.graph import GraphAdapter
from synbal._problem.drift import positive_flow_exists
from synbal._problem.regularizers import parse_regularizer


def cycle_graph(c: float, extra_bilu_cycle: bool = False) -> Graph:
    """``x -> h0 -> y`` (an ordinary unit) and ``x -> h1 <-> h2`` (``h1`` a BiPU of degree ``c``)."""
    units = [{"name": "x", "role": "input"}, {"name": "h0", "role": "hidden", "activation": "relu"},
             {"name": "h1", "role": "hidden", "activation": {"type": "bipu", "c": c, "C": 1.0, "D": 0.5}},
             {"name": "h2", "role": "hidden", "activation": "relu"}, {"name": "y", "role": "output"}]
    edges = [["x", "h0", 2.0], ["h0", "y", 0.5], ["x", "h1", 1.5], ["h1", "h2", 3.0], ["h2", "h1", 0.7]]
    if extra_bilu_cycle:  # a second closure, all ReLU: it drifts whatever the BiPU one does
        units[-1:-1] = [{"name": "h3", "role": "hidden", "activation": "relu"},
                        {"name": "h4", "role": "hidden", "activation": "relu"}]
        edges += [["x", "h3", 1.0], ["h3", "h4", 2.0], ["h4", "h3", 0.5]]
    return Graph.from_dict({"format": "synbal.graph/1", "units": units, "edges": edges})


@pytest.mark.parametrize("method", ["exact", "stochastic", "layer"])
def test_a_drifting_bipu_cycle_is_excluded_up_front(method: str) -> None:
    g = cycle_graph(0.5)
    res = synbal.balance(g, "l2", method, seed=0, max_sweeps=10_000)
    assert res.converged and res.sweeps < 500
    assert set(res.excluded) == {"h1", "h2"} and "no balanced state" in res.excluded["h1"]
    assert res.scales["h1"] == res.scales["h2"] == 1.0
    assert res.scales["h0"] == pytest.approx(0.5)
    assert {u.name: u.status for u in synbal.deficit(g).units}["h1"] == "drifting"


def test_a_bipu_cycle_with_a_minimum_is_balanced() -> None:
    g = cycle_graph(2.0)
    problem = GraphAdapter(g).problem(parse_regularizer("l2"))
    assert not problem.drifting_mask().any()
    res = synbal.balance(g, "l2", "exact")
    assert res.converged and res.max_relative_deficit <= 1e-10 and not res.excluded
    assert res.scales["h1"] != 1.0 and res.scales["h2"] != 1.0
    # every schedule reaches the same state (Theorem 9.1): it is a real minimum
    stochastic = synbal.balance(g, "l2", "stochastic", seed=1, tol=1e-12)
    assert np.allclose(stochastic.log_scales, res.log_scales, atol=1e-8)


def test_each_closure_is_judged_on_its_own() -> None:
    """A drifting ReLU cycle is excluded even when a BiPU closure with a minimum sits beside it
    (the two used to be judged together, and the BiPU kept both from being flagged)."""
    problem = GraphAdapter(cycle_graph(2.0, extra_bilu_cycle=True)).problem(parse_regularizer("l2"))
    names = list(problem.names or [])
    drifting = {names[i] for i in np.flatnonzero(problem.drifting_mask())}
    assert drifting == {"h3", "h4"}


@pytest.mark.parametrize(("c", "expected"), [(0.5, False), (1.0, False), (1.5, True), (100.0, True)])
def test_positive_flow_follows_the_gain_of_the_cycle(c: float, expected: bool) -> None:
    # x -> h0 <-> h1: conservation at h0 needs 1 + f = c·f
    dst, src = np.array([0, 1, 0]), np.array([-1, 0, 1])
    assert positive_flow_exists(np.array([0, 1]), dst, src, np.array([c, 1.0])) is expected
