"""The max-norm regularizer "linf": hand-worked answers, uniqueness, invariance, function checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import synbal
from synbal._adapters.protocol import adapter_for
from synbal._linf import MaxGraph, lexmin_lp, local_sweeps, max_balance_unit_degree, parse_linf
from synbal._linf.front import max_problem
from synbal.errors import RegularizerError, SynbalError


def _graph(edges, hidden, biases=None, act="relu"):
    names = {n for e in edges for n in e[:2]}
    units = [{"name": n, "role": "input"} for n in sorted(names) if n.startswith("x")]
    units += [{"name": h, "role": "hidden", "activation": act if isinstance(act, str) else act.get(h, "relu")}
              for h in hidden]
    units += [{"name": n, "role": "output"} for n in sorted(names) if n.startswith("y")]
    return synbal.Graph.from_dict({"format": "synbal.graph/1", "units": units,
                                   "edges": [list(e) for e in edges], "biases": biases or {}})


def _weights(net):
    return np.array([w for _, _, w in net.edges])


def _random_graph(rng, n_hidden, p_edge, recurrent):
    hidden = [f"h{i}" for i in range(n_hidden)]
    edges = []
    for i, h in enumerate(hidden):
        edges.append(("x0", h, float(rng.normal())))
        edges.append((h, "y0", float(rng.normal())))
        for j, g in enumerate(hidden):
            if i != j and (recurrent or j > i) and rng.random() < p_edge:
                edges.append((h, g, float(rng.normal() * np.exp(rng.uniform(-2, 2)))))
    return _graph(edges, hidden)


def _rescaled(net, rng):
    """The same function with every hidden unit scaled by e^U(-3,3)."""
    adapter = adapter_for(net)
    n = len(adapter.names)
    return adapter.apply(rng.uniform(-3, 3, size=n), inplace=False)


def test_chain_of_two_units_equalises_all_three_weights():
    g = _graph([("x0", "h0", 8.0), ("h0", "h1", -0.5), ("h1", "y0", 2.0)], ["h0", "h1"])
    res = synbal.balance(g, "linf")
    w = _weights(res.net)
    assert np.allclose(np.abs(w), 2.0, rtol=1e-12)  # (8 · 0.5 · 2)^(1/3)
    assert np.sign(w).tolist() == [1.0, -1.0, 1.0]
    assert res.regularizer_before == pytest.approx(8.0) and res.regularizer_after == pytest.approx(2.0)
    assert res.converged and res.max_relative_deficit < 1e-12


def test_bipu_degree_two_balances_max_in_against_max_out():
    # h of degree 2: IN = 4λ, OUT = 0.5/λ², balanced at λ³ = 1/8 (IN = OUT, no factor c)
    g = _graph([("x0", "h0", 4.0), ("h0", "y0", 0.5)], ["h0"],
               act={"h0": {"type": "bipu", "c": 2.0, "C": 1.0, "D": 0.0}})
    res = synbal.balance(g, "linf")
    assert res.scales["h0"] == pytest.approx(0.5, rel=1e-9)
    assert np.allclose(np.abs(_weights(res.net)), 2.0, rtol=1e-9)
    x = np.random.default_rng(0).normal(size=(6, 1))
    assert np.allclose(g.simulate(x), res.net.simulate(x), rtol=1e-10)


def test_hidden_cycle_makes_per_unit_balance_non_unique_and_exact_picks_the_max_balanced_state():
    # h0 <-> h1 with weights 8 dominate both units: any common scale t in [1/8, 8] is per-unit
    # balanced. The canonical state also balances the cut {h0, h1}: 2t = 0.5/t, t = 1/2.
    edges = [("x0", "h0", 2.0), ("h0", "h1", 8.0), ("h1", "h0", 8.0), ("h1", "y0", 0.5)]
    g = _graph(edges, ["h0", "h1"])
    assert synbal.deficit(g, "linf").max_relative_deficit == 0.0  # already per-unit balanced
    assert synbal.balance(g, "linf", method="cyclic").scales == {"h0": 1.0, "h1": 1.0}
    res = synbal.balance(g, "linf")
    assert res.scales["h0"] == pytest.approx(0.5) and res.scales["h1"] == pytest.approx(0.5)
    assert np.allclose(np.abs(_weights(res.net)), [1.0, 8.0, 8.0, 1.0])
    # a rescaled copy: sweeps keep whatever balanced state they start in, exact does not care
    moved = _rescaled(g, np.random.default_rng(1))
    sweep = synbal.balance(moved, "linf", method="cyclic", tol=1e-12)
    assert sweep.converged
    assert not np.allclose(np.abs(_weights(sweep.net)), [1.0, 8.0, 8.0, 1.0], rtol=1e-3)
    assert np.allclose(_weights(synbal.balance(moved, "linf").net), _weights(res.net), rtol=1e-10)


@pytest.mark.parametrize("recurrent", [False, True])
def test_contraction_matches_the_lexicographic_lp_and_balances_every_unit(recurrent):
    rng = np.random.default_rng(3 + recurrent)
    for _ in range(4):
        g = _random_graph(rng, 7, 0.4, recurrent)
        mg, _ = max_problem(adapter_for(g), parse_linf("linf"))
        u, rounds, unreachable = max_balance_unit_degree(mg.n, mg.dst, mg.src, mg.loga, mg.dead_mask())
        assert not unreachable.any() and 1 <= rounds <= mg.n
        u_lp, _ = lexmin_lp(mg)
        assert np.allclose(mg.sorted_weights(u), mg.sorted_weights(u_lp), atol=1e-7)
        assert mg.relative_deficit(u).max() < 1e-10


@pytest.mark.parametrize("recurrent", [False, True])
def test_rescaled_copies_reach_identical_weights(recurrent):
    """Exact: always; per-unit sweeps in any order too, but only without hidden cycles."""
    g = _random_graph(np.random.default_rng(5 + recurrent), 6 + 3 * recurrent, 0.6 - 0.1 * recurrent, recurrent)
    ref = _weights(synbal.balance(g, "linf").net)
    methods = ["exact"] if recurrent else ["exact", "cyclic", "stochastic"]
    for seed in range(3):
        start = _rescaled(g, np.random.default_rng(10 + seed))
        for method in methods:
            res = synbal.balance(start, "linf", method=method, seed=seed, tol=1e-12, max_sweeps=20_000)
            assert res.converged
            assert np.allclose(_weights(res.net), ref, rtol=1e-8)


def test_lp_balanced_states_approach_the_canonical_state_as_p_grows():
    rng = np.random.default_rng(11)
    g = _random_graph(rng, 6, 0.5, recurrent=False)
    target = np.log(np.abs(_weights(synbal.balance(g, "linf").net)))
    gaps = []
    for p in (8, 16, 32, 64):
        w = np.log(np.abs(_weights(synbal.balance(g, f"l{p}", tol=1e-12).net)))
        gaps.append(float(np.abs(w - target).max()))
    assert all(b < a for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 0.5 * gaps[0]


def test_biases_are_scaled_but_counted_only_with_plus_bias():
    g = _graph([("x0", "h0", 1.0), ("h0", "y0", 1.0)], ["h0"], biases={"h0": 4.0})
    plain = synbal.balance(g, "linf")
    assert plain.scales["h0"] == pytest.approx(1.0)
    counted = synbal.balance(g, "linf+bias")
    assert counted.scales["h0"] == pytest.approx(0.5)  # IN = max(1, 4)·λ = OUT = 1/λ
    assert counted.net.biases["h0"] == pytest.approx(2.0)


def test_deficit_report_gives_largest_weights():
    g = _graph([("x0", "h0", 3.0), ("x1", "h0", -5.0), ("h0", "y0", 0.5)], ["h0"])
    rep = synbal.deficit(g, "linf")
    unit = rep.units[0]
    assert np.allclose([unit.IN, unit.OUT, rep.regularizer_value], [5.0, 0.5, 5.0], rtol=1e-14)
    assert unit.relative_deficit == pytest.approx(4.5 / 5.5)


def test_additive_methods_and_bad_specs_are_refused():
    g = _graph([("x0", "h0", 3.0), ("h0", "y0", 0.5)], ["h0"])
    with pytest.raises(SynbalError, match="does not minimise the max-norm"):
        synbal.balance(g, "linf", method="layer")
    with pytest.raises(RegularizerError):
        parse_linf("linf+weights")
    with pytest.raises(SynbalError, match="sweep order"):
        local_sweeps(MaxGraph.from_costs(
            max_problem(adapter_for(g), parse_linf("linf"))[1].custom, np.ones(1), ["h0"]), order="layer")


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(4)
        self.c1 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(h + self.c2(torch.relu(self.bn1(self.c1(h)))))
        return self.head(h.mean(dim=(2, 3)))


def _randomise_bn(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.normal_(generator=gen)
            m.bias.data.normal_(generator=gen)


@pytest.mark.parametrize("kind", ["mlp", "residual"])
def test_torch_models_keep_their_function_and_reach_one_state(kind):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
        x = torch.randn(5, 6, dtype=torch.float64, generator=gen)
        opts = {}
    else:
        model = _Residual()
        _randomise_bn(model, gen)
        x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=gen)
        opts = {"fold_batchnorm": True}
    model = model.double().eval()
    res = synbal.balance(model, "linf", example_inputs=(x,), **opts)
    assert res.converged and res.regularizer_after < res.regularizer_before
    assert torch.allclose(res.net(x), model(x), rtol=1e-9, atol=1e-12)
    adapter = adapter_for(res.net, example_inputs=(x,))
    moved = adapter.apply(np.random.default_rng(2).uniform(-3, 3, adapter.problem(
        synbal.parse_regularizer("l2")).n), inplace=False)
    again = synbal.balance(moved, "linf", example_inputs=(x,))
    for a, b in zip(res.net.parameters(), again.net.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)
