"""The main demo (``synbal demo``): train, inspect, balance, verify, plot.

On the embedded MNIST subset (or the IDX files at ``data``) it

1. trains the paper's MNIST autoencoder 784-200-100-50-100-200-784 (ReLU, sum-of-squares loss,
   SGD with momentum, batch 200) for a few epochs *without* a regularizer — so, as the theory
   says, nothing drives it to balance;
2. prints its L2 balance report (R, ‖W‖_F, the paper's overall deficit, the max relative deficit,
   and the same per hidden layer);
3. balances it exactly (``synbal.balance(model, "l2", "exact")``), once as trained (float32)
   and once on a float64 copy;
4. shows that the outputs on the test images are unchanged (float64: to rounding error;
   float32: to float32 rounding of the rescaled weights) and that R dropped;
5. writes ``demo.json`` (every number and setting) and ``demo_deficits.png`` (per-layer deficits
   before and after) into ``out_dir``.

>>> DemoConfig(epochs=2).epochs
2
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synbal._problem.metrics import DeficitReport
from synbal.errors import SynbalError, VerificationError

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

#: A float64 copy must reproduce the original outputs to this relative accuracy.
FLOAT64_TOLERANCE = 1e-9
#: The float32 model's balanced copy: its weights are rounded to float32 after rescaling.
FLOAT32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo (all recorded in ``demo.json``).

    ``train_size`` limits the training examples (``None``: all); ``reg`` is the regularizer the
    network is balanced for.
    """

    epochs: int = 5
    batch_size: int = 200
    lr: float = 3e-3
    momentum: float = 0.9
    seed: int = 0
    train_size: int | None = None
    reg: str = "l2"

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise SynbalError(f"--epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0:
            raise SynbalError(f"batch_size must be >= 1 and lr > 0 (got {self.batch_size}, {self.lr})")


@dataclass
class DemoResult:
    """The numbers the demo measured, and the files it wrote."""

    numbers: dict[str, Any]
    paths: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------- pieces
def _layer_table(problem_layers: list[np.ndarray], before: DeficitReport, after: DeficitReport | None
                 ) -> list[dict[str, Any]]:
    """Per hidden layer: units, the paper's deficit Σ(IN − c·OUT)², max relative deficit."""
    rows = []
    for k, layer in enumerate(problem_layers):
        row: dict[str, Any] = {"layer": k + 1, "units": int(layer.size)}
        for tag, rep in (("before", before), ("after", after)):
            if rep is None:
                continue
            units = [rep.units[i] for i in layer]
            row[f"deficit_{tag}"] = float(sum(u.deficit for u in units))
            free = [u.relative_deficit for u in units if u.status == "free"]
            row[f"max_relative_deficit_{tag}"] = float(max(free)) if free else 0.0
            row[f"IN_{tag}"] = float(sum(u.IN for u in units))
            row[f"OUT_{tag}"] = float(sum(u.OUT for u in units))
        rows.append(row)
    return rows


def _report_numbers(rep: DeficitReport) -> dict[str, Any]:
    return {
        "regularizer": rep.regularizer_value,
        "frobenius_norm": rep.frobenius_norm,
        "overall_deficit": rep.overall_deficit,
        "max_relative_deficit": rep.max_relative_deficit,
        "dead_units": len(rep.dead),
    }


def _output_gap(model_a: Any, model_b: Any, x: Any) -> dict[str, float]:
    """Largest absolute and relative (to the largest output) difference of two models on ``x``."""
    import torch

    with torch.no_grad():
        ya = model_a(x)
        yb = model_b(x)
    gap = float((ya - yb).abs().max())
    scale = float(ya.abs().max())
    return {"max_abs_difference": gap, "max_relative_difference": gap / scale if scale > 0 else gap,
            "largest_output": scale}


def _plot(layers: list[dict[str, Any]], path: Path) -> None:
    """Per-layer deficits before and after balancing (log scale), written atomically."""
    from synbal._io import atomic_write_bytes
    from synbal.experiments._report import new_figure

    fig, (ax_def, ax_rel) = new_figure(ncols=2, size=(5.2, 3.8))
    idx = np.arange(len(layers))
    width = 0.38
    floor = 1e-18
    for ax, key, label in ((ax_def, "deficit", "overall deficit Σ(IN − OUT)²"),
                           (ax_rel, "max_relative_deficit", "max relative deficit |IN − OUT|/(IN + OUT)")):
        before = np.array([max(r[f"{key}_before"], floor) for r in layers])
        after = np.array([max(r[f"{key}_after"], floor) for r in layers])
        ax.bar(idx - width / 2, before, width, label="trained", color="tab:red")
        ax.bar(idx + width / 2, after, width, label="balanced (exact)", color="tab:blue")
        ax.set_yscale("log")
        ax.set_xticks(idx, [f"{r['layer']}\n({r['units']})" for r in layers])
        ax.set_xlabel("hidden layer (units)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8, loc="center right", framealpha=0.9)
    ax_def.set_title("per-layer balance deficit (L2)")
    ax_rel.set_title("worst unit per layer")
    fig.suptitle("MNIST autoencoder before and after exact balancing")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _format_layers(layers: list[dict[str, Any]], *, after: bool) -> list[str]:
    if not after:
        lines = [f"  {'layer':>5} {'units':>6} {'IN':>11} {'OUT':>11} {'deficit':>11} {'max rel.def.':>13}"]
        for r in layers:
            lines.append(f"  {r['layer']:>5} {r['units']:>6} {r['IN_before']:>11.4g} {r['OUT_before']:>11.4g} "
                         f"{r['deficit_before']:>11.4g} {r['max_relative_deficit_before']:>13.3e}")
        return lines
    lines = [f"  {'layer':>5} {'units':>6} {'deficit before':>15} {'after':>11} "
             f"{'max rel. before':>16} {'after':>11}"]
    for r in layers:
        lines.append(f"  {r['layer']:>5} {r['units']:>6} {r['deficit_before']:>15.4g} {r['deficit_after']:>11.3g} "
                     f"{r['max_relative_deficit_before']:>16.3e} {r['max_relative_deficit_after']:>11.3e}")
    return lines


# ---------------------------------------------------------------------------- the demo
@dataclass
class _Balanced:
    """What step 2 and 3 measured: reports before and after, the float32 and float64 results."""

    before: DeficitReport
    after: DeficitReport
    result: Any
    seconds: float
    layers: list[dict[str, Any]]
    model64: Any = None
    result64: Any = None


def run_demo(
    config: DemoConfig | None = None,
    *,
    data: str | Path | None = None,
    out_dir: str | Path = "synbal-demo",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Train the MNIST autoencoder briefly, balance it exactly, verify, report and plot.

    Raises :class:`~synbal.errors.VerificationError` if balancing changed the network's outputs
    beyond rounding, and :class:`~synbal.errors.DataError` for missing or corrupt data files.
    """
    config = config or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # fail before training, not after
    t_start = time.perf_counter()
    dataset = _load_data(config, data, echo)
    x_train, _ = dataset.tensors("train")
    x_test, _ = dataset.tensors("test")
    model, history = _train(config, x_train, x_test, progress, echo)
    example = x_test[:2]
    balanced = _balance(model, config.reg, example, echo)
    _balance_float64(model, config.reg, balanced, example, echo)
    gaps = _check_outputs(model, balanced, x_test, echo)
    numbers = _numbers(config, data, dataset.source, history, balanced, gaps, int(x_test.shape[0]))
    return _finish(numbers, balanced, gaps, out, t_start, echo)


def _load_data(config: DemoConfig, data: str | Path | None, echo: Callable[[str], None]) -> Any:
    """The MNIST dataset (embedded subset unless ``data``), limited to ``config.train_size``."""
    from synbal.data import load_mnist

    dataset = load_mnist(data)
    if config.train_size is not None:
        dataset = dataset.subset(config.train_size, seed=config.seed)
    echo("synbal demo: balancing a trained MNIST autoencoder 784-200-100-50-100-200-784 (ReLU)")
    echo(f"data: {dataset.source} — {dataset.n_train} training / {dataset.n_test} test images")
    return dataset


def _train(config: DemoConfig, x_train: Any, x_test: Any, progress: bool,
           echo: Callable[[str], None]) -> tuple[Any, Any]:
    """Step 1: brief training on the reconstruction error alone; the model and its history."""
    import torch

    from synbal.experiments._models import mnist_autoencoder
    from synbal.training import TrainConfig, train

    model = mnist_autoencoder(seed=config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    echo(f"\n[1/4] training {config.epochs} epochs: SGD (lr {config.lr:g}, momentum {config.momentum:g}, "
         f"batch {config.batch_size}), sum-of-squares loss, no regularizer")
    history = train(model, optimizer, (x_train, x_train),
                    TrainConfig(epochs=config.epochs, batch_size=config.batch_size, loss="sse",
                                monitor=False, seed=config.seed, progress=progress),
                    eval_data=(x_test, x_test))
    if history.settings.get("diverged"):
        raise SynbalError(f"training diverged at epoch {history.settings.get('diverged_at_epoch')}; "
                          "use a smaller learning rate")
    test_loss = history.column("test_loss")
    echo(f"      test reconstruction error (sum of squares per image): {test_loss[0]:.4g} → {test_loss[-1]:.4g}")
    return model, history


def _balance(model: Any, reg: str, example: Any, echo: Callable[[str], None]) -> _Balanced:
    """Step 2: the trained network's balance report, and its exact balancing (float32)."""
    import synbal

    # (the exact solver takes well under a second here: no progress bar needed)
    before = synbal.deficit(model, reg, example_inputs=example)
    t0 = time.perf_counter()
    result = synbal.balance(model, reg, "exact", example_inputs=example)
    seconds = time.perf_counter() - t0
    after = synbal.deficit(result.net, reg, example_inputs=example)
    layers = _layer_table(result.problem.layers or [np.arange(result.problem.n)], before, after)
    echo(f"\n[2/4] balance report of the trained network ({before.regularizer}):")
    for line in _format_layers(layers, after=False):
        echo(line)
    echo(f"  R = {before.regularizer_value:.6g}   ‖W‖_F = {before.frobenius_norm:.6g}   "
         f"overall deficit = {before.overall_deficit:.4g}   "
         f"max relative deficit = {before.max_relative_deficit:.3e}")
    return _Balanced(before, after, result, seconds, layers)


def _balance_float64(model: Any, reg: str, balanced: _Balanced, example: Any, echo: Callable[[str], None]) -> None:
    """Step 3: report the exact balancing, and balance a float64 copy too."""
    import synbal

    result = balanced.result
    echo(f"\n[3/4] balancing exactly (method='exact', {result.problem.n} hidden units) ...")
    echo(f"      {'converged' if result.converged else 'NOT converged'} after {result.sweeps} "
         f"iterations in {balanced.seconds:.2f} s; max relative deficit {result.max_relative_deficit:.2e}")
    balanced.model64 = copy.deepcopy(model).double()
    balanced.result64 = synbal.balance(balanced.model64, reg, "exact", example_inputs=example.double())


def _regularizer_drop(balanced: _Balanced) -> float:
    """How much balancing lowered R, in percent."""
    r_before = balanced.before.regularizer_value
    return 100.0 * (1.0 - balanced.after.regularizer_value / r_before) if r_before > 0 else 0.0


def _check_outputs(model: Any, balanced: _Balanced, x_test: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    """Step 4: outputs unchanged on the test images (float32 and float64), R dropped."""
    gap32 = _output_gap(model, balanced.result.net, x_test)
    gap64 = _output_gap(balanced.model64, balanced.result64.net, x_test.double())
    before, after = balanced.before, balanced.after
    drop = _regularizer_drop(balanced)
    echo(f"\n[4/4] checking the balanced network on {x_test.shape[0]} test images")
    echo(f"      outputs, float64 copy: max |Δ| = {gap64['max_abs_difference']:.2e} "
         f"(relative {gap64['max_relative_difference']:.2e}) — unchanged up to rounding")
    echo(f"      outputs, float32 model: max |Δ| = {gap32['max_abs_difference']:.2e} "
         f"(relative {gap32['max_relative_difference']:.2e}) — float32 rounding of the rescaled weights")
    echo(f"      R ({after.regularizer}): {before.regularizer_value:.6g} → {after.regularizer_value:.6g}  "
         f"(−{drop:.2f}%)")
    echo(f"      ‖W‖_F: {before.frobenius_norm:.6g} → {after.frobenius_norm:.6g}")
    echo(f"      overall deficit: {before.overall_deficit:.4g} → {after.overall_deficit:.3g};  "
         f"max relative deficit: {before.max_relative_deficit:.3e} → {after.max_relative_deficit:.3e}")
    echo(f"      (measured on the float32 weights; the float64 copy reaches "
         f"{balanced.result64.max_relative_deficit:.1e})")
    for line in _format_layers(balanced.layers, after=True):
        echo(line)
    ok = (gap64["max_relative_difference"] <= FLOAT64_TOLERANCE
          and gap32["max_relative_difference"] <= FLOAT32_TOLERANCE)
    return {"test_images": int(x_test.shape[0]), "float32": gap32, "float64": gap64,
            "float64_tolerance": FLOAT64_TOLERANCE, "float32_tolerance": FLOAT32_TOLERANCE, "unchanged": bool(ok)}


def _numbers(config: DemoConfig, data: str | Path | None, source: str, history: Any, balanced: _Balanced,
             outputs: dict[str, Any], n_test: int) -> dict[str, Any]:
    """Every number and setting of the run, as written to ``demo.json``."""
    from synbal.experiments._report import environment

    result, result64 = balanced.result, balanced.result64
    return {
        "settings": {**asdict(config), "data": str(data) if data is not None else None},
        "data_source": source,
        "model": "MNIST autoencoder 784-200-100-50-100-200-784, ReLU",
        "training": {
            "epochs": config.epochs,
            "test_loss": history.column("test_loss"),
            "train_loss": history.column("train_loss"),
            "seconds": float(history.epochs()[-1]["seconds"]) if history.epochs() else 0.0,
        },
        "before": _report_numbers(balanced.before),
        "after": _report_numbers(balanced.after),
        "regularizer_drop_percent": _regularizer_drop(balanced),
        "balance": {"method": "exact", "converged": result.converged, "iterations": result.sweeps,
                    "seconds": balanced.seconds, "units": result.problem.n,
                    "max_relative_deficit": result.max_relative_deficit,
                    "float64_copy_max_relative_deficit": result64.max_relative_deficit},
        "outputs": outputs,
        "layers": balanced.layers,
        "environment": environment(),
    }


def _finish(numbers: dict[str, Any], balanced: _Balanced, outputs: dict[str, Any], out: Path, t_start: float,
            echo: Callable[[str], None]) -> DemoResult:
    """Write ``demo.json`` and the plot, print the verdict; refuse changed outputs."""
    from synbal._io import atomic_write_json
    from synbal.experiments._report import to_jsonable

    numbers["seconds"] = time.perf_counter() - t_start
    json_path = out / "demo.json"
    png_path = out / "demo_deficits.png"
    _plot(balanced.layers, png_path)
    atomic_write_json(json_path, to_jsonable(numbers))
    before, after = balanced.before, balanced.after
    verdict = "same outputs (to rounding)" if outputs["unchanged"] else "OUTPUTS CHANGED"
    state = "every hidden unit balanced" if after.max_relative_deficit <= 1e-6 else "NOT fully balanced"
    echo(f"\nresult: {verdict}, R −{_regularizer_drop(balanced):.1f}%, {state} "
         f"(max relative deficit {before.max_relative_deficit:.2g} → {after.max_relative_deficit:.1e})")
    echo(f"wrote {json_path} and {png_path}  ({numbers['seconds']:.1f} s in all)")
    if not outputs["unchanged"]:
        gap32, gap64 = outputs["float32"], outputs["float64"]
        raise VerificationError(
            f"the balanced autoencoder's outputs changed: relative difference "
            f"{gap64['max_relative_difference']:.2e} (float64, tolerance {FLOAT64_TOLERANCE:g}), "
            f"{gap32['max_relative_difference']:.2e} (float32, tolerance {FLOAT32_TOLERANCE:g})"
        )
    return DemoResult(numbers=numbers, paths=[json_path, png_path])
