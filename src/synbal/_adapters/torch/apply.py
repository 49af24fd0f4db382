"""Apply: write ``Λ = exp(u)`` back into a model's parameters, and check the function is unchanged.

Each parameter entry is multiplied by ``exp(u[row] − u[col])`` (see
:class:`~synbal._adapters.torch.discovery.ParamUse`), computed in float64 and written back in the
parameter's own dtype (float16/bfloat16 included). Log-scales that are whole multiples of
``ln 2`` (``round_scales="pow2"``) are applied as exact powers of two, which changes no bit of
the model's function, so verification then demands equal outputs. Verification runs the model
before and after on the example inputs in eval mode without gradients, restoring every
submodule's mode. :class:`Rollback` undoes an in-place change whose verification failed.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numba
import numpy as np
import torch
from torch import nn
from torch.autograd.graph import increment_version

from synbal._adapters.torch.discovery import Discovery, eval_mode
from synbal._adapters.torch.undo import ScaledMatrixUndo
from synbal._adapters.torch.values import compress
from synbal._compiled.powermatrix import scale_rows_cols
from synbal._problem.rounding import pow2_exponents
from synbal.errors import VerificationError

__all__ = ["Rollback", "factor_arrays", "row_col_factors", "run_model", "scale_parameter", "scale_parameters",
           "scale_parameters_undoably", "scaled_copy", "tolerance", "verify_outputs"]

_CHUNK = 1 << 18  # entries per float64 temporary when a parameter cannot be scaled in one pass


def _slot_log_scales(d: Discovery, u: np.ndarray) -> np.ndarray:
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size != d.n:
        raise ValueError(f"expected {d.n} log-scales, got {u.size}")
    su = np.append(u, 0.0)[d.group_of_slot]
    return su if d.sign_of_slot is None else su * d.sign_of_slot  # a key slot scales by 1/λ of its group


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


def row_col_factors(d: Discovery, u: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per scaled parameter, ``(exp(u_row), exp(−u_col))`` over its compressed slot arrays: their
    product is :func:`factor_arrays`' multiplier (exact powers of two for ``pow2`` log-scales)."""
    k = pow2_exponents(u)
    if k is not None:
        sk = _slot_log_scales(d, k).astype(np.int64)
        return {name: (np.ldexp(1.0, sk[compress(use.row)]), np.ldexp(1.0, -sk[compress(use.col)]))
                for name, use in d.uses.items()}
    su = _slot_log_scales(d, u)
    return {name: (np.exp(su[compress(use.row)]), np.exp(-su[compress(use.col)])) for name, use in d.uses.items()}


