"""Regularizers: additive weight costs ``R(W) = Σ_w coef_w · g(|w|)``.

Two kinds cover the theory (besides the ℓ_{p,q} norm, :mod:`synbal._problem.lpq`, and the
max-norm, :mod:`synbal._linf.regularizer`); each carries its behaviour
(:class:`~synbal._problem.regularizer_base.RegularizerBehaviour`):

* :class:`PowerRegularizer` — weighted sums of powers ``Σ_k α_k |w|^{p_k}``, any ``p_k > 0``
  (``L2``, ``L1``, ``L0.5``, elastic net ``1*l2+0.01*l1``). Everything is closed form or a
  vectorised 1-D Newton step, and the global problem is convex in the log-scales.
* :class:`CustomRegularizer` — any increasing ``g`` with ``g(0) = 0`` and its derivative. The
  balanced state is unique when ``t ↦ g(e^t)`` is convex (true for every power and every sum of
  powers); synbal checks this numerically on a grid and warns when it fails.

>>> reg = parse_regularizer("1*l2+0.01*l1")
>>> [(t.coef, t.power) for t in reg.terms]
[(1.0, 2.0), (0.01, 1.0)]
>>> float(reg.cost(2.0))
4.02
>>> parse_regularizer("l0.5").terms[0].power
0.5
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from synbal._linf.regularizer import MaxNormRegularizer, is_linf_spec, parse_linf
from synbal._problem.lpq import LpqRegularizer, is_lpq_spec, parse_lpq
from synbal._problem.powers import PowerRegularizer, PowerTerm
from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal.errors import RegularizerError

if TYPE_CHECKING:
    from synbal._problem.costs import CostSink

__all__ = [
    "CustomRegularizer",
    "PowerRegularizer",
    "PowerTerm",
    "Regularizer",
    "RegularizerSpec",
    "parse_regularizer",
]

T = TypeVar("T")


@dataclass(frozen=True)
class CustomRegularizer(RegularizerBehaviour):
    """A user cost ``g`` with derivative ``dg`` (both vectorised over numpy arrays).

    ``g`` must be increasing on ``[0, ∞)`` with ``g(0) = 0``. Balancing a unit solves the 1-D
    convex problem ``min_t Σ_in g(|w| e^t) + Σ_out g(|w| e^{-c t})`` numerically; uniqueness of
    the global balanced state needs ``t ↦ g(e^t)`` convex.

    >>> CustomRegularizer(g=lambda x: np.log1p(x**2), dg=lambda x: 2*x/(1+x**2)).log_convex_on_grid()
    True
    >>> saturating = CustomRegularizer(g=lambda x: -np.expm1(-x), dg=lambda x: np.exp(-x))
    >>> saturating.log_convex_on_grid()  # balancing may then have several solutions
    False
    """

    g: Callable[[np.ndarray], np.ndarray]
    dg: Callable[[np.ndarray], np.ndarray]
    name: str = "custom"

    def costs_for(self, sink: CostSink[T]) -> T:
        """Adapters aggregate ``g(|w|)`` per weight."""
        return sink.custom_costs(self.g, self.dg)

    def cost(self, x: np.ndarray | float) -> np.ndarray:
        return np.asarray(self.g(np.abs(np.asarray(x, dtype=np.float64))), dtype=np.float64)

    def log_convex_on_grid(self, lo: float = -20.0, hi: float = 20.0, n: int = 401) -> bool:
        """Check numerically that ``t ↦ g(e^t)`` is convex on ``[lo, hi]`` (the uniqueness condition)."""
        t = np.linspace(lo, hi, n)
        x = np.exp(t)
        with np.errstate(over="ignore", invalid="ignore"):
            h = np.asarray(self.dg(x), dtype=np.float64) * x  # d/dt g(e^t)
        h = h[np.isfinite(h)]
        return bool(np.all(np.diff(h) >= -1e-12 * np.maximum(1.0, np.abs(h[1:]))))

    def __str__(self) -> str:
        return self.name


Regularizer = PowerRegularizer | CustomRegularizer | LpqRegularizer | MaxNormRegularizer
RegularizerSpec = str | Regularizer

_TERM = re.compile(r"^\s*(?:(?P<coef>[0-9.eE+-]+)\s*\*\s*)?[lL](?P<p>[0-9.eE+-]+)\s*$")


def parse_regularizer(spec: RegularizerSpec) -> Regularizer:
    """Turn ``"l2"``, ``"l0.5"``, ``"1*l2+0.01*l1"``, ``"linf"`` (or a regularizer object) into a regularizer.

    Raises :class:`~synbal.errors.RegularizerError` naming the bad term.

    >>> str(parse_regularizer("1*l2 + 0.01*l1")), str(parse_regularizer("l2,1")), str(parse_regularizer("linf"))
    ('l2+0.01*l1', 'l2,1', 'linf')
    """
    if isinstance(spec, RegularizerBehaviour):
        return spec  # every regularizer type carries the behaviour
    if not isinstance(spec, str):
        raise RegularizerError(f"regularizer must be a string such as 'l2', got {spec!r}")
    if is_linf_spec(spec):  # "linf", "linf+bias": the max-norm (synbal._linf)
        return parse_linf(spec)
    if is_lpq_spec(spec):  # "l2,1", "l1,inf": the ℓ_{p,q} norm (synbal._problem.lpq)
        return parse_lpq(spec)
    terms: dict[float, float] = {}
    for raw in re.split(r"(?<![eE])\+", spec.replace(" ", "")):
        m = _TERM.match(raw)
        if m is None:
            raise RegularizerError(
                f"cannot parse regularizer term {raw!r} in {spec!r}; expected e.g. 'l2' or '0.1*l1'"
            )
        try:
            p = float(m.group("p"))
            coef = float(m.group("coef")) if m.group("coef") else 1.0
        except ValueError as exc:
            raise RegularizerError(f"cannot parse regularizer term {raw!r} in {spec!r}") from exc
        if not (np.isfinite(p) and p > 0):
            raise RegularizerError(f"regularizer {spec!r}: power must be > 0, got p={p:g}")
        if not (np.isfinite(coef) and coef > 0):
            raise RegularizerError(f"regularizer {spec!r}: coefficient must be > 0, got {coef:g}")
        terms[p] = terms.get(p, 0.0) + coef
    return PowerRegularizer(tuple(PowerTerm(c, p) for p, c in sorted(terms.items(), reverse=True)))
