"""Independent parts of a balance problem: groups joined by the parameters they share.

Every parameter entry's cost depends on the scales of its row group and column group only, so
``R`` is a sum over parameters, and two groups interact only through a parameter that touches
both. The groups therefore fall into connected components (of the graph joining all the groups
any one parameter touches), and ``R``'s minimum over all scales is the minimum of each
component's own part, taken separately: solving the components one at a time gives the joint
balanced state exactly. In a transformer they come out as one component per block, plus the
final norm with the head — found from the groups, not assumed. Parameters touching no group
(embeddings, the rows and columns of the residual stream) belong to no component: they never change.

>>> import torch
>>> from torch import nn
>>> from synbal._adapters.torch.discovery import discover
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
>>> parts, fixed = components(discover(model, (torch.zeros(1, 3),)))
>>> [(p.groups.tolist(), p.params) for p in parts], fixed
([([0, 1, 2, 3, 4, 5], ['0.weight', '0.bias', '2.weight', '2.bias', '4.weight'])], ['4.bias'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from synbal._adapters.torch.discovery import Discovery
from synbal._adapters.torch.values import compress

__all__ = ["Component", "components", "sub_discovery"]


@dataclass
class Component:
    """Groups (increasing indices of the whole discovery) and the parameters that touch them."""

    groups: np.ndarray
    params: list[str]


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = int(parent[i])
    return i


def _touched(d: Discovery) -> dict[str, np.ndarray]:
    """Per parameter in ``d.uses``, the distinct groups its rows or columns belong to."""
    out = {}
    for name, use in d.uses.items():
        g = np.concatenate([d.group_of_slot[compress(use.row)].ravel(), d.group_of_slot[compress(use.col)].ravel()])
        out[name] = np.unique(g[g >= 0])
    return out


def components(d: Discovery) -> tuple[list[Component], list[str]]:
    """The connected components of ``d``'s groups (ordered by their first group), and the scaled-by-none
    parameters (used ones that touch no group, and ``d.unused``)."""
    touched = _touched(d)
    parent = np.arange(d.n)
    for groups in touched.values():
        roots = {_find(parent, int(g)) for g in groups}
        for r in roots:
            parent[r] = min(roots)
    root = np.array([_find(parent, g) for g in range(d.n)], dtype=np.int64)
    order: dict[int, int] = {}
    for r in root.tolist():
        order.setdefault(r, len(order))
    parts = [Component(np.flatnonzero(root == r), []) for r in order]
    fixed = []
    for name, groups in touched.items():
        if groups.size:
            parts[order[int(root[groups[0]])]].params.append(name)
        else:
            fixed.append(name)
    return parts, fixed + list(d.unused)


def sub_discovery(d: Discovery, part: Component, tensors: dict[str, torch.Tensor]) -> Discovery:
    """``d`` restricted to one component: its groups renumbered ``0..k-1``, its parameters only, with
    ``tensors`` (by name) as their values. Slots of other groups read as fixed; no parameter of the
    component touches them."""
    local = np.full(d.n + 1, -1, dtype=np.int64)  # index d.n: the fixed slots (-1) map to -1
    local[part.groups] = np.arange(part.groups.size)
    group_of_slot = local[np.where(d.group_of_slot >= 0, d.group_of_slot, d.n)]
    layers = None
    if d.layers is not None:
        layers = [m[m >= 0] for m in (local[layer] for layer in d.layers)]
        layers = [m for m in layers if m.size]
    names = [d.names[int(g)] for g in part.groups]
    return replace(d, uses={name: d.uses[name] for name in part.params}, group_of_slot=group_of_slot,
                   groups=[d.groups[int(g)] for g in part.groups], names=names, layers=layers, unused=[],
                   params=dict(tensors), excluded={}, shared={})
