"""synbal — neural synaptic balance.

Balance networks of positively homogeneous units (BiLU, BiPU) for any additive regularizer,
measure their balance, and reproduce the papers' simulations.

>>> import synbal
>>> sorted(synbal.METHODS)[:3]
['alternating', 'cyclic', 'exact']
"""

from __future__ import annotations

from typing import Any

from synbal import errors
from synbal._front import BalanceResult, balance, deficit
from synbal._problem.metrics import DeficitReport
from synbal._problem.regularizers import CustomRegularizer, PowerRegularizer, parse_regularizer
from synbal._solvers import METHODS
from synbal.errors import SynbalError

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "BalanceResult",
    "CustomRegularizer",
    "DeficitReport",
    "DenseNet",
    "Graph",
    "PowerRegularizer",
    "SynbalError",
    "__version__",
    "balance",
    "deficit",
    "errors",
    "inspect",
    "parse_regularizer",
]


_LAZY_PACKAGES = ("torch", "training", "data", "dynamics", "experiments", "quantize", "clip")


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import synbal` stays light (PyTorch is loaded only when a
    # model is balanced or inspected).
    if name == "DenseNet":
        from synbal._adapters.dense import DenseNet

        return DenseNet
    if name == "Graph":
        from synbal._adapters.graph import Graph

        return Graph
    if name == "inspect":
        from synbal._adapters.torch import inspect

        return inspect
    if name in _LAZY_PACKAGES:  # `import synbal; synbal.torch.inspect(...)` works without a second import
        import importlib

        return importlib.import_module(f"synbal.{name}")
    raise AttributeError(f"module 'synbal' has no attribute {name!r}")
