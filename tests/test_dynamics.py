"""Layer dynamics: Gram differences C_l, their link to per-neuron L2 deficits, rates, monitor, inits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import synbal
from synbal._adapters.dense import DenseNet
from synbal.dynamics import (
    GramMonitor,
    balanced_init,
    glorot_init,
    gram_differences,
    gram_rates,
    layer_norms,
    layer_weights,
    linear_layers,
    load_weights,
    neuron_deficits,
)
from synbal.errors import ModelError, SynbalError

widths_strategy = st.lists(st.integers(1, 7), min_size=2, max_size=5)


def _mlp(widths: list[int], act: type[torch.nn.Module] | None, seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    mods: list[torch.nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(widths)):
        mods.append(torch.nn.Linear(a, b, bias=False))
        if act is not None and k < len(widths) - 2:
            mods.append(act())
    return torch.nn.Sequential(*mods).double()


def _unit_deficits(report: synbal.DeficitReport) -> dict[str, float]:
    return {u.name: u.IN - u.OUT for u in report.units}


# ------------------------------------------------------------------ diag(C_l) = IN − OUT


def test_diag_c_equals_deficit_of_densenet() -> None:
    Ws = glorot_init([5, 4, 3, 2], seed=3, distribution="normal")
    rep = _unit_deficits(synbal.deficit(DenseNet([W.copy() for W in Ws], activation="linear"), "l2"))
    for layer, diag in enumerate(neuron_deficits(Ws), start=1):
        for k, value in enumerate(diag):
            assert rep[f"layer{layer}.{k}"] == pytest.approx(value, rel=1e-12, abs=1e-12)


@given(widths=widths_strategy, seed=st.integers(0, 1000))
@settings(max_examples=25, deadline=None)
def test_diag_c_equals_deficit_of_graph(widths: list[int], seed: int) -> None:
    from synbal._adapters.graph import Graph

    if len(widths) < 3:
        widths = [*widths, 2]
    Ws = glorot_init(widths, seed=seed, distribution="normal")
    rep = _unit_deficits(synbal.deficit(Graph.from_layers(Ws, activation="relu"), "l2"))
    for layer, diag in enumerate(neuron_deficits(Ws), start=1):
        for k, value in enumerate(diag):
            assert rep[f"h{layer}_{k}"] == pytest.approx(value, rel=1e-10, abs=1e-12)


def test_diag_c_equals_deficit_of_torch_model() -> None:
    net = _mlp([6, 5, 4, 3], torch.nn.ReLU, seed=1)
    rep = _unit_deficits(synbal.deficit(net, "l2", example_inputs=torch.randn(2, 6, dtype=torch.float64)))
    names = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(rep) == 9
    for layer, diag in enumerate(neuron_deficits(net)):
        for k, value in enumerate(diag):  # the torch adapter names hidden unit k of module "0" as "0[k]"
            assert rep[f"{names[layer]}[{k}]"] == pytest.approx(value, rel=1e-10, abs=1e-12)


def test_c_matches_definition() -> None:
    Ws = glorot_init([3, 4, 2], seed=0)
    C = gram_differences(Ws)
    assert len(C) == 1 and C[0].shape == (4, 4)
    np.testing.assert_allclose(C[0], Ws[0] @ Ws[0].T - Ws[1].T @ Ws[1])
    np.testing.assert_allclose(np.diag(C[0]), neuron_deficits(Ws)[0])
    np.testing.assert_allclose(C[0], C[0].T)


# ------------------------------------------------------------------ reading models


def test_layer_weights_from_torch_densenet_and_list_agree() -> None:
    net = _mlp([4, 3, 2], torch.nn.Tanh)
    Ws = layer_weights(net)
    assert [W.shape for W in Ws] == [(3, 4), (2, 3)]
    assert all(W.dtype == np.float64 for W in Ws)
    dense = DenseNet([W.copy() for W in Ws], activation="linear")
    np.testing.assert_array_equal(layer_weights(dense)[1], Ws[1])
    Ws[0][0, 0] = 123.0  # a copy: the model is untouched
    assert net[0].weight.detach()[0, 0].item() != 123.0
    expected = [torch.linalg.norm(m.weight).item() for m in linear_layers(net)]
    np.testing.assert_allclose(layer_norms(net), expected)


def test_non_linear_parametrised_module_is_rejected() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    with pytest.raises(ModelError, match="BatchNorm1d"):
        layer_weights(net)
    with pytest.raises(ModelError, match=r"no nn\.Linear"):
        layer_weights(torch.nn.Sequential(torch.nn.ReLU()))
    with pytest.raises(ModelError, match="does not follow"):
        layer_weights([np.ones((3, 2)), np.ones((1, 4))])
    with pytest.raises(ModelError, match="NaN"):
        layer_weights([np.full((2, 2), np.nan)])
    with pytest.raises(ModelError, match="2-D"):
        layer_weights([np.ones(3)])


# ------------------------------------------------------------------ rates and gradient descent


def _full_batch_grads(net: torch.nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> None:
    net.zero_grad()
    loss = 0.5 * ((net(x) - y) ** 2).sum(dim=1).mean()
    loss.backward()


def test_linear_net_rates_cancel_theorem_1() -> None:
    net = _mlp([5, 4, 3, 2], None, seed=2)
    x, y = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 2, dtype=torch.float64)
    _full_batch_grads(net, x, y)
    rates = gram_rates(net)
    for inc, diff in zip(rates.incoming, rates.difference, strict=True):
        assert np.linalg.norm(inc) > 1e-3
        assert np.linalg.norm(diff) < 1e-12 * max(1.0, np.linalg.norm(inc))
    assert np.all(rates.relative_asymmetry() < 1e-12)


def test_relu_breaks_off_diagonal_symmetry_but_not_the_diagonal() -> None:
    net = _mlp([5, 6, 6, 2], torch.nn.ReLU, seed=4)
    x, y = torch.randn(80, 5, dtype=torch.float64), torch.randn(80, 2, dtype=torch.float64)
    _full_batch_grads(net, x, y)
    rates = gram_rates(net)
    for diff in rates.difference:
        np.testing.assert_allclose(np.diag(diff), 0.0, atol=1e-12)  # per-neuron law survives ReLU
    assert np.all(rates.relative_asymmetry() > 1e-3)  # the matrix law does not


def test_one_gd_step_changes_c_by_exactly_eta_squared_term() -> None:
    net = _mlp([4, 5, 3, 2], None, seed=5)
    x, y = torch.randn(30, 4, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    _full_batch_grads(net, x, y)
    before = gram_differences(net)
    G = [m.weight.grad.detach().numpy().copy() for m in linear_layers(net)]
    eta = 0.05
    with torch.no_grad():
        for m in linear_layers(net):
            m.weight -= eta * m.weight.grad
    after = gram_differences(net)
    for k in range(len(before)):
        expected = eta**2 * (G[k] @ G[k].T - G[k + 1].T @ G[k + 1])
        np.testing.assert_allclose(after[k] - before[k], expected, atol=1e-13)


def test_gram_rates_checks_inputs() -> None:
    net = _mlp([3, 2, 1], None)
    with pytest.raises(SynbalError, match="backward"):
        gram_rates(net)
    with pytest.raises(SynbalError, match="do not match"):
        gram_rates([np.ones((2, 3)), np.ones((1, 2))], [np.ones((2, 3))])


# ------------------------------------------------------------------ monitor


def _train_linear(lr: float, steps: int, monitor: GramMonitor, seed: int = 0) -> None:
    net = _mlp([6, 5, 4, 3], None, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(100, 6, generator=gen, dtype=torch.float64)
    y = x @ torch.randn(6, 3, generator=gen, dtype=torch.float64)
    monitor.update(net, 0)
    for step in range(1, steps + 1):
        _full_batch_grads(net, x, y)
        with torch.no_grad():
            for m in linear_layers(net):
                m.weight -= lr * m.weight.grad
        monitor(net, step)


def test_monitor_drift_shrinks_in_proportion_to_the_learning_rate() -> None:
    drifts = []
    for lr, steps in ((0.02, 50), (0.01, 100)):  # the same training time T = 1
        mon = GramMonitor()
        _train_linear(lr, steps, mon)
        arr = mon.as_arrays()
        assert arr["norms"].shape == (steps + 1, 3) and arr["drift"].shape == (steps + 1, 2)
        assert np.all(arr["drift"][0] == 0.0)
        drifts.append(arr["drift"][-1])
    ratio = drifts[0] / drifts[1]
    assert np.all((ratio > 1.6) & (ratio < 2.4)), ratio


def test_monitor_every_and_deficits() -> None:
    mon = GramMonitor(every=10, record_deficits=True)
    _train_linear(0.01, 25, mon)
    assert [r.step for r in mon.history] == [0, 10, 20]
    rec = mon.history[-1]
    assert rec.deficits is not None and [d.shape for d in rec.deficits] == [(5,), (4,)]
    assert np.all(rec.diagonal_drift <= rec.drift + 1e-15)
    with pytest.raises(SynbalError, match="every"):
        GramMonitor(every=0)
    with pytest.raises(SynbalError, match="no observations"):
        GramMonitor().as_arrays()
    with pytest.raises(SynbalError, match="shapes changed"):
        mon.update([np.ones((2, 6)), np.ones((3, 2))], 30)


# ------------------------------------------------------------------ initializations


@given(widths=widths_strategy, seed=st.integers(0, 10_000))
@settings(max_examples=40, deadline=None)
def test_balanced_init_has_zero_c_and_equal_norms(widths: list[int], seed: int) -> None:
    Ws = balanced_init(widths, seed=seed)
    assert [W.shape for W in Ws] == [(b, a) for a, b in itertools.pairwise(widths)]
    for C in gram_differences(Ws):
        assert np.abs(C).max() < 1e-12 * max(1.0, np.linalg.norm(Ws[0]) ** 2)
    norms = layer_norms(Ws)
    np.testing.assert_allclose(norms, norms[0], rtol=1e-12)


def test_balanced_init_layer_norm_and_product() -> None:
    Ws = balanced_init([10, 8, 6, 4, 3], seed=1, layer_norm=0.7)
    np.testing.assert_allclose(layer_norms(Ws), 0.7, rtol=1e-12)
    A = np.random.default_rng(0).standard_normal((3, 10))
    Ws = balanced_init([10, 8, 6, 4, 3], seed=2, product=A)
    np.testing.assert_allclose(Ws[3] @ Ws[2] @ Ws[1] @ Ws[0], A, atol=1e-12)
    assert max(np.abs(C).max() for C in gram_differences(Ws)) < 1e-12
    with pytest.raises(SynbalError, match="rank"):
        balanced_init([4, 2, 4], product=np.eye(4))
    with pytest.raises(SynbalError, match="shape"):
        balanced_init([4, 2, 3], product=np.eye(4))
    with pytest.raises(SynbalError, match="widths"):
        balanced_init([4])
    with pytest.raises(SynbalError, match="layer_norm"):
        balanced_init([4, 3], layer_norm=-1.0)


def test_balanced_init_stays_balanced_under_linear_gradient_flow() -> None:
    net = _mlp([6, 5, 4, 3], None)
    load_weights(net, balanced_init([6, 5, 4, 3], seed=0, layer_norm=1.0))
    mon = GramMonitor()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 6, generator=gen, dtype=torch.float64)
    y = 3.0 * x @ torch.randn(6, 3, generator=gen, dtype=torch.float64)
    mon.update(net, 0)
    for step in range(1, 201):
        _full_batch_grads(net, x, y)
        with torch.no_grad():
            for m in linear_layers(net):
                m.weight -= 2e-3 * m.weight.grad
        mon.update(net, step)
    arr = mon.as_arrays()
    assert arr["norms"][-1, 0] > 1.2 * arr["norms"][0, 0]  # it did learn
    spread = arr["norms"].max(axis=1) - arr["norms"].min(axis=1)
    # Corollary 2.2: equal norms at all times, up to the O(η) drift of finite steps
    assert spread.max() < 5e-3 * arr["norms"].max()
    assert arr["relative_drift"].max() < 1e-2


def test_glorot_init_statistics() -> None:
    for dist in ("uniform", "normal"):
        W = glorot_init([400, 200, 2], seed=0, distribution=dist)[0]
        assert W.shape == (200, 400)
        assert W.var() == pytest.approx(2.0 / 600, rel=0.03)
    assert np.abs(glorot_init([400, 200], seed=0)[0]).max() <= np.sqrt(6.0 / 600)
    a, b = glorot_init([3, 2], seed=7), glorot_init([3, 2], seed=7)
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(SynbalError, match="distribution"):
        glorot_init([3, 2], distribution="cauchy")


def test_load_weights_roundtrip_and_checks() -> None:
    net = _mlp([4, 3, 2], torch.nn.ReLU).float()
    Ws = glorot_init([4, 3, 2], seed=1)
    load_weights(net, Ws)
    np.testing.assert_allclose(layer_weights(net)[1], Ws[1], rtol=1e-6)
    assert net[0].weight.dtype == torch.float32
    with pytest.raises(ModelError, match="matrices for"):
        load_weights(net, Ws[:1])
    with pytest.raises(ModelError, match="shape"):
        load_weights(net, [Ws[0], np.ones((3, 2))])
