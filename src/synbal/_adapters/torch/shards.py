"""The local shards of an MLP sharded with FSDP2 (``fully_shard``): its groups and this rank's rows.

FSDP2 replaces every parameter by a ``DTensor`` sharded along dim 0 over a 1-D device mesh
(``torch.chunk`` sizes, so shards may be uneven or empty). A Linear weight ``(out, in)`` is
then split by *output units*: each rank holds complete rows, i.e. all incoming weights of some
units of the layer. :func:`local_discovery` describes the model's scalable groups exactly as
:func:`synbal._adapters.torch.plain_mlp.mlp_discovery` does for the unsharded model (built from a shape-only
copy on the ``meta`` device — no parameter is gathered), restricted to this rank's rows: costs
extracted from it are this rank's share of every unit's IN/OUT sums, and scales applied through
it touch only the local shards.

Accepted models: what the MLP fast path accepts (``nn.Sequential`` of ``Linear`` layers with
ReLU, LeakyReLU or Identity between them), where any module may have been passed to
``fully_shard``; FSDP's own forward hooks are allowed, any other hook or parametrization is not.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.nn.utils import parametrize

from synbal._adapters.torch.discovery import Discovery, ParamUse
from synbal.errors import ModelError

__all__ = ["LocalShards", "base_type", "is_sharded", "local_discovery"]


def is_sharded(model: object) -> bool:
    """Whether ``model`` is an ``nn.Module`` with a ``DTensor`` parameter (e.g. after ``fully_shard``)."""
    return isinstance(model, nn.Module) and any(isinstance(p, DTensor) for p in model.parameters())


def base_type(m: nn.Module) -> type:
    """The module's own class, seen through the subclass ``fully_shard`` swaps in (``FSDPLinear`` → ``Linear``)."""
    return next(c for c in type(m).__mro__ if not issubclass(c, FSDPModule))


def _fsdp_hooks(m: nn.Module) -> set[int]:
    """Ids of the forward hooks ``fully_shard`` registered on ``m`` (empty if it is not an FSDP module)."""
    if not isinstance(m, FSDPModule):
        return set()
    state = fully_shard.state(m)  # type: ignore[attr-defined]
    handles = (getattr(state, "_pre_forward_hook_handle", None), getattr(state, "_post_forward_hook_handle", None))
    return {h.id for h in handles if h is not None and isinstance(getattr(h, "id", None), int)}


def _check_plain(model: nn.Module) -> None:
    for name, m in model.named_modules():
        allowed = _fsdp_hooks(m)
        hooks = set(m._forward_hooks) | set(m._forward_pre_hooks)
        if hooks - allowed or m._backward_hooks or parametrize.is_parametrized(m):
            raise ModelError(f"module {name or 'the model'} ({base_type(m).__name__}) of a sharded model has hooks or "
                             "parametrizations of its own: synbal cannot tell what it computes")


def _skeleton(model: nn.Module) -> nn.Sequential:
    """A shape-only (``meta``) copy of a sharded MLP, with the module classes it was built from."""
    if base_type(model) is not nn.Sequential:
        raise ModelError(f"a sharded model can be balanced when it is an nn.Sequential of Linear layers and "
                         f"ReLU/LeakyReLU/Identity activations; got {base_type(model).__name__}")
    children: dict[str, nn.Module] = {}
    for name, m in model.named_children():
        kind = base_type(m)
        if kind is nn.Linear:
            w = m.weight
            assert isinstance(w, torch.Tensor)
            children[name] = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=m.bias is not None, device="meta",
                                       dtype=w.dtype)
        elif any(True for _ in m.parameters()):
            raise ModelError(f"layer {name} ({kind.__name__}) of a sharded model has parameters; only Linear "
                             "layers may (the sharded route balances plain MLPs)")
        else:
            children[name] = copy.deepcopy(m)
    return nn.Sequential(OrderedDict(children))


def _row_range(name: str, p: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The local shard of ``p`` and the global index of its first row."""
    if not isinstance(p, DTensor):
        return p.detach(), 0  # replicated: every row is local
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if p.device_mesh.ndim != 1 or tuple(p.placements) != (Shard(0),):
        raise ModelError(f"parameter {name} is placed as {tuple(p.placements)} on a {p.device_mesh.ndim}-D mesh; "
                         "balancing supports FSDP2's sharding along dim 0 on a 1-D mesh")
    local = p.to_local()
    shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    assert tuple(shape) == tuple(local.shape)
    return local.detach(), int(offset[0])


@dataclass
class LocalShards:
    """A sharded MLP's discovery restricted to this rank's rows, and the whole model's."""

    full: Discovery
    local: Discovery
    tensors: dict[str, torch.Tensor]  # local shards by parameter name (share memory with the model)
    mesh: object


def local_discovery(model: nn.Module) -> LocalShards:
    """The groups of a sharded MLP and this rank's part of every parameter's use (see the module docstring)."""
    from synbal._adapters.torch.plain_mlp import mlp_discovery

    _check_plain(model)
    full = mlp_discovery(_skeleton(model))
    if full is None:
        raise ModelError("a sharded model can be balanced when it is an nn.Sequential of Linear layers with "
                         "ReLU/LeakyReLU/Identity between them (the MLP fast path); this one is not")
    named = dict(model.named_parameters())
    meshes = [p.device_mesh for p in named.values() if isinstance(p, DTensor)]
    if not meshes or any(m != meshes[0] for m in meshes):
        raise ModelError("the parameters of a sharded model must all be DTensors on one device mesh")
    uses: dict[str, ParamUse] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, use in full.uses.items():
        local, start = _row_range(name, named[name])
        if local.shape[0] == 0:
            continue  # an empty shard (more ranks than rows): no costs here, nothing to scale
        rows = use.row[start : start + int(local.shape[0])]
        uses[name] = ParamUse(name, rows, use.col, use.bias, list(use.nodes))
        tensors[name] = local
    return LocalShards(full, replace(full, uses=uses, params=dict(tensors)), tensors, meshes[0])
