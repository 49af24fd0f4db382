"""Regularized training with balancing hooks and balance monitors.

:func:`train` runs minibatch training of any model with any torch optimizer whose ``step()``
needs no closure (SGD, Adam, AdamW, RMSprop, Adagrad, …; not LBFGS) and adds

* the regularizer ``β·R`` (any power regularizer) to the loss, or as decoupled decay;
* balancing before training (:attr:`BalanceSchedule.at_start`) and every ``k`` epochs or steps
  with any method — full ``exact`` balancing, or ``method="layer", max_sweeps=1`` (one layer
  sweep, "partial balancing") — transforming the optimizer's state to match;
* per-epoch records (epoch 0 = before training, after any initial balancing): training loss
  and accuracy, test loss and accuracy, the paper's overall L2 balance deficit, the max relative
  deficit and value of the monitored regularizer, and ‖W‖_F; optional per-step records.

Epoch records are taken *after* that epoch's balancing, if any.

>>> import torch
>>> torch.manual_seed(0) and None
>>> x = torch.randn(64, 5); y = (x[:, 0] > 0).long()
>>> model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
>>> hist = train(model, opt, (x, y), TrainConfig(epochs=3, batch_size=16, reg="l2", beta=1e-3,
...              progress=False), balance=BalanceSchedule(at_start="exact", every=1))
>>> len(hist.epochs()), hist.epochs()[0]["max_relative_deficit"] < 1e-6
(4, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from synbal._problem.regularizers import RegularizerSpec, parse_regularizer
from synbal.errors import SynbalError
from synbal.training._history import TrainingHistory
from synbal.training._model_balance import ModelBalance
from synbal.training._optimizer_state import Policy
from synbal.training._penalty import apply_decoupled_decay, regularized_parameters, regularizer_penalty

__all__ = ["BalanceSchedule", "LossSpec", "TrainConfig", "evaluate", "sum_of_squares", "train"]

LossSpec = Literal["cross_entropy", "sse", "mse"] | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sum_of_squares(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors over output units, averaged over the batch.

    >>> sum_of_squares(torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.zeros(2, 2))  # (5 + 0) / 2
    tensor(2.5000)
    """
    return (output - target).pow(2).reshape(output.shape[0], -1).sum(dim=1).mean()


def _loss_function(spec: LossSpec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if callable(spec):
        return spec
    table: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "cross_entropy": nn.functional.cross_entropy,
        "sse": sum_of_squares,
        "mse": nn.functional.mse_loss,
    }
    if spec not in table:
        raise SynbalError(f"unknown loss {spec!r}; choose cross_entropy, sse, mse or pass a callable")
    return table[spec]


