"""``synbal reproduce saul``: ℓ_{p,q} balancing by multiplicative updates on deep He-initialised MLPs.

The claims (Saul, "Weight-balancing fixes and flows for deep learning", TMLR 2023 — only the
abstract is available): parallel multiplicative updates of one rescaling factor per hidden unit,
with no learning rate, decrease the ℓ_{p,q} norm of the weights monotonically and converge to
its global minimum over rescalings; for ``p = q`` the same minimum is reached by the classical
schedules (stochastic: one unit at a time; layer: one layer at a time).

What this experiment does, for the nets 200-2500-1250-10, 200-2000-1000-500-250-10 and
200-1000-750-750-500-500-250-10 (He-initialised weights ``N(0, 2/fan_in)``, zero biases, ReLU;
the balance problems are built directly from the weight matrices — one dense cost block per
layer, output units identified by ``fixed_ids`` — so no PyTorch is involved):

1. for several ``(p, q)``, run ``method="multiplicative"`` and record ``‖W‖_{p,q} / ‖W0‖_{p,q}``
   after every update, until the relative stationarity is at most ``tol``; check that the curve
   never goes up and compare the end point with a reference minimum (``method="exact"`` for
   ``p = q``; the multiplicative result itself otherwise, checked for stationarity);
2. for ``p = q``, count the updates the ``stochastic`` and ``layer`` schedules need to reach
   the same tolerance on the same nets (sweeps — every unit updated once, on average — and
   single-unit or single-layer updates), next to the multiplicative updates.

Quick mode (CI): the same depths with every hidden width divided by 10, one seed.

>>> import numpy as np
>>> prob = he_mlp_problems([20, 30, 10], p_values=[2.0], rng=np.random.default_rng(0))[2.0]
>>> prob.n, [b.matrix.shape for b in prob.blocks], prob.blocks[-1].fixed_ids.tolist()[:3]
(30, [(30, 20), (10, 30)], [0, 1, 2])
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synbal.algorithms import SolveOptions, solve
from synbal.experiments.report import ExperimentContext, new_figure, write_outputs
from synbal.lpq import LpqRegularizer
from synbal.problem import BalanceProblem, CostBlock
from synbal.regularizers import parse_regularizer

__all__ = ["SaulSettings", "he_mlp_problems", "run", "run_settings"]

NETS: tuple[tuple[int, ...], ...] = (
    (200, 2500, 1250, 10),
    (200, 2000, 1000, 500, 250, 10),
    (200, 1000, 750, 750, 500, 500, 250, 10),
)
PQ: tuple[tuple[float, float], ...] = (
    (1.0, 1.0), (2.0, 2.0), (1.0, 2.0), (2.0, 1.0), (2.0, 4.0), (1.0, math.inf), (2.0, math.inf),
)


@dataclass(frozen=True)
class SaulSettings:
    """Every knob of one run (recorded in the JSON)."""

    nets: tuple[tuple[int, ...], ...] = NETS
    pq: tuple[tuple[float, float], ...] = PQ
    seeds: int = 3
    tol: float = 1e-8
    max_updates: int = 5000
    schedules: tuple[str, ...] = ("layer", "stochastic")

    def label(self, net: tuple[int, ...]) -> str:
        return "-".join(str(w) for w in net)


def he_mlp_problems(widths: list[int] | tuple[int, ...], p_values: list[float],
                    rng: np.random.Generator) -> dict[float, BalanceProblem]:
    """One He-initialised ReLU MLP (zero biases), as a balance problem for each power ``p``.

    Hidden units are numbered layer by layer; inputs and outputs are fixed, and the outputs
    carry ``fixed_ids`` ``0..n_out-1`` so that per-unit norms see them as units.
    """
    weights = [rng.normal(size=(widths[k], widths[k - 1])) * math.sqrt(2.0 / widths[k - 1])
               for k in range(1, len(widths))]
    hidden = []
    offset = 0
    for w in widths[1:-1]:
        hidden.append(np.arange(offset, offset + w))
        offset += w
    ids = [np.full(widths[0], -1), *hidden, np.full(widths[-1], -1)]
    out_ids = np.arange(widths[-1])
    problems = {}
    for p in p_values:
        blocks = [
            CostBlock(p, ids[k], ids[k - 1], np.abs(weights[k - 1]) ** p,
                      fixed_ids=out_ids if k == len(widths) - 1 else ids[k])
            for k in range(1, len(widths))
        ]
        problems[p] = BalanceProblem(np.ones(offset), blocks, layers=hidden)
    return problems


@dataclass
class _NetResult:
    net: str
    curves: dict[str, list[list[float]]] = field(default_factory=dict)  # label -> per seed
    updates: dict[str, list[int]] = field(default_factory=dict)
    converged: dict[str, list[bool]] = field(default_factory=dict)
    final_ratio: dict[str, list[float]] = field(default_factory=dict)
    max_increase: dict[str, float] = field(default_factory=dict)
    schedules: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _pq_label(p: float, q: float) -> str:
    return str(LpqRegularizer(p, q))


def _run_net(net: tuple[int, ...], settings: SaulSettings, progress: bool) -> _NetResult:
    out = _NetResult(settings.label(net))
    powers = sorted({p for p, _ in settings.pq})
    bar = tqdm(total=settings.seeds * (len(settings.pq) + 2 * len(powers)),
               desc=f"saul {out.net}", disable=not progress, leave=False)
    for seed in range(settings.seeds):
        problems = he_mlp_problems(net, powers, np.random.default_rng(seed))
        options = SolveOptions(tol=settings.tol, max_sweeps=settings.max_updates, seed=seed)
        for p, q in settings.pq:
            label = _pq_label(p, q)
            start = time.perf_counter()
            res = solve(problems[p], LpqRegularizer(p, q), "multiplicative", options)
            out.seconds[label] = out.seconds.get(label, 0.0) + time.perf_counter() - start
            norms = np.array([h.regularizer for h in res.history])
            ratio = norms / norms[0]
            out.curves.setdefault(label, []).append(ratio.tolist())
            out.updates.setdefault(label, []).append(res.sweeps)
            out.converged.setdefault(label, []).append(res.converged)
            out.final_ratio.setdefault(label, []).append(float(ratio[-1]))
            rise = float(np.max(np.diff(norms) / norms[:-1])) if norms.size > 1 else 0.0
            out.max_increase[label] = max(out.max_increase.get(label, -math.inf), rise)
            bar.update(1)
        for p in powers:
            _compare_schedules(out, problems[p], p, settings, options)
            bar.update(2)
    bar.close()
    return out


def _compare_schedules(out: _NetResult, problem: BalanceProblem, p: float, settings: SaulSettings,
                       options: SolveOptions) -> None:
    """For ``p = q``: updates of the classical schedules and ``exact``'s minimum, per seed."""
    reg = parse_regularizer(f"l{p:g}")
    exact = solve(problem, reg, "exact", SolveOptions(tol=min(settings.tol, 1e-10)))
    r0 = problem.value(np.zeros(problem.n))
    rows = out.schedules.setdefault(f"l{p:g}", {})
    rows.setdefault("exact_ratio", []).append((problem.value(exact.u) / r0) ** (1 / p))
    mult = solve(problem, LpqRegularizer(p, p, include_bias=True), "multiplicative", options)
    rows.setdefault("multiplicative_ratio", []).append((problem.value(mult.u) / r0) ** (1 / p))
    rows.setdefault("multiplicative_sweeps", []).append(mult.sweeps)
    rows.setdefault("multiplicative_unit_updates", []).append(mult.steps)
    for name in settings.schedules:
        start = time.perf_counter()
        res = solve(problem, reg, name, options)
        rows.setdefault(f"{name}_seconds", []).append(time.perf_counter() - start)
        rows.setdefault(f"{name}_sweeps", []).append(res.sweeps)
        # single-unit updates (stochastic) or single-layer updates (layer)
        rows.setdefault(f"{name}_updates", []).append(res.steps)
        rows.setdefault(f"{name}_converged", []).append(res.converged)
        rows.setdefault(f"{name}_ratio", []).append((problem.value(res.u) / r0) ** (1 / p))
        curve = [(h.regularizer / r0) ** (1 / p) for h in res.history]
        out.curves.setdefault(f"{name} l{p:g}", []).append(curve)


