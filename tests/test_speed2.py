"""speed2: decision rules flip at their thresholds; weights-only balancing; a tiny end-to-end run."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synbal.errors import SynbalError
from synbal.experiments import EXPERIMENTS, ExperimentContext, run_experiment
from synbal.experiments._speed2_rules import MIN_GAIN_POINTS, MIN_SPEEDUP, NULL_BAND_POINTS, mean_ci, paired_decision

SEEDS = 5


def _noise(scale: float) -> list[float]:
    return (scale * np.array([-1.0, 0.5, 0.0, -0.5, 1.0])).tolist()


def test_paired_decision_flips_at_the_accuracy_threshold() -> None:
    plain = [90.0] * SEEDS
    steps = [100.0] * SEEDS
    ahead = [90.0 + MIN_GAIN_POINTS + 0.05 + e for e in _noise(0.01)]
    short = [90.0 + MIN_GAIN_POINTS - 0.05 + e for e in _noise(0.01)]
    assert paired_decision(plain, ahead, steps, steps)["decision"] == "Supported"
    assert paired_decision(plain, short, steps, steps)["decision"] == "Inconclusive"
    # the gain is large but the interval includes 0: not supported
    noisy = [90.0 + 1.0 + e for e in _noise(3.0)]
    assert paired_decision(plain, noisy, steps, steps)["decision"] == "Inconclusive"


def test_paired_decision_refuted_inside_the_null_band_only() -> None:
    plain, steps = [90.0] * SEEDS, [100.0] * SEEDS
    inside = [90.0 + e for e in _noise(NULL_BAND_POINTS / 4)]
    outside = [90.0 + e for e in _noise(NULL_BAND_POINTS * 2)]
    assert paired_decision(plain, inside, steps, steps)["decision"] == "Refuted"
    assert paired_decision(plain, outside, steps, steps)["decision"] == "Inconclusive"


def test_an_arm_behind_plain_beyond_the_null_band_is_flagged_but_keeps_its_label() -> None:
    plain, steps = [90.0] * SEEDS, [100.0] * SEEDS
    far = [90.0 - NULL_BAND_POINTS - 0.2 + e for e in _noise(0.01)]
    edge = [90.0 - NULL_BAND_POINTS + 0.05 + e for e in _noise(0.2)]  # interval crosses −band
    d = paired_decision(plain, far, steps, steps)
    assert (d["decision"], d["behind"]) == ("Inconclusive", True)
    assert paired_decision(plain, edge, steps, steps)["behind"] is False
    ahead = [91.0 + e for e in _noise(0.01)]
    assert paired_decision(plain, ahead, steps, steps)["behind"] is False


def test_paired_decision_supported_by_speed() -> None:
    plain = [90.0] * SEEDS
    same = [90.0 + e for e in _noise(0.01)]
    fast = [(1 - MIN_SPEEDUP - 0.05) * 100.0 + e for e in _noise(1.0)]
    slow = [(1 - MIN_SPEEDUP + 0.05) * 100.0 + e for e in _noise(1.0)]
    d = paired_decision(plain, same, [100.0] * SEEDS, fast)
    assert d["decision"] == "Supported" and d["by"] == ["speed"]
    assert paired_decision(plain, same, [100.0] * SEEDS, slow)["decision"] == "Refuted"
    # an arm that never reaches the threshold has no speed-up interval
    assert paired_decision(plain, same, [100.0] * SEEDS, [None] * SEEDS)["speedup"] is None
    with pytest.raises(SynbalError, match="one value per seed"):
        paired_decision(plain, same[:2], [1.0] * SEEDS, [1.0] * SEEDS)
    with pytest.raises(SynbalError):
        mean_ci([])


def test_weights_only_balancing_leaves_biases_and_balances_every_layer() -> None:
    from synbal.experiments._models import fc_classifier
    from synbal.experiments._speed2_train import balance_weights_only

    net = fc_classifier([6, 5, 4, 3], seed=1)
    biases = [m.bias.detach().clone() for m in net if isinstance(m, torch.nn.Linear)]
    for p in (1.0, 2.0):
        sweeps = balance_weights_only(net, p=p, tol=1e-6)
        assert 1 <= sweeps < 10_000
        lin = [m for m in net if isinstance(m, torch.nn.Linear)]
        for a, b in itertools.pairwise(lin):
            cin, cout = (a.weight.abs() ** p).sum(1), (b.weight.abs() ** p).sum(0)
            assert torch.all((cin - cout).abs() / (cin + cout) <= 1e-6)
    after = [m.bias for m in net if isinstance(m, torch.nn.Linear)]
    assert all(torch.equal(x, y) for x, y in zip(biases, after, strict=True))


def test_split_and_steps() -> None:
    from synbal.experiments._speed2 import steps_to, stratified_split

    labels = np.repeat(np.arange(10), 50)
    tr, va = stratified_split(labels, 0.1, seed=3)
    assert len(va) == 50 and np.all(np.bincount(labels[va]) == 5) and not set(tr) & set(va)
    assert steps_to({"epoch": [0, 2], "val": [0.5, 0.6], "steps_per_epoch": 3}, "val", 0.9) is None


def test_speed2_tiny_run_parts_a_and_c(tmp_path: Path) -> None:
    assert "speed2" in EXPERIMENTS and "speed" in EXPERIMENTS  # v1 stays readable
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False, extra={"parts": '["A", "C"]'})
    res = run_experiment("speed2", ctx)
    a = res["A"]["nets"]["784-256-10"]
    assert set(a["decisions"]) == {"full balance at start", "L1NB every epoch", "L2NB every epoch",
                                   "L1-regularised", "L2-regularised"}
    assert a["aaai"]["plain"]["aaai"] == "84.15"
    assert set(res["C"]["match"]) == {"plain", "L1NB every epoch"}
    md = (tmp_path / "speed2.md").read_text()
    assert "**Part A: " in md and "**Part C: " in md and "Normalize(0.5, 0.5)" in md
    saved = json.loads((tmp_path / "speed2.json").read_text())
    assert saved["settings"]["balancing"].startswith("weights only")
    # resumable: a rerun trains nothing
    again = run_experiment("speed2", ctx)
    assert again["runs_trained_now"] == 0
    with pytest.raises(SynbalError, match="unknown"):
        run_experiment("speed2", ExperimentContext(out_dir=tmp_path, quick=True, extra={"parts": '["D"]'}))


def test_part_b_figures_put_three_panels_a_row_and_plot_the_final_runs() -> None:
    from synbal.experiments._speed2_report import figures

    run = {"epoch": [0, 1, 2], "val": [0.1, 0.5, 0.9], "test": [0.1, 0.4, 0.8]}
    net = {"sweep_val_accuracy": {"plain": {0.01: 0.5, 0.1: 0.9}}, "best_lr": {"plain": 0.1},
           "curves": {"plain": [run, run]}}
    results = {"B": {ds: {"nets": {"a": net, "b": net}} for ds in ("MNIST", "Fashion-MNIST")}}
    figs = figures(results)
    assert set(figs) == {"partB_lr", "partB_curves"}
    axes = figs["partB_curves"].axes
    assert len(axes) == 6 and [ax.get_visible() for ax in axes] == [True] * 4 + [False] * 2
    assert axes[0].get_title() == "Part B: MNIST, a" and axes[0].get_ylabel() == "validation accuracy %"
    line = axes[0].get_lines()[0]
    assert line.get_label() == "plain (lr 0.1)" and list(line.get_ydata()) == [10.0, 50.0, 90.0]


@pytest.mark.slow
def test_speed2_quick_variant(tmp_path: Path) -> None:
    res = run_experiment("speed2", ExperimentContext(out_dir=tmp_path, quick=True, progress=False))
    assert set(res) >= {"A", "B", "C"}
    assert {"speed2_partB_lr.png", "speed2_partB_curves.png"} <= {p.name for p in tmp_path.iterdir()}
    b = res["B"]["MNIST"]["nets"]["784-256-10"]
    assert set(b["best_lr"]) == set(res["A"]["nets"]["784-256-10"]["final_test_accuracy"])
    # part A: accuracies are percentages, and every decision is the rule's on the recorded curves
    from synbal.experiments._speed2 import PART_A_THRESHOLD, steps_to

    a = res["A"]["nets"]["784-256-10"]
    assert all(0.0 <= cell["mean"] <= 100.0 for cell in a["final_test_accuracy"].values())
    plain = a["curves"]["plain"]
    for arm, decision in a["decisions"].items():
        runs = a["curves"][arm]
        again = paired_decision([100 * r["test"][-1] for r in plain], [100 * r["test"][-1] for r in runs],
                                [steps_to(r, "test", PART_A_THRESHOLD) for r in plain],
                                [steps_to(r, "test", PART_A_THRESHOLD) for r in runs])
        assert again["decision"] == decision["decision"] in ("Supported", "Refuted", "Inconclusive"), arm
    # part B: each arm's learning rate is the best of its sweep (ties to the smaller rate)
    for arm, lr in b["best_lr"].items():
        sweep = {float(k): v for k, v in b["sweep_val_accuracy"][arm].items()}
        assert sweep[float(lr)] == max(sweep.values())
        assert float(lr) == min(k for k, v in sweep.items() if v == sweep[float(lr)])
    # part C: "match" is the interval of the difference lying inside the band
    from synbal.experiments._speed2_report import MATCH_BAND

    for arm, cell in res["C"]["match"].items():
        diff = cell["difference"]
        assert cell["match"] == (diff["low"] >= -MATCH_BAND and diff["high"] <= MATCH_BAND), arm
    assert "**Part B: " in (tmp_path / "speed2.md").read_text()
