"""`synbal reproduce saul` (quick variant) and its building blocks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from synbal._problem.lpq import LpqRegularizer
from synbal.experiments import EXPERIMENTS, ExperimentContext, run_experiment
from synbal.experiments._saul import SaulSettings, he_mlp_problems, run_settings


def test_he_problems_share_weights_across_powers() -> None:
    probs = he_mlp_problems([30, 40, 20, 5], [1.0, 2.0], np.random.default_rng(1))
    a1, a2 = probs[1.0].blocks[1].matrix, probs[2.0].blocks[1].matrix
    np.testing.assert_allclose(a1**2, a2)
    assert probs[2.0].layers is not None and [layer.size for layer in probs[2.0].layers] == [40, 20]
    # He init: E|w|^2 = 2/fan_in, so every unit's incoming L2 cost is about 2
    rows = probs[2.0].blocks[1].matrix.sum(axis=1)
    assert rows.mean() == pytest.approx(2.0, rel=0.15)


def test_small_run_is_monotone_and_agrees_with_exact() -> None:
    settings = SaulSettings(nets=((20, 30, 15, 4), (20, 12, 10, 8, 4)), seeds=2, tol=1e-9, max_updates=3000,
                            pq=((2.0, 2.0), (2.0, 1.0), (1.0, math.inf)))
    results = run_settings(settings)
    for net in settings.nets:
        res = results[settings.label(net)]
        for p, q in settings.pq:
            label = str(LpqRegularizer(p, q))
            assert all(res["converged"][label])
            assert res["max_increase"][label] <= 1e-12
            assert all(r < 1 for r in res["final_ratio"][label])
            assert len(res["curves"][label]) == settings.seeds
        rows = res["schedules"]["l2"]
        np.testing.assert_allclose(rows["multiplicative_ratio"], rows["exact_ratio"], rtol=1e-9)
        np.testing.assert_allclose(rows["layer_ratio"], rows["exact_ratio"], rtol=1e-9)
        np.testing.assert_allclose(rows["stochastic_ratio"], rows["exact_ratio"], rtol=1e-9)
        assert all(rows["layer_converged"]) and all(rows["stochastic_converged"])


def test_quick_reproduction_writes_outputs(tmp_path: Path) -> None:
    assert "saul" in EXPERIMENTS
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False)
    out = run_experiment("saul", ctx)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["saul.json", "saul.md", "saul_flows.png", "saul_norms.png", "saul_schedules.png"]
    payload = json.loads((tmp_path / "saul.json").read_text())
    assert payload["experiment"] == "saul" and payload["quick"] is True
    balancing = payload["results"]["balancing"]
    assert set(balancing) == {"200-250-125-10", "200-200-100-50-25-10", "200-100-75-75-50-50-25-10"}
    summary = (tmp_path / "saul.md").read_text()
    assert "Monotone decrease at every update: **yes**" in summary
    assert "reach the same minimum: **yes**" in summary
    assert out["summary"].strip() == summary.strip()
    flows = payload["results"]["flows"]["runs"]
    assert set(flows) == {"l2", "l1", "l2,1"}
    for reg, runs in flows.items():
        # the flow is balanced at every measurement; plain GD from the same balanced start is not (except L2)
        assert runs["flow"]["max_stationarity_after_start"] < 1e-8, reg
        assert runs["gd"]["stationarity"][0] > 0.1  # He init is far from balanced
        assert len(runs["flow"]["step"]) == len(runs["flow"]["E"]) > 5
    assert flows["l1"]["gd_balanced_start"]["max_stationarity_after_start"] > 1e-2
    assert flows["l2,1"]["gd_balanced_start"]["max_stationarity_after_start"] > 1e-2
    # L2: the flow is gradient descent up to step-size effects
    l2 = flows["l2"]
    assert l2["gd_balanced_start"]["max_stationarity_after_start"] < 1e-2
    assert l2["flow"]["final_objective"] == pytest.approx(l2["gd_balanced_start"]["final_objective"], rel=1e-2)


@pytest.mark.slow
def test_full_reproduction(tmp_path: Path) -> None:
    """The full run (three deep nets, three seeds, 10 MNIST epochs): several minutes."""
    out = run_experiment("saul", ExperimentContext(out_dir=tmp_path, quick=False, progress=False))
    summary = out["summary"]
    assert "Monotone decrease at every update: **yes**" in summary
    assert "reach the same minimum: **yes**" in summary
    for reg, runs in out["results"]["flows"]["runs"].items():
        assert runs["flow"]["max_stationarity_after_start"] < 1e-8, reg


def test_gap_sentence_flips_at_its_threshold() -> None:
    from synbal.experiments._saul import MOST_OF_THE_GAP, _gap_sentence

    def runs(balanced: float) -> dict[str, dict[str, float]]:
        return {"flow": {"final_objective": 0.0}, "gd": {"final_objective": 1.0},
                "gd_balanced_start": {"final_objective": balanced}}

    closes_most = _gap_sentence("l2", runs(1.0 - (MOST_OF_THE_GAP + 0.1)))
    closes_little = _gap_sentence("l2", runs(1.0 - (MOST_OF_THE_GAP - 0.1)))
    assert "most of it is the init's imbalance" in closes_most
    assert "most of it is what the flow itself changes" in closes_little
