"""The PyTorch adapter's fast path for plain MLPs: their groups without tracing.

Training calls the balance monitor every epoch and may balance every epoch, so for the most
common model — an ``nn.Sequential`` of ``Linear`` layers with positively homogeneous activations
(ReLU, LeakyReLU, Identity) between them — :func:`mlp_discovery` builds the same
:class:`~synbal._adapters.torch.discovery.Discovery` that tracing would, from the module list alone.
:class:`~synbal._adapters.torch.adapter.TorchAdapter` uses it whenever it applies (then no example inputs
are needed: without them the function check runs on :func:`mlp_probe`'s inputs), so these
models go through the one extraction of :mod:`synbal._adapters.torch.extract` — whose Linear blocks are
matrix-free views of the parameters, as in the engine — and the one apply of
:mod:`synbal._adapters.torch.apply`. Only exact ``nn.Sequential``/``nn.Linear``/activation types without
hooks, parametrizations or a ``forward`` replaced on the instance qualify: anything that could change
what a layer computes is traced.

:func:`mlp_view` is a :class:`~synbal._adapters.dense.DenseNet` sharing the same memory (for code that
works with the engine's objects directly, e.g. to compare against it).

>>> import torch
>>> mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
>>> d = mlp_discovery(mlp)
>>> d.n, d.names[:2], d.excluded
(4, ['0[0]', '0[1]'], {'2[0]..2[1] (2 units)': 'model output'})
>>> view = mlp_view(mlp)
>>> view.net.widths, view.names
([3, 4, 2], ['0.weight', '0.bias', '2.weight', '2.bias'])
>>> mlp_view(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from synbal._adapters.dense import DenseNet
from synbal._adapters.torch.discovery import Discovery, ParamUse, build_discovery
from synbal._adapters.torch.slots import SlotTable
from synbal._adapters.torch.tracing import runs_class_forward

__all__ = ["MLPView", "mlp_discovery", "mlp_fits", "mlp_probe", "mlp_view"]

_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Identity)  # positively homogeneous of degree 1


def _plain(m: nn.Module) -> bool:
    """The module computes what its type says: its class's ``forward`` (not one set on the instance),
    no hooks of any kind, no parametrizations."""
    hooks = (m._backward_hooks, m._backward_pre_hooks, m._state_dict_hooks)
    return runs_class_forward(m) and not any(hooks) and not parametrize.is_parametrized(m)


def _modules(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The children of an exact, unhooked ``nn.Sequential`` that shares no parameter between them."""
    if type(model) is not nn.Sequential or not _plain(model):
        return None
    items = [(name, m) for name, m in model._modules.items() if m is not None]
    params = [id(p) for _, m in items for p in m.parameters()]
    if len(set(params)) != len(params):  # a layer used twice: traced (its units are tied)
        return None
    if not all(_plain(m) for _, m in items):
        return None
    if items and type(items[0][1]) is nn.Flatten:
        items = items[1:]
    return items


def _linears(items: list[tuple[str, nn.Module]]) -> tuple[list[tuple[str, nn.Linear]], list[nn.Module]] | None:
    """The Linear layers (only activations between them, widths matching) and the modules after them."""
    positions = [i for i, (_, m) in enumerate(items) if type(m) is nn.Linear]
    if not positions or positions[0] != 0:
        return None
    for a, b in pairwise(positions):
        if any(type(m) not in _ACTIVATIONS for _, m in items[a + 1 : b]):
            return None
    linears = [(name, m) for name, m in items if isinstance(m, nn.Linear)]
    if any(x.out_features != y.in_features for (_, x), (_, y) in pairwise(linears)):
        return None
    trailing = [m for _, m in items[positions[-1] + 1 :]]
    if any(True for m in trailing for _ in m.parameters()):
        return None
    return linears, trailing


