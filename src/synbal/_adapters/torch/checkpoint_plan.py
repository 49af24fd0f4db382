"""What out-of-core balancing and inspection share: the checkpoint's groups, components and tensors.

:func:`plan_checkpoint` builds the model ``config.json`` describes on the ``meta`` device,
discovers its groups there (the discovery used in memory, so the groups are the same), splits
them into independent components (:mod:`synbal._adapters.torch.components`) and finds every
parameter's tensor in the checkpoint (a tied alias when that is what is stored), checking shapes
and that every rescaled tensor is stored as floating point. :func:`checkpoint_regularizer`
accepts the regularizers both take: sums of powers, whose cost of a tensor read in pieces is
the sum of its pieces' costs (:func:`tensor_cost`).

>>> checkpoint_regularizer("1*l2+0.01*l1").sum_of_powers is not None
True
>>> try:
...     checkpoint_regularizer("linf")
... except RegularizerError as exc:
...     print(str(exc).split(" (")[0])
out-of-core balancing and inspection take sums of powers
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from synbal._adapters.torch.components import Component, components
from synbal._adapters.torch.discovery import Discovery, discover
from synbal._adapters.torch.extract import power_sums
from synbal._adapters.torch.hf_folder import ModelFolder, meta_model, trace_inputs
from synbal._adapters.torch.safetensors_io import ShardReader, TensorEntry
from synbal._problem.regularizers import Regularizer, RegularizerSpec, parse_regularizer
from synbal.errors import CheckpointError, RegularizerError

__all__ = ["Plan", "checkpoint_regularizer", "piece_cost", "plan_checkpoint", "tensor_cost"]


@dataclass
class Plan:
    """The discovered model: groups, components, and every parameter's place in the checkpoint."""

    discovery: Discovery
    parts: list[Component]
    fixed: list[str]  # parameters no group touches (canonical names)
    key: dict[str, str]  # canonical parameter name → checkpoint tensor name
    part_shards: list[set[str]]  # per component, the shard files it reads

    def entry(self, folder: ModelFolder, name: str) -> TensorEntry:
        """The checkpoint entry of the parameter ``name`` (canonical)."""
        key = self.key[name]
        return folder.shards[folder.weight_map[key]].tensors[key]

    def part_bytes(self, folder: ModelFolder, k: int) -> int:
        """Bytes of component ``k``'s tensors in the checkpoint."""
        return sum(self.entry(folder, n).nbytes for n in self.parts[k].params)

    def read_part(self, folder: ModelFolder, reader: ShardReader, k: int) -> dict[str, torch.Tensor]:
        """Component ``k``'s tensors by canonical name, each read once through ``reader``."""
        return {n: reader.tensor(folder.shards[folder.weight_map[self.key[n]]], self.key[n])
                for n in self.parts[k].params}


def _checkpoint_keys(model: nn.Module, d: Discovery, folder: ModelFolder) -> dict[str, str]:
    """Canonical parameter name → the checkpoint's name for it (a tied alias when that is what is stored)."""
    aliases: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    key = {}
    for name, p in d.params.items():  # the meta model's parameters by canonical name
        found = next((a for a in aliases.get(id(p), [name]) if a in folder.weight_map), None)
        if found is None:
            raise CheckpointError(f"the checkpoint in {folder.root} has no tensor for parameter {name!r} of the model "
                                  "config.json describes (config and weights do not match)")
        entry = folder.shards[folder.weight_map[found]].tensors[found]
        if entry.shape != tuple(p.shape):
            raise CheckpointError(f"tensor {found!r} in shard {folder.root / folder.weight_map[found]} has shape "
                                  f"{list(entry.shape)}, the model's parameter has {list(p.shape)}")
        key[name] = found
    return key


def plan_checkpoint(folder: ModelFolder) -> Plan:
    """Discover the groups of ``folder``'s model on the ``meta`` device and place them in the checkpoint."""
    model = meta_model(folder.root)
    d = discover(model, trace_inputs(model))
    parts, fixed = components(d)
    plan = Plan(d, parts, fixed, _checkpoint_keys(model, d, folder), [])
    for part in parts:
        for name in part.params:
            entry = plan.entry(folder, name)
            if entry.dtype is None or not entry.dtype.is_floating_point:
                raise CheckpointError(f"tensor {plan.key[name]!r} must be rescaled but is stored as "
                                      f"{entry.dtype_name}")
    plan.part_shards = [{folder.weight_map[plan.key[n]] for n in part.params} for part in parts]
    return plan


def tensor_cost(reg: Regularizer, name: str, t: torch.Tensor) -> float:
    """``R``'s part for the entries of ``t`` (``reg`` is a sum of powers, see :func:`checkpoint_regularizer`)."""
    flat = t.reshape(-1)
    return sum(term.coef * float(power_sums(name, flat, (0,), term.power).sum()) for term in reg.sum_of_powers or ())


def piece_cost(reg: Regularizer, name: str, entry: TensorEntry, piece: bytes | bytearray) -> float:
    """``R``'s part for a piece (whole elements) of tensor ``entry``'s bytes; 0 unless stored as floating point."""
    if entry.dtype is None or not entry.dtype.is_floating_point or not piece:
        return 0.0
    return tensor_cost(reg, name, torch.frombuffer(piece, dtype=entry.dtype))


def checkpoint_regularizer(reg: RegularizerSpec) -> Regularizer:
    """``reg`` parsed; a :class:`~synbal.errors.RegularizerError` unless it is a sum of powers (the tensors
    no group touches are costed piece by piece, as powers)."""
    regularizer = parse_regularizer(reg)
    if regularizer.sum_of_powers is None:
        raise RegularizerError(f"out-of-core balancing and inspection take sums of powers (l2, l1, 1*l2+0.01*l1, "
                               f"...), not {reg!r}")
    return regularizer
