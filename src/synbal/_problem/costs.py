"""What an adapter aggregates for a regularizer: the one place that dispatches on its kind.

A regularizer's per-weight costs are of one of two shapes: a sum of powers
``Σ_k coef_k |w|^{p_k}`` (the power regularizers, and the ℓ_{p,q} norm, whose rows an adapter
aggregates as ``|w|^p``) or a custom increasing cost ``g`` with derivative ``dg``; the max-norm
has none (it is balanced on its own pair graph, :mod:`synbal._linf`).

An adapter states how it builds a problem from each shape by implementing :class:`CostSink`,
and calls :meth:`~synbal._problem.regularizer_base.RegularizerBehaviour.costs_for`: the
regularizer picks the sink's method (double dispatch). No adapter asks which regularizer it
holds, so a new regularizer kind whose costs take one of these shapes touches only
:mod:`synbal._problem`; one without per-weight costs gets the typed refusal of
:meth:`~synbal._problem.regularizer_base.RegularizerBehaviour.costs_for`, naming the
regularizer and :attr:`CostSink.where`.

>>> from synbal._problem.regularizers import parse_regularizer
>>> class Describe:
...     where = "a listing"
...     def power_costs(self, terms): return [(t.coef, t.power) for t in terms]
...     def custom_costs(self, g, dg): return "custom"
>>> parse_regularizer("l2+0.5*l1").costs_for(Describe()), parse_regularizer("l1,inf").costs_for(Describe())
([(1.0, 2.0), (0.5, 1.0)], [(1.0, 1.0)])
>>> parse_regularizer("linf").costs_for(Describe())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
synbal.errors.RegularizerError: cannot use regularizer linf on a listing: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np

__all__ = ["CostFunction", "CostSink", "PowerTerm"]

#: A vectorised per-weight cost (or its derivative) of the magnitudes ``|w|``.
CostFunction = Callable[[np.ndarray], np.ndarray]

T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class PowerTerm:
    """One term ``coef · |w|^power`` of a sum of powers."""

    coef: float
    power: float


class CostSink(Protocol[T_co]):
    """How an adapter builds its problem from each shape of per-weight costs."""

    @property
    def where(self) -> str:
        """What the costs are of, for refusals (e.g. ``"a PyTorch model"``)."""
        ...

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> T_co:
        """The problem of the costs ``Σ_k coef_k |w|^{p_k}`` (``terms`` sorted by decreasing power)."""
        ...

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> T_co:
        """The problem of the costs ``g(|w|)`` (``dg`` its derivative), both vectorised."""
        ...