def _split(rf: np.ndarray, cf: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(f1, f2)`` with ``rf·cf = f1[i]·f2[j]`` over the 2-D view ``(prod(shape[:k]), prod(shape[k:]))``
    of a parameter, for the axis ``k`` with the fewest factor entries (``None`` when no ``k`` works)."""
    best: tuple[int, int, list[bool]] | None = None
    for k in range(len(shape) + 1):
        sides = []
        for f in (rf, cf):
            if all(s == 1 for s in f.shape[k:]):
                sides.append(True)  # varies on the left axes only (or nowhere)
            elif all(s == 1 for s in f.shape[:k]):
                sides.append(False)
            else:
                break
        else:
            cost = int(np.prod(shape[:k], dtype=np.int64)) * any(sides) + int(np.prod(shape[k:], dtype=np.int64))
            if best is None or cost < best[1]:
                best = (k, cost, sides)
    if best is None:
        return None
    k, _, sides = best
    left, right = np.ones((1,) * k), np.ones((1,) * (len(shape) - k))
    for f, on_left in zip((rf, cf), sides, strict=True):
        if on_left:
            left = left * f.reshape(f.shape[:k])
        else:
            right = right * f.reshape(f.shape[k:])
    return (np.array(np.broadcast_to(left, shape[:k]).reshape(-1), dtype=np.float64),
            np.array(np.broadcast_to(right, shape[k:]).reshape(-1), dtype=np.float64))


def _scale_2d(p: torch.Tensor, f1: np.ndarray, f2: np.ndarray) -> None:
    """``p2d[i, j] *= f1[i]·f2[j]`` in one pass, computed in float64 and rounded once into ``p``'s dtype."""
    w = p.detach()
    if w.device.type == "cpu" and w.is_contiguous() and w.dtype in (torch.float32, torch.float64):
        scale_rows_cols(w.numpy().reshape(f1.size, f2.size), f1, f2)
        increment_version(w)
        return
    w2 = w.view(f1.size, f2.size) if w.is_contiguous() else None
    a, b = torch.from_numpy(f1).to(w.device), torch.from_numpy(f2).to(w.device)
    step = max(1, _CHUNK // max(1, f2.size))
    for i in range(0, f1.size, step):
        factor = a[i:i + step, None] * b[None, :]
        if w2 is not None:
            chunk = w2[i:i + step]
            chunk.copy_(chunk.to(torch.float64).mul_(factor))
        else:  # a non-contiguous parameter: one float64 pass over all of it
            w.copy_((w.to(torch.float64).reshape(f1.size, f2.size) * a[:, None] * b[None, :]).reshape(w.shape))
            return


def scale_parameter(p: torch.Tensor, rf: np.ndarray, cf: np.ndarray) -> None:
    """``p *= rf·cf`` in place (``rf``, ``cf`` float64, broadcastable to ``p``), in one pass where
    the factors split into a row and a column factor of a 2-D view of ``p`` (Linear, conv, bias,
    embedding), else one chunk of the first axis at a time.

    >>> w = torch.ones(2, 3)
    >>> scale_parameter(w, np.array([[2.0], [3.0]]), np.array([[1.0, 0.5, 0.25]]))
    >>> w.tolist()
    [[2.0, 1.0, 0.5], [3.0, 1.5, 0.75]]
    """
    if p.dim() == 0:
        with torch.no_grad():
            p.copy_(p.to(torch.float64) * float(rf.reshape(-1)[0] * cf.reshape(-1)[0]))
        return
    split = _split(rf, cf, tuple(int(n) for n in p.shape))
    if split is not None:
        with torch.no_grad():
            _scale_2d(p, *split)
        return
    step = max(1, _CHUNK // max(1, p[0].numel()))
    with torch.no_grad():
        for i in range(0, int(p.shape[0]), step):
            r = rf[i:i + step] if rf.shape[0] > 1 else rf
            c = cf[i:i + step] if cf.shape[0] > 1 else cf
            chunk = p[i:i + step]
            factor = torch.from_numpy(np.ascontiguousarray(r * c)).to(p.device)
            chunk.copy_(chunk.to(torch.float64).mul_(factor))


@numba.njit(cache=True)
def _scaled_into(W: np.ndarray, out: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
    """``out[i, j] = W[i, j]·row[i]·col[j]`` computed in float64 (the arithmetic of ``scale_rows_cols``)."""
    n, m = W.shape
    for i in range(n):
        ri = row[i]
        for j in range(m):
            out[i, j] = np.float64(W[i, j]) * ri * col[j]


def _scaled_parameter(p: torch.Tensor, rf: np.ndarray, cf: np.ndarray) -> nn.Parameter | None:
    """A new parameter holding ``p·rf·cf``, written in one pass from ``p`` (``None`` unless ``p`` is a
    plain contiguous float32/float64 CPU ``nn.Parameter`` whose factors split into rows and columns)."""
    if type(p) is not nn.Parameter or p.device.type != "cpu" or not p.is_contiguous():
        return None
    if p.dtype not in (torch.float32, torch.float64) or p.dim() == 0:
        return None
    split = _split(rf, cf, tuple(int(n) for n in p.shape))
    if split is None:
        return None
    f1, f2 = split
    out = torch.empty_like(p, memory_format=torch.contiguous_format, requires_grad=False)
    _scaled_into(p.detach().numpy().reshape(f1.size, f2.size), out.numpy().reshape(f1.size, f2.size), f1, f2)
    return nn.Parameter(out, requires_grad=p.requires_grad)


def scaled_copy(model: nn.Module, d: Discovery, u: np.ndarray) -> nn.Module:
    """A deep copy of ``model`` with every parameter multiplied by ``exp(u_row − u_col)``.

    Scaled parameters are written straight from the originals into the copy (one single-threaded
    pass, instead of a copy and then a scaling pass); the rest of the model is deep-copied.
    """
    named = dict(model.named_parameters(remove_duplicate=False))
    memo: dict[int, Any] = {}
    later = []
    for name, (rf, cf) in row_col_factors(d, u).items():
        scaled = _scaled_parameter(named[name], rf, cf)
        if scaled is None:
            later.append((name, rf, cf))
        else:
            memo[id(named[name])] = scaled
    with warnings.catch_warnings():  # torch.export modules warn about their own pytree specs when copied
        warnings.simplefilter("ignore", FutureWarning)
        target = copy.deepcopy(model, memo)
    copied = dict(target.named_parameters(remove_duplicate=False))
    for name, rf, cf in later:
        scale_parameter(copied[name], rf, cf)
    return target


def scale_parameters(model: nn.Module, d: Discovery, u: np.ndarray) -> None:
    """Multiply ``model``'s parameters (looked up by name) by ``exp(u_row − u_col)``, in place.

    Each parameter is written once: the row factor ``exp(u_row)`` and the column factor
    ``exp(−u_col)`` are small arrays, so no full-size factor or float64 copy is made.
    """
    named = dict(model.named_parameters(remove_duplicate=False))
    for name, (rf, cf) in row_col_factors(d, u).items():
        scale_parameter(named[name], rf, cf)


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
    :func:`scale_parameters_undoably` adds ``matrices``: parameters it scaled with a 4-bit undo
    record instead of a copy.

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
        self.matrices: list[tuple[torch.Tensor, ScaledMatrixUndo]] = []

    def restore(self) -> None:
        """Put every saved table and value back."""
        for p, undo in self.matrices:
            undo.restore(p.detach().numpy().reshape(undo.row.size, undo.col.size))
            increment_version(p.detach())
        for m, modules, params in self.tables:
            m._modules.clear()
            m._modules.update(modules)
            m._parameters.clear()
            m._parameters.update(params)
        with torch.no_grad():
            for p, saved in self.values:
                p.copy_(saved)


def scale_parameters_undoably(model: nn.Module, d: Discovery, u: np.ndarray) -> Rollback:
    """:func:`scale_parameters`, returning a :class:`Rollback` that restores every bit of the model.

    CPU float32/float64 parameters scaled by a row and a column factor keep a 4-bit offset per
    weight (:class:`~synbal._adapters.torch.undo.ScaledMatrixUndo`) instead of a copy; any other parameter
    is copied before it is scaled.
    """
    named = dict(model.named_parameters(remove_duplicate=False))
    undo = Rollback(model, [])
    for name, (rf, cf) in row_col_factors(d, u).items():
        p = named[name]
        split = _split(rf, cf, tuple(int(n) for n in p.shape)) if p.dim() > 0 else None
        record = None
        plain = p.device.type == "cpu" and p.is_contiguous() and p.dtype in (torch.float32, torch.float64)
        if split is not None and plain:
            record = ScaledMatrixUndo.scale(p.detach().numpy().reshape(split[0].size, split[1].size), *split)
        if record is not None:
            increment_version(p.detach())
            undo.matrices.append((p, record))
            continue
        undo.values.append((p, p.detach().clone()))
        scale_parameter(p, rf, cf)
    return undo
