"""Example networks shipped with synbal (JSON files in the ``synbal.graph/1`` format).

* ``issue_example`` — the format's reference example: a ReLU unit with a self-loop and a bias,
  plus a BiLU, a BiPU and a tanh unit with no connections (reported as dead / excluded).
* ``recurrent_mixed`` — a small recurrent network with mixed activations (ReLU, leaky ReLU,
  |x|, BiPU of degrees 2 and 0.5, tanh), self-loops, cycles, skip edges and biases, with
  weights spanning several orders of magnitude: the README's main example.
* ``layered`` — a 3-4-4-2 ReLU multilayer perceptron with biases (``layer``/``tied`` schedules).

>>> from synbal.examples import example_names, load_example
>>> example_names()
['issue_example', 'layered', 'recurrent_mixed']
>>> load_example("recurrent_mixed").is_recurrent
True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from synbal.errors import SynbalError

if TYPE_CHECKING:
    from synbal._adapters.graph import Graph

__all__ = ["example_names", "example_path", "load_example"]


def example_names() -> list[str]:
    """Names of the shipped example networks."""
    root = resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def example_path(name: str) -> Path:
    """The file of example ``name`` (e.g. to pass to ``synbal balance``)."""
    if name not in example_names():
        raise SynbalError(f"unknown example {name!r}; available: {', '.join(example_names())}")
    return Path(str(resources.files(__name__).joinpath(f"{name}.json")))


def load_example(name: str) -> Graph:
    """Load example ``name`` as a :class:`~synbal._adapters.graph.Graph`."""
    from synbal._adapters.graph import Graph

    return Graph.load(example_path(name))
