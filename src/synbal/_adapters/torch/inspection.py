"""``synbal.inspect(model, example_inputs)``: the rescaling symmetries of a model, readably.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
>>> info = inspect(model, torch.zeros(1, 3))
>>> print(info)  # doctest: +NORMALIZE_WHITESPACE
Sequential: 2 scalable groups (2 neurons), 1 excluded unit range
group 0[0]: 1 neuron, degree 1
    in : 0.weight[0, :]  0.bias[0]
    out: 2.weight[0, 0]
group 0[1]: 1 neuron, degree 1
    in : 0.weight[1, :]  0.bias[1]
    out: 2.weight[0, 1]
excluded:
    2[0]: model output
groups per block (MLP units, V/O dims, Q/K pairs, QK-norm pairs, norm dims, layer scale):
    0: 2, 0, 0, 0, 0, 0
>>> info.groups[1].members
['0[1]']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from synbal._adapters.torch.discovery import Discovery, ParamUse, discover
from synbal._adapters.torch.group_kinds import KINDS, group_kinds

__all__ = ["GroupInfo", "ModelInspection", "inspect"]


def _fmt_indices(idx: np.ndarray, size: int) -> str:
    if idx.size == size and size > 1:
        return ":"
    if idx.size == 1:
        return str(int(idx[0]))
    if np.all(np.diff(idx) == 1):
        return f"{int(idx[0])}:{int(idx[-1]) + 1}"
    shown = ", ".join(str(int(i)) for i in idx[:6])
    return f"[{shown}{', …' if idx.size > 6 else ''}]"


def describe_slice(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> str:
    """``name[i, j:k, :]`` for the entries where ``mask`` (broadcastable to ``shape``) is true."""
    parts = []
    box = 1
    for ax, size in enumerate(shape):
        if mask.shape[ax] == 1:
            parts.append(":" if size > 1 else "0")
            continue
        other = tuple(a for a in range(mask.ndim) if a != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        box *= idx.size
        parts.append(_fmt_indices(idx, size))
    text = f"{name}[{', '.join(parts)}]" if shape else name
    count = int(mask.sum())
    if count != box:
        text += f" ({count} of these)"
    return text


@dataclass
class GroupInfo:
    """One scalable group: its name, tied neurons, and the parameter slices it scales.

    >>> import torch
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    >>> group = inspect(model, torch.zeros(1, 1, 4, 4)).groups[0]  # conv channel 0 at its 4 positions
    >>> group.name, group.size, group.incoming, group.outgoing
    ('0[0]', 1, ['0.weight[0, 0, :, :]', '0.bias[0]'], ['3.weight[0, 0:4]'])
    """

    name: str
    members: list[str]
    incoming: list[str]
    outgoing: list[str]
    degree: float = 1.0

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class ModelInspection:
    """What :func:`inspect` returns; ``str()`` prints it (at most ``max_groups`` groups).

    >>> import torch
    >>> shared = nn.Linear(2, 2)  # used twice: its inputs are tied to its outputs, so nothing scales
    >>> info = inspect(nn.Sequential(shared, nn.ReLU(), shared), torch.zeros(1, 2))
    >>> print(info)  # doctest: +NORMALIZE_WHITESPACE
    Sequential: 0 scalable groups (0 neurons), 2 excluded unit ranges
    excluded:
        0[0]..0[1] (2 units): model input or constant
        0#2[0]..0#2[1] (2 units): model input or constant
    shared parameters (their units are tied):
        0.weight: used at _0, _0_1
        0.bias: used at _0, _0_1
    >>> info = inspect(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), torch.zeros(1, 2))
    >>> info.max_groups = 1
    >>> print(info)  # doctest: +NORMALIZE_WHITESPACE
    Sequential: 3 scalable groups (3 neurons), 1 excluded unit range
    group 0[0]: 1 neuron, degree 1
        in : 0.weight[0, :]  0.bias[0]
        out: 2.weight[0, 0]
    … 2 more groups
    excluded:
        2[0]: model output
    groups per block (MLP units, V/O dims, Q/K pairs, QK-norm pairs, norm dims, layer scale):
        0: 3, 0, 0, 0, 0, 0
    """

    model_name: str
    groups: list[GroupInfo]
    excluded: dict[str, str]
    shared: dict[str, list[str]] = field(default_factory=dict)
    unscaled_parameters: list[str] = field(default_factory=list)
    max_groups: int = 50
    blocks: dict[str, dict[str, int]] = field(default_factory=dict)  # {block: {kind: groups}}, see group_kinds

    def __str__(self) -> str:
        neurons = sum(g.size for g in self.groups)
        lines = [f"{self.model_name}: {len(self.groups)} scalable groups ({neurons} neurons), "
                 f"{len(self.excluded)} excluded unit range{'s' if len(self.excluded) != 1 else ''}"]
        for g in self.groups[: self.max_groups]:
            tied = f" tied: {', '.join(g.members[:8])}{' …' if g.size > 8 else ''}" if g.size > 1 else ""
            lines.append(f"group {g.name}: {g.size} neuron{'s' if g.size != 1 else ''}, degree {g.degree:g}{tied}")
            lines.append(f"    in : {'  '.join(g.incoming) or '-'}")
            lines.append(f"    out: {'  '.join(g.outgoing) or '-'}")
        if len(self.groups) > self.max_groups:
            lines.append(f"… {len(self.groups) - self.max_groups} more groups")
        if self.excluded:
            lines.append("excluded:")
            lines.extend(f"    {k}: {v}" for k, v in self.excluded.items())
        if self.shared:
            lines.append("shared parameters (their units are tied):")
            lines.extend(f"    {k}: used at {', '.join(v)}" for k, v in self.shared.items())
        if self.blocks:
            lines.append("groups per block (" + ", ".join(KINDS) + "):")
            lines.extend(f"    {b}: " + ", ".join(str(c[k]) for k in KINDS) for b, c in self.blocks.items())
        if self.unscaled_parameters:
            lines.append(f"parameters never scaled: {', '.join(self.unscaled_parameters)}")
        return "\n".join(lines)


def _slices(d: Discovery, use: ParamUse, side: np.ndarray, g: int, where: np.ndarray | bool = True) -> str:
    """The entries of ``use``'s parameter whose ``side`` slot is in group ``g`` (and ``where`` holds)."""
    shape = tuple(int(s) for s in d.params[use.name].shape)
    return describe_slice(use.name, (d.group_of_slot[side] == g) & where, shape)


