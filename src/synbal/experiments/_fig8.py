"""Figure 8: a balanced start is not preserved by SGD with a finite learning rate unless R is added.

Claim tested (paper, Section 7 and Figure 8 A–C): the MNIST autoencoder (784-200-100-50-100-200-784,
ReLU, sum of squares, SGD, batch 200) is first balanced with stochastic balancing (random
single-unit balancing until the max relative deficit is ≤ 1e-8), then trained. With a
relatively large learning rate and no regularizer the balance is rapidly lost; with ``E + β·L2``
it is kept (the deficit is pulled back to zero); with a small learning rate it is nearly
preserved (gradient flow conserves every unit's deficit exactly).

Settings (full run): 5 seeds, 40 epochs, SGD without momentum, large lr 0.05, small lr 0.002,
β = 0.01 (the paper gives neither lr nor β). ``--quick``: 2 seeds, 10 epochs.

Verdict rule (:data:`LOST_FACTOR`): *supported* when the large-lr E-alone run ends with an
overall deficit at least 100× larger than the small-lr run's (balance lost at a finite rate,
nearly kept at a small one) *and* 100× larger than the regularized run's (R keeps it), each
comparison holding for the raw deficit and for the scale-free one (deficit / ‖W‖_F⁴: the raw
deficit scales like ‖W‖⁴, so under R it also falls by mere weight shrinkage); *partly
supported* when only the first holds, with the summary saying whether R still helps once
normalised.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from synbal.experiments import _fig7 as fig7
from synbal.experiments._arms import Arm, plot_arms, run_arms, summarise_arm, torch_threads
from synbal.experiments._fig7 import summary_markdown
from synbal.experiments._report import ExperimentContext, write_outputs
from synbal.experiments._tasks import autoencoder_task
from synbal.experiments.cache import RunCache

__all__ = ["fig8_arms", "run", "verdict"]

NAME = "fig8"
OPTIONS = {**fig7.OPTIONS, "large_lr": "the large learning rate", "small_lr": "the small learning rate",
           "beta": "weight of the regularizer"}
CLAIM = "even from a balanced start, SGD with a non-infinitesimal learning rate loses balance without R"
LARGE_LR, SMALL_LR, BETA = 0.05, 0.002, 0.01


def fig8_arms(large: float = LARGE_LR, small: float = SMALL_LR, beta: float = BETA) -> list[Arm]:
    return [
        Arm(f"E, lr {large:g}", lr=large, start_balance="stochastic"),
        Arm(f"E+L2, lr {large:g}", reg="l2", beta=beta, lr=large, start_balance="stochastic"),
        Arm(f"E, lr {small:g}", lr=small, start_balance="stochastic"),
    ]


#: "Lost" / "kept": the large-rate E-alone run ends at least this many times less balanced.
LOST_FACTOR = 100.0


def _times(a: float, b: float) -> float:
    return a / max(b, 1e-300)


def verdict(arms: list[Arm], summaries: dict[str, dict[str, float]]) -> tuple[str, str]:
    """``(word, explanation)``: see the module docstring; every comparison is made on the raw
    deficit *and* on the scale-free one (deficit / ‖W‖_F⁴), and must hold on both."""
    large, reg, small = (summaries[a.label] for a in arms)
    raw = [s["overall_deficit_final"] for s in (large, reg, small)]
    free = [s["scale_free_deficit_final"] for s in (large, reg, small)]
    text = (f"overall L2 deficit after balancing: {large['overall_deficit_initial']:.2g}; at the end: "
            f"{arms[0].label}: {raw[0]:.3g}, {arms[1].label}: {raw[1]:.3g}, {arms[2].label}: {raw[2]:.3g}; "
            f"scale-free (deficit / ‖W‖_F⁴) at the end: {free[0]:.3g}, {free[1]:.3g}, {free[2]:.3g}")
    reg_gain_raw, reg_gain_free = _times(raw[0], raw[1]), _times(free[0], free[1])
    text += (f". With R the raw deficit ends {reg_gain_raw:.3g}× lower than without; normalised by ‖W‖_F⁴ the "
             f"run with R ends " + (f"{reg_gain_free:.3g}× more balanced" if reg_gain_free >= 1 else
                                   f"{1 / reg_gain_free:.3g}× LESS balanced")
             + " than the one without" + ("" if reg_gain_free >= 1 else
                                          ": the fall of the raw deficit under R is weight shrinkage, not balance"))
    lost = min(_times(raw[0], raw[2]), _times(free[0], free[2])) >= LOST_FACTOR
    if lost and min(reg_gain_raw, reg_gain_free) >= LOST_FACTOR:
        return "supported", text
    if lost and min(reg_gain_raw, reg_gain_free) > 1:
        return (f"partly supported (balance is lost without R at the large rate and kept at the small one; "
                f"R reduces the loss of balance {min(reg_gain_raw, reg_gain_free):.3g}× (raw or scale-free, the "
                f"smaller), less than {LOST_FACTOR:g}×)"), text
    if lost:
        return ("partly supported (balance is lost without R at the large rate and kept at the small one; "
                "R does not keep it once the deficit is normalised by ‖W‖_F⁴)"), text
    return "not supported", text


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Balance the autoencoder, train it three ways, write plots, JSON and the summary."""
    task = autoencoder_task(ctx, NAME, epochs=10 if ctx.quick else 40)
    seeds = int(ctx.extra.get("seeds", ctx.n_seeds(full=5, quick=2)))
    arms = fig8_arms(float(ctx.extra.get("large_lr", LARGE_LR)), float(ctx.extra.get("small_lr", SMALL_LR)),
                     float(ctx.extra.get("beta", BETA)))
    with torch_threads(int(ctx.extra.get("threads", 1))):  # each finished run is recorded; a rerun resumes
        results = run_arms(task, arms, seeds, progress=ctx.progress, backend=ctx.backend,
                           cache=RunCache(ctx.out_dir / f"{NAME}-runs.jsonl"))
    summaries = {arm.label: summarise_arm(results[arm.label]) for arm in arms}
    word, text = verdict(arms, summaries)
    fig = plot_arms(task, arms, results, ["overall_deficit", "scale_free_deficit", "train_loss", "frobenius_norm"],
                    theory=False,
                    title=f"balanced start, MNIST autoencoder ({task.data_source.split(' (')[0]})")
    settings = {**task.settings(), "init": task.init, "seeds": seeds, "arms": [asdict(a) for a in arms],
                "start_balancing": "stochastic, L2, until max relative deficit <= 1e-8"}
    md = summary_markdown(NAME, CLAIM, task, arms, seeds, summaries, word, text)
    write_outputs(ctx, NAME, results={"verdict": word, "explanation": text, "summaries": summaries,
                                      "series": results},
                  settings=settings, summary_md=md, figures={"dynamics": fig})
    return {"verdict": word, "summaries": summaries}
