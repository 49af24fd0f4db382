"""Does balancing speed up learning or improve the final accuracy? (``synbal reproduce speed``)

Claim tested (v3/v4 abstract of the synaptic-balance paper; Alexos, Domingo & Baldi, AAAI 2025):
balancing the weights before training and/or after every epoch improves learning speed and final
accuracy — the AAAI paper reports MNIST gains of about 1–5 accuracy points, largest with L1
(5-layer net: 91.4 → 96.3 % with L1 and per-epoch balancing).

Design: fully connected ReLU nets 784-256-10, 784-256-128-10, 784-512-256-128-64-10; plain SGD
(lr 1e-3, no momentum, batch 256, cross-entropy); regularizer none / L1 / L2 (β = 1e-3 in the
loss; the issue does not give β); four balancing arms — none, full ``exact`` balancing at start,
one layer sweep (``method="layer", max_sweeps=1``) after every epoch, both — balancing for the
arm's regularizer (L2 when there is none). Every arm of one seed starts from the same weights
and sees the same minibatches. Datasets: MNIST (``--data``, else the embedded 10k subset) and
Fashion-MNIST (its Debian package path; skipped with a note when absent), each on the whole
training set and on a stratified 1 % of it.

Full run: 5 seeds, 10 epochs (1 % variant: 100 epochs, test accuracy every 5 epochs).
``--quick``: 2 seeds, 3 epochs on a 5,000-image subset (1 % variant: 15 epochs). The full run
takes hours (about 2 h per dataset at one thread), so finished runs are recorded in
``OUT/speed-runs.jsonl`` and a rerun into the same ``--out`` skips them. Options
(``--set KEY=VALUE``): ``datasets`` (e.g. ``'["MNIST"]'`` to run one dataset per process; a
last run with all of them assembles the table from the record), ``epochs``, ``epochs_1pct``,
``eval_every_1pct``, ``train_size``, ``nets``, ``threads``, ``fashion`` (a Fashion-MNIST path).

Outputs: a table of final test accuracy (mean ± std) and epochs to reach fixed test-accuracy
thresholds, per arm; test-accuracy curves; and a comparison with the AAAI numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from synbal.data import ImageDataset
from synbal.experiments._arms import torch_threads
from synbal.experiments._models import SPEED_ARCHITECTURES, fc_classifier
from synbal.experiments._report import ExperimentContext, new_figure, plot_mean_std, write_outputs
from synbal.experiments._tasks import image_datasets
from synbal.experiments.backend import RunSpec, run_grid
from synbal.experiments.cache import RunCache
from synbal.training import BalanceSchedule, TrainConfig, train

__all__ = ["ARMS", "THRESHOLDS", "SpeedArm", "epochs_to_reach", "run"]

NAME = "speed"
OPTIONS = {"datasets": 'JSON list, e.g. ["MNIST"] (default both)', "epochs": "epochs on the full training set",
           "epochs_1pct": "epochs on the 1% subset", "eval_every_1pct": "test every k epochs on the 1% subset",
           "train_size": "use a subset of this many training images", "nets": "JSON list of net names",
           "seeds": "number of seeds", "threads": "torch threads (default 1)",
           "fashion": "directory of the Fashion-MNIST IDX files"}
CLAIM = "balancing before training and/or every epoch improves learning speed and final accuracy"
LR, BATCH, BETA = 1e-3, 256, 1e-3
REGS: dict[str, str | None] = {"none": None, "L1": "l1", "L2": "l2"}
#: The AAAI comparison (fixed before any run): a baseline below NEAR_CHANCE test accuracy is "too short
#: to compare"; a gain within AAAI_GAIN_POINTS (points) "agrees with the AAAI paper's 1–5 points".
NEAR_CHANCE, AAAI_GAIN_POINTS = 0.5, (1.0, 6.0)
#: How this (v1) experiment departs from the AAAI paper's code; stated in every output
#: (``speed2`` follows the paper instead).
DEVIATIONS = ("inputs scaled to [0, 1] (AAAI: Normalize(0.5, 0.5))",
              "biases are rescaled with the weights (AAAI's code leaves them alone)",
              f"L1 strength β = {BETA:g} (AAAI's code: 0.015), L2 the same β",
              "no arm balances with L1 without training with L1 (AAAI's L1NB)",
              "one learning rate (1e-3) for every arm, not tuned")
#: Test-accuracy thresholds for "epochs to reach", per dataset.
THRESHOLDS = {"MNIST": (0.5, 0.8, 0.9), "Fashion-MNIST": (0.5, 0.7, 0.8)}


@dataclass(frozen=True)
class SpeedArm:
    label: str
    at_start: bool
    every_epoch: bool


ARMS = (
    SpeedArm("no balancing", False, False),
    SpeedArm("balance at start", True, False),
    SpeedArm("layer sweep per epoch", False, True),
    SpeedArm("start + per epoch", True, True),
)


def epochs_to_reach(curve: np.ndarray, threshold: float) -> float:
    """First epoch whose test accuracy is ≥ ``threshold`` (``nan`` if never).

    >>> epochs_to_reach(np.array([0.1, 0.6, 0.85, 0.9]), 0.8)
    2.0
    >>> import math; math.isnan(epochs_to_reach(np.array([0.1, 0.2]), 0.5))
    True
    """
    hits = np.flatnonzero(np.asarray(curve) >= threshold)
    return float(hits[0]) if hits.size else math.nan


def _train_arm(widths: list[int], seed: int, reg: str | None, arm: SpeedArm, data: ImageDataset,
               epochs: int, eval_every: int = 1) -> list[float]:
    model = fc_classifier(widths, seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    schedule = None
    if arm.at_start or arm.every_epoch:
        schedule = BalanceSchedule(reg=reg or "l2", at_start="exact" if arm.at_start else None,
                                   every=1 if arm.every_epoch else 0, method="layer", max_sweeps=1)
    config = TrainConfig(epochs=epochs, batch_size=BATCH, loss="cross_entropy", reg=reg,
                         beta=BETA if reg else 0.0, monitor=False, seed=seed, progress=False,
                         eval_every=eval_every)
    history = train(model, optimizer, data.tensors("train"), config, eval_data=data.tensors("test"),
                    balance=schedule)
    curve = history.column("test_accuracy")
    return curve + [math.nan] * (epochs + 1 - len(curve))


def train_arm(widths: list[int], seed: int, reg: str | None, arm: SpeedArm, data: ImageDataset,
              epochs: int, eval_every: int = 1, threads: int = 1) -> list[float]:
    """One run of the grid (a pure function of its arguments, run by any backend): the test-accuracy curve."""
    with torch_threads(threads):
        return _train_arm(widths, seed, reg, arm, data, epochs, eval_every)


def _run_grid(ctx: ExperimentContext, cache: RunCache, seeds: int, nets: dict[str, list[int]],
              variants: list[tuple[str, str, ImageDataset, int, int]]) -> None:
    """Every run of the grid into ``cache``, on ``ctx.backend`` (recorded runs are skipped): the table is
    then assembled from the record, in order."""
    threads = int(ctx.extra.get("threads", 1))
    specs = [RunSpec({"variant": variant, "data": data.source, "train_examples": data.n_train, "net": net,
                      "reg": reg_name, "epochs": epochs, "eval_every": eval_every, "arm": arm.label, "seed": seed,
                      "lr": LR, "batch": BATCH, "beta": BETA},
                     (widths, seed, REGS[reg_name], arm, data, epochs, eval_every, threads))
             for _, variant, data, epochs, eval_every in variants for net, widths in nets.items()
             for reg_name in REGS for arm in ARMS for seed in range(seeds)]
    run_grid(train_arm, specs, cache, ctx.backend, progress=ctx.progress, desc=NAME)


def _cell_summary(curves: np.ndarray, thresholds: tuple[float, ...]) -> dict[str, Any]:
    final = curves[:, -1]
    reach = {f"{t:g}": [epochs_to_reach(c, t) for c in curves] for t in thresholds}
    return {
        "final_mean": float(np.nanmean(final)),
        "final_std": float(np.nanstd(final)),
        "epochs_to": {k: {"mean": float(np.nanmean(v)) if np.isfinite(v).any() else None,
                          "reached": int(np.isfinite(v).sum()), "runs": len(v)} for k, v in reach.items()},
    }


def _plot(variant: str, epochs: int, curves: dict[str, dict[str, dict[str, np.ndarray]]]) -> Any:
    nets = list(curves)
    fig, axes = new_figure(ncols=len(REGS), nrows=len(nets), size=(4.0, 3.0))
    axes = np.atleast_2d(axes)
    x = np.arange(epochs + 1)
    for i, net in enumerate(nets):
        for j, reg in enumerate(REGS):
            ax = axes[i, j]
            for k, arm in enumerate(ARMS):
                runs = curves[net][reg][arm.label]
                shown = np.isfinite(runs).all(axis=0)  # epochs with a test evaluation
                plot_mean_std(ax, x[shown], runs[:, shown], label=arm.label, color=f"C{k}")
            ax.set_title(f"{net}, R = {reg}", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(variant, fontsize=9)
    return fig


def _aaai_comparison(table: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    key = "MNIST, full training set"
    if key not in table:
        return "MNIST full-set results missing; no comparison", {}
    nets = [k for k, v in table[key].items() if isinstance(v, dict) and "none" in v]
    net = "784-512-256-128-64-10" if "784-512-256-128-64-10" in nets else nets[-1]
    gains = {}
    for reg in REGS:
        cell = table[key][net][reg]
        base = cell["no balancing"]["final_mean"]
        gains[reg] = {arm.label: 100 * (cell[arm.label]["final_mean"] - base) for arm in ARMS[1:]}
    l1 = gains["L1"]["layer sweep per epoch"]
    baseline = max(table[key][net][reg]["no balancing"]["final_mean"] for reg in REGS)
    best_reg = max(gains, key=lambda r: max(gains[r].values()))
    text = (f"{net} net on MNIST: per-epoch balancing with L1 changes final test accuracy by {l1:+.2f} "
            f"points (AAAI: +4.9, 91.4 → 96.3); the largest gain over no balancing is with R = {best_reg} "
            f"({max(gains[best_reg].values()):+.2f} points). ")
    low, high = AAAI_GAIN_POINTS
    if baseline < NEAR_CHANCE:
        text += (f"No conclusion: without balancing the net is still at {100 * baseline:.1f} % test accuracy "
                 "(near chance), so this run is too short to compare with the AAAI paper.")
    elif low <= l1 <= high:
        text += "This agrees with the AAAI paper's 1–5 point gains."
    elif l1 > high:
        text += "The direction agrees with the AAAI paper; the gain is larger than its 1–5 points."
    elif l1 > 0:
        text += "The direction agrees with the AAAI paper, the size (< 1 point) does not."
    else:
        text += "This does not agree with the AAAI paper: balancing did not help here."
    return text, gains


def _variants(datasets: list[tuple[str, ImageDataset]], train_size: Any, epochs_full: int, epochs_small: int,
              eval_every_small: int) -> list[tuple[str, str, ImageDataset, int, int]]:
    """``(dataset, variant, data, epochs, eval_every)``: each dataset whole (or ``train_size``) and 1 %."""
    variants = []
    for name, ds in datasets:
        full = ds.subset(int(train_size), seed=0) if train_size and int(train_size) < ds.n_train else ds
        variants.append((name, f"{name}, full training set", full, epochs_full, 1))
        variants.append((name, f"{name}, 1% of the training set", ds.subset(0.01, seed=0), epochs_small,
                         eval_every_small))
    return variants


def _arm_runs(cache: RunCache, bar: Any, seeds: int, key: dict[str, Any], widths: list[int], reg: str | None,
              arm: SpeedArm, data: ImageDataset) -> np.ndarray:
    """One cell's test-accuracy curves, one row per seed (from the run record where it has them)."""
    rows = []
    for seed in range(seeds):
        run_key = {**key, "arm": arm.label, "seed": seed, "lr": LR, "batch": BATCH, "beta": BETA}
        curve = cache.get(run_key)
        if curve is None:
            curve = _train_arm(widths, seed, reg, arm, data, key["epochs"], key["eval_every"])
            cache.put(run_key, curve)
        rows.append([math.nan if v is None else v for v in curve])
        bar.update(1)
    return np.array(rows, dtype=np.float64)


