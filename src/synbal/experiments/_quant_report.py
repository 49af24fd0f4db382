"""Tables, verdict text and plots of the ``quant`` experiment (from its rows only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from synbal.experiments._quant_verdict import (
    FP32_RTOL,
    GOAL_4BIT_MODELS,
    GOAL_4BIT_POINTS,
    GOAL_8BIT_POINTS,
    RESCALED_POINTS,
    means,
)
from synbal.experiments._report import new_figure, plot_mean_std

__all__ = ["figures", "markdown", "seed_counts"]

_WORD = {True: "**met**", False: "**not met**", None: "not judged (missing arms or models)"}


def _goal_lines(goals: dict[str, Any]) -> list[str]:
    g8, g4, gr, gf = goals["8bit"], goals["4bit"], goals["rescaled"], goals["fp32"]
    worst8 = min((d["points_vs_best_peer"] for d in g8["details"]), default=float("nan"))
    lines = [f"- 8 bits per-tensor, every synbal arm within {GOAL_8BIT_POINTS} pt of the best peer: "
             f"{_WORD[g8['met']]} (worst synbal arm vs best peer: {worst8:+.2f} pt).",
             f"- 4 bits per-tensor, best synbal arm ≥ best peer + {GOAL_4BIT_POINTS} pt on ≥ {GOAL_4BIT_MODELS} "
             f"of 3 models: {_WORD[g4['met']]} (wins per dataset: {g4['wins_per_dataset']} of "
             f"{g4['models_per_dataset']})."]
    lines += [f"  - {d['dataset']}, {d['model']}: {d['best_synbal']} vs {d['best_peer']}: "
              f"{d['margin_points']:+.2f} pt{_headroom(d)}" for d in g4["details"]]
    lines += _reach_lines(g4)
    by_arm = ", ".join(f"{a} {v:.2f}" for a, v in sorted(gr["max_abs_points_by_arm"].items()))
    lines += [f"- rescaled copies, every synbal arm within {RESCALED_POINTS} pt of its accuracy on the "
              f"original: {_WORD[gr['met']]} (largest |rescaled − original| of mean accuracy, any "
              f"model/bits/granularity, per arm: {by_arm}).",
              f"- float outputs unchanged by synbal to {FP32_RTOL:g} (relative): {_WORD[gf['met']]} "
              f"(largest change {gf['max_rel_output_change']})."]
    return lines


def _headroom(detail: dict[str, Any]) -> str:
    h = detail.get("headroom_points")
    return "" if h is None else f" (float accuracy {h:+.2f} pt above the best peer)"


def _reach_lines(g4: dict[str, Any]) -> list[str]:
    """One sentence per dataset where fewer than the needed models leave room for a win."""
    out = []
    for ds, n in sorted(g4.get("reachable_per_dataset", {}).items()):
        if n < GOAL_4BIT_MODELS:
            out.append(f"  - {ds}: only {n} of {g4['models_per_dataset'][ds]} models have float accuracy at "
                       f"least {GOAL_4BIT_POINTS} pt above the best peer's 4-bit accuracy, so on this "
                       f"dataset the goal can be met only where a 4-bit model beats the float one.")
    return out


def _table(rows: list[dict[str, Any]], float_rows: list[dict[str, Any]], ds: str, gran: str,
           bits: list[int]) -> list[str]:
    table = means(rows)
    flt = means([{**r, "granularity": "float", "bits": 32} for r in float_rows])
    models = sorted({r["model"] for r in rows if r["dataset"] == ds})
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    head = "| model | arm | float | " + " | ".join(f"{b} bit" for b in bits) + " | " + \
        " | ".join(f"{b} bit, rescaled" for b in bits) + " |"
    lines = [f"### {ds}, {gran}", "", head, "|---|---|---|" + "---|" * (2 * len(bits))]
    for model in models:
        for arm in arms:
            cells = []
            for rescaled in (False, True):
                for b in bits:
                    m = table.get((ds, model, gran, b, arm, rescaled))
                    cells.append("–" if m is None else f"{m[0]:.2f} ± {m[1]:.2f}")
            f = flt.get((ds, model, "float", 32, arm, False))
            if f is None and all(c == "–" for c in cells):
                continue
            lines.append(f"| {model} | {arm} | {'–' if f is None else f'{f[0]:.2f}'} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def seed_counts(rows: list[dict[str, Any]], asked: int) -> str:
    """How many seeds each (dataset, model) has in ``rows``, against the ``asked`` number.

    Every arm of a cell shares that cell's seeds, so comparisons within a cell stay paired.

    >>> seed_counts([{"dataset": "D", "model": m, "seed": s} for m, s in [("a", 0), ("a", 2), ("b", 0)]], 5)
    '1–2 seed(s) per model and dataset (5 asked; runs not done are listed below)'
    >>> seed_counts([{"dataset": "D", "model": "a", "seed": 0}], 1)
    '1 seed(s)'
    """
    per_cell: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        per_cell.setdefault((r["dataset"], r["model"]), set()).add(int(r["seed"]))
    counts = sorted({len(v) for v in per_cell.values()}) or [0]
    if counts == [asked]:
        return f"{asked} seed(s)"
    span = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{span} seed(s) per model and dataset ({asked} asked; runs not done are listed below)"


def markdown(rows: list[dict[str, Any]], float_rows: list[dict[str, Any]], failures: list[dict[str, Any]],
             goals: dict[str, Any], settings: dict[str, Any]) -> str:
    """The summary: verdict per goal (from the rows), settings, notes, failures, tables."""
    lines = ["# quant: equalization for post-training weight quantization", "",
             "Goals of issue 13, judged by code on the rows of `quant.json` (test accuracy in %, mean ± std "
             f"over {seed_counts(rows, settings['seeds'])}):", ""]
    lines += _goal_lines(goals)
    lines += ["", f"Models {settings['models']}, datasets {settings['data']}, {settings['epochs']} epoch(s) "
              f"({settings['optimizer']}), train size {settings['train_size'] or 'full'}, test size "
              f"{settings['test_size'] or 'full'}; weights fake-quantized symmetric, biases float, activations "
              f"{'float' if not settings['act_bits'] else str(settings['act_bits']) + ' bit'}. "
              f"Peers: {settings['peers']}."]
    lines += [f"- {n}" for n in settings["notes"]]
    if failures:
        lines += ["", "Arms that refused a model (no rows for them):", ""]
        lines += [f"- {f['dataset']}, {f['model']}, seed {f['seed']}, {f['arm']}"
                  f"{' (rescaled copy)' if f['rescaled'] else ''}: {f['error']}" for f in failures]
    lines += ["", "## Accuracy", ""]
    bits = sorted({r["bits"] for r in rows}, reverse=True)
    for ds in sorted({r["dataset"] for r in rows}):
        for gran in ("per-tensor", "per-channel"):
            lines += _table(rows, float_rows, ds, gran, bits)
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], float_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy against bits (mean ± std over seeds) per dataset, granularity and copy; float dashed."""
    out = {}
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for ds in sorted({r["dataset"] for r in rows}):
        models = sorted({r["model"] for r in rows if r["dataset"] == ds})
        for gran in ("per-tensor", "per-channel"):
            for rescaled in (False, True):
                fig, axes = new_figure(ncols=len(models), size=(4.0, 3.2))
                for ax, model in zip(np.atleast_1d(axes), models, strict=True):
                    _panel(ax, rows, float_rows, arms, (ds, model, gran, rescaled))
                key = f"{ds}_{gran}" + ("_rescaled" if rescaled else "")
                fig.suptitle(f"{ds}, {gran} weights" + (", randomly rescaled copies" if rescaled else ""), fontsize=9)
                out[key.replace(" ", "-")] = fig
    return out


def _panel(ax: Any, rows: list[dict[str, Any]], float_rows: list[dict[str, Any]], arms: list[str],
           cell: tuple[str, str, str, bool]) -> None:
    ds, model, gran, rescaled = cell
    for k, arm in enumerate(arms):
        mine = [r for r in rows if (r["dataset"], r["model"], r["granularity"], r["arm"], r["rescaled"])
                == (ds, model, gran, arm, rescaled)]
        bits = sorted({r["bits"] for r in mine})
        seeds = sorted({r["seed"] for r in mine})
        if not bits:
            continue
        acc = {(r["seed"], r["bits"]): r["accuracy"] for r in mine}
        runs = np.array([[acc.get((s, b), np.nan) for b in bits] for s in seeds])
        plot_mean_std(ax, np.array(bits), runs, label=arm, color=f"C{k}")
    ref = [r["accuracy"] for r in float_rows if (r["dataset"], r["model"], r["arm"], r["rescaled"])
           == (ds, model, "none", False)]
    if ref:
        ax.axhline(float(np.mean(ref)), color="k", linestyle="--", linewidth=0.8, label="float")
    ax.set_title(model, fontsize=8)
    ax.set_xlabel("weight bits")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=5)