def mlp_discovery(model: nn.Module) -> Discovery | None:
    """The discovery of a plain MLP, built without tracing (``None`` for any other model).

    Accepted: an ``nn.Sequential`` = [``Flatten``] ``Linear`` (activations ``Linear``)* [modules
    without parameters], with ReLU, LeakyReLU or Identity as activations. Every hidden unit is one
    group; the last Linear's outputs are fixed (model output, or the input of the trailing modules).
    """
    items = _modules(model)
    found = _linears(items) if items is not None else None
    if found is None:
        return None
    linears, trailing = found
    table = SlotTable()
    uses: dict[str, ParamUse] = {}
    cols = np.zeros(linears[0][1].in_features, dtype=np.int64)
    for name, lin in linears:
        rows = table.new(name, (lin.out_features,))
        uses[f"{name}.weight"] = ParamUse(f"{name}.weight", rows[:, None], cols[None, :], False, [name])
        if lin.bias is not None:
            uses[f"{name}.bias"] = ParamUse(f"{name}.bias", rows, np.zeros(1, dtype=np.int64), True, [name])
        cols = rows
    last = next((m for m in trailing if type(m) not in _ACTIVATIONS), None)
    table.fix(cols, "model output" if last is None else f"feeds nn.{type(last).__name__} (not positively homogeneous)")
    return build_discovery(table, uses, dict(model.named_parameters()))


def mlp_fits(model: nn.Module, inputs: tuple[object, ...]) -> bool:
    """Whether a plain MLP can be called with ``inputs`` (one tensor of its dtype whose features match),
    checked on shapes only; otherwise the adapter traces it, which names what does not fit."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor) or inputs[0].dtype != first.weight.dtype:
        return False
    x = torch.empty(inputs[0].shape, device="meta")
    head = next(iter(model.children()))
    if type(head) is nn.Flatten:
        x = head(x)
    return x.dim() >= 1 and int(x.shape[-1]) == first.in_features


def mlp_probe(model: nn.Module) -> torch.Tensor:
    """Inputs to check a plain MLP's function with when none are given: two fixed random rows."""
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, first.in_features, generator=generator, dtype=torch.float64)
    return x.to(dtype=first.weight.dtype, device=first.weight.device)


@dataclass
class MLPView:
    """A DenseNet sharing memory with an MLP's parameters, and the parameter names in order."""

    net: DenseNet
    names: list[str]


def _activation_spec(module: nn.Module) -> str | dict[str, object] | None:
    if type(module) is nn.ReLU:
        return "relu"
    if type(module) is nn.Identity:
        return "linear"
    if type(module) is nn.LeakyReLU:
        assert isinstance(module, nn.LeakyReLU)
        return {"type": "bilu", "a": float(module.negative_slope), "b": 1.0}
    return None


def mlp_view(model: nn.Module) -> MLPView | None:
    """The DenseNet view of ``model`` when it is a plain CPU MLP, else ``None``.

    Accepted: what :func:`mlp_discovery` accepts, with exactly one activation between linears,
    the same everywhere, at most one module after the last, all parameters contiguous
    float32/float64 CPU tensors.
    """
    items = _modules(model)
    found = _linears(items) if items is not None else None
    if items is None or found is None:
        return None
    linears, trailing = found
    positions = [i for i, (_, m) in enumerate(items) if isinstance(m, nn.Linear)]
    specs = []
    for a, b in pairwise(positions):
        between = [m for _, m in items[a + 1 : b]]
        specs.append(_activation_spec(between[0]) if len(between) == 1 else None)
    if any(s is None for s in specs) or any(s != specs[0] for s in specs) or len(trailing) > 1:
        return None
    weights: list[np.ndarray] = []
    biases: list[np.ndarray | None] = []
    names: list[str] = []
    for name, lin in linears:
        for pname, param in (("weight", lin.weight), ("bias", lin.bias)):
            if param is None:
                continue
            if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.float64):
                return None
            if not param.is_contiguous():
                return None
            names.append(f"{name}.{pname}")
        weights.append(lin.weight.detach().numpy())
        biases.append(None if lin.bias is None else lin.bias.detach().numpy())
    return MLPView(DenseNet(weights, biases, specs[0] or "relu" if specs else "relu"), names)
