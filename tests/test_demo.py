"""Tests of the main demo (``synbal demo``): numbers, files, CLI exit codes, the output check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synbal._cli import demo as demo_module
from synbal._cli.demo import DemoConfig, run_demo
from synbal._cli.main import main
from synbal.errors import SynbalError, VerificationError


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[demo_module.DemoResult, list[str], Path]:
    out = tmp_path_factory.mktemp("demo")
    lines: list[str] = []
    result = run_demo(DemoConfig(epochs=1, train_size=1000), out_dir=out, progress=False,
                      echo=lines.append)
    return result, lines, out


def test_demo_balances_without_changing_outputs(demo_run: tuple[demo_module.DemoResult, list[str], Path]) -> None:
    result, _, _ = demo_run
    n = result.numbers
    assert n["balance"]["converged"]
    assert n["after"]["regularizer"] < n["before"]["regularizer"]
    assert n["regularizer_drop_percent"] == pytest.approx(
        100 * (1 - n["after"]["regularizer"] / n["before"]["regularizer"]))
    assert n["before"]["max_relative_deficit"] > 0.1  # trained on E alone: not balanced
    assert n["after"]["max_relative_deficit"] < 1e-6  # float32 weights
    assert n["balance"]["float64_copy_max_relative_deficit"] < 1e-9
    assert n["outputs"]["float64"]["max_relative_difference"] < 1e-12
    assert n["outputs"]["float32"]["max_relative_difference"] < 1e-5
    assert n["outputs"]["unchanged"] is True
    assert [row["units"] for row in n["layers"]] == [200, 100, 50, 100, 200]
    for row in n["layers"]:
        assert row["deficit_after"] < 1e-6 * max(row["deficit_before"], 1.0)
    assert len(n["training"]["test_loss"]) == 2  # before training and after the epoch


def test_demo_writes_json_and_plot(demo_run: tuple[demo_module.DemoResult, list[str], Path]) -> None:
    result, _, out = demo_run
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "demo_deficits.png"]
    data = json.loads((out / "demo.json").read_text())
    assert data["before"] == result.numbers["before"]
    assert data["settings"]["epochs"] == 1 and data["settings"]["train_size"] == 1000
    assert "synbal" in data["environment"]
    assert (out / "demo_deficits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_prints_a_readable_summary(demo_run: tuple[demo_module.DemoResult, list[str], Path]) -> None:
    _, lines, _ = demo_run
    text = "\n".join(lines)
    for piece in ("[1/4] training", "[2/4] balance report", "[3/4] balancing exactly",
                  "[4/4] checking", "R (l2):", "max relative deficit", "overall deficit", "wrote",
                  "result: same outputs (to rounding)", "every hidden unit balanced"):
        assert piece in text


def test_demo_refuses_changed_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "FLOAT32_TOLERANCE", 0.0)  # float32 rounding now "fails"
    with pytest.raises(VerificationError, match="outputs changed"):
        run_demo(DemoConfig(epochs=0, train_size=200), out_dir=tmp_path, progress=False,
                 echo=lambda _: None)


def test_demo_config_rejects_bad_values() -> None:
    with pytest.raises(SynbalError, match="epochs"):
        DemoConfig(epochs=-1)
    with pytest.raises(SynbalError, match="lr"):
        DemoConfig(lr=0.0)


def test_cli_demo_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["demo", "--epochs", "0", "--out", str(out), "--no-progress"]) == 0
    assert (out / "demo.json").exists()
    assert "R (l2):" in capsys.readouterr().out
    assert main(["demo", "--epochs", "-1", "--out", str(out), "--no-progress"]) == 2
    assert "epochs" in capsys.readouterr().err
    assert main(["demo", "--data", str(tmp_path / "missing"), "--out", str(out), "--no-progress"]) == 2
    assert "synbal: error:" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["demo", "--out", str(blocker / "sub"), "--no-progress"]) == 2
    assert blocker.read_text() == "not a directory"
