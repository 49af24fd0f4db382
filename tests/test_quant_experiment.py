"""``synbal reproduce quant``: a shrunken run end to end, resuming, a missing peer, the verdict rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import synbal.experiments._quant as quant
from synbal.experiments import ExperimentContext, run_experiment
from synbal.experiments._quant_models import build_model, train_model
from synbal.experiments._quant_report import _goal_lines
from synbal.experiments._quant_verdict import verdict

TINY = {"models": ["mlp"], "seeds": 1, "epochs": 1, "train_size": 200, "test_size": 100, "bits": [8, 4],
        "arms": ["none", "torch-equalize", "synbal-linf"], "datasets": ["MNIST"]}
KEYS = {"model", "dataset", "seed", "bits", "granularity", "arm", "rescaled", "accuracy"}


def _run(tmp_path: Path, **extra: object) -> dict:
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False, extra={**TINY, **extra})
    return run_experiment("quant", ctx)


def test_tiny_run_writes_rows_verdict_and_plots_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    result = _run(tmp_path)
    payload = json.loads((tmp_path / "quant.json").read_text())
    rows = payload["rows"]
    assert len(rows) == 1 * 2 * 2 * 3 * 2 and all(set(r) == KEYS for r in rows)
    assert {r["granularity"] for r in rows} == {"per-tensor", "per-channel"}
    assert payload["settings"]["arms"] == TINY["arms"]
    by = {(r["arm"], r["bits"], r["granularity"], r["rescaled"]): r["accuracy"] for r in rows}
    for (arm, bits, gran, rescaled), acc in by.items():
        if arm == "synbal-linf" and rescaled:
            assert acc == by[(arm, bits, gran, False)]  # canonical: the rescaling does not matter
    changes = {(r["arm"], r["rescaled"]): r["max_rel_output_change"] for r in payload["results"]["float_rows"]}
    assert changes[("none", False)] == 0.0 and 0 < changes[("none", True)] < 1e-5
    assert max(changes[("synbal-linf", r)] for r in (False, True)) < 1e-5
    md = (tmp_path / "quant.md").read_text()
    assert "rescaled copies" in md and result["goals"]["fp32"]["met"] is True
    assert len(list(tmp_path.glob("quant_MNIST_*.png"))) == 4
    monkeypatch.setattr(quant, "_one_run", lambda *a, **k: pytest.fail("finished runs must be reused"))
    again = _run(tmp_path)
    assert again["rows"] == result["rows"]
    more = _run(tmp_path, seeds=2, assemble_only=True)  # seed 1 is not in the record: listed, not run
    assert more["rows"] == result["rows"]
    assert "not run yet (left out): mlp, MNIST, seed 1" in (tmp_path / "quant.md").read_text()


def test_a_missing_peer_is_skipped_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    status = {"torch-equalize": None, "brevitas": "brevitas is not installed (pip install 'synbal[bench]')",
              "aimet": None}
    monkeypatch.setattr(quant, "peer_status", lambda arms: status)
    result = _run(tmp_path, arms=["none", "brevitas", "synbal-linf"], bits=[8])
    assert {r["arm"] for r in result["rows"]} == {"none", "synbal-linf"}
    assert "brevitas skipped: brevitas is not installed" in (tmp_path / "quant.md").read_text()


def _row(model, bits, arm, acc, rescaled=False, seed=0):
    return {"model": model, "dataset": "D", "seed": seed, "bits": bits, "granularity": "per-tensor", "arm": arm,
            "rescaled": rescaled, "accuracy": acc}


def test_verdict_rules_can_fail():
    rows = [_row(m, b, a, acc) for m in ("mobilenet", "resnet", "mlp") for b, a, acc in
            [(8, "aimet", 98.0), (8, "synbal-l2", 97.8), (4, "aimet", 80.0), (4, "synbal-l2", 80.5)]]
    rows += [_row("mlp", 4, "synbal-l2", 79.0, rescaled=True)]
    floats = [{"arm": "synbal-l2", "max_rel_output_change": 3e-5}]
    goals = verdict(rows, floats, ["aimet", "brevitas"])
    assert goals["8bit"]["met"] is False and goals["4bit"]["met"] is False
    assert goals["rescaled"]["met"] is False and goals["fp32"]["met"] is False
    assert goals["4bit"]["wins_per_dataset"] == {"D": 0}
    assert verdict(rows, floats, [])["8bit"]["met"] is None  # no peer ran: not judged


def test_the_4bit_verdict_says_where_float_accuracy_leaves_no_room_for_a_win():
    rows = [_row(m, 4, a, acc) for m, peer, ours in [("mobilenet", 80.0, 84.0), ("resnet", 98.5, 98.6),
                                                     ("mlp", 97.7, 97.8)]
            for a, acc in [("aimet", peer), ("synbal-l2", ours)]]
    floats = [{"dataset": "D", "model": m, "arm": "none", "rescaled": False, "accuracy": acc}
              for m, acc in [("mobilenet", 98.0), ("resnet", 99.2), ("mlp", 97.9)]]
    goals = verdict(rows, floats, ["aimet"])
    g4 = goals["4bit"]
    assert g4["met"] is False and g4["wins_per_dataset"] == {"D": 1}
    assert g4["reachable_per_dataset"] == {"D": 1}
    assert {d["model"]: round(d["headroom_points"], 6) for d in g4["details"]} == {
        "mobilenet": 18.0, "resnet": 0.7, "mlp": 0.2}
    text = "\n".join(_goal_lines(goals))
    assert "D: only 1 of 3 models have float accuracy at least 1.0 pt above" in text
    assert "mobilenet: synbal-l2 vs aimet: +4.00 pt (float accuracy +18.00 pt above the best peer)" in text


@pytest.mark.slow
def test_quick_variant_runs(tmp_path: Path):
    run_experiment("quant", ExperimentContext(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "quant.json").read_text())
    rows = payload["rows"]
    assert {r["model"] for r in rows} == {"mlp", "mobilenet"}
    assert all(0.0 <= r["accuracy"] <= 100.0 for r in rows)  # percent
    # the stored goals are the verdict rules applied to the stored rows
    peers = [p for p in quant.PEERS if payload["settings"]["peers"].get(p) == "used"]
    goals = verdict(rows, payload["results"]["float_rows"], peers)
    assert json.loads(json.dumps(goals)) == payload["results"]["goals"]
    # the canonical (L-infinity) balancing does not see the random rescaling, and keeps the float function
    by = {(r["model"], r["seed"], r["arm"], r["bits"], r["granularity"], r["rescaled"]): r["accuracy"] for r in rows}
    for (model, seed, arm, bits, gran, rescaled), acc in by.items():
        if arm == "synbal-linf" and rescaled:
            assert acc == by[(model, seed, arm, bits, gran, False)]
    assert payload["results"]["goals"]["fp32"]["met"] is True


def _lrs_seen(monkeypatch: pytest.MonkeyPatch, one_cycle: bool) -> list[float]:
    seen: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    x, y = torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,))
    train_model(build_model("mlp", 0), x, y, epochs=2, seed=0, batch=8, lr=3e-3, one_cycle=one_cycle)
    return seen


def test_one_cycle_warms_up_to_the_peak_then_anneals(monkeypatch: pytest.MonkeyPatch):
    lrs = _lrs_seen(monkeypatch, one_cycle=True)
    assert len(lrs) == 2 * 5 and max(lrs) == pytest.approx(3e-3)
    assert lrs[0] < 3e-4 and lrs[-1] < 3e-5 and lrs.index(max(lrs)) in range(1, 9)
    assert set(_lrs_seen(monkeypatch, one_cycle=False)) == {3e-3}


def test_full_run_settings_use_the_whole_data_and_the_schedule():
    s = quant._settings(ExperimentContext(out_dir=Path("."), quick=False, progress=False))
    assert s["train_size"] is None and s["test_size"] is None and s["seeds"] == 5
    assert s["epochs"] == quant.EPOCHS == 3 and "one-cycle" in s["optimizer"]


def test_a_second_process_can_take_the_later_seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    later = _run(tmp_path, seeds=2, first_seed=1)  # seed 0 is left to another process
    assert {r["seed"] for r in later["rows"]} == {1}
    assert "not run yet (left out): mlp, MNIST, seed 0" in (tmp_path / "quant.md").read_text()
    ran = []
    one_run = quant._one_run
    monkeypatch.setattr(quant, "_one_run", lambda *a, **k: ran.append(a[3]) or one_run(*a, **k))
    both = _run(tmp_path, seeds=2)
    assert ran == [0] and {r["seed"] for r in both["rows"]} == {0, 1}
