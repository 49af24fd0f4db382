"""Fold eval-mode BatchNorm layers into the Linear/Conv layer that feeds them.

``BN(Wx + b) = (γ/σ)·(Wx + b − μ) + β`` is again affine, so ``W ← (γ/σ)W`` and
``b ← (γ/σ)(b − μ) + β``; the BatchNorm is replaced by ``nn.Identity``. Only layers whose
output feeds nothing but the BatchNorm, and whose weight is not shared, are folded.

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU()).eval()
>>> _ = m[1].running_mean.fill_(0.5)
>>> x = torch.randn(1, 2, 5, 5)
>>> y = m(x)
>>> fold_batchnorm(m, (x,))
['1']
>>> type(m[1]).__name__, bool(torch.allclose(m(x), y, atol=1e-6))
('Identity', True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from synbal.errors import ModelError

__all__ = ["fold_batchnorm"]


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def _fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    assert isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd))
    assert bn.running_mean is not None and bn.running_var is not None
    w = layer.weight
    with torch.no_grad():
        inv = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
        scale = inv * bn.weight.to(torch.float64) if bn.weight is not None else inv
        shift = bn.bias.to(torch.float64) if bn.bias is not None else torch.zeros_like(scale)
        old_bias = layer.bias.to(torch.float64) if layer.bias is not None else torch.zeros_like(scale)
        view = (-1,) + (1,) * (w.dim() - 1)
        w.copy_((w.to(torch.float64) * scale.view(view)).to(w.dtype))
        new_bias = ((old_bias - bn.running_mean.to(torch.float64)) * scale + shift).to(w.dtype)
        if layer.bias is None:
            layer.bias = nn.Parameter(new_bias)
        else:
            layer.bias.copy_(new_bias)


def fold_batchnorm(model: nn.Module, example_inputs: tuple[Any, ...] | None = None) -> list[str]:
    """Fold every foldable BatchNorm of ``model`` in place; return the folded BatchNorm paths.

    ``example_inputs`` is unused (kept for a uniform signature with discovery).

    >>> import synbal
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1)).eval()
    >>> x = torch.randn(2, 3)
    >>> len(synbal.inspect(model, x).groups)  # the BatchNorm fixes the Linear's outputs
    4
    >>> fold_batchnorm(model), type(model[1]).__name__
    (['1'], 'Identity')
    >>> len(synbal.inspect(model, x).groups)
    4
    """
    from synbal._adapters.torch.discovery import trace

    del example_inputs
    gm = trace(model)
    counts: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        counts[id(p)] = counts.get(id(p), 0) + 1
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        bn = gm.get_submodule(str(node.target))
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        if bn.training or bn.running_mean is None:
            raise ModelError(f"BatchNorm {node.target!r} is in training mode (or has no running statistics); "
                             "call model.eval() before folding or balancing")
        src = node.args[0]
        if not (isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        layer = gm.get_submodule(str(src.target))
        if isinstance(layer, nn.modules.conv._ConvNd) and layer.transposed:
            continue
        if not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)) or counts.get(id(layer.weight), 0) > 1:
            continue
        calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
        if calls.count(src.target) > 1 or calls.count(node.target) > 1:
            continue
        _fold_pair(layer, bn)
        _set_submodule(model, str(node.target), nn.Identity())
        folded.append(str(node.target))
    return folded
