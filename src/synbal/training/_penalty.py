"""The regularizer as a differentiable torch penalty, and as decoupled weight decay.

``R(W) = Σ_k coef_k Σ_w |w|^{p_k}`` over the *regularized parameters*: by default every
parameter of the model except those of normalization layers (BatchNorm, LayerNorm, GroupNorm,
…), i.e. the weights and biases that the balance problem counts.

>>> import torch
>>> lin = torch.nn.Linear(2, 1)
>>> with torch.no_grad():
...     _ = lin.weight.copy_(torch.tensor([[3.0, -4.0]])); _ = lin.bias.fill_(0.0)
>>> float(regularizer_penalty(lin, "l2").detach()), float(regularizer_penalty(lin, "l1").detach())
(25.0, 7.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from synbal._problem.costs import PowerTerm
from synbal._problem.regularizers import RegularizerSpec, parse_regularizer
from synbal.errors import RegularizerError

__all__ = ["apply_decoupled_decay", "power_terms", "regularized_parameters", "regularizer_penalty"]

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_TINY = 1e-30  # |w| is clamped here before a power p < 1, so the gradient at w = 0 is 0, not NaN

ParameterFilter = Callable[[str, nn.Parameter], bool]


def power_terms(reg: RegularizerSpec) -> tuple[PowerTerm, ...]:
    """The terms of ``reg = Σ_k coef_k Σ_w |w|^{p_k}`` (the only kind torch can differentiate here).

    >>> [(t.coef, t.power) for t in power_terms("1*l2+0.1*l1")]
    [(1.0, 2.0), (0.1, 1.0)]
    """
    parsed = parse_regularizer(reg)
    terms = parsed.sum_of_powers
    if terms is None:
        raise RegularizerError(
            f"training penalty needs a power regularizer such as 'l2' or '1*l2+0.1*l1'; "
            f"{parsed} has no torch form"
        )
    return terms


def regularized_parameters(model: nn.Module, include: ParameterFilter | None = None) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs that the penalty covers (``include`` overrides the default).

    >>> model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    >>> [name for name, _ in regularized_parameters(model)]  # normalization layers are left out
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> [name for name, _ in regularized_parameters(model, include=lambda n, p: n.endswith("weight"))]
    ['0.weight', '1.weight', '2.weight']
    """
    if include is not None:
        return [(n, p) for n, p in model.named_parameters() if include(n, p)]
    skip: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORM_TYPES):
            skip.update(id(p) for p in module.parameters(recurse=False))
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in skip]


def _power(t: torch.Tensor, p: float) -> torch.Tensor:
    a = t.abs()
    if p == 2.0:
        return a * a
    if p == 1.0:
        return a
    if p < 1.0:
        return a.clamp_min(_TINY).pow(p) * (a > 0)
    return a.pow(p)


def regularizer_penalty(
    model: nn.Module | Iterable[torch.Tensor], reg: RegularizerSpec, include: ParameterFilter | None = None
) -> torch.Tensor:
    """``R`` of the regularized parameters as a differentiable scalar (in their dtype).

    >>> w = torch.tensor([3.0, -4.0], requires_grad=True)
    >>> penalty = regularizer_penalty([w], "1*l2+0.5*l1")  # 9 + 16 + 0.5 * 7
    >>> penalty.backward()
    >>> float(penalty.detach()), w.grad.tolist()
    (28.5, [6.5, -8.5])
    """
    terms = power_terms(reg)
    tensors: list[torch.Tensor] = (
        [p for _, p in regularized_parameters(model, include)] if isinstance(model, nn.Module) else list(model)
    )
    if not tensors:
        raise RegularizerError("no parameters to regularize")
    total = torch.zeros((), dtype=tensors[0].dtype, device=tensors[0].device)
    for term in terms:
        for t in tensors:
            total = total + term.coef * _power(t, term.power).sum()
    return total


@torch.no_grad()
def apply_decoupled_decay(
    params: Iterable[torch.Tensor], reg: RegularizerSpec, strength: float
) -> None:
    """One decoupled decay step ``w ← w − strength·∇R(w)`` (``strength = lr·β``).

    For ``L2`` this is AdamW-style decay ``w ← (1 − 2·strength)·w``. For powers ``p ≤ 1`` the
    step shrinks ``|w|`` and stops at zero instead of crossing it (a proximal-style clip),
    so small weights are driven exactly to zero rather than oscillating around it.

    >>> w = torch.tensor([1.0, -0.05, 0.5])
    >>> apply_decoupled_decay([w], "l2", 0.1)  # w ← 0.8·w
    >>> [round(v, 6) for v in w.tolist()]
    [0.8, -0.04, 0.4]
    >>> apply_decoupled_decay([w], "l1", 0.1)  # |w| shrinks by 0.1 and stops at 0
    >>> [round(v, 6) for v in w.tolist()]
    [0.7, -0.0, 0.3]
    """
    terms = power_terms(reg)
    if strength < 0:
        raise RegularizerError(f"decay strength must be >= 0, got {strength}")
    for w in params:
        a = w.abs()
        shrink = torch.zeros_like(a)
        for term in terms:
            if term.power == 1.0:
                shrink += term.coef
            elif term.power < 1.0:
                shrink += term.coef * term.power * a.clamp_min(_TINY).pow(term.power - 1.0) * (a > 0)
            else:
                shrink += term.coef * term.power * a.pow(term.power - 1.0)
        w.copy_(torch.sign(w) * torch.clamp(a - strength * shrink, min=0.0))
