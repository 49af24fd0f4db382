"""Arms and tasks: the training harness of fig7, fig8 and their ``-lc`` variants (balance dynamics).

A *task* is a network family, data and a training recipe; an *arm* is one way of training it
(learning rate, regularizer ``β·R``, optional balancing before training). :func:`run_arms`
trains every arm for every seed with :func:`synbal.training.train` and collects, per epoch,
the paper's overall L2 balance deficit, the deficit and max relative deficit for the arm's own
regularizer, the training loss and ‖W‖_F. :func:`plot_arms` draws them in the paper's style
(mean ± 1 std across seeds).

Theory used for the reference curves: under gradient *flow* on ``E + β·L2`` every unit's
deficit ``IN − OUT`` obeys ``d/dt (IN − OUT) = −4β (IN − OUT)`` (the ``E`` part conserves it),
so the overall deficit decays as ``exp(−8 β t)`` with ``t = lr × steps``.

Scale-free deficits. The raw deficit ``Σ_i (IN_i − OUT_i)²`` over the hidden units scales like
``s^{2p}`` when every weight and bias is multiplied by ``s`` (``IN``, ``OUT`` are sums of
``|w|^p``), so under weight decay it falls even when the balance does not improve. The
*scale-free deficit* divides it by the square of the regularizer's value over all weights and
biases, ``D / R²`` with ``R = Σ |w|^p`` (for L2, ``R = ‖W‖_F²``, so it is ``D / ‖W‖_F⁴``): it is
unchanged by a uniform rescaling, and zero exactly when every hidden unit is balanced.
:func:`run_arms` adds ``scale_free_deficit`` (the paper's L2 deficit / ‖W‖_F⁴) and
``reg_scale_free_deficit`` (the arm's own-R deficit / R²) to every arm's series.

>>> arm = Arm("E+L2", reg="l2", beta=0.01, lr=0.02)
>>> round(flow_decay(arm, steps=np.array([0, 100])).tolist()[1], 6)  # exp(−8·0.01·0.02·100)
0.852144
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from synbal.experiments._models import DEFAULT_INIT
from synbal.experiments.backend import Backend, RunSpec, run_grid
from synbal.experiments.cache import RunCache
from synbal.training import BalanceSchedule, TrainConfig, train

__all__ = ["DERIVED_METRICS", "METRICS", "Arm", "Task", "flow_decay", "plot_arms", "run_arms", "scale_free",
           "summarise_arm", "torch_threads"]

METRICS = (
    "overall_deficit",
    "reg_overall_deficit",
    "max_relative_deficit",
    "regularizer",
    "train_loss",
    "frobenius_norm",
)
#: Computed from :data:`METRICS` (see the module docstring): scale-free L2 and own-R deficits.
DERIVED_METRICS = ("scale_free_deficit", "reg_scale_free_deficit")


def scale_free(series: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The scale-free deficits ``D / ‖W‖_F⁴`` (L2) and ``D_R / R²`` (own R) of per-epoch series.

    >>> out = scale_free({"overall_deficit": np.array([16.0]), "frobenius_norm": np.array([2.0]),
    ...                   "reg_overall_deficit": np.array([9.0]), "regularizer": np.array([3.0])})
    >>> out["scale_free_deficit"].tolist(), out["reg_scale_free_deficit"].tolist()
    ([1.0], [1.0])
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "scale_free_deficit": np.asarray(series["overall_deficit"]) / np.asarray(series["frobenius_norm"]) ** 4,
            "reg_scale_free_deficit": (np.asarray(series["reg_overall_deficit"])
                                       / np.asarray(series["regularizer"]) ** 2),
        }


@dataclass(frozen=True)
class Arm:
    """One training recipe: SGD learning rate, regularizer ``β·R`` (``None``: E alone), and
    the method used to balance the initial weights (``None``: train from the raw init)."""

    label: str
    reg: str | None = None
    beta: float = 0.0
    lr: float = 0.02
    start_balance: str | None = None

    @property
    def monitor_reg(self) -> str:
        return self.reg or "l2"


@dataclass
class Task:
    """The network (``model_factory(seed)``), training data and recipe shared by all arms."""

    name: str
    model_factory: Callable[[int], nn.Module]
    train_data: tuple[torch.Tensor, torch.Tensor]
    loss: str
    batch_size: int
    epochs: int
    data_source: str
    example_inputs: torch.Tensor | None = None
    init: str = DEFAULT_INIT

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_data[0].shape[0] / self.batch_size)

    def settings(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "loss": self.loss,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "train_examples": int(self.train_data[0].shape[0]),
            "steps_per_epoch": self.steps_per_epoch,
            "data": self.data_source,
            "optimizer": "SGD (no momentum)",
        }  # the run-record key: ``init`` is reported next to it (records made before it was stated stay valid)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads, then restore the previous setting.

    The reproductions default to 1: their networks are small, and on a shared machine extra
    OpenMP threads made the locally connected net's steps 5× slower, not faster.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def flow_decay(arm: Arm, steps: np.ndarray) -> np.ndarray:
    """Gradient-flow prediction of ``deficit(t)/deficit(0)`` for an ``E + β·L2`` arm."""
    if arm.reg != "l2":
        return np.full(np.shape(steps), np.nan)
    return np.exp(-8.0 * arm.beta * arm.lr * np.asarray(steps, dtype=np.float64))


def _train_one(task: Task, arm: Arm, seed: int) -> dict[str, Any]:
    """One training run: per-epoch metrics (``None`` where absent), divergence, balancing events."""
    model = task.model_factory(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=arm.lr)
    schedule = (BalanceSchedule(reg="l2", at_start=arm.start_balance, seed=seed, tol=1e-8)
                if arm.start_balance else None)
    config = TrainConfig(epochs=task.epochs, batch_size=task.batch_size, loss=task.loss,  # type: ignore[arg-type]
                         reg=arm.reg, beta=arm.beta, monitor_reg=arm.monitor_reg, seed=seed,
                         progress=False)
    history = train(model, optimizer, task.train_data, config, balance=schedule,
                    example_inputs=task.example_inputs)
    rows: dict[str, list[float | None]] = {m: [None] * (task.epochs + 1) for m in METRICS}
    for record in history.epochs():
        for m in METRICS:
            rows[m][record["epoch"]] = record.get(m)
    return {"series": rows, "diverged": bool(history.settings.get("diverged")),
            "balance_events": history.balance_events}


def train_one(task: Task, arm: Arm, seed: int, threads: int = 1) -> dict[str, Any]:
    """One run of an arms × seeds grid with ``threads`` torch threads (a pure function of its
    arguments, run by any backend of :mod:`synbal.experiments.backend`)."""
    with torch_threads(threads):
        return _train_one(task, arm, seed)


def run_arms(task: Task, arms: Sequence[Arm], seeds: int, *, progress: bool = True,
             cache: RunCache | None = None, backend: Backend | None = None, threads: int | None = None
             ) -> dict[str, Any]:
    """Train every arm for ``seeds`` seeds; per arm, each metric as an array ``(seeds, epochs + 1)``.

    Seed ``s`` gives every arm the same initial weights and minibatch order. A diverged run
    (NaN loss) keeps ``nan`` after the epoch it diverged in and is counted in ``diverged``.
    With ``cache``, finished runs are recorded there and taken from there on a rerun (the key is
    the task's settings, the arm and the seed), so an interrupted reproduction resumes. The runs
    execute on ``backend`` (default: in this process) with ``threads`` torch threads (default:
    the current setting).
    """
    threads = torch.get_num_threads() if threads is None else threads
    specs = [RunSpec({"task": task.settings(), "arm": asdict(arm), "seed": seed}, (task, arm, seed, threads))
             for arm in arms for seed in range(seeds)]
    runs = iter(run_grid(train_one, specs, cache, backend, progress=progress, desc=task.name))
    out: dict[str, Any] = {}
    for arm in arms:
        series = {m: np.full((seeds, task.epochs + 1), np.nan) for m in METRICS}
        diverged = 0
        balance_events: list[list[dict[str, Any]]] = []
        for seed in range(seeds):
            run = next(runs)
            for m in METRICS:
                series[m][seed] = np.array([np.nan if v is None else v for v in run["series"][m]], dtype=np.float64)
            diverged += bool(run["diverged"])
            balance_events.append(run["balance_events"])
        out[arm.label] = {"arm": asdict(arm), "diverged_runs": diverged, "balance_events": balance_events,
                          **series, **scale_free(series)}
    return out


def summarise_arm(series: dict[str, Any]) -> dict[str, float]:
    """Initial/final means of the key metrics and the deficit ratios (final / initial)."""
    def mean_at(metric: str, index: int) -> float:
        col = np.asarray(series[metric])[:, index]
        col = col[np.isfinite(col)]
        return float(col.mean()) if col.size else math.nan

    if any(m not in series for m in DERIVED_METRICS):
        series = {**series, **scale_free(series)}
    summary = {}
    for metric in ("overall_deficit", "reg_overall_deficit", "max_relative_deficit", "train_loss",
                   "frobenius_norm", *DERIVED_METRICS):
        summary[f"{metric}_initial"] = mean_at(metric, 0)
        summary[f"{metric}_final"] = mean_at(metric, -1)
    half = np.asarray(series["reg_overall_deficit"]).shape[1] // 2
    summary["reg_overall_deficit_mid"] = mean_at("reg_overall_deficit", half)
    for metric in ("overall_deficit", "reg_overall_deficit", *DERIVED_METRICS):
        init = summary[f"{metric}_initial"]
        summary[f"{metric}_ratio"] = summary[f"{metric}_final"] / init if init > 0 else math.nan
    return summary


_PANELS = {
    "overall_deficit": ("overall balance deficit (L2)", True),
    "reg_overall_deficit": ("overall deficit, arm's own R", True),
    "train_loss": ("training loss", False),
    "frobenius_norm": ("‖W‖_F", False),
    "max_relative_deficit": ("max relative deficit", True),
    "scale_free_deficit": ("L2 deficit / ‖W‖_F⁴ (scale-free)", True),
    "reg_scale_free_deficit": ("own-R deficit / R² (scale-free)", True),
}


def plot_arms(task: Task, arms: Sequence[Arm], results: dict[str, Any], metrics: Sequence[str],
              *, theory: bool = True, title: str = "") -> Any:
    """One panel per metric, one mean ± 1 std curve per arm; dashed: the L2 flow prediction."""
    from synbal.experiments._report import new_figure, plot_mean_std

    fig, axes = new_figure(ncols=len(metrics), size=(4.6, 3.6))
    axes = np.atleast_1d(axes)
    epochs = np.arange(task.epochs + 1)
    colours = ["C0", "C1", "C2", "C3", "C4", "C5"]
    for ax, metric in zip(axes, metrics, strict=True):
        label, logy = _PANELS[metric]
        for colour, arm in zip(colours, arms, strict=False):
            runs = np.asarray(results[arm.label][metric], dtype=np.float64)
            if logy:
                runs = np.maximum(runs, 1e-300)
            plot_mean_std(ax, epochs, runs, label=arm.label, color=colour, logy=logy)
            if theory and metric == "overall_deficit" and arm.reg == "l2":
                start = np.nanmean(runs[:, 0])
                ax.plot(epochs, start * flow_decay(arm, epochs * task.steps_per_epoch), "--", color=colour,
                        linewidth=1, label=f"{arm.label}: flow theory")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
