"""Markdown and figures of ``speed2``; the per-part verdicts are computed here from the decisions.

Part verdict (fixed before any run): **Supported** when on every net (and dataset) at least one
balancing arm (:data:`BALANCING_ARMS`: balance at start, L1NB, L2NB) is Supported against plain;
**Refuted** when every balancing-arm comparison is Refuted; **Inconclusive** otherwise. Part C
reports, per arm, whether the two horizons match.

>>> part_verdict([{"full balance at start": {"decision": "Supported"}, "L1NB every epoch": {"decision": "Refuted"}}])
'Supported'
>>> part_verdict([{"L1NB every epoch": {"decision": "Refuted"}}, {"L2NB every epoch": {"decision": "Refuted"}}])
'Refuted'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from synbal.experiments._report import new_figure, plot_mean_std
from synbal.experiments._speed2_rules import MIN_GAIN_POINTS, MIN_SPEEDUP, NULL_BAND_POINTS

__all__ = ["BALANCING_ARMS", "figures", "markdown", "part_verdict"]

BALANCING_ARMS = ("full balance at start", "L1NB every epoch", "L2NB every epoch")
#: Part C: two horizons "match" when the paired final-accuracy difference's interval is within ± this.
MATCH_BAND = 1.0


def part_verdict(decisions: Sequence[dict[str, dict[str, Any]]]) -> str:
    """The part's verdict from one decisions dict (arm → decision) per net/dataset."""
    balancing = [[d[a]["decision"] for a in BALANCING_ARMS if a in d] for d in decisions]
    if balancing and all("Supported" in row for row in balancing):
        return "Supported"
    if balancing and all(x == "Refuted" for row in balancing for x in row):
        return "Refuted"
    return "Inconclusive"


def _ci(c: dict[str, float] | None, digits: int = 2, scale: float = 1.0) -> str:
    if c is None:
        return "–"
    if not np.isfinite(c["low"]):
        return f"{scale * c['mean']:.{digits}f}"
    return f"{scale * c['mean']:.{digits}f} [{scale * c['low']:.{digits}f}, {scale * c['high']:.{digits}f}]"


def _decision_cells(d: dict[str, Any]) -> str:
    flag = " (behind plain)" if d.get("behind") else ""
    return f"{_ci(d['accuracy'])} | {_ci(d['speedup'], 0, 100)} | **{d['decision']}**{flag}"


def _part_a(a: dict[str, Any]) -> list[str]:
    verdict = part_verdict([n["decisions"] for n in a["nets"].values()])
    lines = ["## Part A — AAAI Table 4 literally", "", f"**Part A: {verdict}.** Data: {a['data']} "
             f"({a['train_examples']} training images), SGD lr 1e-3, batch 256.", "",
             "| net | arm | final test acc. % [95 % CI] | AAAI (issue 14) | agrees | Δ vs plain, points | "
             "steps saved to 80 % test acc., % | decision |", "|---|---|---|---|---|---|---|---|"]
    for net, n in a["nets"].items():
        for arm, final in n["final_test_accuracy"].items():
            aaai = n["aaai"][arm]
            agree = "–" if aaai["agrees"] is None else ("yes" if aaai["agrees"] else "no")
            cells = "– | – | –" if arm == "plain" else _decision_cells(n["decisions"][arm])
            lines.append(f"| {net} | {arm} | {_ci(final)} | {aaai['aaai'] or 'n/a here'} | {agree} | {cells} |")
    return lines


