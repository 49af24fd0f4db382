"""Training integration: penalty, decoupled decay, MLP view, balancing hooks, optimizer state."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import synbal
from synbal._adapters.dense import DenseNet
from synbal._adapters.torch.plain_mlp import mlp_view
from synbal._problem.regularizers import CustomRegularizer
from synbal.errors import ModelError, RegularizerError, SynbalError
from synbal.training import (
    BalanceSchedule,
    ModelBalance,
    TrainConfig,
    apply_decoupled_decay,
    regularized_parameters,
    regularizer_penalty,
    rescale_optimizer_state,
    train,
)


def _mlp(widths: list[int], act: type[nn.Module] = nn.ReLU, seed: int = 0, dtype: torch.dtype = torch.float64,
         bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers.append(nn.Linear(widths[k], widths[k + 1], bias=bias))
        if k < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers).to(dtype)


def _data(n: int = 96, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = (x[:, :classes] * torch.arange(1, classes + 1)).argmax(dim=1)
    return x, y


# ----------------------------------------------------------------------------- penalty

@pytest.mark.parametrize("reg", ["l2", "l1", "l0.5", "1*l2+0.1*l1"])
def test_penalty_equals_synbal_regularizer(reg: str) -> None:
    model = _mlp([5, 7, 4, 3])
    expected = synbal.deficit(mlp_view(model).net, reg).regularizer_value  # type: ignore[union-attr]
    assert float(regularizer_penalty(model, reg).detach()) == pytest.approx(expected, rel=1e-12)


def test_penalty_gradient_and_zero_weights() -> None:
    w = torch.tensor([0.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    regularizer_penalty([w], "l2").backward()
    assert w.grad is not None and w.grad.tolist() == [0.0, -4.0, 6.0]
    w.grad = None
    regularizer_penalty([w], "l0.5").backward()
    assert torch.isfinite(w.grad).all() and w.grad[0] == 0.0  # type: ignore[index]
    assert float(w.grad[2]) == pytest.approx(0.5 / math.sqrt(3.0))  # type: ignore[index]


def test_penalty_skips_normalization_and_rejects_custom() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    names = [n for n, _ in regularized_parameters(model)]
    assert names == ["0.weight", "0.bias", "3.weight", "3.bias"]
    custom = CustomRegularizer(g=np.log1p, dg=lambda x: 1 / (1 + x))
    with pytest.raises(RegularizerError, match="power regularizer"):
        regularizer_penalty(model, custom)


def test_decoupled_decay() -> None:
    w = torch.tensor([1.0, -2.0, 0.05], dtype=torch.float64)
    v = w.clone()
    apply_decoupled_decay([v], "l2", 0.1)
    torch.testing.assert_close(v, 0.8 * w)
    v = w.clone()
    apply_decoupled_decay([v], "l1", 0.1)
    torch.testing.assert_close(v, torch.tensor([0.9, -1.9, 0.0], dtype=torch.float64))  # no sign flip
    with pytest.raises(RegularizerError):
        apply_decoupled_decay([v], "l2", -1.0)


# ----------------------------------------------------------------------------- MLP view

def test_mlp_view_shares_memory_and_rejects_other_models() -> None:
    model = nn.Sequential(nn.Flatten(), *_mlp([4, 5, 3]))
    view = mlp_view(model)
    assert view is not None and view.names == ["1.weight", "1.bias", "3.weight", "3.bias"]
    view.net.weights[0][0, 0] = 42.0
    assert float(model[1].weight.detach()[0, 0]) == 42.0
    assert mlp_view(_mlp([4, 5, 3], act=nn.Tanh)) is None
    mixed = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.LeakyReLU(0.1), nn.Linear(3, 2))
    assert mlp_view(mixed) is None
    assert mlp_view(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.ReLU(), nn.Linear(3, 2))) is None
    leaky = mlp_view(_mlp([3, 4, 2], act=lambda: nn.LeakyReLU(0.2)))  # type: ignore[arg-type, return-value]
    assert leaky is not None and isinstance(leaky.net, DenseNet)
    assert mlp_view(nn.Linear(3, 2)) is None


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_factors_reproduce_balancing(bias: bool) -> None:
    model = _mlp([6, 8, 5, 3], act=lambda: nn.LeakyReLU(0.1), bias=bias)  # type: ignore[arg-type]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mb = ModelBalance(model)
    x = torch.randn(20, 6, dtype=torch.float64)
    out_before = model(x).detach()
    step = mb.balance("l2", "exact")
    assert step.converged and step.regularizer_after < step.regularizer_before
    torch.testing.assert_close(model(x).detach(), out_before, rtol=1e-10, atol=1e-12)
    assert mb.measure("l2")["max_relative_deficit"] < 1e-10
    # the factors of the same log-scales map the old parameters to the new ones
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            p.copy_(before[n])
        u = synbal.balance(mlp_view(fresh).net, "l2").log_scales  # type: ignore[union-attr]
    factors = ModelBalance(fresh).parameter_factors(u)
    for n, p in fresh.named_parameters():
        torch.testing.assert_close(before[n] * factors[p], dict(model.named_parameters())[n].detach())


def test_measure_reports_paper_deficit() -> None:
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[2].weight.fill_(1.0)
    m = ModelBalance(model).measure("l1")
    assert m["overall_deficit"] == pytest.approx(9.0)  # (4 − 1)²
    assert m["regularizer"] == pytest.approx(3.0) and m["frobenius_norm"] == pytest.approx(math.sqrt(5))
    assert m["max_relative_deficit"] == pytest.approx(1 / 3)
    assert m["reg_overall_deficit"] == pytest.approx(1.0)  # L1: (2 − 1)²


def test_non_mlp_needs_example_inputs() -> None:
    with pytest.raises(ModelError, match="example_inputs"):
        ModelBalance(_mlp([3, 4, 2], act=nn.Tanh))


# ----------------------------------------------------------------------------- optimizer state

def _trained_pair(opt_factory: type[torch.optim.Optimizer], **kw: float) -> tuple[nn.Module, nn.Module,
                                                                                torch.optim.Optimizer,
                                                                                torch.optim.Optimizer]:
    x, y = _data()
    a = _mlp([6, 9, 7, 3])
    opt_a = opt_factory(a.parameters(), **kw)
    for _ in range(3):
        opt_a.zero_grad()
        nn.functional.cross_entropy(a(x), y).backward()
        opt_a.step()
    b = copy.deepcopy(a)
    opt_b = opt_factory(b.parameters(), **kw)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # (shares tensors otherwise)
    return a, b, opt_a, opt_b


def _one_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    x, y = _data()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_sgd_momentum_transforms_like_gradients() -> None:
    a, b, opt_a, opt_b = _trained_pair(torch.optim.SGD, lr=0.05, momentum=0.9)
    u = synbal.balance(mlp_view(copy.deepcopy(a)).net, "l2").log_scales  # type: ignore[union-attr]
    mb = ModelBalance(b)
    mb.balance("l2", "exact", optimizer=opt_b)
    by_tensor = mb.parameter_factors(u)
    factors = {n: by_tensor[p] for n, p in b.named_parameters()}
    # a step with lr = 0 updates the buffers (buf ← μ·buf + g) without moving the weights, so the
    # balanced buffer must still be the unbalanced one divided by s: the transformed state is
    # consistent with the new gradients g/s (a buffer scaled like the weights would not be)
    for opt in (opt_a, opt_b):
        for group in opt.param_groups:
            group["lr"] = 0.0
    _one_step(a, opt_a)
    _one_step(b, opt_b)
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad / factors[n], rtol=1e-9, atol=1e-13)
        torch.testing.assert_close(opt_b.state[pb]["momentum_buffer"],
                                   opt_a.state[pa]["momentum_buffer"] / factors[n], rtol=1e-9, atol=1e-13)


def test_adam_step_is_unchanged_by_balancing() -> None:
    a, b, opt_a, opt_b = _trained_pair(torch.optim.Adam, lr=1e-2, eps=1e-30)
    ModelBalance(b).balance("l2", "exact", optimizer=opt_b)
    before_a = [p.detach().clone() for p in a.parameters()]
    before_b = [p.detach().clone() for p in b.parameters()]
    _one_step(a, opt_a)
    _one_step(b, opt_b)
    for pa, pb, qa, qb in zip(a.parameters(), b.parameters(), before_a, before_b, strict=True):
        torch.testing.assert_close(pb.detach() - qb, pa.detach() - qa, rtol=1e-7, atol=1e-12)


def test_reset_and_unknown_state() -> None:
    _, b, _, opt_b = _trained_pair(torch.optim.Adam, lr=1e-2)
    ModelBalance(b).balance("l2", "exact", optimizer=opt_b, optimizer_state="reset")
    assert not opt_b.state
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    opt.state[p]["mystery"] = torch.ones(3)
    with pytest.raises(SynbalError, match="mystery"):
        rescale_optimizer_state(opt, {p: torch.full((3,), 2.0)})
    rescale_optimizer_state(opt, {p: torch.full((3,), 2.0)}, policy="reset")
    assert p not in opt.state
    with pytest.raises(SynbalError, match="policy"):
        rescale_optimizer_state(opt, {}, policy="keep")  # type: ignore[arg-type]


def test_rmsprop_and_adagrad_state() -> None:
    for factory, kw in ((torch.optim.RMSprop, {"lr": 1e-3, "momentum": 0.5, "centered": True}),
                        (torch.optim.Adagrad, {"lr": 1e-2})):
        a, b, opt_a, opt_b = _trained_pair(factory, **kw)
        ModelBalance(b).balance("l2", "exact", optimizer=opt_b)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            key = "square_avg" if factory is torch.optim.RMSprop else "sum"
            ratio = pb.detach() / pa.detach()  # = s (no weight is exactly 0 here)
            torch.testing.assert_close(opt_b.state[pb][key] * ratio**2, opt_a.state[pa][key],
                                       rtol=1e-8, atol=1e-300)
            if factory is torch.optim.RMSprop:
                torch.testing.assert_close(opt_b.state[pb]["momentum_buffer"], opt_a.state[pa]["momentum_buffer"])


# ----------------------------------------------------------------------------- train loop

def test_regularized_training_moves_towards_balance(tmp_path: Path) -> None:
    x, y = _data(128)
    model = _mlp([6, 16, 8, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = TrainConfig(epochs=40, batch_size=32, reg="l2", beta=0.05, progress=False)
    hist = train(model, opt, (x, y), cfg, eval_data=_data(64, seed=1))
    epochs = hist.epochs()
    assert len(epochs) == 41 and epochs[0]["epoch"] == 0
    assert epochs[-1]["overall_deficit"] < 0.05 * epochs[0]["overall_deficit"]
    assert epochs[-1]["frobenius_norm"] < epochs[0]["frobenius_norm"]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "regularizer"} <= set(epochs[-1])
    hist.write_json(tmp_path / "h.json")
    hist.write_csv(tmp_path / "h.csv")
    loaded = json.loads((tmp_path / "h.json").read_text())
    assert loaded["settings"]["config"]["reg"] == "l2" and len(loaded["records"]) == 41
    assert (tmp_path / "h.csv").read_text().count("\n") == 42


def test_balance_hooks_and_decoupled_decay() -> None:
    x, y = _data(64)
    model = _mlp([6, 10, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = BalanceSchedule(at_start="exact", every=3, unit="step", method="layer", max_sweeps=1)
    cfg = TrainConfig(epochs=2, batch_size=16, reg="l1", beta=1e-3, reg_mode="decoupled",
                      log_every_steps=2, progress=False)
    hist = train(model, opt, (x, y), cfg, balance=sched)
    assert hist.epochs()[0]["max_relative_deficit"] < 1e-10
    ats = [e["at"] for e in hist.balance_events]
    assert ats[0] == "start" and ats.count("step") == 8 // 3
    assert all(e["sweeps"] <= 1 for e in hist.balance_events[1:])
    assert len(hist.column("loss", kind="step")) == 4


def test_eval_every_tests_every_kth_epoch_and_the_last() -> None:
    x, y = _data(64)
    model = _mlp([6, 10, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    cfg = TrainConfig(epochs=5, batch_size=16, monitor=False, progress=False, eval_every=2)
    hist = train(model, opt, (x, y), cfg, eval_data=_data(32, seed=1))
    tested = [math.isfinite(v) for v in hist.column("test_accuracy")]
    assert tested == [True, False, True, False, True, True]
    assert all(math.isfinite(v) for v in hist.column("train_loss")[1:])
    with pytest.raises(SynbalError, match="eval_every"):
        TrainConfig(epochs=1, batch_size=1, eval_every=0)


def test_divergence_is_recorded() -> None:
    x, y = _data(64)
    model = _mlp([6, 10, 3])
    opt = torch.optim.SGD(model.parameters(), lr=1e30)
    hist = train(model, opt, (x, y), TrainConfig(epochs=5, batch_size=8, monitor=False, progress=False))
    assert hist.settings["diverged"] is True and len(hist.epochs()) < 6


def test_autoencoder_targets_and_config_errors() -> None:
    x, _ = _data(32)
    model = _mlp([6, 4, 6])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    hist = train(model, opt, (x, x), TrainConfig(epochs=1, batch_size=8, loss="sse", progress=False))
    assert "train_accuracy" not in hist.epochs()[-1] and hist.epochs()[-1]["train_loss"] > 0
    with pytest.raises(SynbalError):
        TrainConfig(epochs=1, batch_size=0)
    with pytest.raises(SynbalError):
        TrainConfig(epochs=1, batch_size=1, beta=-1.0)
    with pytest.raises(SynbalError):
        BalanceSchedule(every=1, unit="batch")  # type: ignore[arg-type]
    with pytest.raises(SynbalError, match="unknown loss"):
        train(model, opt, (x, x), TrainConfig(epochs=1, batch_size=8, loss="hinge", progress=False))  # type: ignore[arg-type]


class _TwoLayer(nn.Module):
    """Not an nn.Sequential: goes through the PyTorch adapter, not the MLP view."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 9)
        self.b = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_torch_adapter_route_transforms_momentum() -> None:
    x, _ = _data()
    model = _TwoLayer().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        _one_step(model, opt)
    buffers = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mb = ModelBalance(model, example_inputs=x[:2])
    assert not mb.fast
    step = mb.balance("l2", "exact", optimizer=opt)
    assert step.converged
    for n, p in model.named_parameters():
        s = p.detach() / before[n]  # the factor (no weight is exactly zero here)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], buffers[n] / s, rtol=1e-8, atol=1e-14)


def test_on_step_drives_a_gram_monitor() -> None:
    from synbal.dynamics import GramMonitor

    x, y = _data(64)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Linear(8, 5, bias=False), nn.Linear(5, 3, bias=False))
    model = model.double()
    monitor = GramMonitor(every=2)
    monitor.update(model, 0)
    cfg = TrainConfig(epochs=2, batch_size=16, progress=False, monitor=False)
    train(model, torch.optim.SGD(model.parameters(), lr=1e-3), (x, y), cfg, on_step=monitor)
    steps = [rec.step for rec in monitor.history]
    assert steps == [0, 2, 4, 6, 8]
    # a linear net conserves C_l up to O(lr^2) per step
    assert max(float(rec.relative_drift.max()) for rec in monitor.history) < 1e-4
