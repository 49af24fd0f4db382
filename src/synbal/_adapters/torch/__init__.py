"""The PyTorch adapter: discovery, extraction and apply for ``nn.Module`` sources.

Importing this package registers :class:`TorchAdapter` for ``torch.nn.Module`` sources, so
``synbal.balance(model, reg, method, example_inputs=...)`` and ``synbal.deficit(model, ...)``
work on models; :func:`inspect` prints the discovered groups. See
:mod:`synbal._adapters.torch.discovery` for the tracing choice and its limits.

>>> import torch, synbal
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> len(synbal.inspect(model, torch.zeros(1, 3)).groups)
4
"""

from __future__ import annotations

from torch import nn

from synbal._adapters.protocol import register_adapter
from synbal._adapters.torch.adapter import TorchAdapter
from synbal._adapters.torch.discovery import Discovery, discover
from synbal._adapters.torch.distributed import distributed_adapter, is_distributed
from synbal._adapters.torch.fold import fold_batchnorm
from synbal._adapters.torch.inspection import GroupInfo, ModelInspection, inspect

__all__ = ["Discovery", "GroupInfo", "ModelInspection", "TorchAdapter", "discover", "fold_batchnorm", "inspect"]

register_adapter(lambda s: isinstance(s, nn.Module) and is_distributed(s), distributed_adapter)  # DDP, FSDP2
register_adapter(lambda s: isinstance(s, nn.Module), TorchAdapter)
