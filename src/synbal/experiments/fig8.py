"""Figure 8: a balanced start is not preserved by SGD with a finite learning rate unless R is added.

Claim tested (paper, Section 7 and Figure 8 A–C): the MNIST autoencoder (784-200-100-50-100-200-784,
ReLU, sum of squares, SGD, batch 200) is first balanced with stochastic balancing (random
single-unit balancing until the max relative deficit is ≤ 1e-8), then trained. With a
relatively large learning rate and no regularizer the balance is rapidly lost; with ``E + β·L2``
it is kept (the deficit is pulled back to zero); with a small learning rate it is nearly
preserved (gradient flow conserves every unit's deficit exactly).

Settings (full run): 5 seeds, 40 epochs, SGD without momentum, large lr 0.05, small lr 0.002,
β = 0.01 (the paper gives neither lr nor β). ``--quick``: 2 seeds, 10 epochs.

Verdict rule: *supported* when the large-lr E-alone run ends with an overall deficit at least
100× larger than the small-lr run's (balance lost at a finite rate, nearly kept at a small one)
*and* 100× larger than the regularized run's (R keeps it); *partly supported* when only the
first holds and R merely reduces the loss of balance.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from synbal.experiments import fig7
from synbal.experiments.dynamics import Arm, plot_arms, run_arms, summarise_arm, torch_threads
from synbal.experiments.fig7 import autoencoder_task, summary_markdown
from synbal.experiments.report import ExperimentContext, write_outputs

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


def verdict(arms: list[Arm], summaries: dict[str, dict[str, float]]) -> tuple[str, str]:
    large, reg, small = (summaries[a.label] for a in arms)
    d_large, d_reg, d_small = (s["overall_deficit_final"] for s in (large, reg, small))
    text = (f"overall L2 deficit after balancing: {large['overall_deficit_initial']:.2g}; at the end: "
            f"{arms[0].label}: {d_large:.3g}, {arms[1].label}: {d_reg:.3g}, {arms[2].label}: {d_small:.3g}")
    lost = d_large >= 100 * max(d_small, 1e-300)
    if lost and d_large >= 100 * max(d_reg, 1e-300):
        return "supported", text
    if lost and d_reg < d_large:
        return (f"partly supported (balance is lost without R at the large rate and kept at the small one; "
                f"R reduces the loss of balance {d_large / max(d_reg, 1e-300):.3g}×, less than 100×)"), text
    return "not supported", text


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Balance the autoencoder, train it three ways, write plots, JSON and the summary."""
    task = autoencoder_task(ctx, NAME, epochs=10 if ctx.quick else 40)
    seeds = int(ctx.extra.get("seeds", ctx.n_seeds(full=5, quick=2)))
    arms = fig8_arms(float(ctx.extra.get("large_lr", LARGE_LR)), float(ctx.extra.get("small_lr", SMALL_LR)),
                     float(ctx.extra.get("beta", BETA)))
    with torch_threads(int(ctx.extra.get("threads", 1))):
        results = run_arms(task, arms, seeds, progress=ctx.progress)
    summaries = {arm.label: summarise_arm(results[arm.label]) for arm in arms}
    word, text = verdict(arms, summaries)
    fig = plot_arms(task, arms, results, ["overall_deficit", "train_loss", "frobenius_norm"], theory=False,
                    title=f"balanced start, MNIST autoencoder ({task.data_source.split(' (')[0]})")
    settings = {**task.settings(), "seeds": seeds, "arms": [asdict(a) for a in arms],
                "start_balancing": "stochastic, L2, until max relative deficit <= 1e-8"}
    md = summary_markdown(NAME, CLAIM, task, arms, seeds, summaries, word, text)
    write_outputs(ctx, NAME, results={"verdict": word, "explanation": text, "summaries": summaries,
                                      "series": results},
                  settings=settings, summary_md=md, figures={"dynamics": fig})
    return {"verdict": word, "summaries": summaries}
