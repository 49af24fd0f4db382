"""Apply: write ``Λ = exp(u)`` back into a model's parameters, and check the function is unchanged.

Each parameter entry is multiplied by ``exp(u[row] − u[col])`` (see
:class:`~synbal.torch.discovery.ParamUse`), computed in float64 and written back in the
parameter's own dtype (float16/bfloat16 included). Log-scales that are whole multiples of
``ln 2`` (``round_scales="pow2"``) are applied as exact powers of two, which changes no bit of
the model's function, so verification then demands equal outputs. Verification runs the model
before and after on the example inputs in eval mode without gradients, restoring every
submodule's mode. :class:`Rollback` undoes an in-place change whose verification failed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from synbal.errors import VerificationError
from synbal.rounding import pow2_exponents
from synbal.torch.discovery import Discovery, eval_mode

__all__ = ["Rollback", "factor_arrays", "run_model", "scale_parameters", "tolerance", "verify_outputs"]


def _slot_log_scales(d: Discovery, u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size != d.n:
        raise ValueError(f"expected {d.n} log-scales, got {u.size}")
    return np.append(u, 0.0)[d.group_of_slot]


def factor_arrays(d: Discovery, u: np.ndarray) -> dict[str, np.ndarray]:
    """Per scaled parameter, its multiplier ``exp(u_row − u_col)`` (broadcastable to its shape).

    Exact powers of two when every log-scale is a whole multiple of ``ln 2``.
    """
    k = pow2_exponents(u)
    if k is not None:
        sk = _slot_log_scales(d, k).astype(np.int64)
        return {name: np.ldexp(1.0, sk[use.row] - sk[use.col]) for name, use in d.uses.items()}
    su = _slot_log_scales(d, u)
    return {name: np.exp(su[use.row] - su[use.col]) for name, use in d.uses.items()}


def scale_parameters(model: nn.Module, d: Discovery, u: np.ndarray) -> None:
    """Multiply ``model``'s parameters (looked up by name) by their factors, in place."""
    named = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, factor in factor_arrays(d, u).items():
            p = named[name]
            f = torch.from_numpy(np.asarray(factor)).to(p.device)
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


def verify_outputs(before: list[torch.Tensor], after: list[torch.Tensor], where: str, *, exact: bool = False) -> None:
    """Raise :class:`~synbal.errors.VerificationError` if outputs differ beyond a dtype-aware tolerance.

    The error of output ``k`` is ``max|after − before|`` relative to ``max|before|``; with ``exact``
    (power-of-two scales) any difference at all is an error.
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
        if exact and not torch.equal(torch.nan_to_num(a64, nan=0.5), torch.nan_to_num(b64, nan=0.5)):
            raise VerificationError(
                f"{where}: output {k} differs in {int((a64 != b64).sum())} entries (max {err:.3g}) although "
                "every scale is a power of two, so the balanced model should compute bit-for-bit the same outputs"
            )
        tol = tolerance(b.dtype)
        if not np.isfinite(err) or err > tol * max(scale, 1e-30):
            raise VerificationError(
                f"{where}: output {k} changed by {err:.3g} (relative {err / max(scale, 1e-30):.3g} > "
                f"tolerance {tol:g} for {b.dtype}); the balanced model does not compute the same function"
            )


class Rollback:
    """What an in-place apply changes, saved first so that a failed verification can undo it.

    The values of the named parameters are copied (only those), and, with ``structure``, every
    module's submodule and parameter tables (BatchNorm folding replaces modules and adds biases).

    >>> from torch import nn
    >>> m = nn.Linear(2, 2)
    >>> w = m.weight.detach().clone()
    >>> undo = Rollback(m, ["weight"])
    >>> _ = m.weight.data.mul_(3)
    >>> undo.restore()
    >>> bool(torch.equal(m.weight, w))
    True
    """

    def __init__(self, model: nn.Module, names: list[str], *, structure: bool = False) -> None:
        named = dict(model.named_parameters(remove_duplicate=False))
        self.values = [(named[n], named[n].detach().clone()) for n in dict.fromkeys(names) if n in named]
        self.tables = ([(m, dict(m._modules), dict(m._parameters)) for m in model.modules()] if structure else [])

    def restore(self) -> None:
        """Put every saved table and value back."""
        for m, modules, params in self.tables:
            m._modules.clear()
            m._modules.update(modules)
            m._parameters.clear()
            m._parameters.update(params)
        with torch.no_grad():
            for p, saved in self.values:
                p.copy_(saved)