@dataclass(frozen=True)
class BalanceSchedule:
    """When and how to balance during training.

    ``at_start``: method for balancing before training (``None``: don't). ``every``: balance
    every ``every`` epochs/steps (``unit``; 0 = never) with ``method`` and at most
    ``max_sweeps`` sweeps — ``method="layer", max_sweeps=1`` is one layer sweep ("partial
    balancing"), ``method="exact"`` a full balance. ``optimizer_state``: ``"rescale"`` its
    moments (see :mod:`synbal.training._optimizer_state`) or ``"reset"`` them.

    >>> BalanceSchedule(at_start="exact", every=100, unit="step").method  # one layer sweep per 100 steps
    'layer'
    >>> BalanceSchedule(every=-1)
    Traceback (most recent call last):
    ...
    synbal.errors.SynbalError: invalid balance schedule: every=-1 (>= 0), unit='epoch' (epoch/step), max_sweeps=1 (>= 1)
    """

    reg: RegularizerSpec = "l2"
    at_start: str | None = None
    every: int = 0
    unit: Literal["epoch", "step"] = "epoch"
    method: str = "layer"
    max_sweeps: int = 1
    tol: float = 1e-10
    optimizer_state: Policy = "rescale"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.every < 0 or self.unit not in ("epoch", "step") or self.max_sweeps < 1:
            raise SynbalError(
                f"invalid balance schedule: every={self.every} (>= 0), unit={self.unit!r} "
                f"(epoch/step), max_sweeps={self.max_sweeps} (>= 1)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (stored unchanged in the history).

    ``reg``/``beta``: the training regularizer ``β·R`` (``None`` or ``β = 0``: none);
    ``reg_mode``: ``"loss"`` (added to the loss, works with any optimizer) or ``"decoupled"``
    (a separate decay step ``w ← w − lr·β·∇R`` after each optimizer step). ``monitor_reg``:
    the regularizer whose max relative deficit and value are logged (the overall deficit is
    always the paper's L2 one). ``monitor``: measure balance every epoch (off: loss/accuracy
    only). ``log_every_steps``: also log the minibatch loss every k steps (0: never).
    ``eval_every``: evaluate ``eval_data`` after every k-th epoch only (and always before
    training and after the last epoch); the other epochs' records carry no test columns.

    >>> config = TrainConfig(epochs=10, batch_size=64, reg="l1", beta=1e-4, reg_mode="decoupled")
    >>> config.loss, config.monitor_reg
    ('cross_entropy', 'l2')
    >>> TrainConfig(epochs=1, batch_size=8, reg="l0")
    Traceback (most recent call last):
    ...
    synbal.errors.RegularizerError: regularizer 'l0': power must be > 0, got p=0
    """

    epochs: int
    batch_size: int
    loss: LossSpec = "cross_entropy"
    reg: RegularizerSpec | None = None
    beta: float = 0.0
    reg_mode: Literal["loss", "decoupled"] = "loss"
    monitor_reg: RegularizerSpec = "l2"
    monitor: bool = True
    log_every_steps: int = 0
    seed: int = 0
    progress: bool = True
    eval_batch_size: int = 2048
    eval_every: int = 1

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise SynbalError(f"epochs must be >= 0 and batch_size >= 1 (got {self.epochs}, {self.batch_size})")
        if self.eval_every < 1:
            raise SynbalError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.beta < 0 or not math.isfinite(self.beta):
            raise SynbalError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.reg_mode not in ("loss", "decoupled"):
            raise SynbalError(f"reg_mode must be 'loss' or 'decoupled', got {self.reg_mode!r}")
        if self.reg is not None:
            parse_regularizer(self.reg)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], loss: LossSpec = "cross_entropy",
             batch_size: int = 2048) -> dict[str, float]:
    """Mean loss and (for integer targets) accuracy of ``model`` on ``data`` (train mode kept).

    >>> model = nn.Linear(2, 2, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.eye(2))
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]); y = torch.tensor([0, 1, 1])
    >>> evaluate(model, (x, y))["accuracy"]
    0.6666666666666666
    >>> evaluate(model, (x, x), loss="sse")
    {'loss': 0.0}
    """
    x, y = data
    fn = _loss_function(loss)
    device = _device_of(model)
    total, correct = 0.0, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        yb = y[start : start + batch_size].to(device)
        out = model(xb)
        total += float(fn(out, yb)) * xb.shape[0]
        if not yb.dtype.is_floating_point:
            correct += int((out.argmax(dim=1) == yb).sum())
    n = max(1, x.shape[0])
    result = {"loss": total / n}
    if not y.dtype.is_floating_point:
        result["accuracy"] = correct / n
    return result


def _settings(
    config: TrainConfig, schedule: BalanceSchedule | None, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    cfg = asdict(config)
    cfg["loss"] = config.loss if isinstance(config.loss, str) else getattr(config.loss, "__name__", "callable")
    cfg["reg"] = None if config.reg is None else str(parse_regularizer(config.reg))
    cfg["monitor_reg"] = str(parse_regularizer(config.monitor_reg))
    out: dict[str, Any] = {"config": cfg, "optimizer": type(optimizer).__name__,
                           "optimizer_defaults": {k: v for k, v in optimizer.defaults.items()
                                                  if isinstance(v, (int, float, bool, str, tuple))}}
    if schedule is not None:
        sched = asdict(schedule)
        sched["reg"] = str(parse_regularizer(schedule.reg))
        out["balance"] = sched
    return out


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    *,
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    balance: BalanceSchedule | None = None,
    example_inputs: Any = None,
    on_step: Callable[[nn.Module, int], None] | None = None,
) -> TrainingHistory:
    """Train ``model`` in place on ``train_data = (inputs, targets)`` and return its history.

    Targets are class indices (then accuracy is logged) or tensors (e.g. the inputs, for an
    autoencoder with ``loss="sse"``). ``example_inputs`` is needed only when balancing or
    monitoring a model that is not a plain MLP. ``on_step(model, step)`` is called after every
    optimizer step (and decoupled decay), e.g. a :class:`synbal.dynamics.GramMonitor`. Training stops early, with
    ``history.settings["diverged"] = True``, if the loss becomes NaN or infinite.

    >>> torch.manual_seed(0) and None
    >>> x = torch.randn(32, 4)
    >>> autoencoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> opt = torch.optim.SGD(autoencoder.parameters(), lr=0.01)
    >>> hist = train(autoencoder, opt, (x, x), TrainConfig(epochs=2, batch_size=8, loss="sse", progress=False),
    ...              balance=BalanceSchedule(reg="l2", every=1, method="exact", max_sweeps=100))
    >>> [e["at"] for e in hist.balance_events], hist.epochs()[-1]["max_relative_deficit"] < 1e-6
    (['epoch', 'epoch'], True)
    >>> hist.column("train_loss")[-1] < hist.column("train_loss")[0]
    True
    """
    from tqdm.auto import tqdm

    x, y = train_data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise SynbalError(f"train_data has {x.shape[0]} inputs and {y.shape[0]} targets")
    run = _Run(model, optimizer, config, balance, eval_data, example_inputs, on_step)
    if balance is not None and balance.at_start:
        run.balance(balance.at_start, 10_000, "start")
    run.record(0, {f"train_{k}": v for k, v in evaluate(model, train_data, config.loss,
                                                        config.eval_batch_size).items()})
    bar = tqdm(range(1, config.epochs + 1), disable=not config.progress, desc="training", unit="epoch")
    for epoch in bar:
        stats = run.epoch(epoch, x, y)
        if stats is None:
            run.history.settings["diverged"] = True
            run.history.settings["diverged_at_epoch"] = epoch
            break
        if balance is not None and balance.every and balance.unit == "epoch" and epoch % balance.every == 0:
            run.balance(balance.method, balance.max_sweeps, "epoch")
        run.record(epoch, stats)
        bar.set_postfix(loss=f"{stats['train_loss']:.4g}")
    run.history.settings.setdefault("diverged", False)
    return run.history


class _Run:
    """The state of one :func:`train` call: the model, its optimizer, the history, the step count."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig,
                 schedule: BalanceSchedule | None, eval_data: tuple[torch.Tensor, torch.Tensor] | None,
                 example_inputs: Any, on_step: Callable[[nn.Module, int], None] | None) -> None:
        self.model, self.optimizer, self.config, self.schedule = model, optimizer, config, schedule
        self.eval_data, self.on_step = eval_data, on_step
        self.loss_fn = _loss_function(config.loss)
        self.device = _device_of(model)
        self.train_reg = config.reg if config.reg is not None and config.beta > 0 else None
        self.reg_params = [p for _, p in regularized_parameters(model)] if self.train_reg is not None else []
        needs_balance = config.monitor or (schedule is not None and (schedule.at_start or schedule.every))
        self.mb = ModelBalance(model, example_inputs) if needs_balance else None
        self.history = TrainingHistory(settings=_settings(config, schedule, optimizer))
        self.history.settings["fast_mlp_route"] = bool(self.mb and self.mb.fast)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.start_time = time.perf_counter()

    def balance(self, method: str, max_sweeps: int, where: str) -> None:
        """Balance the model in place (optimizer state follows) and record the event."""
        assert self.mb is not None and self.schedule is not None
        s = self.schedule
        info = self.mb.balance(s.reg, method, optimizer=self.optimizer, optimizer_state=s.optimizer_state,
                               tol=s.tol, max_sweeps=max_sweeps, seed=s.seed)
        self.history.balance_events.append({"at": where, "step": self.step, **info.as_dict()})

    def record(self, epoch: int, train_stats: dict[str, float]) -> None:
        """The epoch's record: training stats, test stats when due, balance measures."""
        config = self.config
        rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": self.step, **train_stats}
        if self.eval_data is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            rec.update({f"test_{k}": v for k, v in evaluate(self.model, self.eval_data, config.loss,
                                                            config.eval_batch_size).items()})
        if config.monitor and self.mb is not None:
            rec.update(self.mb.measure(config.monitor_reg))
        rec["seconds"] = time.perf_counter() - self.start_time
        self.history.add(**rec)

    def epoch(self, epoch: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, float] | None:
        """One pass over the shuffled data; its training stats, or ``None`` if the loss diverged."""
        perm = torch.randperm(x.shape[0], generator=self.generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, x.shape[0], self.config.batch_size):
            idx = perm[start : start + self.config.batch_size]
            xb, yb = x[idx].to(self.device), y[idx].to(self.device)
            value, out = self._minibatch(xb, yb)
            if not math.isfinite(value):
                return None
            loss_sum += value * xb.shape[0]
            seen += xb.shape[0]
            if not yb.dtype.is_floating_point:
                correct += int((out.detach().argmax(dim=1) == yb).sum())
            self._after_step(epoch, value)
        stats = {"train_loss": loss_sum / max(1, seen)}
        if not y.dtype.is_floating_point:
            stats["train_accuracy"] = correct / max(1, seen)
        return stats

    def _minibatch(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, torch.Tensor]:
        """One optimizer step (with the regularizer in the loss or as decay); the loss and outputs."""
        config = self.config
        out = self.model(xb)
        loss = self.loss_fn(out, yb)
        total = loss
        if self.train_reg is not None and config.reg_mode == "loss":
            total = loss + config.beta * regularizer_penalty(self.reg_params, self.train_reg)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.train_reg is not None and config.reg_mode == "decoupled":
            lr = float(self.optimizer.param_groups[0].get("lr", 0.0))
            apply_decoupled_decay(self.reg_params, self.train_reg, lr * config.beta)
        self.step += 1
        if self.on_step is not None:
            self.on_step(self.model, self.step)
        return float(loss.detach()), out

    def _after_step(self, epoch: int, value: float) -> None:
        """Per-step logging and per-step balancing, when configured."""
        if self.config.log_every_steps and self.step % self.config.log_every_steps == 0:
            self.history.add(kind="step", epoch=epoch, step=self.step, loss=value)
        s = self.schedule
        if s is not None and s.every and s.unit == "step" and self.step % s.every == 0:
            self.balance(s.method, s.max_sweeps, "step")