def _part_b(b: dict[str, Any]) -> list[str]:
    verdict = part_verdict([n["decisions"] for d in b.values() for n in d["nets"].values()])
    lines = ["## Part B — tuned learning rates", "", f"**Part B: {verdict}.**", ""]
    for name, d in b.items():
        lines += [f"### {name}", "", f"Data: {d['data']}; {d['train_examples']} training / {d['val_examples']} "
                  "validation images (10 % held out, stratified); test set untouched until the end.", "",
                  "| net | arm | best lr (val) | test acc. at best val epoch % | val AUC % | steps to val threshold "
                  "(reached) | Δ vs plain, points | steps saved, % | decision |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for net, n in d["nets"].items():
            for arm, s in n["summary"].items():
                cells = "– | – | –" if arm == "plain" else _decision_cells(n["decisions"][arm])
                lines.append(f"| {net} | {arm} | {n['best_lr'][arm]:g} | {_ci(s['test_at_best_val'])} | "
                             f"{_ci(s['auc_val'])} | {_ci(s['steps_to_threshold'], 0)} ({s['reached']}) | {cells} |")
            adam = n["adam_decision"]["L1NB every epoch"]
            lines.append(f"| {net} | Adam lr 1e-3: L1NB vs plain | 0.001 | | | | {_decision_cells(adam)} |")
        lines.append("")
        for net, n in d["nets"].items():
            sweep = "; ".join(f"{arm}: " + ", ".join(f"{lr:g} → {100 * acc:.1f}" for lr, acc in per.items())
                              for arm, per in n["sweep_val_accuracy"].items())
            lines.append(f"- {net}, validation accuracy (%) after the sweep epochs, by lr — {sweep}")
        lines.append("")
    return lines


def _part_c(c: dict[str, Any]) -> list[str]:
    short, long = c["horizons"]
    verdict = ("the horizons match for " + (", ".join(a for a, m in c["match"].items() if m["match"]) or "no arm")
               + f" (band ±{MATCH_BAND:g} point)")
    lines = ["## Part C — long horizon", "", f"**Part C: {verdict}.** {c['net']} on {c['data']}: {short} against "
             f"{long}, {c['seeds']} seeds.", "", "| arm | final test acc. difference (short − long), points | "
             "horizons match | decision vs plain at " + short + " | at " + long + " |", "|---|---|---|---|---|"]
    for arm, m in c["match"].items():
        dec = ["–" if arm == "plain" else c["decisions"][h][arm]["decision"] for h in (short, long)]
        lines.append(f"| {arm} | {_ci(m['difference'])} | {'yes' if m['match'] else 'no'} | {dec[0]} | {dec[1]} |")
    return lines


def markdown(st: Any, results: dict[str, Any]) -> str:
    """The summary; every verdict word comes from :func:`part_verdict` or the paired rules."""
    lines = ["# speed2: balancing before or during training improves learning speed and final accuracy "
             "(tuned baseline)", "",
             f"Rules (fixed in code before the runs): paired by seed ({st.seeds} seeds), 95 % t-intervals. "
             f"Supported: ahead by ≥ {MIN_GAIN_POINTS:g} point in final test accuracy, or ≥ {MIN_SPEEDUP:.0%} fewer "
             f"steps to the threshold, with the interval excluding 0; Refuted: the accuracy interval within "
             f"±{NULL_BAND_POINTS:g} point; Inconclusive otherwise (marked \"behind plain\" when the whole "
             f"accuracy interval is below −{NULL_BAND_POINTS:g} point: the rules name no such outcome). "
             "Inputs Normalize(0.5, 0.5); weights-only balancing (biases neither counted nor rescaled); "
             "PyTorch default init; batch 256.", ""]
    for part, render in (("A", _part_a), ("B", _part_b), ("C", _part_c)):
        if part in results:
            lines += [*render(results[part]), ""]
    return "\n".join(lines)


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """Test-accuracy curves of Parts A and C; for Part B, validation accuracy against lr (the
    sweep) and the validation curves of the final runs at each arm's best lr (mean ± std over seeds)."""
    out = {}
    if "A" in results:
        out["partA"] = _curves({net: n["curves"] for net, n in results["A"]["nets"].items()}, "Part A")
    if "C" in results:
        out["partC"] = _curves(results["C"]["curves"], "Part C")
    if "B" in results:
        panels = [(f"{ds}, {net}", n["sweep_val_accuracy"]) for ds, d in results["B"].items()
                  for net, n in d["nets"].items()]
        fig, axes = _panels(len(panels))
        for ax, (title, sweep) in zip(axes, panels, strict=True):
            for k, (arm, per) in enumerate(sweep.items()):
                ax.plot(list(per), [100 * v for v in per.values()], "o-", color=f"C{k}", label=arm)
            ax.set_xscale("log")
            ax.set_xlabel("learning rate")
            ax.set_ylabel("validation accuracy % (sweep)")
            ax.set_title(title, fontsize=8)
        axes[0].legend(fontsize=6)
        out["partB_lr"] = fig
        out["partB_curves"] = _curves({f"{ds}, {net}": {f"{arm} (lr {n['best_lr'][arm]:g})": runs
                                                        for arm, runs in n["curves"].items()}
                                       for ds, d in results["B"].items() for net, n in d["nets"].items()},
                                      "Part B", metric="val")
    return out


def _curves(groups: dict[str, dict[str, list[dict[str, Any]]]], title: str, metric: str = "test") -> Any:
    fig, axes = _panels(len(groups))
    for ax, (name, per_arm) in zip(axes, groups.items(), strict=True):
        for k, (arm, runs) in enumerate(per_arm.items()):
            epochs = np.asarray(runs[0]["epoch"], dtype=np.float64)
            plot_mean_std(ax, epochs, 100 * np.array([r[metric] for r in runs], dtype=np.float64), label=arm,
                          color=f"C{k}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{'validation' if metric == 'val' else 'test'} accuracy %")
        ax.set_title(f"{title}: {name}", fontsize=8)
    axes[0].legend(fontsize=6)
    return fig


def _panels(n: int) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels, at most three a row (unused cells hidden), and its axes in order."""
    cols = min(3, n)
    fig, axes = new_figure(ncols=cols, nrows=-(-n // cols), size=(4.4, 3.4))
    flat = list(np.ravel(axes))
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
