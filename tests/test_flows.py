"""Weight-balancing flows (float64 torch MLPs)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from synbal._adapters.dense import DenseNetAdapter
from synbal._adapters.torch.plain_mlp import mlp_view
from synbal._problem.lpq import LpqRegularizer
from synbal._problem.regularizers import CustomRegularizer, parse_regularizer
from synbal._solvers.flows import WeightBalancingFlow, aggregation_regularizer, balance_stationarity, lpq_penalty
from synbal._solvers.multiplicative import UnitNorms
from synbal.errors import ModelError, RegularizerError
from synbal.training._penalty import regularizer_penalty


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets: torch's thread pool only adds overhead on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_mlp(seed: int = 0, widths: tuple[int, ...] = (5, 8, 6, 3)) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for k in range(1, len(widths)):
        layers.append(nn.Linear(widths[k - 1], widths[k]))
        if k < len(widths) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(64, 5, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def gd_vs_flow(reg: str, eta: float, total_time: float = 0.6, beta: float = 0.05) -> float:
    """Relative distance at time T between GD on E + βR and the flow, from one balanced start."""
    X, Y = data()
    start = make_mlp()
    WeightBalancingFlow(start, torch.optim.SGD(start.parameters(), lr=eta), reg)  # balance the start
    gd, fl = copy.deepcopy(start), copy.deepcopy(start)
    opt = torch.optim.SGD(gd.parameters(), lr=eta)
    flow = WeightBalancingFlow(fl, torch.optim.SGD(fl.parameters(), lr=eta), reg, strength=beta)
    for _ in range(round(total_time / eta)):
        opt.zero_grad()
        (((gd(X) - Y) ** 2).mean() + beta * regularizer_penalty(gd, reg)).backward()
        opt.step()
        flow.zero_grad()
        (((fl(X) - Y) ** 2).mean() + flow.penalty()).backward()
        flow.step()
    a, b = flat(gd), flat(fl)
    return float((a - b).norm() / b.norm())


def test_l2_flow_is_gradient_descent_up_to_step_size() -> None:
    d = [gd_vs_flow("l2", eta) for eta in (0.04, 0.02, 0.01)]
    # first order in the step size: halving η halves the gap, and the gap is tiny
    assert d[0] < 1e-3
    assert 1.7 < d[0] / d[1] < 2.3 and 1.7 < d[1] / d[2] < 2.3


def test_l1_flow_is_not_gradient_descent() -> None:
    d = [gd_vs_flow("l1", eta) for eta in (0.04, 0.02)]
    # the gap does not vanish with the step size: a genuinely different flow
    assert min(d) > 0.02 and d[1] > 0.8 * d[0]


@pytest.mark.parametrize("reg", ["l2", "l1", "l2,1", "l1,2", "l2,inf"])
def test_flow_stays_balanced_and_function_unchanged(reg: str) -> None:
    X, Y = data()
    model = make_mlp(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    flow = WeightBalancingFlow(model, opt, reg, strength=1e-2, tol=1e-10, max_sweeps=20_000)
    assert flow.stationarity() < 1e-9
    for _ in range(15):
        flow.zero_grad()
        (((model(X) - Y) ** 2).mean() + flow.penalty()).backward()
        flow.optimizer.step()
        moved = flow.stationarity()
        out_before = model(X).detach()
        result = flow.rebalance()
        assert result.converged
        torch.testing.assert_close(model(X).detach(), out_before, rtol=1e-10, atol=1e-12)
        assert flow.stationarity() < 1e-8 < moved  # the step broke balance; the orbit motion restores it


def test_rebalancing_lowers_penalty_only() -> None:
    X, _ = data()
    for reg in ("l1", "l2,1", "l1,inf"):
        model = make_mlp(7)
        before = float(regularizer_penalty(model, "l2").detach())
        out = model(X).detach()
        flow = WeightBalancingFlow(model, torch.optim.SGD(model.parameters(), lr=0.1), reg,
                                   balance_at_start=False)
        r0 = _value(model, reg)
        flow.rebalance()
        assert _value(model, reg) < r0
        torch.testing.assert_close(model(X).detach(), out)
        assert before > 0


def _value(model: nn.Module, reg: str) -> float:
    parsed = parse_regularizer(reg)
    if isinstance(parsed, LpqRegularizer):
        return float(lpq_penalty(model, parsed).detach())
    return float(regularizer_penalty(model, reg).detach())


@pytest.mark.parametrize("reg", ["l2,1", "l1,2+bias", "l2,inf", "l1,3"])
def test_lpq_penalty_matches_balance_problem(reg: str) -> None:
    model = make_mlp(2)
    lpq = parse_regularizer(reg)
    assert isinstance(lpq, LpqRegularizer)
    view = mlp_view(model)
    assert view is not None
    problem = DenseNetAdapter(view.net).problem(aggregation_regularizer(lpq))
    expected = lpq.norm_from_unit_costs(UnitNorms(problem, lpq.p, lpq.include_bias).costs(np.zeros(problem.n)))
    assert float(lpq_penalty(model, lpq).detach()) == pytest.approx(expected, rel=1e-12)
    # the gradient exists and is finite
    lpq_penalty(model, lpq).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class TwoLayer(nn.Module):
    """Not a Sequential: goes through the PyTorch adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 7)
        self.b = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


@pytest.mark.parametrize("reg", ["l1", "l2,1"])
def test_flow_on_a_traced_model(reg: str) -> None:
    torch.manual_seed(0)
    model = TwoLayer().double()
    X, Y = data()
    flow = WeightBalancingFlow(model, torch.optim.SGD(model.parameters(), lr=0.05), reg,
                               example_inputs=(X[:2],))
    assert flow.stationarity() < 1e-9
    if isinstance(parse_regularizer(reg), LpqRegularizer):
        with pytest.raises(ModelError, match="plain MLP"):
            flow.penalty()
        return
    for _ in range(3):
        flow.zero_grad()
        (((model(X) - Y) ** 2).mean() + 0.01 * flow.penalty()).backward()
        flow.step()
        assert flow.stationarity() < 1e-8


def test_bad_inputs() -> None:
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RegularizerError, match="flow"):
        WeightBalancingFlow(model, opt, CustomRegularizer(np.abs, np.sign))
    with pytest.raises(RegularizerError, match="strength"):
        WeightBalancingFlow(model, opt, "l1", strength=-1.0)
    with pytest.raises(ModelError, match="example_inputs"):
        WeightBalancingFlow(TwoLayer(), opt, "l1")
    with pytest.raises(RegularizerError, match="lpq_penalty"):
        lpq_penalty(model, "l2")


def test_balance_stationarity_zero_after_balancing() -> None:
    model = make_mlp(5)
    view = mlp_view(model)
    assert view is not None
    problem = DenseNetAdapter(view.net).problem(aggregation_regularizer(parse_regularizer("l2,1")))
    assert balance_stationarity(problem, parse_regularizer("l2,1")) > 1e-3
    WeightBalancingFlow(model, torch.optim.SGD(model.parameters(), lr=0.1), "l2,1")
    view = mlp_view(model)
    assert view is not None
    problem = DenseNetAdapter(view.net).problem(aggregation_regularizer(parse_regularizer("l2,1")))
    assert balance_stationarity(problem, parse_regularizer("l2,1")) < 1e-9
