"""Fake quantization for post-training-quantization experiments: plain tensor ops, no extra dependency.

*Weights*: symmetric uniform quantization to ``bits`` (``2^{b−1} − 1`` positive levels, zero
exact, no offset), with one scale per tensor (``per-tensor``) or per output channel
(``per-channel``, axis 0 of ``Linear``/``Conv`` weights). Values are rounded to the grid and
stored back as floats ("fake" quantization), so a quantized model runs like the float one.
Biases stay in float (they are kept at 32 bits in integer inference).

*Activations* (optional): :func:`quantize_activations` puts an 8-bit (by default) affine
quantizer after every activation module; its range is calibrated as the min/max seen on a few
batches.

>>> import torch
>>> t = torch.tensor([-1.0, 0.5, 0.24])
>>> fake_quantize(t, 3)  # 3 levels each side: step 1/3; 1.5 rounds to 2 (half to even)
tensor([-1.0000,  0.6667,  0.3333])
>>> w = torch.tensor([[1.0, 0.1], [0.01, 0.002]])
>>> fake_quantize(w, 4, "per-tensor")[1].tolist(), fake_quantize(w, 4, "per-channel")[1].tolist()
([0.0, 0.0], [0.009999999776482582, 0.0014285714132711291])
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from synbal.errors import SynbalError

__all__ = [
    "GRANULARITIES",
    "ActivationQuantizer",
    "QuantizationError",
    "fake_quantize",
    "quantize_activations",
    "quantize_weights",
]

GRANULARITIES = ("per-tensor", "per-channel")
WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.PReLU)


class QuantizationError(SynbalError):
    """Bad quantization settings (bits, granularity) or a model without quantizable layers.

    >>> try:
    ...     quantize_weights(nn.Sequential(nn.ReLU()), 8)
    ... except QuantizationError as exc:
    ...     print(exc)
    Sequential has no Linear or Conv layer to quantize
    """


def _check(bits: int, granularity: str) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise QuantizationError(f"bits must be an integer from 2 to 16, got {bits!r}")
    if granularity not in GRANULARITIES:
        raise QuantizationError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")


def fake_quantize(t: torch.Tensor, bits: int, granularity: str = "per-tensor", axis: int = 0) -> torch.Tensor:
    """``t`` rounded to a symmetric ``bits``-bit grid (scale = max |t| / (2^{b−1} − 1)), as floats.

    ``per-channel`` uses one scale per index along ``axis``. All-zero tensors/channels stay zero.

    >>> fake_quantize(torch.tensor([[0.5, -0.2], [0.0, 0.0]]), 2, "per-channel").tolist()  # 1 level a side
    [[0.5, -0.0], [0.0, 0.0]]
    >>> fake_quantize(torch.tensor([1.0]), 1)
    Traceback (most recent call last):
    ...
    synbal.quantize.QuantizationError: bits must be an integer from 2 to 16, got 1
    """
    _check(bits, granularity)
    qmax = 2 ** (bits - 1) - 1
    x = t.detach()
    if granularity == "per-tensor" or x.dim() == 0:
        top = x.abs().max()
    else:
        dims = [d for d in range(x.dim()) if d != axis % x.dim()]
        top = x.abs().amax(dim=dims, keepdim=True) if dims else x.abs()
    scale = torch.where(top > 0, top / qmax, torch.ones_like(top))
    return torch.clamp(torch.round(x / scale), -qmax, qmax) * scale


def quantize_weights(model: nn.Module, bits: int, granularity: str = "per-tensor") -> nn.Module:
    """A copy of ``model`` whose ``Linear``/``Conv`` weights are fake-quantized (biases untouched).

    >>> model = nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.3]])); _ = model.bias.fill_(0.123)
    >>> q = quantize_weights(model, 3)  # levels ±1/3, ±2/3, ±1
    >>> q.weight.tolist(), q.bias.tolist(), model.weight.tolist()  # the model itself is unchanged
    ([[1.0, 0.3333333432674408]], [0.12300000339746475], [[1.0, 0.30000001192092896]])
    """
    _check(bits, granularity)
    out = copy.deepcopy(model)
    found = False
    with torch.no_grad():
        for module in out.modules():
            if isinstance(module, WEIGHTED):
                module.weight.copy_(fake_quantize(module.weight, bits, granularity, axis=0))
                found = True
    if not found:
        raise QuantizationError(f"{type(model).__name__} has no Linear or Conv layer to quantize")
    return out


class ActivationQuantizer(nn.Module):
    """Affine fake quantizer: records the min/max while ``calibrating``, then rounds to ``bits`` bits.

    >>> q = ActivationQuantizer(bits=2)  # 3 steps between the calibrated min and max
    >>> q(torch.tensor([0.0, 3.0])).tolist()  # calibrating: the identity
    [0.0, 3.0]
    >>> q.calibrating = False
    >>> q(torch.tensor([0.4, 1.6, 2.9, 7.0])).tolist()
    [0.0, 2.0, 3.0, 3.0]
    """

    def __init__(self, bits: int = 8) -> None:
        super().__init__()
        _check(bits, "per-tensor")
        self.bits = bits
        self.calibrating = True
        self.lo: torch.Tensor
        self.hi: torch.Tensor
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.lo = torch.minimum(self.lo, x.detach().min().to(self.lo.dtype))
            self.hi = torch.maximum(self.hi, x.detach().max().to(self.hi.dtype))
            return x
        lo, hi = torch.clamp(self.lo, max=0.0), torch.clamp(self.hi, min=0.0)  # zero stays exact
        levels = 2**self.bits - 1
        scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(hi))
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
        return ((q - zero) * scale).to(x.dtype)


def quantize_activations(model: nn.Module, batches: Iterable[torch.Tensor], bits: int = 8,
                         kinds: tuple[type[nn.Module], ...] = ACTIVATIONS) -> nn.Module:
    """A copy of ``model`` with a calibrated :class:`ActivationQuantizer` after each module of ``kinds``.

    ``batches`` (a few input tensors) set each quantizer's range; the copy is returned in eval
    mode with the quantizers active.

    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> q = quantize_activations(model, [torch.randn(16, 2)], bits=4)
    >>> type(q[1]).__name__, [type(m).__name__ for m in q[1]], q[1][1].calibrating
    ('Sequential', ['ReLU', 'ActivationQuantizer'], False)
    """
    out = copy.deepcopy(model).eval()
    quantizers = []
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                q = ActivationQuantizer(bits)
                setattr(parent, name, nn.Sequential(child, q))
                quantizers.append(q)
    if not quantizers:
        raise QuantizationError(f"{type(model).__name__} has no activation module of the kinds given")
    seen = 0
    with torch.no_grad():
        for x in batches:
            out(x)
            seen += 1
    if seen == 0:
        raise QuantizationError("activation calibration needs at least one batch")
    for q in quantizers:
        q.calibrating = False
    return out
