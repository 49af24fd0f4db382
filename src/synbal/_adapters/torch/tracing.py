"""Tracing: the graph of an ``nn.Module`` that discovery walks, with ``torch.export`` as a fallback.

:func:`trace` uses :mod:`torch.fx` (``symbolic_trace`` with ``torch.nn`` layers and
:class:`~synbal.torch.LocallyConnected2d` as leaves), which keeps module paths and parameter names
and is fast. fx cannot follow a ``forward`` that branches on tensor shapes or values; such a model
is then exported with ``torch.export.export(model, example_inputs, strict=False)``, whose
``.module()`` keeps the parameter names. When both fail, the error says which cause applies:
control flow that depends on tensor *values* (neither tracer can follow it), or something else
torch.export reports.

A module is a leaf only while calling it runs its class's ``forward`` and nothing else
(:func:`runs_class_forward`): a layer whose ``forward`` was replaced on the instance, or that has
forward hooks, is traced through, so its rule never stands for what it really computes (the
hook-based ``weight_norm``/``spectral_norm`` pre-hooks are :mod:`synbal._adapters.torch.reparam`'s
to handle). A model whose own ``forward`` was replaced on the instance is refused: torch.fx traces
the class's ``forward``.

>>> import torch
>>> from torch import nn
>>> class Branchy(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc = nn.Linear(3, 2)
...     def forward(self, x):
...         return self.fc(x) if x.dim() == 2 else self.fc(x).sum(0)
>>> gm = trace(Branchy(), (torch.zeros(4, 3),))  # fx fails on the shape test; torch.export does not
>>> [n for n, _ in gm.named_parameters()]
['fc.weight', 'fc.bias']
"""

from __future__ import annotations

import traceback
import warnings
from typing import Any

from torch import fx, nn
from torch.nn.modules import module as module_hooks

from synbal._adapters.torch.hf_models import export_ready
from synbal._adapters.torch.locally_connected import LocallyConnected2d
from synbal.errors import ModelError

__all__ = ["runs_class_forward", "trace"]

#: Attributes that, set on an instance, change what calling the module runs.
_CALL_ATTRIBUTES = ("forward", "_call_impl", "_wrapped_call_impl")


def _reparametrization(hook: object) -> bool:
    """The hook-based ``weight_norm`` / ``spectral_norm`` (read by :mod:`synbal._adapters.torch.reparam`)."""
    return type(hook).__module__.startswith("torch.nn.utils") and type(hook).__name__ in ("WeightNorm",
                                                                                        "SpectralNorm")


def runs_class_forward(m: nn.Module, *, reparametrizations: bool = False) -> bool:
    """Whether calling ``m`` runs its class's ``forward`` and nothing else.

    False when ``forward`` (or the call machinery) was replaced on the instance, or when a forward
    hook or pre-hook is registered on ``m`` or globally. ``reparametrizations=True`` lets the
    hook-based ``weight_norm``/``spectral_norm`` pre-hooks pass.

    >>> layer = nn.ReLU()
    >>> runs_class_forward(layer)
    True
    >>> layer.forward = lambda x: x * x
    >>> runs_class_forward(layer)
    False
    >>> hooked = nn.Linear(2, 2)
    >>> handle = hooked.register_forward_hook(lambda mod, args, out: out.abs())
    >>> runs_class_forward(hooked)
    False
    >>> handle.remove(); runs_class_forward(hooked)
    True
    """
    if any(name in vars(m) for name in _CALL_ATTRIBUTES):
        return False
    if module_hooks._global_forward_hooks or module_hooks._global_forward_pre_hooks:
        return False
    if m._forward_hooks:
        return False
    return all(reparametrizations and _reparametrization(h) for h in m._forward_pre_hooks.values())


class _Tracer(fx.Tracer):
    """fx tracer that keeps synbal's own layers as leaves, and traces through any layer that does
    not compute what its type says (see :func:`runs_class_forward`)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if not runs_class_forward(m, reparametrizations=True):
            return False
        if isinstance(m, LocallyConnected2d):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _user_frame(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc`` outside torch (the model's own code)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/torch/" not in f.filename]
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _export(model: nn.Module, example_inputs: tuple[Any, ...]) -> fx.GraphModule:
    import torch

    with warnings.catch_warnings(), export_ready(model):  # a transformers model: no key/value cache
        warnings.simplefilter("ignore")
        program = torch.export.export(model, example_inputs, strict=False)
    gm = program.module()
    assert isinstance(gm, fx.GraphModule)
    return gm


def _data_dependent(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "data-dependent" in text or "data dependent" in text or "guardondatadependent" in text


def trace(model: nn.Module, example_inputs: tuple[Any, ...] | None = None) -> fx.GraphModule:
    """An fx graph of ``model`` (the model itself when it already is a ``GraphModule``).

    Without ``example_inputs`` only torch.fx is tried.
    """
    if isinstance(model, fx.GraphModule):
        return model
    name = type(model).__name__
    replaced = [attr for attr in _CALL_ATTRIBUTES if attr in vars(model)]
    if replaced:
        raise ModelError(
            f"{name}.{replaced[0]} was replaced on the instance; synbal traces the forward of the model's "
            f"class, which is not what this model computes: define the new forward in a subclass instead"
        )
    try:
        graph = _Tracer().trace(model)
    except Exception as fx_exc:  # fx raises many types (TraceError, TypeError, …) on untraceable code
        if example_inputs is None:
            raise ModelError(
                f"cannot trace {name} with torch.fx ({_first_line(fx_exc)}{_user_frame(fx_exc)}); "
                "folding BatchNorm needs an fx-traceable model"
            ) from fx_exc
        try:
            return _export(model, example_inputs)
        except Exception as exc:
            if _data_dependent(exc):
                raise ModelError(
                    f"cannot trace {name}: its forward has Python control flow that depends on tensor values"
                    f"{_user_frame(fx_exc)}, which neither torch.fx nor torch.export can follow; make the "
                    "branch independent of tensor values (torch.where, torch.cond) to balance it"
                ) from exc
            raise ModelError(
                f"cannot trace {name}: torch.fx failed ({_first_line(fx_exc)}{_user_frame(fx_exc)}) and "
                f"so did torch.export ({_first_line(exc)}); a model synbal balances must be traceable by one "
                "of them on the example inputs"
            ) from exc
    return fx.GraphModule(model, graph, class_name=name)
