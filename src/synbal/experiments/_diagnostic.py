"""Balance as a convergence diagnostic (Remark 7.2): ``synbal reproduce diagnostic``.

Claim tested (paper, Theorem 7.1 and Remark 7.2): when training on ``E + β·R``, every limit point
is balanced, so the balance deficit can serve as a convergence check. Why: rescaling a hidden
unit by ``e^{u}`` leaves ``E`` unchanged, so ``∂(E + βR)/∂u_i = β·p·(IN_i − OUT_i)``; at a
stationary point every deficit is 0, and ``|IN_i − OUT_i| ≤ ‖w_i‖·‖∇(E + βR)‖ / (β p)`` (``w_i``:
the weights into and out of unit ``i``) — a small gradient forces balance. For ``E`` alone the
argument gives nothing.

The converse does not follow: under gradient flow on ``E + β·L2`` every deficit obeys
``d/dt (IN − OUT) = −4β (IN − OUT)`` whatever ``E`` does, so the deficit decays at a rate set by
β alone, not by how far ``E`` is from converging — and a run *started* balanced stays balanced
(up to finite-step effects) while it is still far from converged.

Design: a 784-32-16-10 ReLU net with biases (float64), PyTorch default initialisation, on a
stratified subset of MNIST (embedded, or ``--data``), full-batch gradient descent on
cross-entropy + ``β·L2`` (lr 0.1, β = 5e-3) from the raw initialisation and from the same weights
balanced exactly (L2) at step 0, and ``E`` alone from the raw initialisation as a control. Every
``record_every`` steps: the gradient norm ``‖∇(E + βR)‖`` (the convergence measure), the loss,
the scale-free deficit ``Σ_i (IN_i − OUT_i)² / ‖W‖_F⁴`` (see :mod:`synbal.experiments._arms`)
and the max relative deficit. The "run that has not converged" is the same run stopped at
:data:`EARLY_FRACTION` of its steps.

Verdict (thresholds fixed before any run): for every seed, (1) the deficit falls as training
converges — in the raw-start ``E + βL2`` run the scale-free deficit's Spearman rank correlation
with the gradient norm over the recorded steps is ≥ :data:`MIN_CORRELATION` and it falls to ≤
:data:`MAX_FINAL_RATIO` of its start; (2) it flags the early stop of the raw-start run — its
scale-free deficit there is ≥ :data:`FLAG_FACTOR` × that run's converged one; (3) the same flag
for the balanced-start run. *supported*: (1), (2) and (3) for every seed; *partly supported*: (2)
for every seed but not all of (1) and (3); *not supported* otherwise. The control's numbers are
reported alongside. Full run: 3 seeds × 6,000 steps on 600 images; ``--quick``: 1 seed × 3,000
steps on 300.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from synbal._front import balance
from synbal.errors import SynbalError
from synbal.experiments._arms import scale_free, torch_threads
from synbal.experiments._models import DEFAULT_INIT, fc_classifier
from synbal.experiments._report import ExperimentContext, new_figure, plot_mean_std, write_outputs
from synbal.training import ModelBalance, regularizer_penalty

__all__ = ["DiagnosticSettings", "judge_seed", "run", "spearman", "verdict"]

NAME = "diagnostic"
OPTIONS = {"steps": "gradient-descent steps", "train_size": "training images", "seeds": "number of seeds",
           "beta": "weight of the L2 regularizer", "lr": "learning rate"}
CLAIM = "on E + βR the balance deficit falls as training converges and flags a run that has not (Remark 7.2)"
#: Pre-stated thresholds (see the module docstring).
MIN_CORRELATION, MAX_FINAL_RATIO, FLAG_FACTOR, EARLY_FRACTION = 0.8, 1e-3, 10.0, 0.1
WIDTHS = [784, 32, 16, 10]


@dataclass(frozen=True)
class DiagnosticSettings:
    seeds: int = 3
    steps: int = 6000
    record_every: int = 50
    train_size: int = 600
    lr: float = 0.1
    beta: float = 5e-3

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> DiagnosticSettings:
        base = cls(seeds=1, steps=3000, record_every=50, train_size=300) if ctx.quick else cls()
        if ctx.seeds is not None:
            base = replace(base, seeds=ctx.seeds)
        casts = {"steps": int, "train_size": int, "seeds": int, "beta": float, "lr": float}
        chosen = replace(base, **{k: f(ctx.extra[k]) for k, f in casts.items() if k in ctx.extra})
        if chosen.steps < 10 or chosen.seeds < 1 or chosen.record_every < 1:
            raise SynbalError(f"{NAME}: need steps ≥ 10, seeds ≥ 1")
        return chosen


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected in measured floats).

    >>> spearman(np.array([3.0, 2.0, 1.0]), np.array([30.0, 20.0, 5.0]))
    1.0
    """
    ra = np.argsort(np.argsort(a)).astype(np.float64)
    rb = np.argsort(np.argsort(b)).astype(np.float64)
    return float(np.corrcoef(ra, rb)[0, 1])


