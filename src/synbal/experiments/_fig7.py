"""Figure 7: SGD on E alone does not converge to balance; SGD on E + R does.

Claim tested (paper, Theorem 7.1 and Figure 7 A–C): training the MNIST autoencoder
784-200-100-50-100-200-784 (ReLU everywhere, sum-of-squares loss, SGD, batch 200) on the error
``E`` alone does not lead to a balanced network, while training on ``E + β·R`` with ``R = L2``
(or ``L1``) drives the overall balance deficit to zero. Panels: overall L2 deficit (the paper's
measure), training loss, ‖W‖_F; plus the deficit measured with each arm's own regularizer.

Settings (full run): 5 seeds, 60 epochs, SGD lr 0.02 without momentum, β = 0.01 for L2 and
1e-3 for L1 (the paper gives neither), MNIST from ``--data`` or the embedded 10k subset.
``--quick``: 2 seeds, 20 epochs. The dashed lines show the gradient-flow prediction for
``E + β·L2``: deficit ∝ ``exp(−8·β·lr·steps)``.

Verdict rule (thresholds :data:`BALANCED_FRACTION`, :data:`HALVED`, :data:`PLAIN_KEEPS`): *supported*
when every regularized arm's own overall deficit fell to ≤ 10 % of its start — both the raw
deficit and the scale-free one (deficit / R², unchanged by weight shrinkage; see
:mod:`synbal.experiments._arms`) — and was still falling over the second half, while the
E-alone deficit stayed ≥ 50 % of its start (raw and scale-free); *partly supported* when the
regularized deficits (raw and scale-free) fell below 50 % but not that far;
*inconclusive* when they are falling but have not yet halved (too short a run).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from synbal.experiments._arms import Arm, Task, plot_arms, run_arms, summarise_arm, torch_threads
from synbal.experiments._report import ExperimentContext, write_outputs
from synbal.experiments._tasks import autoencoder_task
from synbal.experiments.cache import RunCache

__all__ = ["fig7_arms", "run", "verdict"]

NAME = "fig7"
#: ``--set`` options (``ctx.extra`` keys) and what they change.
OPTIONS = {"epochs": "training epochs", "train_size": "use a subset of this many training images",
           "seeds": "number of seeds", "threads": "torch threads (default 1)"}
CLAIM = "SGD on E alone does not converge to a balanced state; SGD on E + R (L2, L1) does"


def fig7_arms(lr: float = 0.02) -> list[Arm]:
    return [
        Arm("E", lr=lr),
        Arm("E+L2", reg="l2", beta=0.01, lr=lr),
        Arm("E+L1", reg="l1", beta=1e-3, lr=lr),
    ]


#: Verdict thresholds (fixed before any run): the regularized arms' deficits must fall to this
#: fraction of their start ("balanced"), or at least below HALVED; E alone must keep PLAIN_KEEPS.
BALANCED_FRACTION, HALVED, PLAIN_KEEPS = 0.1, 0.5, 0.5
#: A unit whose relative deficit |IN − OUT|/(IN + OUT) is above this at the end is "far from balance".
FAR_FROM_BALANCE = 0.1


def verdict(summaries: dict[str, dict[str, float]]) -> tuple[str, str]:
    """``(word, explanation)`` from the arms' summaries (see the module docstring).

    Each arm is judged on both the raw deficit and the scale-free one (deficit / R², see
    :mod:`synbal.experiments._arms`): a regularized arm counts by the larger of its two
    final/initial ratios, E alone by the smaller, so weight shrinkage alone cannot pass.
    """
    e = summaries["E"]
    plain = min(e["overall_deficit_ratio"], e["scale_free_deficit_ratio"])
    regs = {k: v for k, v in summaries.items() if k != "E"}
    raw = {k: v["reg_overall_deficit_ratio"] for k, v in regs.items()}
    free = {k: v["reg_scale_free_deficit_ratio"] for k, v in regs.items()}
    ratios = {k: max(raw[k], free[k]) for k in regs}
    falling = {k: v["reg_overall_deficit_final"] < v["reg_overall_deficit_mid"] for k, v in regs.items()}
    text = (f"E alone: final/initial overall deficit = {e['overall_deficit_ratio']:.3g} "
            f"(scale-free {e['scale_free_deficit_ratio']:.3g}); "
            + "; ".join(f"{k}: final/initial deficit (own R) = {raw[k]:.3g}, scale-free = {free[k]:.3g}"
                        f"{' and still falling' if falling[k] else ', no longer falling'}" for k in regs))
    shrink = [k for k in regs if raw[k] <= BALANCED_FRACTION < free[k]]
    if shrink:
        text += (f". Scale-free, {', '.join(shrink)} did not reach {BALANCED_FRACTION:g} of its start: part of the "
                 "fall of the raw deficit is weight shrinkage")
    if plain >= PLAIN_KEEPS and all(r <= BALANCED_FRACTION for r in ratios.values()) and all(falling.values()):
        return "supported", text
    if plain >= PLAIN_KEEPS and all(r < HALVED for r in ratios.values()):
        return (f"partly supported (regularized deficits fall, raw and scale-free, but not all to "
                f"≤ {BALANCED_FRACTION:.0%} in this budget)"), text
    if plain >= PLAIN_KEEPS and all(r < 1.0 for r in ratios.values()) and all(falling.values()):
        return ("inconclusive (the regularized deficits are falling but have not yet halved: "
                "too little training in this budget to decide)"), text
    return "not supported", text


def relative_deficit_note(arms: list[Arm], summaries: dict[str, dict[str, float]]) -> str:
    """A caveat when the overall deficit fell but some unit is still far from balance."""
    high = {a.label: summaries[a.label]["max_relative_deficit_final"] for a in arms if a.reg}
    high = {k: v for k, v in high.items() if v > FAR_FROM_BALANCE}
    if not high:
        return ""
    worst = ", ".join(f"{k}: {v:.2g}" for k, v in high.items())
    return (f"Caveat: the max relative deficit |IN − OUT| / (IN + OUT) is still large at the end ({worst}). "
            "The overall deficit is a sum of squared absolute deficits, dominated by the units with the "
            "largest costs; units with small weights are still far from balance in this budget, so the "
            "regularized runs are converging towards balance rather than balanced.")


def summary_markdown(name: str, claim: str, task: Task, arms: list[Arm], seeds: int,
                     summaries: dict[str, dict[str, float]], word: str, text: str, extra: str = "") -> str:
    lines = [
        f"# {name}: {claim}",
        "",
        f"**Result: {word}.** {text}.",
        "",
        f"Data: {task.data_source}. {task.epochs} epochs × {task.steps_per_epoch} SGD steps, "
        f"batch {task.batch_size}, {seeds} seeds (mean ± std shaded in the plots). Initialisation: {task.init}.",
        "",
        "| arm | lr | R | β | deficit L2 start → end | L2 deficit / ‖W‖_F⁴ start → end "
        "| deficit own R start → end | own-R deficit / R² start → end | max rel. deficit end "
        "| loss end | ‖W‖_F start → end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in arms:
        s = summaries[arm.label]
        lines.append(
            f"| {arm.label} | {arm.lr:g} | {arm.reg or '-'} | {arm.beta:g} | "
            f"{s['overall_deficit_initial']:.3g} → {s['overall_deficit_final']:.3g} | "
            f"{s['scale_free_deficit_initial']:.3g} → {s['scale_free_deficit_final']:.3g} | "
            f"{s['reg_overall_deficit_initial']:.3g} → {s['reg_overall_deficit_final']:.3g} | "
            f"{s['reg_scale_free_deficit_initial']:.3g} → {s['reg_scale_free_deficit_final']:.3g} | "
            f"{s['max_relative_deficit_final']:.3g} | {s['train_loss_final']:.4g} | "
            f"{s['frobenius_norm_initial']:.4g} → {s['frobenius_norm_final']:.4g} |"
        )
    if extra:
        lines += ["", extra]
    return "\n".join(lines)


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Train the autoencoder with E, E+L2, E+L1 and write plots, JSON and the summary."""
    task = autoencoder_task(ctx, NAME, epochs=20 if ctx.quick else 60)
    seeds = int(ctx.extra.get("seeds", ctx.n_seeds(full=5, quick=2)))
    arms = fig7_arms()
    with torch_threads(int(ctx.extra.get("threads", 1))):  # each finished run is recorded; a rerun resumes
        results = run_arms(task, arms, seeds, progress=ctx.progress, backend=ctx.backend,
                           cache=RunCache(ctx.out_dir / f"{NAME}-runs.jsonl"))
    summaries = {arm.label: summarise_arm(results[arm.label]) for arm in arms}
    word, text = verdict(summaries)
    fig = plot_arms(task, arms, results, ["overall_deficit", "scale_free_deficit", "train_loss", "frobenius_norm"],
                    title=f"MNIST autoencoder ({task.data_source.split(' (')[0]})")
    fig_own = plot_arms(task, arms, results, ["reg_overall_deficit", "reg_scale_free_deficit", "max_relative_deficit"],
                        theory=False)
    settings = {**task.settings(), "init": task.init, "seeds": seeds, "arms": [asdict(a) for a in arms]}
    md = summary_markdown(NAME, CLAIM, task, arms, seeds, summaries, word, text,
                          extra=relative_deficit_note(arms, summaries))
    write_outputs(ctx, NAME, results={"verdict": word, "explanation": text, "summaries": summaries,
                                      "series": results},
                  settings=settings, summary_md=md, figures={"dynamics": fig, "own_deficit": fig_own})
    return {"verdict": word, "summaries": summaries}
