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
    """Sum of squared errors over output units, averaged over the batch."""
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
    """Mean loss and (for integer targets) accuracy of ``model`` on ``data`` (train mode kept)."""
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
    """
    from tqdm.auto import tqdm

    x, y = train_data
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise SynbalError(f"train_data has {x.shape[0]} inputs and {y.shape[0]} targets")
    loss_fn = _loss_function(config.loss)
    device = _device_of(model)
    train_reg = config.reg if config.reg is not None and config.beta > 0 else None
    use_reg = train_reg is not None
    reg_params = [p for _, p in regularized_parameters(model)] if use_reg else []
    needs_balance = config.monitor or (balance is not None and (balance.at_start or balance.every))
    mb = ModelBalance(model, example_inputs) if needs_balance else None
    history = TrainingHistory(settings=_settings(config, balance, optimizer))
    history.settings["fast_mlp_route"] = bool(mb and mb.fast)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0

    def do_balance(method: str, max_sweeps: int, where: str) -> None:
        assert mb is not None and balance is not None
        info = mb.balance(balance.reg, method, optimizer=optimizer, optimizer_state=balance.optimizer_state,
                          tol=balance.tol, max_sweeps=max_sweeps, seed=balance.seed)
        history.balance_events.append({"at": where, "step": step, **info.as_dict()})

    def record(epoch: int, train_stats: dict[str, float]) -> None:
        rec: dict[str, Any] = {"kind": "epoch", "epoch": epoch, "step": step, **train_stats}
        if eval_data is not None and (epoch % config.eval_every == 0 or epoch == config.epochs):
            rec.update({f"test_{k}": v for k, v in evaluate(model, eval_data, config.loss,
                                                            config.eval_batch_size).items()})
        if config.monitor and mb is not None:
            rec.update(mb.measure(config.monitor_reg))
        rec["seconds"] = time.perf_counter() - start_time
        history.add(**rec)

    start_time = time.perf_counter()
    if balance is not None and balance.at_start:
        do_balance(balance.at_start, 10_000, "start")
    record(0, {f"train_{k}": v for k, v in evaluate(model, train_data, config.loss,
                                                    config.eval_batch_size).items()})
    bar = tqdm(range(1, config.epochs + 1), disable=not config.progress, desc="training", unit="epoch")
    diverged = False
    for epoch in bar:
        perm = torch.randperm(x.shape[0], generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, x.shape[0], config.batch_size):
            idx = perm[start : start + config.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            out = model(xb)
            loss = loss_fn(out, yb)
            total = loss
            if train_reg is not None and config.reg_mode == "loss":
                total = loss + config.beta * regularizer_penalty(reg_params, train_reg)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if train_reg is not None and config.reg_mode == "decoupled":
                lr = float(optimizer.param_groups[0].get("lr", 0.0))
                apply_decoupled_decay(reg_params, train_reg, lr * config.beta)
            step += 1
            if on_step is not None:
                on_step(model, step)
            value = float(loss.detach())
            if not math.isfinite(value):
                diverged = True
                break
            loss_sum += value * xb.shape[0]
            seen += xb.shape[0]
            if not yb.dtype.is_floating_point:
                correct += int((out.detach().argmax(dim=1) == yb).sum())
            if config.log_every_steps and step % config.log_every_steps == 0:
                history.add(kind="step", epoch=epoch, step=step, loss=value)
            if balance is not None and balance.every and balance.unit == "step" and step % balance.every == 0:
                do_balance(balance.method, balance.max_sweeps, "step")
        if diverged:
            history.settings["diverged"] = True
            history.settings["diverged_at_epoch"] = epoch
            break
        if balance is not None and balance.every and balance.unit == "epoch" and epoch % balance.every == 0:
            do_balance(balance.method, balance.max_sweeps, "epoch")
        stats = {"train_loss": loss_sum / max(1, seen)}
        if not y.dtype.is_floating_point:
            stats["train_accuracy"] = correct / max(1, seen)
        record(epoch, stats)
        bar.set_postfix(loss=f"{stats['train_loss']:.4g}")
    history.settings.setdefault("diverged", False)
    return history