def _train(x: torch.Tensor, y: torch.Tensor, st: DiagnosticSettings, seed: int, beta: float,
           balanced: bool) -> dict[str, np.ndarray]:
    model = fc_classifier(WIDTHS, seed=seed).double()
    if balanced:
        balance(model, "l2", method="exact", tol=1e-12, inplace=True, example_inputs=(x[:2],))
    monitor = ModelBalance(model)
    loss_fn = torch.nn.CrossEntropyLoss()
    rows: dict[str, list[float]] = {k: [] for k in ("step", "grad_norm", "loss", "overall_deficit",
                                                    "frobenius_norm", "max_relative_deficit")}
    for step in range(st.steps + 1):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        objective = loss + beta * regularizer_penalty(model, "l2") if beta else loss
        objective.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if step % st.record_every == 0 or step == st.steps:
            grad = float(np.sqrt(sum(float((g * g).sum()) for g in grads)))
            m = monitor.measure("l2")
            for key, value in (("step", step), ("grad_norm", float(grad)), ("loss", float(loss.detach())),
                               ("overall_deficit", m["overall_deficit"]), ("frobenius_norm", m["frobenius_norm"]),
                               ("max_relative_deficit", m["max_relative_deficit"])):
                rows[key].append(value)
        if step < st.steps:
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads, strict=True):
                    p.sub_(st.lr * g)
        if not torch.isfinite(loss):
            raise SynbalError(f"{NAME}: gradient descent diverged at step {step} (lr {st.lr})")
    out = {k: np.array(v) for k, v in rows.items()}
    out["scale_free_deficit"] = scale_free({**out, "reg_overall_deficit": out["overall_deficit"],
                                            "regularizer": out["frobenius_norm"] ** 2})["scale_free_deficit"]
    return out


def judge_seed(series: dict[str, np.ndarray]) -> dict[str, Any]:
    """The two checks of the verdict for one run (see the module docstring)."""
    d, g = series["scale_free_deficit"], series["grad_norm"]
    early = int(np.searchsorted(series["step"], EARLY_FRACTION * series["step"][-1]))
    rho = spearman(g, d)
    ratio = float(d[-1] / d[0])
    flag = float(d[early] / max(d[-1], 1e-300))
    return {"correlation": rho, "final_ratio": ratio, "early_step": int(series["step"][early]),
            "early_over_final": flag, "grad_early_over_final": float(g[early] / g[-1]),
            "loss_early": float(series["loss"][early]), "loss_final": float(series["loss"][-1]),
            "falls": bool(rho >= MIN_CORRELATION and ratio <= MAX_FINAL_RATIO), "flags": bool(flag >= FLAG_FACTOR)}