def inspection_of(d: Discovery, model_name: str) -> ModelInspection:
    """Build a :class:`ModelInspection` from a discovery result."""
    incoming: list[list[str]] = [[] for _ in range(d.n)]
    outgoing: list[list[str]] = [[] for _ in range(d.n)]
    signs = d.signs()
    for use in d.uses.values():
        rows = d.group_of_slot[use.row]
        cols = d.group_of_slot[use.col]
        down = signs[use.row] < 0  # key rows: scaled down by their query/key group
        for g in np.unique(rows[(rows >= 0) & ~down]).tolist():
            incoming[g].append(_slices(d, use, use.row, g, ~down))
        for g in np.unique(rows[(rows >= 0) & down]).tolist():
            outgoing[g].append(_slices(d, use, use.row, g, down))
        for g in np.unique(cols[cols >= 0]).tolist():
            mask = (cols == g) & (np.broadcast_to(rows, np.broadcast_shapes(rows.shape, cols.shape)) != g)
            if mask.any():
                outgoing[g].append(_slices(d, use, use.col, g))
    groups = [GroupInfo(d.names[k], [d.table.label(int(s)) for s in d.groups[k]], incoming[k], outgoing[k])
              for k in range(d.n)]
    return ModelInspection(model_name, groups, dict(d.excluded), dict(d.shared), list(d.unused))


def inspect(model: nn.Module, example_inputs: Any, *, barriers: bool = False) -> ModelInspection:
    """Discover the scalable groups and excluded units of ``model`` (see the module docstring).

    >>> import torch
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    >>> info = inspect(model, torch.zeros(1, 3))
    >>> [g.name for g in info.groups]
    ['0[0]', '0[1]', '0[2]', '0[3]']
    >>> info.excluded["2[0]..2[3] (4 units)"]  # tanh is not homogeneous: its inputs stay fixed
    "feeds nn.Tanh at node '_3' (not positively homogeneous)"
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    d = discover(model, inputs, barriers=barriers)
    info = inspection_of(d, type(model).__name__)
    info.blocks = group_kinds(d, model)
    return info
