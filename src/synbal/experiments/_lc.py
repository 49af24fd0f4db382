"""Figures 7 and 8 on the locally connected network (``fig7-lc``, ``fig8-lc``).

The paper's second series (Figure 7 D–F, Figure 8 D–F): a net with three locally connected and
three fully connected layers, 3072-5000-2592-1296-300-100-10 (:func:`~synbal.experiments._models.lc_cifar_net`),
leaky ReLU hidden units, softmax output with cross-entropy, SGD with batch 5, on CIFAR-10.

Data: CIFAR-10 from ``--data`` (the directory of the python-format batch files). Without it a
**stand-in** is used and named in every output: the embedded MNIST digits, zero-padded from
28×28 to 32×32 and copied into 3 identical channels (same input size 3072 and 10 classes; the
claims are about balance dynamics, not about CIFAR accuracy). Batch 5 makes an epoch of all
50,000 CIFAR images 10,000 steps, so the runs use a stratified training subset
(full: 5,000 images, 10 epochs, 3 seeds; ``--quick``: 500 images, 4 epochs, 2 seeds).

Arms and verdict rules are those of :mod:`synbal.experiments._fig7` and
:mod:`synbal.experiments._fig8`: ``fig7-lc`` trains E, E + 5e-3·L2 and E + 5e-4·L1 at lr 0.01;
``fig8-lc`` balances first (stochastic) and trains E at lr 0.02, E + 5e-3·L2 at lr 0.02 and E at
lr 0.001.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from synbal.experiments import _fig7 as fig7
from synbal.experiments import _fig8 as fig8
from synbal.experiments._arms import Arm, plot_arms, run_arms, summarise_arm, torch_threads
from synbal.experiments._report import ExperimentContext, write_outputs
from synbal.experiments._tasks import lc_task
from synbal.experiments.cache import RunCache

__all__ = ["OPTIONS", "run_fig7_lc", "run_fig8_lc"]

OPTIONS = {**fig7.OPTIONS, "train_size": "training images (default 5000; 500 with --quick)"}

def _run(ctx: ExperimentContext, name: str, claim: str, arms: list[Arm], metrics: list[str],
         verdict: Any, start_note: str = "") -> dict[str, Any]:
    task = lc_task(ctx, name)
    seeds = int(ctx.extra.get("seeds", ctx.n_seeds(full=3, quick=2)))
    with torch_threads(int(ctx.extra.get("threads", 1))):
        # long runs (an hour and more): each finished run is recorded, and a rerun resumes
        cache = RunCache(ctx.out_dir / f"{name}-runs.jsonl")
        results = run_arms(task, arms, seeds, progress=ctx.progress, cache=cache, backend=ctx.backend)
    summaries = {arm.label: summarise_arm(results[arm.label]) for arm in arms}
    word, text = verdict(summaries)
    short = "CIFAR-10" if ctx.data is not None else "MNIST stand-in, not CIFAR-10"
    fig = plot_arms(task, arms, results, metrics, theory=name == "fig7-lc",
                    title=f"locally connected net 3072-5000-2592-1296-300-100-10 ({short})")
    settings = {**task.settings(), "init": task.init, "seeds": seeds, "arms": [asdict(a) for a in arms],
                "architecture": "LC(3→8, k8) LC(8→8, k8) LC(8→16, k10) FC 1296-300-100-10, leaky ReLU 0.01"}
    if start_note:
        settings["start_balancing"] = start_note
    extra = f"Data note: {task.data_source}.\n\n{fig7.relative_deficit_note(arms, summaries)}".rstrip()
    md = fig7.summary_markdown(name, claim, task, arms, seeds, summaries, word, text, extra=extra)
    write_outputs(ctx, name, results={"verdict": word, "explanation": text, "summaries": summaries,
                                      "data": task.data_source, "series": results},
                  settings=settings, summary_md=md, figures={"dynamics": fig})
    return {"verdict": word, "summaries": summaries, "data": task.data_source}


def run_fig7_lc(ctx: ExperimentContext) -> dict[str, Any]:
    """Figure 7 D–F: E vs E + L2 vs E + L1 on the locally connected net."""
    arms = [Arm("E", lr=0.01), Arm("E+L2", reg="l2", beta=5e-3, lr=0.01),
            Arm("E+L1", reg="l1", beta=5e-4, lr=0.01)]
    return _run(ctx, "fig7-lc", fig7.CLAIM, arms, ["overall_deficit", "scale_free_deficit", "train_loss",
                                                    "frobenius_norm"],
                fig7.verdict)


def run_fig8_lc(ctx: ExperimentContext) -> dict[str, Any]:
    """Figure 8 D–F: balanced start, large vs small learning rate, with and without L2."""
    arms = fig8.fig8_arms(large=0.02, small=0.001, beta=5e-3)
    return _run(ctx, "fig8-lc", fig8.CLAIM, arms, ["overall_deficit", "scale_free_deficit", "train_loss",
                                                    "frobenius_norm"],
                lambda s: fig8.verdict(arms, s),
                start_note="stochastic, L2, until max relative deficit <= 1e-8")
