"""PyTorch support: find every rescaling symmetry of an ``nn.Module`` and balance it.

Importing :mod:`synbal.torch` (done for you by :func:`synbal.balance` when it meets a torch
object) registers the PyTorch adapter, so ``synbal.balance(model, reg, method,
example_inputs=...)`` and ``synbal.deficit(model, ...)`` work on models. The implementation
lives in ``synbal._adapters.torch`` beside the graph and dense adapters; this module is its
public face.

>>> import torch, synbal
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> len(synbal.torch.inspect(model, torch.zeros(1, 3)).groups)
4
"""

from __future__ import annotations

from synbal._adapters.torch import (
    Discovery,
    GroupInfo,
    ModelInspection,
    TorchAdapter,
    discover,
    fold_batchnorm,
    inspect,
)
from synbal._adapters.torch.checkpoint_inspect import CheckpointInspection, inspect_checkpoint
from synbal._adapters.torch.files import LoadedModel, load_exported
from synbal._adapters.torch.locally_connected import LocallyConnected2d
from synbal._adapters.torch.out_of_core import CheckpointReport, balance_checkpoint

__all__ = [
    "CheckpointInspection",
    "CheckpointReport",
    "Discovery",
    "GroupInfo",
    "LoadedModel",
    "LocallyConnected2d",
    "ModelInspection",
    "TorchAdapter",
    "balance_checkpoint",
    "discover",
    "fold_batchnorm",
    "inspect",
    "inspect_checkpoint",
    "load_exported",
]
