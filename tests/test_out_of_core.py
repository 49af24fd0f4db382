"""Out-of-core balancing of Hugging Face model folders (issue 12): ``synbal balance MODEL_DIR -o OUT_DIR``,
and their out-of-core inspection (``synbal inspect MODEL_DIR``).

Tiny Llama (GQA + RoPE), GPT-2 and OPT checkpoints are saved in several shards; the out-of-core
result must equal the in-memory exact balance per tensor, keep the logits, copy what is not
rescaled bit for bit, and never leave a half-written output folder. The 3 GB run is the slow test
at the end (through ``benchmarks/bench_out_of_core.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import synbal
from synbal._adapters.torch import out_of_core
from synbal._adapters.torch.components import components
from synbal._adapters.torch.hf_folder import meta_model, trace_inputs
from synbal._cli.main import main
from synbal._jsonsafe import json_text
from synbal.errors import CheckpointError, SynbalError
from synbal.torch import balance_checkpoint, discover, inspect_checkpoint
from transformers_compat import example, logits, needs_transformers, tiny

pytestmark = needs_transformers
ROOT = Path(__file__).resolve().parents[1]


def _save(name: str, path: Path, dtype: torch.dtype = torch.float32, layers: int = 3) -> torch.nn.Module:
    model = tiny(name, layers=layers).to(dtype)
    model.save_pretrained(path, max_shard_size="20KB")  # several shards with an index
    (path / "tokenizer.json").write_text('{"fake": "tokenizer"}', encoding="utf-8")
    return model


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118 (safe_open has no __iter__)
    return out


@pytest.mark.parametrize(("name", "dtype"), [("llama", torch.float32), ("opt", torch.float32),
                                             ("gpt2", torch.float64), ("t5", torch.float32)])
def test_equals_in_memory_balance_and_keeps_logits(tmp_path: Path, name: str, dtype: torch.dtype) -> None:
    model = _save(name, tmp_path / "in", dtype, layers=2)
    assert len(list((tmp_path / "in").glob("*.safetensors"))) >= 2
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out", "l2")
    res = synbal.balance(model, "l2", example_inputs=example(name, 0), method="exact")
    assert report.converged and report.max_relative_deficit <= 1e-8
    assert report.groups == res.problem.n
    assert report.regularizer_before == pytest.approx(res.regularizer_before, rel=1e-9)
    assert report.regularizer_after == pytest.approx(res.regularizer_after, rel=1e-9)
    assert report.regularizer_after < report.regularizer_before
    expected = res.net.state_dict()
    got = _tensors(tmp_path / "out")
    assert got.keys() == _tensors(tmp_path / "in").keys()
    for key, t in got.items():
        assert t.dtype == dtype
        ref = expected[key]
        assert float((t - ref).abs().max()) <= 1e-6 * float(ref.abs().max()), key
    balanced = type(model).from_pretrained(tmp_path / "out", dtype=dtype).eval()
    other = example(name, 1, length=9)
    before, after = logits(model, other), logits(balanced, other)
    assert float((after - before).abs().max()) <= 1e-5 * float(before.abs().max())


def test_bfloat16_stays_bfloat16_within_one_rounding_of_the_in_memory_balance(tmp_path: Path) -> None:
    model = _save("llama", tmp_path / "in", torch.bfloat16, layers=2)
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out")
    expected = synbal.balance(model, "l2", example_inputs=example("llama", 0), verify=False).net.state_dict()
    assert report.converged
    for key, t in _tensors(tmp_path / "out").items():
        assert t.dtype == torch.bfloat16
        ref = expected[key].float()  # the same float64 scales, rounded once into bfloat16 (8 significant bits)
        assert float((t.float() - ref).abs().max()) <= 2**-7 * float(ref.abs().max()), key


def test_folder_layout_and_untouched_tensors_are_copied_bit_for_bit(tmp_path: Path) -> None:
    _save("llama", tmp_path / "in")
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out", "l2")
    names = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    for n in ("model.safetensors.index.json", "config.json", "tokenizer.json"):
        assert (tmp_path / "out" / n).read_bytes() == (tmp_path / "in" / n).read_bytes()
    src, dst = _tensors(tmp_path / "in"), _tensors(tmp_path / "out")
    assert torch.equal(src["model.embed_tokens.weight"], dst["model.embed_tokens.weight"])  # no group touches it
    ratio = dst["model.layers.0.mlp.gate_proj.weight"] / src["model.layers.0.mlp.gate_proj.weight"]
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio))  # gate rows never move; columns follow the norm gain
    # query row h·4 + d scales inversely to key row (h // 2)·4 + d (4 query heads over 2 KV heads), the norm's
    # column factors taken out
    gain = dst["model.layers.0.input_layernorm.weight"] / src["model.layers.0.input_layernorm.weight"]
    fq, fk = (dst[f"model.layers.0.self_attn.{p}_proj.weight"] / src[f"model.layers.0.self_attn.{p}_proj.weight"]
              * gain for p in "qk")
    meets = torch.tensor([(h // 2) * 4 + d for h in range(4) for d in range(4)])
    assert torch.allclose(fq[:, 0] * fk[meets, 0], torch.ones(16), rtol=1e-5)
    assert float((fq[:, 0] - 1).abs().max()) > 1e-3  # and they did move
    assert not torch.equal(src["model.layers.0.mlp.down_proj.weight"], dst["model.layers.0.mlp.down_proj.weight"])
    for shard in (tmp_path / "in").glob("*.safetensors"):  # same header: same names, dtypes, shapes, offsets
        size = 8 + int.from_bytes(shard.read_bytes()[:8], "little")
        assert (tmp_path / "out" / shard.name).read_bytes()[:size] == shard.read_bytes()[:size]
    headers = sum(8 + int.from_bytes(p.read_bytes()[:8], "little") for p in (tmp_path / "in").glob("*.safetensors"))
    assert report.bytes_read == report.checkpoint_bytes - headers  # every tensor read once, headers aside
    assert report.tensors_read == len(src)


def test_meta_discovery_matches_the_real_model_and_components_partition_it() -> None:
    for name in ("llama", "gpt2"):
        real = tiny(name, layers=2)
        config = real.config
        with torch.device("meta"):
            meta = type(real)(config).eval()
        a, b = discover(real, example(name, 0)), discover(meta, trace_inputs(meta))
        assert a.n == b.n and np.array_equal(a.group_of_slot, b.group_of_slot)
        assert a.uses.keys() == b.uses.keys()
        for key, use in a.uses.items():
            assert np.array_equal(use.row, b.uses[key].row) and np.array_equal(use.col, b.uses[key].col)
        parts, fixed = components(b)
        grouped = np.concatenate([p.groups for p in parts])
        assert np.array_equal(np.sort(grouped), np.arange(b.n))
        params = [n for p in parts for n in p.params] + fixed
        assert sorted(params) == sorted(b.params)
        if name == "llama":  # attention and MLP of each block (the residual stream between is fixed), then the head
            assert len(parts) == 2 * 2 + 1


def _truncate(path: Path, by: int) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - by)


def _shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


@pytest.mark.parametrize("defect", ["truncated", "missing", "index", "config", "pickle", "header", "shape"])
def test_defective_folders_raise_checkpoint_error_and_write_nothing(tmp_path: Path, defect: str) -> None:
    src = tmp_path / "in"
    _save("llama", src, layers=2)
    expected = {"truncated": "cut short", "missing": "is missing", "index": "does not hold it",
                "config": "cannot build", "pickle": "pickle-based", "header": "not valid JSON",
                "shape": "the model's parameter has"}[defect]
    if defect == "truncated":
        _truncate(_shards(src)[-1], 7)
    elif defect == "missing":
        _shards(src)[0].unlink()
    elif defect == "index":
        index = json.loads((src / "model.safetensors.index.json").read_text())
        index["weight_map"]["model.layers.0.mlp.extra.weight"] = _shards(src)[0].name
        (src / "model.safetensors.index.json").write_text(json.dumps(index))
    elif defect in ("config", "shape"):
        config = json.loads((src / "config.json").read_text())
        config.update(architectures=["NoSuchModelForCausalLM"]) if defect == "config" else config.update(
            intermediate_size=24)  # weights of another model size
        (src / "config.json").write_text(json.dumps(config))
    elif defect == "pickle":
        for p in [*_shards(src), src / "model.safetensors.index.json"]:
            p.unlink()
        (src / "pytorch_model.bin").write_bytes(b"not loaded")
    else:
        data = _shards(src)[0].read_bytes()
        _shards(src)[0].write_bytes(data[:8] + b"x" + data[9:])
    with pytest.raises(CheckpointError, match=expected):
        balance_checkpoint(src, tmp_path / "out")
    with pytest.raises(CheckpointError, match=expected):  # inspection makes the same checks
        inspect_checkpoint(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_cli_one_line_exit_2_on_a_cut_short_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save("llama", tmp_path / "in", layers=2)
    _truncate(_shards(tmp_path / "in")[0], 100)
    capsys.readouterr()  # saving shows its own progress bar
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cut short" in err and _shards(tmp_path / "in")[0].name in err
    assert not (tmp_path / "out").exists()


def test_cli_balances_a_folder_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save("opt", tmp_path / "in", layers=2)
    code = main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "r.json").read_text())  # 2 blocks x (attention, MLP); the head is tied
    assert report["converged"] and report["components"] == 4 and 0.5 < report["checkpoint_reads"] <= 1.0
    assert report["verified"] is False  # off by default for a folder
    assert "components, method exact" in capsys.readouterr().out
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 2  # exists, not empty
    assert "not empty" in capsys.readouterr().err
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--replace"]) == 0
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "in")]) == 2


def test_output_folder_is_never_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save("llama", tmp_path / "in")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("previous result")
    calls = []
    real = out_of_core.solve

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 4:  # mid-way: three components written into the staging folder
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(out_of_core, "solve", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        balance_checkpoint(tmp_path / "in", tmp_path / "out", replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no staging folder left behind
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]  # the previous output is intact


def test_limits_and_refusals(tmp_path: Path) -> None:
    _save("llama", tmp_path / "in", layers=2)
    with pytest.raises(CheckpointError, match="over the limit"):
        balance_checkpoint(tmp_path / "in", tmp_path / "out", max_component_bytes=1000)
    with pytest.raises(SynbalError, match="holds it"):
        balance_checkpoint(tmp_path / "in", tmp_path)
    with pytest.raises(synbal.errors.RegularizerError, match="sums of powers"):
        balance_checkpoint(tmp_path / "in", tmp_path / "out", "l2,1")
    for reg in ("l2,1", "linf"):  # inspection takes what balancing takes
        with pytest.raises(synbal.errors.RegularizerError, match="sums of powers"):
            inspect_checkpoint(tmp_path / "in", reg)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_single_file_checkpoint(tmp_path: Path) -> None:
    model = tiny("llama", layers=2)
    model.save_pretrained(tmp_path / "in")  # one model.safetensors, no index
    assert (tmp_path / "in" / "model.safetensors").exists()
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out")
    balanced = type(model).from_pretrained(tmp_path / "out").eval()
    ids = example("llama", 3)
    assert report.converged and torch.allclose(logits(balanced, ids), logits(model, ids), rtol=1e-5, atol=1e-6)


def test_meta_model_needs_a_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(CheckpointError, match="names no architecture"):
        meta_model(tmp_path)


def test_verify_loads_both_folders_and_compares_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    _save("llama", tmp_path / "in", layers=2)
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out", verify=True)
    assert report.verified
    capsys.readouterr()
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "o3"), "--verify"]) == 0
    assert "function verified (same logits)" in capsys.readouterr().out
    monkeypatch.setattr(out_of_core, "scale_parameter", lambda t, rf, cf: t.mul_(1.5))  # not a symmetry
    with pytest.raises(synbal.errors.VerificationError, match="written folder"):
        balance_checkpoint(tmp_path / "in", tmp_path / "bad", verify=True)
    assert not (tmp_path / "bad").exists()  # checked before the folder is renamed into place
    assert main(["balance", str(tmp_path / "in"), "-o", str(tmp_path / "bad"), "--verify"]) == 1
    assert not (tmp_path / "bad").exists()


def _prefix(name: str) -> str:
    return name.rsplit("[", 1)[0]


@pytest.mark.parametrize(("name", "reg"), [("llama", "l2"), ("llama", "l1"), ("gpt2", "l2"), ("gpt2", "l1")])
def test_inspect_equals_the_in_memory_deficit(tmp_path: Path, name: str, reg: str) -> None:
    model = _save(name, tmp_path / "in", layers=2)  # float32, several shards
    ref = synbal.deficit(model, reg, example_inputs=example(name, 0), verify=False)
    got = inspect_checkpoint(tmp_path / "in", reg)
    b = got.balance
    for attr in ("regularizer_value", "overall_deficit", "max_relative_deficit", "frobenius_norm"):
        assert getattr(b, attr) == pytest.approx(getattr(ref, attr), rel=1e-9, abs=0), attr
    assert b.regularizer == ref.regularizer == reg and b.excluded == ref.excluded
    assert [u.name for u in b.units] == [u.name for u in ref.units] and got.groups == len(ref.units)
    for field in ("IN", "OUT", "degree", "deficit", "relative_deficit"):
        x = np.array([getattr(u, field) for u in b.units])
        y = np.array([getattr(u, field) for u in ref.units])
        assert np.allclose(x, y, rtol=1e-9, atol=0), field
    assert [u.status for u in b.units] == [u.status for u in ref.units]
    assert [la.units for la in b.layers] == [la.units for la in ref.layers]
    assert np.allclose([(la.IN, la.OUT, la.max_relative_deficit) for la in b.layers],
                       [(la.IN, la.OUT, la.max_relative_deficit) for la in ref.layers], rtol=1e-9, atol=0)
    free = {u.name: u.relative_deficit for u in ref.units if u.status == "free"}
    for layer in got.layers:  # each named layer: its groups' count, sums, max and mean, from the in-memory units
        mine = [u for u in ref.units if _prefix(u.name) == layer.name]
        rel = [free[u.name] for u in mine if u.name in free]
        assert layer.groups == len(mine)
        assert np.isclose(layer.IN, sum(u.IN for u in mine), rtol=1e-9, atol=0)
        assert layer.max_relative_deficit == pytest.approx(max(rel), rel=1e-12)
        assert layer.mean_relative_deficit == pytest.approx(float(np.mean(rel)), rel=1e-9)
    assert sum(layer.groups for layer in got.layers) == got.groups
    assert got.mean_relative_deficit == pytest.approx(float(np.mean(list(free.values()))), rel=1e-9)
    assert sum(c.regularizer_value for c in got.components) + got.untouched_regularizer_value == pytest.approx(
        ref.regularizer_value, rel=1e-9)
    params = {k: t for k, t in _tensors(tmp_path / "in").items() if k in dict(model.named_parameters())}
    assert got.tensors_read == len(params) == got.reads  # every parameter's tensor read once, in one read (< 16 MiB)
    assert got.bytes_read == got.touched_bytes == sum(t.numel() * t.element_size() for t in params.values())
    assert got.touched_bytes < got.checkpoint_bytes  # headers (and any other tensor) are not read


@pytest.mark.parametrize(("dtype", "bound"), [(torch.float64, 1e-10), (torch.float32, 2**-21)])
def test_inspect_after_balancing_shows_the_balanced_state(tmp_path: Path, dtype: torch.dtype, bound: float) -> None:
    """Below the solver's tolerance in float64; in float32 the written weights' rounding (2^-24 relative,
    doubled by the squares) bounds what the checkpoint itself can show."""
    _save("llama", tmp_path / "in", dtype, layers=2)
    before = inspect_checkpoint(tmp_path / "in", "l1")
    report = balance_checkpoint(tmp_path / "in", tmp_path / "out", "l1", tol=1e-10)
    after = inspect_checkpoint(tmp_path / "out", "l1")
    assert before.max_relative_deficit > 0.1 and report.converged
    assert after.max_relative_deficit <= bound and all(c.max_relative_deficit <= bound for c in after.components)
    assert before.balance.regularizer_value == pytest.approx(report.regularizer_before, rel=1e-9)
    assert after.balance.regularizer_value == pytest.approx(report.regularizer_after, rel=bound)
    assert after.untouched_regularizer_value == before.untouched_regularizer_value  # copied bit for bit


def test_cli_inspects_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save("gpt2", tmp_path / "in", layers=2)
    (tmp_path / "in" / "extra.bin").write_bytes(b"pickled, never read")
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "in"), "--reg", "l1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    api = json.loads(json_text(inspect_checkpoint(tmp_path / "in", "l1").as_dict()))
    for d in (data, api):
        for key in ("discovery_seconds", "inspect_seconds"):
            del d["totals"][key]
    assert data == api and data["totals"]["left_out"] == ["extra.bin"] and len(data["groups"]) == 128
    assert main(["inspect", str(tmp_path / "in"), "--max-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "(4 more layers)" in out and "max relative deficit: " in out and "regularizer (l2): " in out


@pytest.mark.parametrize("defect", ["truncated", "no config", "pickle only", "regularizer", "factory"])
def test_cli_inspect_bad_folders_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 defect: str) -> None:
    src = tmp_path / "in"
    _save("llama", src, layers=2)
    args, expected = ["inspect", str(src)], {"truncated": "cut short", "no config": "no config.json",
                                             "pickle only": "pickle-based", "regularizer": "sums of powers",
                                             "factory": "drop --factory"}[defect]
    if defect == "truncated":
        _truncate(_shards(src)[0], 100)
    elif defect == "no config":
        (src / "config.json").unlink()
    elif defect == "pickle only":
        for p in [*_shards(src), src / "model.safetensors.index.json"]:
            p.unlink()
        (src / "pytorch_model.bin").write_bytes(b"not loaded")
    elif defect == "regularizer":
        args += ["--reg", "l2,1"]
    else:
        args += ["--factory", "os:getcwd"]
    capsys.readouterr()
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and expected in err and "Traceback" not in err and captured.out == ""


@pytest.mark.slow
def test_three_gigabyte_llama_checkpoint_under_one_gigabyte_rss(tmp_path: Path) -> None:
    """The issue's goal: ~3 GB Llama-shaped checkpoint in ~500 MB shards, peak RSS < 1 GB, equal to in memory."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_out_of_core.py"), "--workdir", str(tmp_path),
                    "--json", str(out)], check=True, env=env, timeout=3600)
    result = json.loads(out.read_text())
    assert 2.5e9 < result["checkpoint_bytes"] < 3.5e9 and result["shards"] >= 6
    assert result["peak_rss_bytes"] < 1e9
    assert result["max_rel_diff_vs_in_memory"] <= 1e-6
    assert result["converged"] and result["max_relative_deficit"] <= 1e-8
