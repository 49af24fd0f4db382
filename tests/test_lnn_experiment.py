"""The `lnn` reproduction: gradients, the bound (17), eq. 29 pieces, and the quick end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synbal.dynamics import glorot_init, gram_rates
from synbal.errors import SynbalError
from synbal.experiments import EXPERIMENTS
from synbal.experiments import _lnn as lnn
from synbal.experiments._report import ExperimentContext


@pytest.fixture(scope="module")
def task() -> lnn.MixtureTask:
    return lnn.make_mixture_task(seed=3, per_component=40)


def test_mixture_task_is_whitened_and_linear(task: lnn.MixtureTask) -> None:
    assert task.x.shape == (120, 10) and task.y.shape == (120, 3)
    np.testing.assert_allclose(task.sigma_xx, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(task.sigma_yx, task.A, atol=1e-12)  # Σ_yx = A Σ_xx = A
    np.testing.assert_allclose(task.x.mean(axis=0), 0.0, atol=1e-12)
    with pytest.raises(SynbalError):
        lnn.make_mixture_task(seed=0, per_component=0)


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_gradients_match_autograd(task: lnn.MixtureTask, activation: str) -> None:
    Ws = glorot_init([10, 8, 6, 3], seed=1)
    loss, grads = lnn.mlp_loss_and_grads(Ws, task.x, task.y, activation)
    params = [torch.tensor(W, requires_grad=True) for W in Ws]
    h = torch.tensor(task.x)
    for k, W in enumerate(params):
        h = h @ W.T
        if k < len(params) - 1 and activation == "relu":
            h = torch.relu(h)
    ref = 0.5 * ((h - torch.tensor(task.y)) ** 2).sum() / task.x.shape[0]
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for G, W in zip(grads, params, strict=True):
        np.testing.assert_allclose(G, W.grad.numpy(), rtol=1e-10, atol=1e-13)
    with pytest.raises(SynbalError, match="activation"):
        lnn.mlp_loss_and_grads(Ws, task.x, task.y, "tanh")


def test_eq29_exact_rate_is_the_within_sample_gate_formula(task: lnn.MixtureTask) -> None:
    Ws = glorot_init([10, 8, 6, 3], seed=2)
    rows = lnn.eq29_terms(Ws, task.x, task.y)
    assert len(rows) == 2
    for row in rows:
        assert row["exact"] > 1e-3 * row["scale"]  # ReLU breaks the matrix law …
        assert row["diagonal"] < 1e-12 * row["scale"]  # … but not the per-neuron one
        assert row["gate_formula_error"] < 1e-10
        assert 0.0 < row["mixed_gate_fraction"] < 1.0


def test_paper_eq29_rhs_closed_form_matches_brute_force_sum(task: lnn.MixtureTask) -> None:
    x, y = task.x[:12], task.y[:12]
    Ws = glorot_init([10, 5, 4, 3], seed=4)
    _, grads = lnn.mlp_loss_and_grads(Ws, x, y, "relu")
    zs, _ = lnn._forward(Ws, x, "relu")
    gates = [(z > 0).astype(float) for z in zs]
    m = x.shape[0]
    for k in range(2):
        Wdot = [-G for G in grads]
        up_gates = gates[k + 1] if k + 1 < len(gates) else np.ones((m, Ws[k + 1].shape[0]))
        total = np.zeros((Ws[k].shape[0],) * 2)
        for i in range(m):
            for j in range(m):
                if i == j:
                    continue
                Di, Dj = np.diag(up_gates[i]), np.diag(up_gates[j])
                total += Wdot[k + 1].T @ Di @ Dj @ Ws[k + 1] + Ws[k + 1].T @ Di @ Dj @ Wdot[k + 1]
                Li, Lj = np.diag(gates[k][i]), np.diag(gates[k][j])
                total -= Li @ (Wdot[k] @ Ws[k].T + Ws[k] @ Wdot[k].T) @ Lj
        np.testing.assert_allclose(lnn._paper_eq29_rhs(Ws, grads, gates, k, m), total / (m * m - m),
                                   atol=1e-12)


def test_linear_rates_vanish_and_gd_trajectory_records(task: lnn.MixtureTask) -> None:
    Ws = glorot_init([10, 6, 3], seed=0)
    _, grads = lnn.mlp_loss_and_grads(Ws, task.x, task.y, "linear")
    assert gram_rates(Ws, grads).relative_asymmetry().max() < 1e-12
    traj = lnn.train_gd(Ws, task, lr=0.01, time_span=0.5, record_every=10)
    assert traj.times.tolist() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert traj.loss[-1] < traj.loss[0]
    assert traj.asymmetry.max() < 1e-12
    assert traj.drift[0, 0] == 0.0 and traj.drift[-1, 0] > 0.0
    with pytest.raises(SynbalError):
        lnn.train_gd(Ws, task, lr=-1.0, time_span=1.0)


def test_bound_ode_matches_the_logistic_solution_for_two_layers() -> None:
    # L = 2: dU/dt = 2 U (M − κ2 U) — logistic with rate 2M and plateau M/κ2
    M, k2, U0 = 3.0, 0.5, 0.2
    t = np.linspace(0.0, 2.0, 21)
    cap = M / k2
    logistic = cap / (1.0 + (cap / U0 - 1.0) * np.exp(-2.0 * M * t))
    np.testing.assert_allclose(lnn.bound_trajectory(t, U0=U0, layers=2, M=M, kappa2=k2), logistic, rtol=1e-6)


def test_measure_kappas_definitions() -> None:
    norms = np.array([[1.0, 0.5], [2.0, 1.8], [3.0, 2.9]])
    prod = np.array([0.1, 2.0, 4.0])
    k = lnn.measure_kappas(norms, prod, sigma_norm=4.0)
    assert k["delta"] == pytest.approx(0.5) and k["delta_at_init"] == pytest.approx(0.5)
    assert k["kappa1"] == pytest.approx(1.0)
    U = (norms[:, 0] + 0.5) ** 2
    assert k["kappa2"] == pytest.approx(float(np.min(prod / U)))
    assert k["U0"] == pytest.approx(2.25)
    with pytest.raises(SynbalError, match="zero"):
        lnn.measure_kappas(norms, np.zeros(3), sigma_norm=1.0)


def test_loglog_slope() -> None:
    assert lnn.fit_loglog_slope(np.array([1.0, 10.0]), np.array([5.0, 0.5])) == pytest.approx(-1.0)
    with pytest.raises(SynbalError):
        lnn.fit_loglog_slope(np.array([1.0, 2.0]), np.array([0.0, 1.0]))


def test_quick_reproduction_end_to_end(tmp_path: Path) -> None:
    assert EXPERIMENTS["lnn"].load() is lnn.run
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, seeds=2, progress=False)
    res = lnn.run(ctx)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"lnn.json", "lnn.md", "lnn_fig1_two_layer_glorot.png", "lnn_fig1_four_layer_small.png",
            "lnn_fig1_bound_depth.png", "lnn_drift.png", "lnn_drift_vs_lr.png"} <= set(names)
    saved = json.loads((tmp_path / "lnn.json").read_text())
    assert saved["settings"]["seeds"] == 2 and saved["quick"] is True
    # the product converges to Σ_yx (glorot init)
    for key in ("glorot-2", "glorot-4"):
        net = res["nets"][key]
        assert net["final_product_norm"]["mean"] == pytest.approx(net["sigma_yx_norm"]["mean"], rel=1e-3)
        assert net["final_relative_drift_max"]["mean"] < 0.02
    # conservation law: drift ∝ η for linear nets; ReLU breaks it, except on the diagonal
    sweep = res["lr_sweep"]
    for L in (2, 4):
        assert 0.85 < sweep[f"linear-{L}"]["slope"]["mean"] < 1.15
        assert abs(sweep[f"relu-{L}"]["slope"]["mean"]) < 0.3
        assert 0.85 < sweep[f"relu-{L}"]["diagonal_slope"]["mean"] < 1.15
    for e in res["eq29"].values():
        assert np.max(e["gate_formula_error"]) < 1e-9
        assert np.min(e["relative"]) > 1e-2
    assert "Conservation law" in (tmp_path / "lnn.md").read_text()


# ------------------------------------------------------------------ lnn-relu (MNIST)


def test_relu_mlp_shape_and_init() -> None:
    from synbal.dynamics import layer_weights
    from synbal.experiments import _lnn_relu as lnn_relu

    net = lnn_relu.relu_mlp(seed=0)
    Ws = layer_weights(net)
    assert [W.shape for W in Ws] == [(100, 784)] + [(100, 100)] * 5 + [(10, 100)]
    assert all(m.bias is None for m in net if isinstance(m, torch.nn.Linear))
    assert np.abs(Ws[0]).max() <= np.sqrt(6.0 / 884)
    np.testing.assert_array_equal(layer_weights(lnn_relu.relu_mlp(seed=0))[3], Ws[3])


def test_spread_of_slopes() -> None:
    from synbal.experiments import _lnn_relu as lnn_relu

    t = np.arange(5.0)
    vals = np.stack([2.0 * t, 2.0 * t + 1.0, 4.0 * t], axis=1)
    assert lnn_relu.spread_of_slopes(vals, t, [0, 1]) == pytest.approx(0.0, abs=1e-12)
    assert lnn_relu.spread_of_slopes(vals, t, [0, 2]) == pytest.approx(2.0 / 3.0)
    with pytest.raises(SynbalError):
        lnn_relu.spread_of_slopes(np.zeros((5, 2)), t, [0, 1])


def test_lnn_relu_quick_reproduction(tmp_path: Path) -> None:
    from synbal.experiments import _lnn_relu as lnn_relu

    assert EXPERIMENTS["lnn-relu"].load() is lnn_relu.run
    threads = torch.get_num_threads()
    res = lnn_relu.run(ExperimentContext(out_dir=tmp_path, quick=True, seeds=1, progress=False))
    assert torch.get_num_threads() == threads  # restored
    names = {p.name for p in tmp_path.iterdir()}
    assert {"lnn-relu.json", "lnn-relu.md", "lnn-relu_fig2_layer_norms.png",
            "lnn-relu_squared_norm_growth.png", "lnn-relu_gram_rates_and_deficits.png"} <= names
    assert res["test_accuracy"]["mean"] > 0.7
    assert res["norms_mean"].shape == (21, 7)
    # finite-step laws of bias-free ReLU nets hold to rounding
    assert res["sq_norm_identity_residual"]["mean"] < 1e-8
    assert np.all(res["deficit_identity_residual"]["mean"] < 1e-8)
    # ReLU breaks the matrix law: the Gram rates do not match
    assert np.all(res["asymmetry_end"]["mean"] > 0.05)
    assert "Conjecture 4" in (tmp_path / "lnn-relu.md").read_text()
