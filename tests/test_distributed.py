"""Balancing under torch.distributed (issue 16): DDP replicas stay bit-identical, FSDP2 shards
balance with partial sums and one all-reduce per step, failures raise instead of hanging.

Ranks are forked processes on 127.0.0.1 (gloo, 2 ranks); the single-process reference runs here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist

import synbal
from dist_workers import case_balance, case_ddp_loop, case_train, data, mlp, spawn
from synbal.errors import DistributedError, SynbalError

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    return float((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-300))


def _params(res: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in res.items() if k.startswith(("param/", "state/"))}


def _no_error(results: list[dict]) -> None:
    for rank, r in enumerate(results):
        assert not isinstance(r.get("error"), str), f"rank {rank} failed:\n{r['error']}"


def test_ddp_train_ranks_bit_identical_and_equal_single_process(tmp_path):
    results = spawn("train", "ddp", outdir=tmp_path)
    _no_error(results)
    single = case_train("plain")
    r0, r1 = results
    assert _params(r0).keys() == _params(single).keys() and any(k.startswith("state/") for k in r0)
    for key, value in _params(single).items():
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
        assert torch.equal(r0[key], value), f"{key} differs from the single-process run"
    assert torch.equal(r0["losses"], single["losses"]) and torch.equal(r0["deficits"], single["deficits"])
    assert r0["deficits"][0] < 1e-9  # balanced at the start (layer sweeps to convergence)


def test_ddp_balance_in_a_loop_solves_once_and_broadcasts(tmp_path):
    results = spawn("ddp_loop", outdir=tmp_path)
    _no_error(results)
    r0, r1 = results
    assert int(r0["solves"][0]) == 4 and int(r1["solves"][0]) == 0  # rank 1 never solved: it got rank 0's scales
    single = case_ddp_loop("plain")
    for key, value in _params(single).items():
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
        assert _rel(r0[key], value) <= 1e-12, key


def test_fsdp_train_matches_single_process(tmp_path):
    results = spawn("train", "fsdp", outdir=tmp_path)
    _no_error(results)
    single = case_train("plain")
    for r in results:  # each rank gathered the full tensors after training, to compare
        for key, value in _params(single).items():
            assert _rel(r[key], value) <= 1e-10, key
        np.testing.assert_allclose(r["losses"].numpy(), single["losses"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(r["deficits"].numpy(), single["deficits"].numpy(), rtol=1e-6, atol=1e-13)


def test_fsdp_train_of_a_traced_residual_model_matches_single_process(tmp_path):
    """Not the MLP fast path: a residual model traced on a meta copy, ``exact`` every epoch, Adam's
    state rescaled shard by shard."""
    results = spawn("train", "fsdp", "float64", "residual", outdir=tmp_path)
    _no_error(results)
    single = case_train("plain", "float64", "residual")
    assert any(k.startswith("state/") for k in single)
    for r in results:
        for key, value in _params(single).items():
            assert _rel(r[key], value) <= 1e-10, key
        np.testing.assert_allclose(r["losses"].numpy(), single["losses"].numpy(), rtol=1e-12)
    assert float(single["deficits"][0]) < 1e-9  # exact at the start


@pytest.mark.parametrize("widths", [(32, 600, 601, 150, 10)])
def test_fsdp_balance_holds_only_shards_and_reduces_once_per_step(tmp_path, widths):
    sweeps = 4
    results = spawn("balance", "fsdp", widths, ("float64",), sweeps, outdir=tmp_path)
    _no_error(results)
    single = case_balance("plain", widths, ("float64",), sweeps)
    full_bytes = max(v.numel() * 8 for k, v in single.items() if k.startswith("param/"))
    hidden_layers = len(widths) - 2
    for r in results:
        np.testing.assert_allclose(r["log_scales"].numpy(), single["log_scales"].numpy(), rtol=1e-10, atol=1e-12)
        for key, value in _params(single).items():
            assert _rel(r[key], value) <= 1e-10, key
        # one all-reduce at the start, then one per balancing step (a hidden layer) of each sweep
        assert int(r["all_reduces"][0]) == 1 + hidden_layers * sweeps
        # torch never produced a tensor bigger than this rank's largest shard (uneven: 601 rows split
        # 301/300), and numpy's peak stayed under half a parameter: no rank held more than its share
        assert int(r["largest_tensor_bytes"][0]) <= int(r["largest_shard_bytes"][0]) <= full_bytes // 2 + 8 * 600
        assert int(r["numpy_peak_bytes"][0]) < full_bytes // 2


@pytest.mark.parametrize(("net", "widths"), [("mlp", (32, 600, 601, 150, 10)), ("cnn", (2, 9, 401, 301, 5)),
                                             ("residual", (5, 9, 601, 3))])
def test_fsdp_exact_equals_single_process_exact_and_holds_only_shards(tmp_path, net, widths):
    # cnn: Conv2d + BatchNorm (eval) + ReLU, two Conv2d + ReLU, pooling, Linear; 9/401/301 channels
    # split unevenly (5/4, 201/200, 151/150 rows); residual: a skip connection around 9 -> 601 -> 9
    results = spawn("balance", "fsdp", widths, ("float64",), 100, "exact", 1e-13, net, outdir=tmp_path)
    _no_error(results)
    single = case_balance("plain", widths, ("float64",), 100, "exact", 1e-13, net)
    full_bytes = max(v.numel() * 8 for k, v in single.items() if k.startswith("param/"))
    row_bytes = max(v[0].numel() * 8 for k, v in single.items() if k.startswith("param/"))
    r0, r1 = results
    assert torch.equal(r0["log_scales"], r1["log_scales"])  # every rank applies bit-identical scales
    assert int(r0["all_reduces"][0]) == int(r1["all_reduces"][0]) > 1
    for r in results:
        np.testing.assert_allclose(r["log_scales"].numpy(), single["log_scales"].numpy(), rtol=1e-10, atol=1e-12)
        for key, value in _params(single).items():
            assert _rel(r[key], value) <= 1e-10, key
        assert int(r["largest_tensor_bytes"][0]) <= int(r["largest_shard_bytes"][0]) <= full_bytes // 2 + row_bytes
        if net != "residual":  # too small for numpy's own overhead to stay under half a parameter
            assert int(r["numpy_peak_bytes"][0]) < full_bytes // 2


@pytest.mark.parametrize(("net", "widths"), [("mlp", (5, 7, 1, 9, 3)), ("cnn", (2, 5, 7, 3, 4)),
                                             ("residual", (4, 6, 11, 3))])
def test_sharded_hessian_products_equal_the_single_process_hessian(tmp_path, net, widths):
    results = spawn("hessian_product", net, widths, outdir=tmp_path)
    _no_error(results)
    for r in results:
        assert torch.equal(r["sharded"], results[0]["sharded"])
        np.testing.assert_allclose(r["sharded"].numpy(), r["single"].numpy(), rtol=1e-12,
                                   atol=1e-12 * float(r["single"].abs().max()))


def test_a_sharded_cnn_is_refused_where_discovery_refuses_it(tmp_path):
    results = spawn("refusals", outdir=tmp_path)
    _no_error(results)
    for r in results:
        assert r["train_mode"].startswith("ModelError: BatchNorm '1' is in training mode"), r["train_mode"]
        assert r["no_inputs"].startswith("ModelError: a sharded Sequential that is not a plain MLP"), r["no_inputs"]
        assert r["cyclic"].startswith("SynbalError: method 'cyclic' needs whole cost blocks; a sharded model is "
                                      "balanced with layer, alternating, exact"), r["cyclic"]


def test_fsdp_mixed_dtypes_and_empty_shards_match_single_process(tmp_path):
    widths, dtypes = (5, 7, 1, 9, 3), ("float32", "bfloat16")  # a 1-row layer: rank 1 holds no rows of it
    results = spawn("balance", "fsdp", widths, dtypes, 6, outdir=tmp_path)
    _no_error(results)
    single = case_balance("plain", widths, dtypes, 6)
    for r in results:
        np.testing.assert_allclose(r["log_scales"].numpy(), single["log_scales"].numpy(), rtol=1e-10, atol=1e-12)
        for key, value in _params(single).items():
            assert r[key].dtype == value.dtype
            assert _rel(r[key], value) <= torch.finfo(value.dtype).eps, key  # at most a rounding apart


def test_fsdp_mixed_precision_policy_trains_with_balancing(tmp_path):
    results = spawn("train", "fsdp_bf16_compute", "float32", outdir=tmp_path)
    _no_error(results)
    r0, r1 = results
    for key in _params(r0):
        assert torch.equal(r0[key], r1[key]) and r0[key].dtype == torch.float32
    assert float(r0["deficits"][0]) < 1e-6  # float32 parameters balanced at the start, sums in float64


@pytest.mark.parametrize("kind", ["fsdp", "ddp"])
def test_a_rank_failing_mid_balance_times_out_with_a_typed_error(tmp_path, kind):
    timeout = 2.0
    results = spawn("fail", kind, timeout, outdir=tmp_path)
    waiting, failing = results
    assert waiting["error"].startswith("DistributedError\n"), waiting["error"]
    assert "gave up after waiting up to 2 s" in waiting["error"]
    assert 0.8 * timeout <= waiting["seconds"] < timeout + 5
    assert failing["error"].startswith("RuntimeError\nsimulated failure")


def test_ddp_root_failure_is_told_to_the_other_ranks(tmp_path):
    results = spawn("fail", "ddp_root", 30.0, outdir=tmp_path)
    root, other = results
    assert root["error"].startswith("RuntimeError\nsimulated solver failure")
    assert other["error"].startswith("DistributedError\nbalancing failed on rank 0")
    assert other["seconds"] < 10  # told at once, not after the 30 s deadline


def test_without_a_process_group_a_sharded_balance_is_refused():
    from synbal._adapters.torch.collective import Collective

    assert not dist.is_initialized()
    with pytest.raises(DistributedError, match="initialised"):
        Collective()


def test_plain_models_do_not_take_the_distributed_route():
    from synbal._adapters.torch.distributed import is_distributed

    model = mlp()
    assert not is_distributed(model)
    assert synbal.balance(model, "l2", "layer", max_sweeps=2).net is not model
    assert data()[0].shape == (48, 6)


def test_bad_collective_timeout_is_refused(monkeypatch):
    from synbal._adapters.torch.collective import TIMEOUT_ENV, Collective

    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(DistributedError, match="not a number"):
        Collective.default_timeout()
    assert issubclass(DistributedError, SynbalError)


def _example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "distributed_train.py"
    spec = importlib.util.spec_from_file_location("distributed_train_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_example_check_fails_on_any_difference(monkeypatch, capsys):
    example, _ = _example()
    params = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    assert example.compare("same", (params, [0.5, 0.25]), (params, [0.5, 0.25]))
    assert not example.compare("param", ({"w": params["w"] * (1 + 1e-9)}, [0.5, 0.25]), (params, [0.5, 0.25]))
    assert not example.compare("loss", (params, [0.5, 0.25 * (1 + 1e-9)]), (params, [0.5, 0.25]))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert example.main(["--train", "200", "--epochs", "1", "--widths", "784-16-10"]) == 0
    assert "single process, per-epoch losses:" in capsys.readouterr().out


@pytest.mark.slow
def test_example_under_torchrun_equals_single_process():
    import subprocess
    import sys

    _, path = _example()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(path),
           "--check", "--train", "400", "--epochs", "2", "--widths", "784-32-16-10"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("-> equal") == 2
