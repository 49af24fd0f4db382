r"""Keeping optimizer state consistent when balancing rescales the weights mid-training.

**Derivation.** Balancing replaces every parameter ``w`` by ``w' = s ⊙ w`` with a fixed
positive elementwise factor ``s`` (one parameter's *factor*), and the network function is
unchanged: ``f(w'/s) = f(w)``. For any loss ``E`` of the outputs, the chain rule gives

.. math:: \nabla_{w'} E(w') = \nabla_w E(w) / s ,

so gradients transform *contravariantly*: by ``1/s``, not like the weights. Optimizer state
built from gradients must transform the same way to equal what the optimizer would hold had
every past gradient been computed in the new coordinates:

* SGD momentum ``buf = Σ_k μ^k g_{t−k}`` (a sum of gradients) → ``buf / s``;
* Adam/AdamW/NAdam/RAdam first moment ``m`` (EMA of ``g``) → ``m / s``; second moment ``v``
  (EMA of ``g²``) and AMSGrad's ``max v`` → ``v / s²``; Adamax ``u = max|g|`` → ``u / s``;
* RMSprop ``square_avg`` → ``/ s²``, ``grad_avg`` → ``/ s``; its ``momentum_buffer``
  accumulates ``g/√v``, which is scale-free (``(g/s)/(√v/s)``), so it is left unchanged;
* Adagrad ``sum`` (of ``g²``) → ``/ s²``.

Consequences worth knowing: Adam's step ``m/(√v + ε)`` is then (up to ``ε``) the same as
before balancing, so balancing and Adam commute to first order, while SGD's next step
``lr·buf/s`` in the new coordinates differs from the unbalanced one — which is precisely how
balancing changes SGD's dynamics. (The issue text proposed rescaling moments "like their
weights", i.e. by ``s``; that has the units of a weight, not of a gradient, and would make the
momentum inconsistent with the next gradient ``g/s``.) The weight-like ``R`` term is *not*
invariant, so for ``E + βR`` the transformed state is the natural choice, not an exact symmetry.

Unknown optimizers or state entries: ``policy="rescale"`` raises
:class:`~synbal.errors.SynbalError` naming the entry; ``policy="reset"`` drops the state of
every rescaled parameter (the optimizer then restarts its moments for them, as at step 0).

>>> import torch
>>> w = torch.nn.Parameter(torch.ones(2))
>>> opt = torch.optim.Adam([w])
>>> w.grad = torch.tensor([1.0, 2.0]); opt.step()
>>> rescale_optimizer_state(opt, {w: torch.tensor([2.0, 4.0])})
>>> [round(v, 6) for v in opt.state[w]["exp_avg"].tolist()]  # 0.1·g / s
[0.05, 0.05]
>>> [round(v, 8) for v in opt.state[w]["exp_avg_sq"].tolist()]  # 0.001·g² / s²
[0.00025, 0.00025]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch

from synbal.errors import SynbalError

__all__ = ["STATE_POWERS", "rescale_optimizer_state"]

#: State entry name → power ``k`` of the factor it is multiplied by (``s^k``).
STATE_POWERS: dict[str, int] = {
    "momentum_buffer": -1,  # SGD; RMSprop's is handled separately (scale-free)
    "exp_avg": -1,
    "exp_avg_sq": -2,
    "max_exp_avg_sq": -2,
    "exp_inf": -1,
    "square_avg": -2,
    "grad_avg": -1,
    "sum": -2,
    "mu_product": 0,
    "step": 0,
    "eta": 0,
    "mu": 0,
    "ax": 1,  # ASGD's running average of the weights themselves
}

Policy = Literal["rescale", "reset"]


def _power_for(optimizer: torch.optim.Optimizer, key: str) -> int | None:
    if isinstance(optimizer, torch.optim.RMSprop) and key == "momentum_buffer":
        return 0
    return STATE_POWERS.get(key)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a ``DTensor`` (factors of sharded parameters come shard-shaped), else ``t``."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


@torch.no_grad()
def rescale_optimizer_state(
    optimizer: torch.optim.Optimizer,
    factors: Mapping[torch.Tensor, torch.Tensor],
    *,
    policy: Policy = "rescale",
) -> None:
    """Transform ``optimizer``'s per-parameter state for ``w' = factors[w] ⊙ w``.

    ``factors`` maps a parameter to its elementwise multiplier (broadcastable to its shape).

    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = torch.tensor([1.0, 2.0]); opt.step()
    >>> rescale_optimizer_state(opt, {w: torch.tensor([2.0, 4.0])})  # momentum = Σ gradients → / s
    >>> opt.state[w]["momentum_buffer"].tolist()
    [0.5, 0.5]
    >>> rescale_optimizer_state(opt, {w: torch.tensor(2.0)}, policy="reset")
    >>> dict(opt.state[w])
    {}
    """
    if policy not in ("rescale", "reset"):
        raise SynbalError(f"optimizer state policy must be 'rescale' or 'reset', got {policy!r}")
    for param, factor in factors.items():
        state = optimizer.state.get(param)
        if not state:
            continue
        if policy == "reset":
            optimizer.state.pop(param)
            continue
        s = factor.to(device=param.device, dtype=torch.float64)
        shape = _local(param).shape  # a sharded parameter's state is sharded like it: scaled shard by shard
        for key, value in state.items():
            power = _power_for(optimizer, key)
            value = _local(value) if isinstance(value, torch.Tensor) else value
            if not isinstance(value, torch.Tensor) or value.shape != shape:
                if power is None and isinstance(value, torch.Tensor) and value.numel() > 1:
                    raise SynbalError(f"optimizer state {key!r} of {type(optimizer).__name__} has an "
                                      "unknown transformation; use optimizer_state='reset'")
                continue
            if power is None:
                raise SynbalError(
                    f"do not know how optimizer state {key!r} of {type(optimizer).__name__} transforms "
                    "under rescaling; use optimizer_state='reset'"
                )
            if power != 0:
                value.copy_((value.to(torch.float64) * s.pow(power)).to(value.dtype))
