"""A regularizer dispatches its own per-weight costs (``costs_for``, ``sum_of_powers``); adapters never ask its kind."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import synbal
from synbal._adapters.dense import DenseNet, DenseNetAdapter
from synbal._adapters.graph import GraphAdapter
from synbal._adapters.torch.adapter import TorchAdapter
from synbal._problem.costs import CostFunction, CostSink, PowerTerm
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal._problem.regularizers import CustomRegularizer, parse_regularizer
from synbal.errors import RegularizerError
from synbal.training._penalty import power_terms


class Recorder:
    """A sink that says which method the regularizer chose, and with what."""

    where = "a recorder"

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> tuple[str, Any]:
        return "power", [(t.coef, t.power) for t in terms]

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> tuple[str, Any]:
        return "custom", (g, dg)


def g(x: np.ndarray) -> np.ndarray:
    return np.log1p(x)


def dg(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + x)


def test_each_kind_picks_the_sink_method_of_its_cost_shape() -> None:
    assert parse_regularizer("1*l2+0.01*l1").costs_for(Recorder()) == ("power", [(1.0, 2.0), (0.01, 1.0)])
    assert parse_regularizer("l0.5").costs_for(Recorder()) == ("power", [(1.0, 0.5)])
    for spec in ("l2,1", "l1,inf", "l3,2+bias"):  # the ℓ_{p,q} rows are |w|^p
        p = float(spec[1])
        assert parse_regularizer(spec).costs_for(Recorder()) == ("power", [(1.0, p)])
    assert CustomRegularizer(g, dg).costs_for(Recorder()) == ("custom", (g, dg))
    for spec in ("linf", "linf+bias"):
        with pytest.raises(RegularizerError, match=re.escape(f"cannot use regularizer {spec} on a recorder: it has "
                                                             "no per-weight costs")):
            parse_regularizer(spec).costs_for(Recorder())


def test_sum_of_powers_is_r_itself_or_none() -> None:
    reg = parse_regularizer("l2+0.5*l1")
    assert reg.sum_of_powers == (PowerTerm(1.0, 2.0), PowerTerm(0.5, 1.0))
    for other in ("l2,1", "l2,2+bias", "linf"):  # a norm is the p-th root of a sum, the max-norm a max
        assert parse_regularizer(other).sum_of_powers is None
    assert CustomRegularizer(g, dg).sum_of_powers is None
    assert power_terms("l2") == (PowerTerm(1.0, 2.0),)
    with pytest.raises(RegularizerError, match="training penalty needs a power regularizer"):
        power_terms("l2,1")


# ---------------------------------------------------------------------------- through the adapters
def _graph() -> synbal.Graph:
    rng = np.random.default_rng(3)
    return synbal.Graph.from_layers([rng.normal(size=(3, 2)), rng.normal(size=(4, 3)), rng.normal(size=(1, 4))],
                                    [rng.normal(size=3), None, rng.normal(size=1)])


def _dense() -> DenseNet:
    rng = np.random.default_rng(4)
    return DenseNet([rng.normal(size=(3, 2)), rng.normal(size=(2, 3))], [rng.normal(size=3), None])


def _torch() -> TorchAdapter:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    return TorchAdapter(model, example_inputs=(torch.zeros(1, 2, dtype=torch.float64),))


ADAPTERS = {"a graph": lambda: GraphAdapter(_graph()), "a DenseNet": lambda: DenseNetAdapter(_dense()),
            "a PyTorch model": _torch}


@pytest.mark.parametrize("where", sorted(ADAPTERS))
def test_adapters_refuse_a_regularizer_without_costs_saying_what_and_where(where: str) -> None:
    adapter = ADAPTERS[where]()
    with pytest.raises(RegularizerError, match=f"cannot use regularizer linf on {where}"):
        adapter.problem(parse_regularizer("linf"))
    if isinstance(adapter, GraphAdapter):
        with pytest.raises(RegularizerError, match=f"cannot use regularizer linf on {where}"):
            adapter.problem_as_given(parse_regularizer("linf"))


@dataclass(frozen=True)
class TwiceL2(RegularizerBehaviour):
    """A kind no adapter has seen: ``2·Σ|w|²``, stated only by its own costs."""

    def costs_for(self, sink: CostSink[Any]) -> Any:
        return sink.power_costs((PowerTerm(2.0, 2.0),))

    def __str__(self) -> str:
        return "2*l2"


@dataclass(frozen=True)
class SquareCost(RegularizerBehaviour):
    """Another unseen kind: ``Σ|w|²`` given as a custom cost."""

    def costs_for(self, sink: CostSink[Any]) -> Any:
        return sink.custom_costs(lambda x: x**2, lambda x: 2 * x)


@pytest.mark.parametrize("where", sorted(ADAPTERS))
def test_a_new_kind_needs_no_adapter_change(where: str) -> None:
    adapter = ADAPTERS[where]()
    l2: BalanceProblem = adapter.problem(parse_regularizer("l2"))
    twice: BalanceProblem = adapter.problem(TwiceL2())
    square: BalanceProblem = adapter.problem(SquareCost())
    assert square.custom is not None and twice.custom is None
    u = np.linspace(-0.4, 0.3, l2.n)
    assert twice.value(u) == pytest.approx(2 * l2.value(u), rel=1e-14)
    assert square.value(u) == pytest.approx(l2.value(u), rel=1e-12)
    for a, b in zip(twice.in_out(u), l2.in_out(u), strict=True):
        np.testing.assert_allclose(a, 2 * b, rtol=1e-14)


def test_a_new_kind_balances_end_to_end() -> None:
    net = _graph()
    expected = synbal.balance(net, "l2", tol=1e-12).log_scales
    for reg in (TwiceL2(), SquareCost()):
        got = synbal.balance(net, reg, tol=1e-12).log_scales  # type: ignore[arg-type]
        assert got.shape == expected.shape == (3 + 4,)
        np.testing.assert_allclose(got, expected, atol=1e-8)
