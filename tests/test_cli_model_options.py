"""``synbal balance`` on model files takes the method options the graph path takes (``--sets``,
``--closed-form``): applied when the method uses them, refused in one line when it does not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model_zoo import mlp
from synbal._cli.main import main


def _weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_model

    torch.manual_seed(0)
    path = tmp_path / "w.safetensors"
    save_model(mlp(), str(path))
    return path


def _balance(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out.safetensors"
    code = main(["balance", "--factory", "model_zoo:mlp", "--weights", str(_weights(tmp_path)), "--example-shape",
                 "3,5", "-o", str(out), "--report", str(tmp_path / "report.json"), *extra])
    return code, out


def test_sets_reach_the_tied_method(tmp_path: Path) -> None:
    import synbal

    names = list(synbal.balance(mlp(), "l2", example_inputs=(torch.randn(3, 5),)).problem.names[:2])
    code, out = _balance(tmp_path, "--method", "tied", "--sets", ",".join(names))
    assert code == 0 and out.exists()
    scales = json.loads((tmp_path / "report.json").read_text())["scales"]
    assert scales[names[0]] == scales[names[1]] != 1.0  # one tied set: one scale
    assert {v for k, v in scales.items() if k not in names} == {1.0}  # only the given set moves


def test_an_option_the_method_does_not_take_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _balance(tmp_path, "--method", "stochastic", "--closed-form")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and "closed_form" in err[0]