def _run_variant(cache: RunCache, bar: Any, seeds: int, nets: dict[str, list[int]], name: str, variant: str,
                 data: ImageDataset, epochs: int, eval_every: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(table, curves)`` of one variant: every net, regularizer and arm."""
    table: dict[str, Any] = {"data": data.source, "train_examples": data.n_train, "epochs": epochs,
                             "eval_every": eval_every}
    curves: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for net, widths in nets.items():
        curves[net], table[net] = {}, {}
        for reg_name, reg in REGS.items():
            curves[net][reg_name], table[net][reg_name] = {}, {}
            for arm in ARMS:
                key = {"variant": variant, "data": data.source, "train_examples": data.n_train, "net": net,
                       "reg": reg_name, "epochs": epochs, "eval_every": eval_every}
                runs = _arm_runs(cache, bar, seeds, key, widths, reg, arm, data)
                curves[net][reg_name][arm.label] = runs
                table[net][reg_name][arm.label] = _cell_summary(runs, THRESHOLDS[name])
    return table, curves


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Train every (dataset, variant, net, R, arm, seed) and write the table, curves and verdict."""
    seeds = int(ctx.extra.get("seeds", ctx.n_seeds(full=5, quick=2)))
    epochs_full = int(ctx.extra.get("epochs", 3 if ctx.quick else 10))
    epochs_small = int(ctx.extra.get("epochs_1pct", 15 if ctx.quick else 100))
    eval_every_small = int(ctx.extra.get("eval_every_1pct", 1 if ctx.quick else 5))
    nets = {k: v for k, v in SPEED_ARCHITECTURES.items() if k in ctx.extra.get("nets", SPEED_ARCHITECTURES)}
    datasets, notes = image_datasets(ctx, NAME)
    train_size = ctx.extra.get("train_size", 5000 if ctx.quick else None)
    variants = _variants(datasets, train_size, epochs_full, epochs_small, eval_every_small)
    cache = RunCache(ctx.out_dir / f"{NAME}-runs.jsonl")
    _run_grid(ctx, cache, seeds, nets, variants)  # the table below reads every run from the record
    bar = tqdm(total=len(variants) * len(nets) * len(REGS) * len(ARMS) * seeds, disable=True)
    table: dict[str, Any] = {}
    curves_all: dict[str, Any] = {}
    figures = {}
    with torch_threads(int(ctx.extra.get("threads", 1))):
        for name, variant, data, epochs, eval_every in variants:
            table[variant], curves_all[variant] = _run_variant(cache, bar, seeds, nets, name, variant, data, epochs,
                                                               eval_every)
            key = variant.replace(", ", "_").replace(" ", "-").replace("%", "pct")
            figures[key] = _plot(variant, epochs, curves_all[variant])
    bar.close()
    text, gains = _aaai_comparison(table)
    settings = {"lr": LR, "batch_size": BATCH, "beta": BETA, "optimizer": "SGD (no momentum)",
                "loss": "cross_entropy", "seeds": seeds, "epochs": epochs_full, "epochs_1pct": epochs_small,
                "eval_every_1pct": eval_every_small,
                "train_size": train_size, "nets": nets,
                "regularizers": REGS, "arms": [arm.__dict__ for arm in ARMS], "thresholds": THRESHOLDS,
                "balancing": "start: method='exact' (tol 1e-10); per epoch: method='layer', max_sweeps=1; "
                             "for the arm's R (L2 when none)", "notes": notes,
                "deviations_from_aaai": list(DEVIATIONS)}
    write_outputs(ctx, NAME, results={"aaai_comparison": text, "gains_points": gains, "table": table,
                                      "test_accuracy_curves": curves_all},
                  settings=settings, summary_md=_markdown(table, seeds, notes, text), figures=figures)
    return {"aaai_comparison": text, "gains_points": gains, "table": table}


def _markdown(table: dict[str, Any], seeds: int, notes: list[str], comparison: str) -> str:
    lines = [f"# {NAME}: {CLAIM}", "", f"**Comparison with Alexos, Domingo & Baldi (AAAI 2025):** {comparison}",
             "", f"Plain SGD lr {LR:g}, batch {BATCH}, β = {BETA:g}, {seeds} seeds; final test accuracy "
             "in % (mean ± std) and mean epochs to reach each test-accuracy threshold "
             "(reached/runs when not all runs reached it; – when none did).", "",
             "Deviations from the AAAI paper (see `synbal reproduce speed2` for the version that follows it): "
             + "; ".join(DEVIATIONS) + "."]
    lines += [f"- {n}" for n in notes]
    for variant, per_net in table.items():
        name = variant.split(",")[0]
        thresholds = THRESHOLDS[name]
        lines += ["", f"## {variant}", "", f"Data: {per_net['data']}; {per_net['train_examples']} training "
                  f"examples; {per_net['epochs']} epochs; test accuracy every {per_net['eval_every']} "
                  "epoch(s).", "",
                  "| net | R | arm | final acc. | " + " | ".join(f"epochs to {t:g}" for t in thresholds) + " |",
                  "|---|---|---|---|" + "---|" * len(thresholds)]
        for net, per_reg in per_net.items():
            if not isinstance(per_reg, dict):
                continue
            for reg, per_arm in per_reg.items():
                for arm, cell in per_arm.items():
                    reach = []
                    for t in thresholds:
                        e = cell["epochs_to"][f"{t:g}"]
                        if e["mean"] is None:
                            reach.append("–")
                        else:
                            suffix = "" if e["reached"] == e["runs"] else f" ({e['reached']}/{e['runs']})"
                            reach.append(f"{e['mean']:.1f}{suffix}")
                    lines.append(f"| {net} | {reg} | {arm} | {100 * cell['final_mean']:.2f} ± "
                                 f"{100 * cell['final_std']:.2f} | " + " | ".join(reach) + " |")
    return "\n".join(lines)
