"""Which adapter balances a model under ``torch.distributed``.

* ``DistributedDataParallel`` (replicated parameters) → :class:`~synbal._adapters.torch.replicated.ReplicatedAdapter`:
  rank 0 solves, every rank applies the broadcast log-scales to its ``.module``.
* a model with ``DTensor`` parameters (FSDP2's ``fully_shard``) →
  :class:`~synbal._adapters.torch.sharded.ShardedAdapter`: partial sums, one all-reduce per balancing
  step, scales applied to the local shards.

Both take an extra adapter option ``timeout`` (seconds each collective may wait, see
:class:`~synbal._adapters.torch.collective.Collective`). Nothing here is imported unless a model needs it:
a model can only hold ``DTensor`` parameters once ``torch.distributed.tensor`` is imported.

>>> import torch
>>> is_distributed(torch.nn.Linear(2, 2))
False
"""

from __future__ import annotations

import sys
from typing import Any

from torch import nn

__all__ = ["distributed_adapter", "is_distributed", "unwrapped_mlp_route"]


def _sharded(model: nn.Module) -> bool:
    if "torch.distributed.tensor" not in sys.modules:
        return False
    from synbal._adapters.torch.shards import is_sharded

    return is_sharded(model)


def is_distributed(model: nn.Module) -> bool:
    """Whether ``model`` is wrapped in ``DistributedDataParallel`` or has sharded (``DTensor``) parameters."""
    from synbal._adapters.torch.replicated import is_replicated

    return is_replicated(model) or _sharded(model)


def distributed_adapter(model: nn.Module, **options: Any) -> Any:
    """The adapter of a replicated or sharded model (see the module docstring)."""
    from synbal._adapters.torch.replicated import ReplicatedAdapter, is_replicated

    if is_replicated(model):
        return ReplicatedAdapter(model, **options)
    from synbal._adapters.torch.sharded import ShardedAdapter

    return ShardedAdapter(model, **options)


def unwrapped_mlp_route(model: nn.Module) -> bool:
    """Whether a distributed model balances without tracing (so without example inputs): a DDP-wrapped or
    sharded plain MLP. Other sharded models are traced on a shape-only copy."""
    from synbal._adapters.torch.plain_mlp import mlp_discovery
    from synbal._adapters.torch.replicated import is_replicated

    if is_replicated(model):
        return mlp_discovery(model.module) is not None  # type: ignore[arg-type]
    if not _sharded(model):
        return False
    from synbal._adapters.torch.shards import is_sharded_mlp

    return is_sharded_mlp(model)
