"""Methods are registered objects that declare their options; regularizers carry their behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import synbal
from synbal._linf.regularizer import MaxNormRegularizer
from synbal._problem.lpq import LpqRegularizer, parse_lpq
from synbal._problem.regularizers import CustomRegularizer, PowerRegularizer, parse_regularizer
from synbal._solvers import METHODS, SolveOptions, method_named, solve
from synbal._solvers.multiplicative import lpq_max_stationarity, lpq_norm
from synbal.errors import OptionError, RegularizerError, SynbalError


def layered() -> synbal.Graph:
    rng = np.random.default_rng(0)
    return synbal.Graph.from_layers([rng.normal(size=(3, 2)), rng.normal(size=(4, 3)), rng.normal(size=(1, 4))])


def test_the_registry_maps_names_to_methods_with_their_options() -> None:
    assert sorted(METHODS) == sorted(synbal.METHODS)
    assert set(METHODS) == {"exact", "multiplicative", "stochastic", "cyclic", "layer", "alternating", "tied"}
    for name, method in METHODS.items():
        assert method.name == name and method_named(name) is method
        assert {"tol", "max_sweeps", "seed", "progress"} <= set(method.accepted())
    assert METHODS["tied"].options == ("theta", "sets", "closed_form")
    assert METHODS["exact"].options == ()
    with pytest.raises(SynbalError, match="unknown method 'fast'; choose one of alternating"):
        method_named("fast")


@pytest.mark.parametrize(("method", "option"), [
    ("exact", {"closed_form": True}), ("exact", {"theta": 0.5}), ("exact", {"sets": [["h1_0"]]}),
    ("stochastic", {"sets": [["h1_0", "h1_1"]]}), ("cyclic", {"closed_form": True}),
    ("layer", {"sets": [["h1_0"]]}), ("multiplicative", {"sets": [["h1_0"]]}),
    ("cyclic", {"sets": np.array([["h1_0", "h1_1"]])}),
])
def test_an_option_the_method_does_not_take_is_refused_naming_those_it_takes(method: str, option: dict) -> None:
    g = layered()
    key = next(iter(option))
    with pytest.raises(OptionError) as info:
        synbal.balance(g, "l2", method, **option)
    text = str(info.value)
    assert f"method {method!r} does not take {key}=" in text
    assert ", ".join(METHODS[method].accepted()) in text


def test_options_a_method_takes_still_work() -> None:
    g = layered()
    names = [[f"h1_{k}" for k in range(3)], [f"h2_{k}" for k in range(4)]]
    assert synbal.balance(g, "l2", "tied", sets=names).converged
    assert synbal.balance(g, "l2", "stochastic", theta=0.5, seed=3).converged
    assert synbal.balance(g, "l2", "exact", seed=3).converged  # seed: taken (and ignored) by every method


def test_solve_checks_the_options_too() -> None:
    problem = synbal._adapters.graph.GraphAdapter(layered()).problem(parse_regularizer("l2"))
    with pytest.raises(OptionError, match="method 'cyclic' does not take closed_form=True"):
        solve(problem, parse_regularizer("l2"), "cyclic", SolveOptions(closed_form=True))
    with pytest.raises(OptionError, match="method 'stochastic' does not take sets="):
        solve(problem, parse_regularizer("l2"), "stochastic", SolveOptions(sets=[np.arange(3)]))


def test_a_misspelt_keyword_names_the_options_taken() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(OptionError, match="unknown option examples_inputs= for a Sequential") as info:
        synbal.balance(model, "l2", examples_inputs=torch.zeros(1, 3))
    assert "example_inputs" in str(info.value) and "tol" in str(info.value)
    with pytest.raises(OptionError, match="unknown option examples_inputs= for a Graph"):
        synbal.balance(layered(), "l2", examples_inputs=1)
    with pytest.raises(OptionError, match="example_inputs, verify"):
        synbal.deficit(model, "l2", examples_inputs=torch.zeros(1, 3))


def test_regularizers_say_which_methods_minimise_them() -> None:
    lpq = parse_lpq("l2,1")
    assert lpq.methods() == ("multiplicative",) and lpq.default_method == "multiplicative"
    with pytest.raises(RegularizerError, match="only method 'multiplicative'"):
        lpq.check_method("exact")
    assert parse_lpq("l2,2+bias").methods() is None  # exactly "l2"
    for reg in (parse_regularizer("l2"), CustomRegularizer(np.abs, np.sign)):
        assert reg.methods() is None and reg.default_method == "exact" and reg.additive
    linf = parse_regularizer("linf")
    assert isinstance(linf, MaxNormRegularizer) and linf.aggregated() is None and not linf.additive
    with pytest.raises(RegularizerError, match="does not minimise the max-norm; use one of exact, cyclic, stochastic"):
        linf.check_method("tied")
    with pytest.raises(SynbalError, match="does not minimise the max-norm"):
        synbal.balance(layered(), "linf", "layer")


def test_regularizers_carry_objective_costs_and_stationarity() -> None:
    g = layered()
    problem = synbal._adapters.graph.GraphAdapter(g).problem(parse_regularizer("l2"))
    u = np.linspace(-0.3, 0.4, problem.n)
    l2 = parse_regularizer("l2")
    assert l2.objective(problem)(u) == problem.value(u)
    assert l2.stationarity(problem, u) == problem.max_relative_deficit(u)
    lpq = parse_lpq("l2,1")
    agg = lpq.aggregated()
    assert isinstance(agg, PowerRegularizer) and agg.powers == (2.0,)
    assert lpq.objective(problem)(u) == lpq_norm(problem, lpq, u)
    assert lpq.stationarity(problem, u) == lpq_max_stationarity(problem, lpq, u)
    assert lpq.per_unit and not parse_lpq("l2,2+bias").per_unit and not l2.per_unit
    assert LpqRegularizer.of(l2) == LpqRegularizer(2.0, 2.0, True)
    assert LpqRegularizer.of(parse_regularizer("l2+l1")) is None


def test_custom_costs_run_every_schedule_through_the_python_steps() -> None:
    g = layered()
    custom = CustomRegularizer(g=lambda x: x**2, dg=lambda x: 2 * x)
    target = synbal.balance(g, "l2", tol=1e-12).log_scales
    for method in ("stochastic", "cyclic", "layer", "alternating"):
        res = synbal.balance(g, custom, method, tol=1e-9, seed=1)
        assert res.converged and np.allclose(res.log_scales, target, atol=1e-6), method