def verdict(raw: list[dict[str, Any]], balanced: list[dict[str, Any]]) -> tuple[str, str]:
    """``(word, sentence)`` from :func:`judge_seed` of every seed of the two ``E + βR`` arms.

    >>> ok = {"correlation": 0.95, "final_ratio": 1e-5, "early_over_final": 1e3, "falls": True, "flags": True}
    >>> verdict([ok], [ok])[0], verdict([ok], [{**ok, "flags": False}])[0], verdict([{**ok, "flags": False}], [ok])[0]
    ('supported', 'partly supported', 'not supported')
    """
    text = (f"raw start: scale-free deficit vs gradient norm Spearman ρ {min(j['correlation'] for j in raw):.3f} "
            f"(worst seed; threshold {MIN_CORRELATION:g}), end/start {max(j['final_ratio'] for j in raw):.2e} "
            f"(worst; threshold {MAX_FINAL_RATIO:g}); at {EARLY_FRACTION:.0%} of the steps the deficit is "
            f"{min(j['early_over_final'] for j in raw):.3g}× the converged one (worst; flag threshold "
            f"{FLAG_FACTOR:g}×); balanced start: {min(j['early_over_final'] for j in balanced):.3g}×")
    falls = all(j["falls"] for j in raw)
    flags_raw = all(j["flags"] for j in raw)
    flags_bal = all(j["flags"] for j in balanced)
    if falls and flags_raw and flags_bal:
        return "supported", text + ": the deficit falls as training converges and flags both unconverged runs."
    if flags_raw:
        missing = [m for m, ok in (("it does not track the gradient norm (ρ or fall below threshold)", falls),
                                   ("it misses the unconverged run that started balanced", flags_bal)) if not ok]
        return "partly supported", text + ": it flags the unconverged raw-start run, but " + "; ".join(missing) + "."
    return "not supported", text + ": the deficit does not flag the unconverged run."


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """``synbal reproduce diagnostic`` (see the module docstring)."""
    from synbal.data import load_mnist

    st = DiagnosticSettings.for_context(ctx)
    data = load_mnist(ctx.data).subset(st.train_size, seed=0)
    x, y = data.tensors("train")
    x = x.double()
    start = time.perf_counter()
    arms = {"E + βL2": (st.beta, False), "E + βL2, balanced start": (st.beta, True), "E alone": (0.0, False)}
    series: dict[str, list[dict[str, np.ndarray]]] = {a: [] for a in arms}
    with torch_threads(1), tqdm(total=len(arms) * st.seeds, desc=NAME, disable=not ctx.progress) as bar:
        for arm, (beta, balanced) in arms.items():
            for seed in range(st.seeds):
                series[arm].append(_train(x, y, st, seed, beta, balanced))
                bar.update()
    judged = {arm: [judge_seed(s) for s in runs] for arm, runs in series.items()}
    word, sentence = verdict(judged["E + βL2"], judged["E + βL2, balanced start"])
    control = judged["E alone"]
    grad_fall = min(j["grad_early_over_final"] for j in control)
    control_text = (f"Control, E alone: the gradient norm falls {grad_fall:.3g}× "
                    f"or more from {EARLY_FRACTION:.0%} of the steps to the end, while the scale-free deficit ends at "
                    f"{max(j['final_ratio'] for j in control):.3g} of its start (worst seed)"
                    + (": without R balance is no convergence check." if min(j["final_ratio"] for j in control) > 0.5
                       else "."))
    results = {"verdict": word, "sentence": sentence, "control": control_text, "judged": judged,
               "series": series, "seconds": time.perf_counter() - start}
    settings = {**asdict(st), "widths": WIDTHS, "init": DEFAULT_INIT, "data": data.source,
                "optimizer": "full-batch gradient descent", "loss": "cross-entropy (+ beta * L2 of all parameters)",
                "thresholds": {"min_correlation": MIN_CORRELATION, "max_final_ratio": MAX_FINAL_RATIO,
                               "flag_factor": FLAG_FACTOR, "early_fraction": EARLY_FRACTION}}
    write_outputs(ctx, NAME, results=results, settings=settings,
                  summary_md=_summary(st, data.source, word, sentence, control_text, judged),
                  figures={"convergence": _figure(series)})
    return results


def _figure(series: dict[str, list[dict[str, np.ndarray]]]) -> Any:
    fig, axes = new_figure(ncols=3, size=(4.2, 3.4))
    for k, (arm, runs) in enumerate(series.items()):
        steps = runs[0]["step"]
        for ax, key, label in zip(axes, ("grad_norm", "scale_free_deficit", "max_relative_deficit"),
                                  ("‖∇(E + βR)‖", "Σ(IN − OUT)² / ‖W‖_F⁴", "max relative deficit"), strict=True):
            plot_mean_std(ax, steps, np.maximum(np.array([r[key] for r in runs]), 1e-300), label=arm,
                          color=f"C{k}", logy=True)
            ax.set_xlabel("gradient-descent step")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    return fig


def _summary(st: DiagnosticSettings, source: str, word: str, sentence: str, control: str,
             judged: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"# {NAME}: {CLAIM}", "", f"**Result: {word}.** {sentence}", "", control, "",
             f"Net {'-'.join(map(str, WIDTHS))} (ReLU, biases, float64, {DEFAULT_INIT}); full-batch GD, lr {st.lr:g}, "
             f"β = {st.beta:g} (L2 on every parameter), {st.steps} steps, {st.seeds} seed(s); {st.train_size} training "
             f"images ({source}).", "",
             "| arm | seed | Spearman ρ(grad, deficit) | deficit end/start | step of the early stop | "
             "deficit early/end | gradient early/end | loss early → end |", "|---|---|---|---|---|---|---|---|"]
    for arm, rows in judged.items():
        for seed, j in enumerate(rows):
            lines.append(f"| {arm} | {seed} | {j['correlation']:.3f} | {j['final_ratio']:.2e} | {j['early_step']} | "
                         f"{j['early_over_final']:.3g} | {j['grad_early_over_final']:.3g} | "
                         f"{j['loss_early']:.4g} → {j['loss_final']:.4g} |")
    return "\n".join(lines)
