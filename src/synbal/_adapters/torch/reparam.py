"""Weights a layer computes from other tensors, and modules whose weights cannot be rescaled.

A layer's ``weight`` is not always a stored parameter:

* **weight normalisation** (``torch.nn.utils.parametrizations.weight_norm`` and the older
  ``torch.nn.utils.weight_norm``) computes ``W = g · v / ‖v‖`` with the norm taken over every
  axis except ``dim``. Rescaling ``W`` by a factor that is constant along those axes is exactly
  rescaling ``g`` (``v`` and its norm stay), so such a weight scales through ``g``;
* **spectral normalisation** divides ``W`` by its largest singular value: any rescaling of ``W``
  is undone, so the layer cannot pass a scale (refused, or a barrier with ``barriers=True``);
  so is every other parametrization synbal does not know;
* a **buffer** used as a weight is a constant: synbal rescales parameters only.

:func:`weight_source` tells discovery which of these a weight name is;
:func:`refuse_quantized` rejects quantization-aware-training and quantized modules up front
(their weights pass through fake quantization, which rounds to a fixed grid).

>>> import torch
>>> from torch import nn
>>> from torch.nn.utils import parametrizations
>>> model = nn.Sequential(parametrizations.weight_norm(nn.Linear(3, 2)))
>>> src = weight_source(model, "0.weight")
>>> src.kind, src.scaled_by, src.shape
('weight_norm', '0.parametrizations.weight.original0', (2, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from synbal.errors import ModelError

__all__ = ["WeightSource", "detach_hooked_weights", "refuse_quantized", "weight_source"]


@dataclass(frozen=True)
class WeightSource:
    """Where a weight that is not a plain parameter comes from.

    ``kind`` is ``"weight_norm"`` (scales through parameter ``scaled_by`` of shape ``shape``;
    ``originals`` are every parameter the weight is computed from), ``"buffer"`` (a constant),
    or ``"unscalable"`` (``reason`` says why).
    """

    kind: str
    scaled_by: str = ""
    shape: tuple[int, ...] = ()
    originals: tuple[str, ...] = ()
    reason: str = ""


def _split(name: str) -> tuple[str, str]:
    owner, _, attr = name.rpartition(".")
    return owner, attr


def _parametrized(module: nn.Module, owner: str, attr: str) -> WeightSource:
    plist = getattr(module.parametrizations, attr)
    assert isinstance(plist, parametrize.ParametrizationList)
    prefix = f"{owner}.parametrizations.{attr}" if owner else f"parametrizations.{attr}"
    originals = tuple(f"{prefix}.{n}" for n, _ in plist.named_parameters())
    kinds = [type(p).__name__ for p in plist.children()]
    if kinds == ["_WeightNorm"]:
        g = plist.original0
        assert isinstance(g, torch.Tensor)
        return WeightSource("weight_norm", f"{prefix}.original0", tuple(int(s) for s in g.shape), originals)
    what = "spectral_norm" if "_SpectralNorm" in kinds else f"parametrization {' -> '.join(kinds)}"
    reason = (f"{owner or '<root>'}.{attr} is computed by {what}, which " + (
        "divides the weight by its largest singular value: any rescaling of the weight is undone"
        if what == "spectral_norm" else "synbal does not know how rescaling passes through"))
    return WeightSource("unscalable", originals=originals, reason=reason)


def _hooked(module: nn.Module, owner: str, attr: str) -> WeightSource | None:
    """The older hook-based ``torch.nn.utils.weight_norm`` / ``spectral_norm``."""
    for hook in module._forward_pre_hooks.values():
        kind = type(hook).__name__
        if getattr(hook, "name", None) != attr or kind not in ("WeightNorm", "SpectralNorm"):
            continue
        pre = f"{owner}." if owner else ""
        if kind == "WeightNorm":
            g = getattr(module, f"{attr}_g")
            return WeightSource("weight_norm", f"{pre}{attr}_g", tuple(int(s) for s in g.shape),
                                (f"{pre}{attr}_g", f"{pre}{attr}_v"))
        return WeightSource("unscalable", originals=(f"{pre}{attr}_orig",), reason=(
            f"{pre}{attr} is computed by spectral_norm, which divides the weight by its largest singular "
            "value: any rescaling of the weight is undone"))
    return None


def weight_source(root: nn.Module, name: str) -> WeightSource | None:
    """How the tensor ``root.<name>`` is made, when it is not a parameter (``None``: unknown name)."""
    owner, attr = _split(name)
    try:
        module = root.get_submodule(owner) if owner else root
    except AttributeError:
        return None
    if parametrize.is_parametrized(module, attr):
        return _parametrized(module, owner, attr)
    hooked = _hooked(module, owner, attr)
    if hooked is not None:
        return hooked
    if attr in dict(module.named_buffers(recurse=False)):
        return WeightSource("buffer", reason=f"{name} is a buffer, not a parameter: synbal rescales parameters only")
    return None


def refuse_quantized(model: nn.Module) -> None:
    """Raise :class:`~synbal.errors.ModelError` for quantization-aware-training or quantized modules."""
    for path, m in model.named_modules():
        mod = type(m).__module__
        qat = ".qat." in mod or hasattr(m, "weight_fake_quant")
        quantized = mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized",
                                    "torch.nn.quantized"))
        fake = mod.startswith("torch.ao.quantization")
        if qat or quantized or fake:
            kind = ("a quantization-aware-training module" if qat else "a quantized module" if quantized
                    else "a fake-quantization/observer module")
            raise ModelError(
                f"module {path or '<root>'!r} ({mod}.{type(m).__name__}) is {kind}: its weights are rounded "
                "to a fixed quantization grid, so rescaling them is not a symmetry of the model; balance "
                "the float model before preparing it for quantization (or convert it back to float modules)"
            )


def detach_hooked_weights(model: nn.Module) -> None:
    """Recompute the weights of hook-based ``weight_norm`` without autograd history.

    The old ``torch.nn.utils.weight_norm`` stores ``W`` as a plain attribute computed with
    gradients, which ``copy.deepcopy`` refuses; the values are the same, and every forward
    recomputes them anyway.
    """
    with torch.no_grad():
        for m in model.modules():
            for hook in m._forward_pre_hooks.values():
                if type(hook).__name__ == "WeightNorm":
                    setattr(m, hook.name, hook.compute_weight(m))  # type: ignore[attr-defined]