def run_settings(settings: SaulSettings, progress: bool = False) -> dict[str, Any]:
    """Run every net of ``settings``; return the results dictionary (no files written)."""
    results = {}
    for net in settings.nets:
        res = _run_net(net, settings, progress)
        results[res.net] = asdict(res)
    return results


def _quick_nets() -> tuple[tuple[int, ...], ...]:
    return tuple((n[0], *(w // 10 for w in n[1:-1]), n[-1]) for n in NETS)


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Run the experiment and write ``saul.json``, ``saul.md`` and the plots into ``ctx.out_dir``."""
    settings = SaulSettings(
        nets=_quick_nets() if ctx.quick else NETS,
        seeds=ctx.n_seeds(full=3, quick=1),
        max_updates=2000 if ctx.quick else 5000,
    )
    results = run_settings(settings, progress=ctx.progress)
    figures = {"norms": _plot_norms(settings, results), "schedules": _plot_schedules(settings, results)}
    summary = _summary(settings, results)
    write_outputs(ctx, "saul", results=results, settings=asdict(settings), summary_md=summary,
                  figures=figures)
    return {"settings": asdict(settings), "results": results, "summary": summary}


# ------------------------------------------------------------------------------ plots + summary
def _mean_curve(curves: list[list[float]]) -> np.ndarray:
    """Mean over seeds, each curve held at its last value after it stopped."""
    length = max(len(c) for c in curves)
    padded = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
    mean: np.ndarray = padded.mean(axis=0)
    return mean


def _plot_norms(settings: SaulSettings, results: dict[str, Any]) -> Any:
    fig, axes = new_figure(ncols=len(settings.nets), size=(4.6, 3.6))
    axes = np.atleast_1d(axes)
    for ax, net in zip(axes, settings.nets, strict=True):
        res = results[settings.label(net)]
        for p, q in settings.pq:
            curve = _mean_curve(res["curves"][_pq_label(p, q)])
            ax.plot(np.arange(curve.size), curve, label=_pq_label(p, q).replace("l", "ℓ", 1))
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("multiplicative updates (all units in parallel)")
        ax.set_ylabel("‖W‖ / ‖W₀‖  (ℓp,q norm)")
        ax.set_title(settings.label(net), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig


def _plot_schedules(settings: SaulSettings, results: dict[str, Any]) -> Any:
    powers = sorted({p for p, _ in settings.pq})
    fig, axes = new_figure(ncols=len(settings.nets), nrows=len(powers), size=(4.2, 3.2))
    axes = np.atleast_2d(axes).reshape(len(powers), len(settings.nets))
    for col, net in enumerate(settings.nets):
        res = results[settings.label(net)]
        for row, p in enumerate(powers):
            ax = axes[row, col]
            exact = float(np.mean(res["schedules"][f"l{p:g}"]["exact_ratio"]))
            mult = _mean_curve(res["curves"][_pq_label(p, p)])
            ax.semilogy(np.arange(mult.size), mult / exact - 1 + 1e-16, label="multiplicative")
            for name in settings.schedules:
                curve = _mean_curve(res["curves"][f"{name} l{p:g}"])
                ax.semilogy(np.arange(curve.size), curve / exact - 1 + 1e-16, label=name)
            ax.set_xlabel("sweeps (each unit updated once)")
            ax.set_ylabel(f"‖W‖/‖W*‖ − 1  (ℓ{p:g})")
            ax.set_title(settings.label(net), fontsize=9)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return fig


def _fmt(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.4g}" if arr.size == 1 or np.ptp(arr) == 0 else f"{arr.mean():.4g} ± {arr.std():.2g}"


def _sweep_comparison(settings: SaulSettings, results: dict[str, Any]) -> list[str]:
    """One line per schedule: how many sweeps it needs relative to the multiplicative updates."""
    lines = []
    for s in settings.schedules:
        factors = []
        for net in settings.nets:
            for rows in results[settings.label(net)]["schedules"].values():
                mult = np.asarray(rows["multiplicative_sweeps"], dtype=float)
                other = np.asarray(rows[f"{s}_sweeps"], dtype=float)
                factors.extend((other / np.maximum(mult, 1)).tolist())
        lines.append(
            f"- {s} schedule / multiplicative, in sweeps: {min(factors):.2f}× to {max(factors):.2f}× "
            f"({'fewer' if max(factors) < 1 else 'more' if min(factors) > 1 else 'mixed'} sweeps than "
            "the parallel updates, which move every unit by half its balancing step)."
        )
    return lines


def _summary(settings: SaulSettings, results: dict[str, Any]) -> str:
    lines = [
        "# Saul (TMLR 2023): ℓ_{p,q} balancing by parallel multiplicative updates",
        "",
        f"He-initialised ReLU MLPs, zero biases, {settings.seeds} seed(s); stop at relative "
        f"stationarity ≤ {settings.tol:g} (at most {settings.max_updates} updates).",
        "",
        "## ‖W‖_{p,q} / ‖W0‖_{p,q} after balancing, and updates needed",
        "",
        "| net | (p,q) | final ratio | updates | converged | largest relative increase |",
        "|---|---|---|---|---|---|",
    ]
    monotone = True
    for net in settings.nets:
        res = results[settings.label(net)]
        for p, q in settings.pq:
            label = _pq_label(p, q)
            rise = res["max_increase"][label]
            monotone &= rise <= 1e-12
            lines.append(
                f"| {res['net']} | {label} | {_fmt(res['final_ratio'][label])} | "
                f"{_fmt(res['updates'][label])} | {all(res['converged'][label])} | {rise:.1e} |"
            )
    lines += [
        "",
        "## p = q: multiplicative updates vs the classical schedules",
        "",
        "Sweeps: every unit updated once (multiplicative: one parallel update; layer: each layer "
        "balanced once; stochastic: n random single-unit updates). Ratio = ‖W‖_p/‖W0‖_p at the end.",
        "",
        "| net | reg | exact ratio | multiplicative sweeps | "
        + " | ".join(f"{s} sweeps (updates)" for s in settings.schedules)
        + " | largest |ratio − exact| |",
        "|---|---|---|---|" + "---|" * len(settings.schedules) + "---|",
    ]
    agree = True
    for net in settings.nets:
        res = results[settings.label(net)]
        for key, rows in res["schedules"].items():
            exact = np.asarray(rows["exact_ratio"])
            gaps = [np.max(np.abs(np.asarray(rows["multiplicative_ratio"]) - exact))]
            cells = []
            for s in settings.schedules:
                gaps.append(np.max(np.abs(np.asarray(rows[f"{s}_ratio"]) - exact)))
                cells.append(f"{_fmt(rows[f'{s}_sweeps'])} ({_fmt(rows[f'{s}_updates'])})")
            gap = float(max(gaps))
            agree &= gap <= 1e-6
            lines.append(
                f"| {res['net']} | {key} | {_fmt(rows['exact_ratio'])} | "
                f"{_fmt(rows['multiplicative_sweeps'])} | " + " | ".join(cells) + f" | {gap:.1e} |"
            )
    lines += [
        "",
        "## Verdict",
        "",
        f"- Monotone decrease at every update: **{'yes' if monotone else 'NO'}** "
        "(largest relative increase per update in the first table).",
        f"- p = q: multiplicative, layer, stochastic and exact reach the same minimum: "
        f"**{'yes' if agree else 'NO'}** (to 1e-6 in the norm ratio).",
        "- No learning rate anywhere: each update is a closed-form ratio per unit "
        "(see `synbal.algorithms.multiplicative`).",
        *_sweep_comparison(settings, results),
    ]
    return "\n".join(lines)
