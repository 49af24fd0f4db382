"""Random explicit networks (:class:`synbal.Graph`) for property tests.

``random_graph`` draws general networks — non-layered DAGs or recurrent graphs (cycles,
self-loops), mixed activations, BiPU units, biases; ``random_layered_graph`` dense MLPs;
``graph_seeds`` a hypothesis strategy of seeds; ``function_gap`` (re-exported from
:mod:`synbal._adapters.graph`). ``random_graph`` lives in :mod:`synbal.experiments._random_graphs` (the
``uniqueness`` reproduction uses it too). compares two networks' functions on the same inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from synbal._adapters.graph import Graph, function_gap
from synbal.experiments._random_graphs import (
    BILU_SPECS,
    BIPU_DEGREES,
    NON_SCALABLE,
    random_graph,
)
from synbal.experiments._random_graphs import random_weights as _weights

__all__ = [
    "BILU_SPECS",
    "BIPU_DEGREES",
    "NON_SCALABLE",
    "function_gap",
    "graph_seeds",
    "random_graph",
    "random_inputs",
    "random_layered_graph",
]


def random_layered_graph(
    rng: np.random.Generator,
    widths: list[int],
    bias: bool = True,
    *,
    activation: Any = "relu",
    weight_range: tuple[float, float] = (0.2, 2.0),
) -> Graph:
    """A dense layered net with layer sizes ``widths`` (first = inputs, last = outputs).

    Built with :meth:`Graph.from_layers` (units ``x*``, ``h{l}_*``, ``y*``); weights (and, with
    ``bias``, biases of every hidden and output unit) are log-uniform in ``weight_range`` with
    random signs.
    """
    mats = [
        _weights(rng, widths[k + 1] * widths[k], weight_range).reshape(widths[k + 1], widths[k])
        for k in range(len(widths) - 1)
    ]
    biases = [_weights(rng, w, weight_range) for w in widths[1:]] if bias else None
    return Graph.from_layers(mats, biases, activation)


def random_inputs(rng: np.random.Generator, graph: Graph, batch: int = 8) -> np.ndarray:
    """Standard-normal inputs of shape ``(batch, n_inputs)``."""
    return rng.standard_normal((batch, len(graph.inputs)))


def graph_seeds() -> st.SearchStrategy[int]:
    """Seeds for ``random_graph(np.random.default_rng(seed), ...)`` in hypothesis tests."""
    return st.integers(min_value=0, max_value=2**32 - 1)
