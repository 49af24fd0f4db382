"""Tests of the fig9 reproduction: weight-space geometry, the stochastic ensemble, the outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from problem_factory import layered_problem
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal.errors import SynbalError
from synbal.experiments import _fig9 as fig9
from synbal.experiments._fig9 import (
    Fig9Settings,
    WeightSpace,
    analyse_problem,
    endpoint_spread,
    stochastic_ensemble,
)
from synbal.experiments._tasks import STANDIN, cifar10_standin


def _direct_weights(problem: BalanceProblem, u: np.ndarray) -> np.ndarray:
    """All scaled weight magnitudes ``sqrt(A)·exp(u_dst − c·u_src)``, block by block."""
    ue = np.append(u, 0.0)
    ce = np.append(problem.degree, 1.0)
    parts = []
    for b in problem.blocks:
        A = np.asarray(b.matrix.todense() if b.is_sparse else b.matrix)
        factor = np.exp(ue[b.dst][:, None] - ce[b.src][None, :] * ue[b.src][None, :])
        parts.append((np.sqrt(A) * factor).ravel())
    return np.concatenate(parts)


@pytest.fixture
def problem() -> BalanceProblem:
    return layered_problem(np.random.default_rng(3), [5, 4, 3, 4, 2])


def test_weight_space_matches_direct_computation(problem: BalanceProblem) -> None:
    rng = np.random.default_rng(0)
    u_ref = rng.normal(size=problem.n)
    U = rng.normal(size=(6, problem.n))
    dist, norm = WeightSpace(problem, u_ref).measure(U)
    w_ref = _direct_weights(problem, u_ref)
    for k in range(U.shape[0]):
        w = _direct_weights(problem, U[k])
        assert dist[k] == pytest.approx(np.linalg.norm(w - w_ref), rel=1e-10)
        assert norm[k] == pytest.approx(np.linalg.norm(w), rel=1e-10)
    assert WeightSpace(problem, u_ref).reference_norm == pytest.approx(np.linalg.norm(w_ref), rel=1e-12)


def test_weight_space_sparse_blocks_and_bipu() -> None:
    import scipy.sparse as sp

    A = sp.csr_array(np.array([[0.0, 2.0], [3.0, 0.0]]))
    prob = BalanceProblem(np.array([1.0, 2.0]), [
        CostBlock(2.0, [0, 1], [-1, -1], A),
        CostBlock(2.0, [-1], [0, 1], np.array([[1.5, 0.5]])),
        CostBlock(2.0, [1], [0], np.array([[0.7]])),
    ])
    u_ref = np.array([0.3, -0.2])
    U = np.array([[0.0, 0.0], [1.0, 0.5]])
    dist, norm = WeightSpace(prob, u_ref).measure(U)
    w_ref = _direct_weights(prob, u_ref)
    for k in range(2):
        w = _direct_weights(prob, U[k])
        assert dist[k] == pytest.approx(np.linalg.norm(w - w_ref), rel=1e-12)
        assert norm[k] == pytest.approx(np.linalg.norm(w), rel=1e-12)


def test_weight_space_keeps_precision_for_tiny_distances(problem: BalanceProblem) -> None:
    rng = np.random.default_rng(1)
    u_ref = rng.normal(size=problem.n)
    direction = rng.normal(size=problem.n)
    eps = 1e-10
    dist, _ = WeightSpace(problem, u_ref).measure(u_ref + eps * direction)
    # first order: w_rk (δ_r − δ_k), exact up to O(eps²) relative
    w_ref = _direct_weights(problem, u_ref)
    de = np.append(direction, 0.0)
    lin = []
    for b in problem.blocks:
        lin.append(np.broadcast_to(de[b.dst][:, None] - de[b.src][None, :], b.matrix.shape).ravel())
    expected = eps * np.linalg.norm(w_ref * np.concatenate(lin))
    assert dist[0] == pytest.approx(expected, rel=1e-6)


def test_weight_space_rejects_bad_input(problem: BalanceProblem) -> None:
    l1 = BalanceProblem(np.ones(1), [CostBlock(1.0, [0], [-1], [[2.0]]), CostBlock(1.0, [-1], [0], [[1.0]])])
    with pytest.raises(SynbalError, match="L2"):
        WeightSpace(l1, np.zeros(1))
    with pytest.raises(SynbalError, match="shape"):
        WeightSpace(problem, np.zeros(problem.n + 1))
    with pytest.raises(SynbalError, match="expected"):
        WeightSpace(problem, np.zeros(problem.n)).measure(np.zeros((2, problem.n - 1)))


def test_ensemble_converges_to_the_exact_state(problem: BalanceProblem) -> None:
    results, ens = analyse_problem(problem, Fig9Settings(runs=7, tol=1e-11, grid_points=30))
    assert ens.distance.shape == ens.norm.shape == (7, ens.sweep_grid.size)
    assert ens.converged.all()
    assert results["final"]["max_relative_distance_to_balanced"] < 1e-8
    assert results["final"]["max_relative_distance_to_run0"] < 1e-8
    assert results["final"]["norm_monotone_in_every_run"]
    assert results["final"]["frobenius_norm_decrease_percent"] > 0
    # every run starts at the same weights, at the stated distance from W_balanced
    np.testing.assert_allclose(ens.distance[:, 0], results["initial"]["relative_distance_to_balanced"])
    assert results["supports_claim"] is True
    # the runs really follow different random orders
    assert np.ptp(ens.distance[:, 1]) > 0
    assert results["final"]["max_distance_spread_percent"] > 0


def test_ensemble_does_not_depend_on_batching(problem: BalanceProblem,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    space = WeightSpace(problem, np.zeros(problem.n))
    whole = stochastic_ensemble(problem, space, runs=5, seed=11, grid_points=10)
    monkeypatch.setattr(fig9, "_MEMORY_FLOATS", 1)  # one run per batch
    split = stochastic_ensemble(problem, space, runs=5, seed=11, grid_points=10)
    np.testing.assert_array_equal(whole.endpoints, split.endpoints)
    np.testing.assert_array_equal(whole.distance, split.distance)


def test_ensemble_rejects_bad_counts(problem: BalanceProblem) -> None:
    space = WeightSpace(problem, np.zeros(problem.n))
    with pytest.raises(SynbalError, match="runs"):
        stochastic_ensemble(problem, space, runs=0)
    with pytest.raises(SynbalError, match="grid_points"):
        stochastic_ensemble(problem, space, runs=1, grid_points=1)


def test_endpoint_spread_sees_different_end_points(problem: BalanceProblem) -> None:
    same = np.zeros((3, problem.n))
    assert endpoint_spread(problem, same) == {"max_log_scale_spread": 0.0,
                                             "max_relative_distance_to_run0": 0.0}
    moved = same.copy()
    moved[2, 0] = 0.5
    spread = endpoint_spread(problem, moved)
    assert spread["max_log_scale_spread"] == 0.5
    assert spread["max_relative_distance_to_run0"] > 0.01


def test_outputs_plot_and_summary(problem: BalanceProblem, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from synbal.experiments._report import ExperimentContext, write_outputs

    settings = Fig9Settings(runs=3, grid_points=20)
    results, ens = analyse_problem(problem, settings)
    setup = {"description": "a toy layered net", "data_source": "none", "weights": "random"}
    md = fig9.summary_markdown("fig9", "toy", results, settings, setup)
    assert "supports the claim" in md and "3 / 3" in md
    ctx = ExperimentContext(out_dir=tmp_path, quick=True)
    paths = write_outputs(ctx, "fig9", results=results, settings={}, summary_md=md,
                          figures={"balancing": fig9.plot_ensemble(ens, "toy")})
    assert sorted(p.name for p in paths) == ["fig9.json", "fig9.md", "fig9_balancing.png"]
    data = json.loads((tmp_path / "fig9.json").read_text())
    assert len(data["results"]["curves"]["relative_distance_mean"]) == ens.sweep_grid.size


def test_settings_follow_quick_and_seeds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from synbal.experiments._report import ExperimentContext

    assert fig9.settings_for(ExperimentContext(out_dir=tmp_path), "fig9").runs == 1000
    assert fig9.settings_for(ExperimentContext(out_dir=tmp_path, quick=True), "fig9").runs == 20
    assert fig9.settings_for(ExperimentContext(out_dir=tmp_path, quick=True, seeds=7), "fig9-lc").runs == 7


def test_cifar_standin_has_cifar_shape_and_says_so() -> None:
    ds = cifar10_standin()
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10
    assert ds.source.startswith(STANDIN) and "MNIST" in ds.source
    x, _ = ds.tensors("test", flatten=False)
    assert tuple(x.shape[1:]) == (3, 32, 32)
    # the digit sits in the middle, identical in all three channels
    assert float(x[:, :, :2].abs().max()) == 0.0
    assert bool((x[:, 0] == x[:, 2]).all())


def test_reproduce_fig9_small(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from synbal.experiments import EXPERIMENTS, run_experiment
    from synbal.experiments._report import ExperimentContext

    assert EXPERIMENTS["fig9"].load() is fig9.run
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False)
    settings = Fig9Settings(runs=3, train_epochs=1, train_size=300, eval_size=200, grid_points=20)
    results = fig9.reproduce(ctx, "fig9", settings)
    assert results["supports_claim"] is True
    assert results["problem"]["units"] == 650
    assert results["runs"]["converged"] == 3
    assert results["final"]["max_relative_distance_to_balanced"] < 1e-8
    assert results["final"]["frobenius_norm_decrease_percent"] > 1.0
    assert "300 training images" in results["setup"]["weights"]
    from synbal.experiments._models import DEFAULT_INIT, LC_INIT

    assert results["setup"]["weights"].startswith(DEFAULT_INIT)  # the init that ran, stated
    assert fig9._LC.init == "LC_INIT" and LC_INIT.startswith("He")
    md = (tmp_path / "fig9.md").read_text()
    assert "embedded MNIST" in md and "supports the claim" in md
    data = json.loads((tmp_path / "fig9.json").read_text())
    assert data["settings"]["runs"] == 3
    assert (tmp_path / "fig9_balancing.png").exists()
    with pytest.raises(SynbalError, match="fig9 variant"):
        fig9.reproduce(ctx, "fig10", settings)
    with pytest.raises(SynbalError, match="at least 1"):
        run_experiment("fig9", ExperimentContext(out_dir=tmp_path, quick=True, seeds=0, progress=False))


@pytest.mark.slow
def test_reproduce_fig9_lc_standin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from synbal.experiments import run_experiment
    from synbal.experiments._report import ExperimentContext

    ctx = ExperimentContext(out_dir=tmp_path, quick=True, seeds=2, progress=False)
    results = run_experiment("fig9-lc", ctx)
    assert results["problem"]["units"] == 9288
    assert results["supports_claim"] is True
    # what supports_claim rests on, in the reported numbers
    runs, final = results["runs"], results["final"]
    assert runs["count"] == 2 and runs["converged"] == 2 and runs["sweeps_max"] <= runs["sweep_budget"]
    assert final["max_relative_distance_to_balanced"] <= fig9.SAME_STATE_THRESHOLD
    assert final["max_relative_distance_to_run0"] <= 2.001 * final["max_relative_distance_to_balanced"] + 1e-12
    assert 0.0 < final["frobenius_norm_decrease_percent"] < 100.0 and final["norm_monotone_in_every_run"]
    assert results["reference"]["max_relative_deficit"] <= 1e-10
    assert results["initial"]["relative_distance_to_balanced"] > 1e3 * final["max_relative_distance_to_balanced"]
    assert STANDIN in (tmp_path / "fig9-lc.md").read_text()
    from synbal.experiments._models import LC_INIT

    assert LC_INIT in results["setup"]["weights"] and "PyTorch default" not in results["setup"]["weights"]


def test_weight_space_reads_matrix_free_blocks() -> None:
    from synbal._compiled.powermatrix import PowerMatrix

    rng = np.random.default_rng(4)
    W1 = rng.normal(size=(3, 4)).astype(np.float32)
    W2 = rng.normal(size=(2, 3))
    free = BalanceProblem(np.ones(3), [CostBlock(2.0, [0, 1, 2], [-1] * 4, PowerMatrix(W1, 2.0)),
                                       CostBlock(2.0, [-1, -1], [0, 1, 2], PowerMatrix(W2, 2.0))])
    dense = BalanceProblem(np.ones(3), [CostBlock(2.0, [0, 1, 2], [-1] * 4, W1.astype(np.float64) ** 2),
                                        CostBlock(2.0, [-1, -1], [0, 1, 2], W2**2)])
    U = rng.normal(size=(4, 3))
    a = WeightSpace(free, U[0]).measure(U)
    b = WeightSpace(dense, U[0]).measure(U)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_lc_uses_cifar_files_when_given(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import synbal.experiments._tasks as tasks
    from synbal.experiments._report import ExperimentContext

    seen = []

    def fake_cifar(path):  # type: ignore[no-untyped-def]
        seen.append(path)
        return cifar10_standin()

    monkeypatch.setattr(tasks, "load_cifar10", fake_cifar)
    fig9._dataset(fig9._LC, ExperimentContext(out_dir=tmp_path, data=tmp_path))
    assert seen == [tmp_path]
    assert STANDIN in fig9._dataset(fig9._LC, ExperimentContext(out_dir=tmp_path)).source
    assert "MNIST" in fig9._dataset(fig9._AE, ExperimentContext(out_dir=tmp_path)).source


def test_ensemble_resumes_from_its_run_record(problem: BalanceProblem, tmp_path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    space = WeightSpace(problem, np.zeros(problem.n))
    whole = stochastic_ensemble(problem, space, runs=5, seed=3, grid_points=10)
    monkeypatch.setattr(fig9, "_MEMORY_FLOATS", 1)  # one run per batch, one file per run
    record = tmp_path / "runs"
    stochastic_ensemble(problem, space, runs=3, seed=3, grid_points=10, record=record)
    assert len(list(record.glob("runs-*.npz"))) == 3
    (record / "runs-0000004-0000004.npz").write_bytes(b"cut short")  # seed 4: a crash mid-write
    calls: list[int] = []
    real = fig9._many_runs

    def counting(prob: BalanceProblem):  # type: ignore[no-untyped-def]
        fn = real(prob)

        def wrapped(runs: int, *args):  # type: ignore[no-untyped-def]
            calls.append(runs)
            return fn(runs, *args)
        return wrapped

    monkeypatch.setattr(fig9, "_many_runs", counting)
    resumed = stochastic_ensemble(problem, space, runs=5, seed=3, grid_points=10, record=record)
    assert calls == [1, 1, 1, 1]  # the pilot, then only seeds 4 (the broken file), 6 and 7
    assert resumed.resumed == 2 and whole.resumed == 0
    np.testing.assert_array_equal(whole.endpoints, resumed.endpoints)
    np.testing.assert_array_equal(whole.distance, resumed.distance)
    np.testing.assert_array_equal(whole.sweeps_used, resumed.sweeps_used)
    # another reference state is another experiment: nothing is reused
    calls.clear()
    other = WeightSpace(problem, np.full(problem.n, 0.1))
    stochastic_ensemble(problem, other, runs=2, seed=3, grid_points=10, record=record)
    assert calls == [1, 1, 1]
