"""The local shards of a model sharded with FSDP2 (``fully_shard``): its groups and this rank's rows.

FSDP2 replaces every parameter by a ``DTensor`` sharded along dim 0 over a 1-D device mesh
(``torch.chunk`` sizes, so shards may be uneven or empty). A Linear weight ``(out, in)`` or a
convolution weight ``(out, in, kh, kw)`` is then split by *output units*: each rank holds
complete rows, i.e. all incoming weights of some units (channels) of the layer; a 1-D parameter
(bias, BatchNorm's affine) holds the same units' entries. :func:`local_discovery` describes the
model's scalable groups exactly as discovery does for the unsharded model — built from a
shape-only copy on the ``meta`` device, so no parameter is gathered — restricted to this rank's
rows: costs extracted from it are this rank's share of every unit's IN/OUT sums, and scales
applied through it touch only the local shards.

Plain MLPs (``nn.Sequential`` of ``Linear`` layers with ReLU, LeakyReLU or Identity between
them) take the MLP fast path and need no inputs; any other model (convolutions, BatchNorm in eval
mode, residual connections, …) is traced on its meta copy with ``example_inputs`` (shapes only)
and is accepted exactly when the unsharded model would be: an operation discovery does not
understand raises :class:`~synbal.errors.ModelError` or
:class:`~synbal.errors.UnsupportedOperationError`. Any module may have been passed to
``fully_shard``; FSDP's own forward hooks are allowed, any other hook or parametrization is not,
and every parameter must be a ``DTensor`` sharded along dim 0 (a replicated parameter's costs
would be counted once per rank).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, Shard
from torch.nn.utils import parametrize

from synbal._adapters.torch.discovery import Discovery, ParamUse
from synbal.errors import ModelError

__all__ = ["LocalShards", "base_type", "is_sharded", "is_sharded_mlp", "local_discovery", "meta_copy"]


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


def _skeleton(model: nn.Module) -> nn.Sequential | None:
    """A shape-only (``meta``) copy of a sharded plain MLP (``None``: not one; see the module docstring)."""
    if base_type(model) is not nn.Sequential:
        return None
    children: dict[str, nn.Module] = {}
    for name, m in model.named_children():
        kind = base_type(m)
        if kind is nn.Linear:
            w = m.weight
            assert isinstance(w, torch.Tensor)
            children[name] = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=m.bias is not None, device="meta",
                                       dtype=w.dtype)
        elif any(True for _ in m.parameters()):
            return None
        else:
            children[name] = copy.deepcopy(m)
    return nn.Sequential(OrderedDict(children))


def meta_copy(m: nn.Module) -> nn.Module:
    """A copy of ``m`` with its own classes (not FSDP's subclasses), no hooks, and every parameter and
    buffer replaced by an empty ``meta`` tensor of its global shape: it runs shapes only, holds no data.

    >>> copy_ = meta_copy(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)))
    >>> copy_[0].weight.device.type, tuple(copy_[0].weight.shape), copy_[1].running_var.device.type
    ('meta', (4, 1, 3, 3), 'meta')
    """
    new = cast(nn.Module, object.__new__(base_type(m)))
    new.__dict__.update(m.__dict__)
    new._parameters = {name: None if p is None else nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"),
                                                                 requires_grad=p.requires_grad)
                       for name, p in m._parameters.items()}
    new._buffers = {name: None if b is None else torch.empty(b.shape, dtype=b.dtype, device="meta")
                    for name, b in m._buffers.items()}
    new._modules = {name: None if c is None else meta_copy(c) for name, c in m._modules.items()}
    for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
                  "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                  "_load_state_dict_post_hooks"):
        if hooks in m.__dict__:
            setattr(new, hooks, OrderedDict())
    return new


def is_sharded_mlp(model: nn.Module) -> bool:
    """Whether a sharded model is a plain MLP (the fast path: no example inputs needed)."""
    from synbal._adapters.torch.plain_mlp import mlp_discovery

    skeleton = _skeleton(model)
    return skeleton is not None and mlp_discovery(skeleton) is not None


def _full_discovery(model: nn.Module, example_inputs: Any) -> Discovery:
    """The whole model's discovery, from its meta copy (the MLP fast path where it applies)."""
    from synbal._adapters.torch.discovery import discover
    from synbal._adapters.torch.plain_mlp import mlp_discovery

    skeleton = _skeleton(model)
    found = mlp_discovery(skeleton) if skeleton is not None else None
    if found is not None:
        return found
    if example_inputs is None:
        raise ModelError(f"a sharded {base_type(model).__name__} that is not a plain MLP is traced on a shape-only "
                         "copy: pass example_inputs (their shapes are all that is used)")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    meta = tuple(x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs)
    return discover(meta_copy(model), meta)


def _row_range(name: str, p: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The local shard of ``p`` and the global index of its first row."""
    assert isinstance(p, DTensor)  # plain tensors are refused by local_discovery
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
    """A sharded model's discovery restricted to this rank's rows, and the whole model's."""

    full: Discovery
    local: Discovery
    tensors: dict[str, torch.Tensor]  # local shards by parameter name (share memory with the model)
    mesh: object


def _local_rows(a: np.ndarray, start: int, rows: int) -> np.ndarray:
    """This rank's rows of a slot array that broadcasts to a parameter (one row: the same for all)."""
    return a if a.ndim == 0 or a.shape[0] == 1 else a[start : start + rows]


def local_discovery(model: nn.Module, example_inputs: Any = None) -> LocalShards:
    """The groups of a sharded model and this rank's part of every parameter's use (see the module docstring)."""
    _check_plain(model)
    full = _full_discovery(model, example_inputs)
    named = dict(model.named_parameters())
    replicated = sorted(n for n, p in named.items() if not isinstance(p, DTensor))
    if replicated:
        raise ModelError(f"parameter(s) {', '.join(replicated)} of a sharded model are not sharded (plain tensors): "
                         "every rank would count their costs; pass every module with parameters to fully_shard")
    meshes = [p.device_mesh for p in named.values() if isinstance(p, DTensor)]
    if not meshes or any(m != meshes[0] for m in meshes):
        raise ModelError("the parameters of a sharded model must all be DTensors on one device mesh")
    uses: dict[str, ParamUse] = {}
    tensors: dict[str, torch.Tensor] = {}
    params: dict[str, torch.Tensor] = {}
    for name in full.params:
        local, start = _row_range(name, named[name])
        params[name] = local
        use = full.uses.get(name)
        if use is None or local.shape[0] == 0:
            continue  # unused (a fixed cost), or an empty shard (more ranks than rows): nothing to scale
        rows = int(local.shape[0])
        uses[name] = ParamUse(name, _local_rows(use.row, start, rows), _local_rows(use.col, start, rows), use.bias,
                              list(use.nodes))
        tensors[name] = local
    return LocalShards(full, replace(full, uses=uses, params=params), tensors, meshes[0])
