"""Training runs of ``speed2``: the AAAI 2025 recipe, with its weights-only balancing.

AAAI's code balances the *weights* of a ReLU MLP and leaves the biases alone: a hidden unit's
``IN`` and ``OUT`` are the Lp costs of its incoming and outgoing weights only, and rescaling
multiplies its incoming weights by λ and divides its outgoing ones by λ — the bias is *not*
multiplied, so (unlike :func:`synbal.balance`, which keeps the function exact) the network's
function changes slightly. :func:`balance_weights_only` does exactly that, layer by layer, until
every unit's relative deficit ``|IN − OUT|/(IN + OUT)`` is at most ``tol``.

A run (:class:`RunSpec`) trains ``fc_classifier(widths)`` (PyTorch default initialisation) on
inputs normalised as ``Normalize(0.5, 0.5)`` (pixels in [−1, 1]), cross-entropy, minibatches
from a seeded shuffle, SGD without momentum (or Adam), optionally ``+ β·Σ|w|^p`` over the weight
matrices, with balancing before the first step and/or after every epoch, and records the
validation and test accuracy every ``eval_every`` epochs.

>>> import torch
>>> net = fc_classifier([4, 3, 2], seed=0)
>>> sweeps = balance_weights_only(net, p=2.0, tol=1e-12)
>>> W1, W2 = net[0].weight, net[2].weight
>>> bool(torch.allclose((W1**2).sum(1), (W2**2).sum(0), rtol=1e-9))
True
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from synbal.errors import SynbalError
from synbal.experiments._models import fc_classifier

__all__ = ["RunSpec", "balance_weights_only", "normalise", "train_run"]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """``Normalize(0.5, 0.5)`` of pixels in [0, 1]: ``(x − 0.5)/0.5``, in [−1, 1]."""
    return (x - 0.5) / 0.5


def _linears(model: nn.Module) -> list[nn.Linear]:
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(layers) < 2:
        raise SynbalError("balance_weights_only needs at least two Linear layers")
    return layers


@torch.no_grad()
def balance_weights_only(model: nn.Module, *, p: float, tol: float = 1e-6, max_sweeps: int = 10_000) -> int:
    """Balance every hidden ReLU unit for ``Σ|w|^p`` over its weights only (biases untouched).

    One sweep balances each hidden layer in turn (units of a layer are independent), in float64
    arithmetic; returns the number of sweeps until the max relative deficit was ≤ ``tol`` (the
    default 1e-6 sits above the float32 rounding floor of the stored weights, about 1e-7).
    """
    layers = _linears(model)
    for sweep in range(1, max_sweeps + 1):
        worst = 0.0
        for lin_in, lin_out in itertools.pairwise(layers):
            w_in, w_out = lin_in.weight.double(), lin_out.weight.double()
            cost_in = (w_in.abs() ** p).sum(dim=1)
            cost_out = (w_out.abs() ** p).sum(dim=0)
            live = (cost_in > 0) & (cost_out > 0)
            rel = ((cost_in - cost_out).abs() / (cost_in + cost_out).clamp_min(1e-300))[live]
            worst = max(worst, float(rel.max()) if rel.numel() else 0.0)
            ratio = (cost_out / cost_in.clamp_min(1e-300)) ** (1.0 / (2.0 * p))
            lam = torch.where(live, ratio, torch.ones_like(cost_in))
            lin_in.weight.copy_((w_in * lam[:, None]).to(lin_in.weight.dtype))
            lin_out.weight.copy_((w_out / lam[None, :]).to(lin_out.weight.dtype))
        if worst <= tol:
            return sweep
    return max_sweeps


@dataclass(frozen=True)
class RunSpec:
    """One training run (every field is part of its run-record key)."""

    widths: tuple[int, ...]
    lr: float
    epochs: int
    seed: int
    batch_size: int = 256
    optimizer: str = "sgd"
    reg_p: float | None = None  # train with + beta·Σ|w|^p over the weights
    beta: float = 0.0
    balance_p: float | None = None  # weights-only balancing for Σ|w|^p ...
    at_start: bool = False  # ... before the first step
    every_epoch: bool = False  # ... after every epoch
    eval_every: int = 1


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def _penalty(model: nn.Module, spec: RunSpec) -> torch.Tensor | float:
    if spec.reg_p is None or spec.beta == 0:
        return 0.0
    return spec.beta * sum((m.weight.abs() ** spec.reg_p).sum() for m in _linears(model))


Pair = tuple[torch.Tensor, torch.Tensor]


def train_run(spec: RunSpec, train: Pair, evals: dict[str, Pair]) -> dict[str, Any]:
    """Train one run; return per-evaluation epochs, accuracies (per ``evals`` split) and steps."""
    model = fc_classifier(list(spec.widths), seed=spec.seed)
    if spec.optimizer not in ("sgd", "adam"):
        raise SynbalError(f"optimizer must be 'sgd' or 'adam', got {spec.optimizer!r}")
    opt: torch.optim.Optimizer = (torch.optim.SGD(model.parameters(), lr=spec.lr) if spec.optimizer == "sgd"
                                  else torch.optim.Adam(model.parameters(), lr=spec.lr))
    if spec.at_start and spec.balance_p is not None:
        balance_weights_only(model, p=spec.balance_p)
    x, y = train
    gen = torch.Generator().manual_seed(spec.seed)
    loss_fn = nn.CrossEntropyLoss()
    record: dict[str, Any] = {"epoch": [], **{name: [] for name in evals}}
    steps_per_epoch = math.ceil(x.shape[0] / spec.batch_size)
    diverged = False
    for epoch in range(spec.epochs + 1):
        if epoch % spec.eval_every == 0 or epoch == spec.epochs:
            record["epoch"].append(epoch)
            for name, (xe, ye) in evals.items():
                record[name].append(math.nan if diverged else _accuracy(model, xe, ye))
        if epoch == spec.epochs or diverged:
            continue
        perm = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], spec.batch_size):
            idx = perm[start : start + spec.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx]) + _penalty(model, spec)
            loss.backward()
            opt.step()
        if not math.isfinite(float(loss.detach())):
            diverged = True
            continue
        if spec.every_epoch and spec.balance_p is not None:
            balance_weights_only(model, p=spec.balance_p, max_sweeps=200)
    return {**record, "steps_per_epoch": steps_per_epoch, "diverged": diverged}
