"""The reproductions added for issue 14: uniqueness, diagnostic, appendixb (tiny runs + verdict rules)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synbal.errors import SynbalError
from synbal.experiments import EXPERIMENTS, ExperimentContext, run_experiment


def test_registered() -> None:
    assert {"uniqueness", "diagnostic", "appendixb"} <= set(EXPERIMENTS)


def test_uniqueness_tiny_run_agrees_with_the_exact_state(tmp_path: Path) -> None:
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False, extra={"graphs": 1, "orders": 3,
                                                                                 "hidden": 6})
    res = run_experiment("uniqueness", ctx)
    assert res["verdict"] == "supported"
    assert set(res["table"]) == {"non-layered", "recurrent", "mixed", "BiPU"}
    for per_reg in res["table"].values():
        assert set(per_reg) == {"l2", "l1", "l0.5"}
        for cell in per_reg.values():
            assert cell["runs"] == 3 and cell["converged"] == 3 and cell["max_distance"] < 1e-8
            assert cell["exact_shift_max"] > 0.05  # there was something to balance
    assert "**Result: supported.**" in (tmp_path / "uniqueness.md").read_text()
    with pytest.raises(SynbalError, match="at least 1"):
        run_experiment("uniqueness", ExperimentContext(out_dir=tmp_path, extra={"orders": 0}))


def test_uniqueness_verdict_flips() -> None:
    from synbal.experiments._uniqueness import SAME_STATE, verdict

    assert verdict(5, 5, SAME_STATE / 2)[0] == "supported"
    assert verdict(5, 5, SAME_STATE * 2)[0] == "not supported"
    assert verdict(4, 5, SAME_STATE / 2)[0] == "inconclusive"


def test_diagnostic_tiny_run(tmp_path: Path) -> None:
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False,
                            extra={"steps": 400, "train_size": 100})
    res = run_experiment("diagnostic", ctx)
    assert set(res["judged"]) == {"E + βL2", "E + βL2, balanced start", "E alone"}
    raw = res["judged"]["E + βL2"][0]
    assert raw["final_ratio"] < 0.5  # with R the scale-free deficit falls
    assert res["verdict"] in {"supported", "partly supported", "not supported"}
    saved = json.loads((tmp_path / "diagnostic.json").read_text())
    assert saved["settings"]["steps"] == 400 and saved["settings"]["thresholds"]["flag_factor"] == 10.0


def test_diagnostic_judge_and_verdict_flip_at_thresholds() -> None:
    from synbal.experiments._diagnostic import FLAG_FACTOR, MAX_FINAL_RATIO, judge_seed, verdict

    steps = np.arange(0, 101, 10, dtype=float)
    grad = np.exp(-steps / 10)
    falling = {"step": steps, "grad_norm": grad, "scale_free_deficit": grad**4, "loss": grad}
    j = judge_seed(falling)
    assert j["falls"] and j["flags"] and j["correlation"] == pytest.approx(1.0)
    flat = {"step": steps, "grad_norm": grad, "scale_free_deficit": np.full(steps.size, 1.0), "loss": grad}
    j_flat = judge_seed(flat)
    assert not j_flat["flags"] and j_flat["early_over_final"] < FLAG_FACTOR
    assert j_flat["final_ratio"] > MAX_FINAL_RATIO
    assert verdict([j], [j])[0] == "supported"
    assert verdict([j], [j_flat])[0] == "partly supported"
    assert verdict([j_flat], [j])[0] == "not supported"


def test_appendixb_tiny_run_confirms_the_corrected_form(tmp_path: Path) -> None:
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False, extra={"nets": 2})
    res = run_experiment("appendixb", ctx)
    assert res["verdict"] == "the corrected closed form is confirmed; the printed eq. 12.7 is not"
    assert res["table"]["l2"]["printed"]["max_log_scale_error"] > 1e-3
    assert res["table"]["l1"]["corrected"]["max_log_scale_error"] < 1e-8
    assert "printed" in (tmp_path / "appendixb.md").read_text()


def test_appendixb_verdict_words() -> None:
    from synbal.experiments._appendixb import AGREE, verdict

    assert verdict({"corrected": AGREE / 2, "printed": AGREE / 2})[0] == "both forms agree with the iterated state"
    assert verdict({"corrected": AGREE * 2, "printed": AGREE / 2})[0].startswith("the printed eq. 12.7 agrees")
    assert verdict({"corrected": AGREE * 2, "printed": AGREE * 2})[0].startswith("neither")
