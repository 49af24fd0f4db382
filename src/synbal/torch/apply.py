"""Apply: write ``Λ = exp(u)`` back into a model's parameters, and check the function is unchanged.

Each parameter entry is multiplied by ``exp(u[row] − u[col])`` (see
:class:`~synbal.torch.discovery.ParamUse`), computed in float64 and written back in the
parameter's own dtype (float16/bfloat16 included). Verification runs the model before and
after on the example inputs in eval mode without gradients, restoring every submodule's mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from synbal.errors import VerificationError
from synbal.torch.discovery import Discovery, eval_mode

__all__ = ["factor_arrays", "run_model", "scale_parameters", "tolerance", "verify_outputs"]


def _slot_log_scales(d: Discovery, u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size != d.n:
        raise ValueError(f"expected {d.n} log-scales, got {u.size}")
    return np.append(u, 0.0)[d.group_of_slot]


def factor_arrays(d: Discovery, u: np.ndarray) -> dict[str, np.ndarray]:
    """Per scaled parameter, its multiplier ``exp(u_row − u_col)`` (broadcastable to its shape)."""
    su = _slot_log_scales(d, u)
    return {name: np.exp(su[use.row] - su[use.col]) for name, use in d.uses.items()}


def scale_parameters(model: nn.Module, d: Discovery, u: np.ndarray) -> None:
    """Multiply ``model``'s parameters (looked up by name) by their factors, in place."""
    named = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, factor in factor_arrays(d, u).items():
            p = named[name]
            f = torch.from_numpy(factor).to(p.device)
            if p.dtype == torch.float64:
                p.mul_(f)
            else:  # compute in float64, round once into the parameter's dtype
                p.copy_(p.to(torch.float64).mul_(f))


def tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of :func:`verify_outputs` for outputs computed in ``dtype``."""
    return {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}.get(dtype, 1e-4)


def run_model(model: nn.Module, inputs: tuple[Any, ...]) -> list[torch.Tensor]:
    """The model's tensor outputs on ``inputs`` (eval mode, no grad, modes restored)."""
    with torch.no_grad(), eval_mode(model):
        out = model(*inputs)
    flat: list[torch.Tensor] = []

    def collect(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            flat.append(v.detach().clone())
        elif isinstance(v, (tuple, list)):
            for x in v:
                collect(x)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x)

    collect(out)
    return flat


def verify_outputs(before: list[torch.Tensor], after: list[torch.Tensor], where: str) -> None:
    """Raise :class:`~synbal.errors.VerificationError` if outputs differ beyond a dtype-aware tolerance.

    The error of output ``k`` is ``max|after − before|`` relative to ``max|before|``.
    """
    if len(before) != len(after):
        raise VerificationError(f"{where}: the model returned {len(after)} outputs instead of {len(before)}")
    for k, (b, a) in enumerate(zip(before, after, strict=True)):
        if b.shape != a.shape:
            raise VerificationError(f"{where}: output {k} changed shape {tuple(b.shape)} -> {tuple(a.shape)}")
        if not b.is_floating_point():
            if not torch.equal(a, b):
                raise VerificationError(f"{where}: integer output {k} changed")
            continue
        b64, a64 = b.to(torch.float64), a.to(torch.float64)
        scale = float(b64.abs().max()) if b64.numel() else 0.0
        err = float((a64 - b64).abs().max()) if b64.numel() else 0.0
        tol = tolerance(b.dtype)
        if not np.isfinite(err) or err > tol * max(scale, 1e-30):
            raise VerificationError(
                f"{where}: output {k} changed by {err:.3g} (relative {err / max(scale, 1e-30):.3g} > "
                f"tolerance {tol:g} for {b.dtype}); the balanced model does not compute the same function"
            )
