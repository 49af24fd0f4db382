"""A zero-copy :class:`~synbal.dense.DenseNet` view of a plain PyTorch MLP (the fast path).

Training calls the balance monitor every epoch and may balance every epoch, so for the most
common model — an ``nn.Sequential`` of ``Linear`` layers with one homogeneous activation
(ReLU, LeakyReLU, Identity) between them, on the CPU — synbal skips tracing: the DenseNet's
weight matrices *are* the parameters' memory (``Tensor.numpy()`` shares it), so the core
DenseNet adapter measures and balances the torch model directly, in place. Any other model
goes through the PyTorch adapter (``synbal.deficit(model, reg, example_inputs=...)``).

>>> import torch
>>> mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
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

from synbal.dense import DenseNet, DenseNetAdapter

__all__ = ["MLPView", "mlp_view"]


@dataclass
class MLPView:
    """A DenseNet sharing memory with an MLP's parameters, and the parameter names in order."""

    net: DenseNet
    names: list[str]

    def parameter_factors(self, u: np.ndarray) -> dict[str, torch.Tensor]:
        """Elementwise multiplier of every parameter when hidden units are scaled by ``exp(u)``.

        The same rule the DenseNet adapter applies: ``W_l ← diag(Λ_l) W_l diag(Λ_{l−1}^{−c})``,
        ``b_l ← Λ_l b_l`` (visible layers have ``Λ = 1``).
        """
        index = DenseNetAdapter(self.net).index
        c = float(self.net.act.degree or 1.0)
        ue = np.append(np.asarray(u, dtype=np.float64), 0.0)
        factors: dict[str, torch.Tensor] = {}
        names = iter(self.names)
        for k, bias in enumerate(self.net.biases):
            row = np.exp(ue[index[k + 1]])
            col = np.exp(-c * ue[index[k]])
            factors[next(names)] = torch.from_numpy(np.outer(row, col))
            if bias is not None:
                factors[next(names)] = torch.from_numpy(row.copy())
        return factors


def _activation_spec(module: nn.Module) -> str | dict[str, object] | None:
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Identity):
        return "linear"
    if isinstance(module, nn.LeakyReLU):
        return {"type": "bilu", "a": float(module.negative_slope), "b": 1.0}
    return None


def mlp_view(model: nn.Module) -> MLPView | None:
    """The DenseNet view of ``model`` when it is a plain CPU MLP, else ``None``.

    Accepted: ``nn.Sequential`` = [``Flatten``] ``Linear`` (act ``Linear``)* [act or any
    output non-linearity], the same homogeneous activation everywhere between linears, all
    parameters contiguous float32/float64 CPU tensors.
    """
    if not isinstance(model, nn.Sequential):
        return None
    modules = list(model.named_children())
    if modules and isinstance(modules[0][1], nn.Flatten):
        modules = modules[1:]
    linears = [(name, m) for name, m in modules if isinstance(m, nn.Linear)]
    if not linears or not isinstance(modules[0][1], nn.Linear):
        return None
    spec: str | dict[str, object] | None = None
    positions = [i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Linear)]
    for a, b in pairwise(positions):
        between = [m for _, m in modules[a + 1 : b]]
        if len(between) != 1:
            return None
        this = _activation_spec(between[0])
        if this is None or (spec is not None and this != spec):
            return None
        spec = this
    trailing = [m for _, m in modules[positions[-1] + 1 :]]
    if len(trailing) > 1 or any(list(m.parameters()) for m in trailing):
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
    return MLPView(DenseNet(weights, biases, spec or "relu"), names)
