"""Clipped ReLUs (ReLU6, ``Hardtanh(0, t)``): an explicit conversion that makes them balanceable.

A clipped unit ``min(max(x, 0), t)`` is *not* positively homogeneous: scaling its input by ``λ``
is undone by dividing its output by ``λ`` only if the clip moves too, ``ReLU6(λx)/λ`` clips at
``6/λ``. synbal never swaps such a unit silently: by default its channels are fixed (reported in
``BalanceResult.excluded`` as "not positively homogeneous"). :func:`make_clips_balanceable`
is the explicit alternative. It rewrites every ``nn.ReLU6``, ``nn.Hardtanh(0, t)`` and
:class:`ClippedReLU` as

    ``SplitClip(x) = relu(x) − relu(x − t)``   (the same function for ``t ≥ 0``),

where ``x − t`` is a per-channel 1×1 depthwise convolution (``Linear`` for 2-D inputs) with
weight 1 and bias ``−t``. synbal's discovery understands every piece: the subtraction ties the
two branches, so both scale by one ``λ`` per channel, the weight ``1`` stays 1 and the bias
``−t`` becomes ``−λt`` — the threshold moves with the scale, tracked per channel. (For the
regularizer the threshold counts as that channel's bias.) :func:`restore_clips` turns the
result back into compact :class:`ClippedReLU` modules with the per-channel thresholds.

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0) and None
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU6(), nn.Linear(4, 2)).double().eval()
>>> x = 4 * torch.randn(8, 3, dtype=torch.float64)
>>> split = make_clips_balanceable(model, (x,))
>>> bool(torch.allclose(split(x), model(x)))
True
>>> import synbal
>>> res = synbal.balance(split, "l2", example_inputs=(x,))
>>> back = restore_clips(res.net)
>>> bool(torch.allclose(back(x), model(x))), back[1].threshold.shape
(True, torch.Size([4]))
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from synbal.errors import ModelError

__all__ = ["ClippedReLU", "SplitClip", "make_clips_balanceable", "restore_clips"]


def _view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape((1, -1) + (1,) * (x.dim() - 2)) if x.dim() >= 2 else t


class ClippedReLU(nn.Module):
    """``min(max(x, 0), threshold[c])`` with one threshold per channel (dimension 1).

    ``ndim`` (the input's number of dimensions) fixes the broadcast shape, so the module can be
    traced by ``torch.fx``; without it the shape is found per call.

    >>> clip = ClippedReLU(torch.tensor([1.0, 6.0]), ndim=2)
    >>> clip(torch.tensor([[-1.0, 2.0], [3.0, 9.0]])).tolist()
    [[0.0, 2.0], [1.0, 6.0]]
    """

    def __init__(self, threshold: torch.Tensor, ndim: int | None = None) -> None:
        super().__init__()
        if bool((threshold < 0).any()):
            raise ModelError("a clipped ReLU needs thresholds >= 0")
        self.ndim = ndim
        self.threshold: torch.Tensor
        self.register_buffer("threshold", threshold.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ndim is None:
            t = _view(self.threshold, x)
        else:
            t = self.threshold.reshape((1, -1) + (1,) * (self.ndim - 2)) if self.ndim >= 2 else self.threshold
        return torch.minimum(torch.relu(x), t.to(x.dtype))


class SplitClip(nn.Module):
    """``relu(x) − relu(shift(x))`` with ``shift(x) = x − threshold`` per channel (balanceable form).

    >>> split = SplitClip(torch.tensor([1.0, 6.0]), ndim=2)
    >>> x = torch.tensor([[-1.0, 2.0], [3.0, 9.0]])
    >>> split(x).tolist(), split.threshold().tolist()  # the same function as ClippedReLU([1, 6])
    ([[0.0, 2.0], [1.0, 6.0]], [1.0, 6.0])
    """

    def __init__(self, threshold: torch.Tensor, ndim: int) -> None:
        super().__init__()
        self.ndim = ndim
        c = int(threshold.numel())
        shift: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d
        if ndim == 2:
            shift = nn.Linear(c, c)
            shift.weight.data = torch.eye(c, dtype=threshold.dtype)
        elif 3 <= ndim <= 5:
            conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[ndim - 3]
            shift = conv(c, c, 1, groups=c)
            shift.weight.data = torch.ones_like(shift.weight.data, dtype=threshold.dtype)
        else:
            raise ModelError(f"cannot convert a clipped ReLU applied to {ndim}-D tensors (2-D to 5-D supported)")
        self.shift = shift
        self._bias().data = -threshold.detach().clone().reshape(c)

    def _bias(self) -> torch.Tensor:
        bias = self.shift.bias
        assert isinstance(bias, torch.Tensor)
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) - torch.relu(self.shift(x))

    def threshold(self) -> torch.Tensor:
        """The current per-channel clip (``−bias / weight`` of the shift)."""
        w = self.shift.weight.detach()
        diag = torch.diagonal(w) if w.dim() == 2 else w.reshape(-1)
        return -self._bias().detach() / diag


def _clip_level(mod: nn.Module) -> float | torch.Tensor | None:
    if isinstance(mod, nn.ReLU6):
        return 6.0
    if isinstance(mod, nn.Hardtanh) and mod.min_val == 0.0 and mod.max_val >= 0.0:
        return float(mod.max_val)
    if isinstance(mod, ClippedReLU):
        return mod.threshold
    return None


def _replace(model: nn.Module, make: Any) -> int:
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = make(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count


def make_clips_balanceable(model: nn.Module, example_inputs: tuple[Any, ...]) -> nn.Module:
    """A copy of ``model`` with every clipped ReLU module rewritten as :class:`SplitClip`.

    ``example_inputs`` give each clip's channel count and dtype. Raises
    :class:`~synbal.errors.ModelError` when there is no clipped ReLU module (functional
    ``F.relu6``/``clamp`` calls in ``forward`` cannot be rewritten and stay fixed).

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(8, 1))
    >>> x = torch.randn(4, 1, 4, 4)
    >>> split = make_clips_balanceable(model, (x,))
    >>> type(split[1]).__name__, type(split[1].shift).__name__, torch.allclose(split(x), model(x))
    ('SplitClip', 'Conv2d', True)
    """
    out = copy.deepcopy(model)
    shapes: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.setdefault(id(m), i[0]))
             for m in out.modules() if _clip_level(m) is not None]
    if not hooks:
        raise ModelError(f"{type(model).__name__} has no ReLU6 / Hardtanh(0, t) / ClippedReLU module")
    with torch.no_grad():
        out(*example_inputs)
    for h in hooks:
        h.remove()

    def make(child: nn.Module) -> nn.Module | None:
        level = _clip_level(child)
        if level is None or id(child) not in shapes:
            return None
        x = shapes[id(child)]
        c = x.shape[1] if x.dim() >= 2 else x.shape[0]
        t = torch.as_tensor(level, dtype=x.dtype).expand(c).clone()
        return SplitClip(t, x.dim()).to(x.dtype)

    _replace(out, make)
    return out


def restore_clips(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every :class:`SplitClip` folded back into a :class:`ClippedReLU`.

    >>> model = nn.Sequential(nn.Linear(3, 2), nn.ReLU6(), nn.Linear(2, 1))
    >>> x = torch.randn(5, 3)
    >>> back = restore_clips(make_clips_balanceable(model, (x,)))
    >>> back[1].threshold.tolist(), torch.allclose(back(x), model(x))
    ([6.0, 6.0], True)
    """
    out = copy.deepcopy(model)
    _replace(out, lambda child: ClippedReLU(child.threshold(), child.ndim) if isinstance(child, SplitClip) else None)
    return out
