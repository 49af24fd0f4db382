"""synbal — neural synaptic balance.

Balance networks of positively homogeneous units (BiLU, BiPU) for any additive regularizer,
measure their balance, and reproduce the papers' simulations.

>>> import synbal
>>> sorted(synbal.algorithms.METHODS)[:3]
['alternating', 'cyclic', 'exact']
"""

from __future__ import annotations

from typing import Any

from synbal import algorithms, errors
from synbal.api import BalanceResult, balance, deficit
from synbal.errors import SynbalError
from synbal.metrics import DeficitReport
from synbal.regularizers import CustomRegularizer, PowerRegularizer, parse_regularizer

__version__ = "0.1.0"

__all__ = [
    "BalanceResult",
    "CustomRegularizer",
    "DeficitReport",
    "DenseNet",
    "Graph",
    "PowerRegularizer",
    "SynbalError",
    "__version__",
    "algorithms",
    "balance",
    "deficit",
    "errors",
    "inspect",
    "parse_regularizer",
]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `import synbal` stays light (PyTorch is loaded only when a
    # model is balanced or inspected).
    if name == "DenseNet":
        from synbal.dense import DenseNet

        return DenseNet
    if name == "Graph":
        from synbal.graph import Graph

        return Graph
    if name == "inspect":
        from synbal.torch import inspect

        return inspect
    raise AttributeError(f"module 'synbal' has no attribute {name!r}")
