"""Model files for the CLI: .pt2 torch.export programs and factory + safetensors weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_model, save_model

import synbal
from model_zoo import ZOO, build
from synbal._cli.commands.model_files import balance_model_file, inspect_model_file
from synbal.errors import ModelError, SynbalError
from synbal.torch import discover


def _args(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(input=None, output=None, reg="l2", method="exact", tol=1e-10, max_sweeps=10_000,
                                seed=None, theta=1.0, report=None, factory=None, weights=None,
                                example_shape=None, no_verify=False)
    base.update(kw)
    return argparse.Namespace(**base)


def _export(name: str, path: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    model, x = build(next(z for z in ZOO if z.name == name))
    model, x = model.float(), x.float()
    torch.export.save(torch.export.export(model, (x,)), str(path))
    return model, x


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet_block", "depthwise", "cat", "transposed"])
def test_exported_programs_have_the_same_groups(name: str) -> None:
    entry = next(z for z in ZOO if z.name == name)
    model, x = build(entry)
    program = torch.export.export(model, (x,))
    d = discover(program.module(), (x,))
    assert len(d.groups) == entry.n_groups
    res = synbal.balance(program.module(), "l2", example_inputs=(x,))
    assert res.converged and res.max_relative_deficit <= 1e-8


def test_balance_pt2_round_trip(tmp_path: Path) -> None:
    src, out, rep = tmp_path / "in.pt2", tmp_path / "out.pt2", tmp_path / "r.json"
    model, x = _export("resnet_block", src)
    before = src.read_bytes()
    assert balance_model_file(_args(input=str(src), output=str(out), report=str(rep))) == 0
    assert src.read_bytes() == before  # input untouched
    balanced = torch.export.load(str(out)).module()
    with torch.no_grad():
        assert torch.allclose(balanced(x), model(x), rtol=1e-4, atol=1e-5)
    report = json.loads(rep.read_text())
    assert report["converged"] and report["regularizer_after"] < report["regularizer_before"]
    rep2 = synbal.deficit(balanced, "l2", example_inputs=(x,))
    assert rep2.max_relative_deficit <= 1e-5  # float32 weights


def test_balance_factory_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from model_zoo import cnn

    model = cnn().eval()
    weights, out = tmp_path / "w.safetensors", tmp_path / "out.safetensors"
    save_model(model, str(weights))
    args = _args(factory="model_zoo:cnn", weights=str(weights), example_shape="2,3,8,8", output=str(out),
                 method="stochastic", seed=1)
    assert balance_model_file(args) == 0
    balanced = cnn().eval()
    load_model(balanced, str(out))
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(balanced(x), model(x), rtol=1e-4, atol=1e-5)
    assert not torch.equal(balanced[0].weight, model[0].weight)


def test_model_file_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.pt2"
    _export("mlp", src)
    with pytest.raises(SynbalError, match="is the input file"):
        balance_model_file(_args(input=str(src), output=str(src)))
    with pytest.raises(SynbalError, match=r"must be a \.pt2 file"):
        balance_model_file(_args(input=str(src), output=str(tmp_path / "o.safetensors")))
    pickled = tmp_path / "m.pt"
    pickled.write_bytes(b"not read")
    with pytest.raises(SynbalError, match="never loaded"):
        balance_model_file(_args(input=str(pickled), output=str(tmp_path / "o.pt2")))
    with pytest.raises(SynbalError, match=r"pkg\.module:function"):
        balance_model_file(_args(factory="model_zoo.mlp", weights="w.safetensors", output="o.safetensors"))
    weights = tmp_path / "w.safetensors"
    save_model(build(ZOO[0])[0].float(), str(weights))
    with pytest.raises(ModelError, match="--example-shape"):
        balance_model_file(_args(factory="model_zoo:mlp", weights=str(weights), output=str(tmp_path / "o.safetensors")))
    with pytest.raises(ModelError, match="cannot load"):
        balance_model_file(_args(factory="model_zoo:cnn", weights=str(weights), example_shape="1,3,8,8",
                                 output=str(tmp_path / "o.safetensors")))
    garbage = tmp_path / "bad.pt2"
    garbage.write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"not a readable torch\.export program"):
        balance_model_file(_args(input=str(garbage), output=str(tmp_path / "o.pt2")))
    assert not (tmp_path / "o.pt2").exists() and not (tmp_path / "o.safetensors").exists()


def test_inspect_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.pt2"
    _export("gelu_block", src)
    assert inspect_model_file(_args(input=str(src), json=False, max_rows=None)) == 0
    text = capsys.readouterr().out
    assert "6 scalable groups" in text and "feeds aten.gelu.default" in text
    assert inspect_model_file(_args(input=str(src), json=True, max_rows=None)) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["groups"]) == 6 and data["groups"][0]["incoming"][0].startswith("2.weight[0, :]")
