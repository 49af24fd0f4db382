"""Random explicit networks (:class:`synbal.Graph`): non-layered, recurrent, mixed, BiPU.

Used by the ``uniqueness`` reproduction (Theorem 9.1 beyond layered nets) and by the property
tests (``tests/graph_factory.py`` re-exports it).

>>> g = random_graph(np.random.default_rng(0), recurrent=True, bipu=True)
>>> sorted({u.role for u in g.units}), g.is_recurrent
(['hidden', 'input', 'output'], True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synbal._adapters.graph import Graph, Unit

__all__ = ["BILU_SPECS", "BIPU_DEGREES", "NON_SCALABLE", "random_graph", "random_weights"]

BILU_SPECS: tuple[Any, ...] = ("relu", "leaky_relu", "abs", "linear")
BIPU_DEGREES = (0.5, 2.0, 3.0)
NON_SCALABLE = ("tanh", "sigmoid", "softplus", "gelu", "silu")


def _magnitudes(rng: np.random.Generator, size: int, weight_range: tuple[float, float]) -> np.ndarray:
    lo, hi = weight_range
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size=size))


def random_weights(rng: np.random.Generator, size: int, weight_range: tuple[float, float]) -> np.ndarray:
    """Log-uniform magnitudes in ``weight_range`` with random signs."""
    return _magnitudes(rng, size, weight_range) * rng.choice([-1.0, 1.0], size=size)


def _hidden_activation(rng: np.random.Generator, bipu: bool, mixed: bool) -> Any:
    r = rng.random()
    if mixed and r < 0.2:
        return str(rng.choice(NON_SCALABLE))
    if bipu and r > 0.65:
        return {
            "type": "bipu",
            "c": float(rng.choice(BIPU_DEGREES)),
            "C": float(rng.uniform(0.5, 1.5)),
            "D": float(rng.uniform(-1.0, 1.0)),
        }
    if r > 0.5:
        return {"type": "bilu", "a": float(rng.uniform(-1.0, 1.0)), "b": float(rng.uniform(0.2, 2.0))}
    return BILU_SPECS[int(rng.integers(len(BILU_SPECS)))]


def random_graph(
    rng: np.random.Generator,
    n_inputs: int = 3,
    n_hidden: int = 8,
    n_outputs: int = 2,
    p_edge: float = 0.3,
    *,
    recurrent: bool = False,
    bipu: bool = False,
    mixed: bool = False,
    bias: bool = True,
    weight_range: tuple[float, float] = (0.2, 2.0),
) -> Graph:
    """A random network with units ``x0..`` (inputs), ``h0..`` (hidden), ``y0..`` (outputs).

    Hidden units are visited in a random order; each edge ``input → hidden``, ``hidden →
    later hidden``, ``hidden → output`` and ``input → output`` exists with probability
    ``p_edge``, so the DAG is generally *not* layered (skip edges). ``recurrent=True`` adds
    backward hidden → hidden edges and self-loops with the same probability (cycles).
    Every hidden unit receives at least one edge from an input or an earlier hidden unit and
    sends at least one to an output or a later hidden unit, so (with ``mixed=False``) none is
    dead. Activations: BiLUs (``relu``, ``leaky_relu``, ``abs``, ``linear``, random
    ``bilu``), plus BiPUs of degree 0.5, 2 or 3 when ``bipu``, plus non-scalable ones
    (``tanh``, ``sigmoid``, ``softplus``, ``gelu``, ``silu``; about 20 %) when ``mixed``.
    With ``bias`` about half of the hidden and output units get a bias. Weight and bias
    magnitudes are log-uniform in ``weight_range`` with random signs.
    """
    order = rng.permutation(n_hidden)
    units = [Unit(f"x{k}", "input") for k in range(n_inputs)]
    units += [Unit(f"h{k}", "hidden", _hidden_activation(rng, bipu, mixed)) for k in range(n_hidden)]
    units += [Unit(f"y{k}", "output") for k in range(n_outputs)]
    hidden = [f"h{k}" for k in order]
    inputs = [f"x{k}" for k in range(n_inputs)]
    outputs = [f"y{k}" for k in range(n_outputs)]
    pairs: set[tuple[str, str]] = set()
    for pos, h in enumerate(hidden):
        sources = inputs + hidden[:pos]
        targets = hidden[pos + 1 :] + outputs
        pairs.update((s, h) for s in sources if rng.random() < p_edge)
        pairs.update((h, t) for t in targets if rng.random() < p_edge)
        pairs.add((sources[int(rng.integers(len(sources)))], h))
        pairs.add((h, targets[int(rng.integers(len(targets)))]))
        if recurrent:
            pairs.update((h, s) for s in hidden[: pos + 1] if rng.random() < p_edge)
    pairs.update((x, y) for x in inputs for y in outputs if rng.random() < p_edge)
    names = [u.name for u in units]
    ordered = sorted(pairs, key=lambda e: (names.index(e[0]), names.index(e[1])))
    weights = random_weights(rng, len(ordered), weight_range)
    edges = [(s, d, float(w)) for (s, d), w in zip(ordered, weights, strict=True)]
    biases: dict[str, float] = {}
    if bias:
        candidates = [f"h{k}" for k in range(n_hidden)] + outputs
        values = random_weights(rng, len(candidates), weight_range)
        biases = {n: float(v) for n, v in zip(candidates, values, strict=True) if rng.random() < 0.5}
    return Graph(units, edges, biases)
