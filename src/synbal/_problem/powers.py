"""Power regularizers ``R(W) = Σ_k α_k Σ_w |w|^{p_k}`` (``L2``, ``L1``, ``L0.5``, elastic net).

Everything is closed form or a 1-D Newton step, and the global problem is convex in the
log-scales. Spelled ``"l2"``, ``"1*l2+0.01*l1"`` (:func:`synbal._problem.regularizers.parse_regularizer`).

>>> PowerRegularizer((PowerTerm(1.0, 2.0), PowerTerm(0.01, 1.0))).cost(2.0).item()
4.02
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from synbal._problem.costs import CostSink, PowerTerm
from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal.errors import RegularizerError

__all__ = ["PowerRegularizer", "PowerTerm"]

T = TypeVar("T")


@dataclass(frozen=True)
class PowerRegularizer(RegularizerBehaviour):
    """``R(W) = Σ_k coef_k Σ_w |w|^{p_k}``; ``terms`` are sorted by power, merged, coef > 0.

    >>> reg = PowerRegularizer((PowerTerm(1.0, 2.0), PowerTerm(0.5, 1.0)))
    >>> str(reg), reg.powers, float(reg.cost(-2.0))
    ('l2+0.5*l1', (2.0, 1.0), 5.0)
    """

    terms: tuple[PowerTerm, ...]

    def __post_init__(self) -> None:
        if not self.terms:
            raise RegularizerError("a power regularizer needs at least one term")
        for t in self.terms:
            if not (np.isfinite(t.power) and t.power > 0):
                raise RegularizerError(f"power must be a finite number > 0, got p={t.power}")
            if not (np.isfinite(t.coef) and t.coef > 0):
                raise RegularizerError(f"coefficient must be a finite number > 0, got {t.coef}")

    @property
    def powers(self) -> tuple[float, ...]:
        return tuple(t.power for t in self.terms)

    @property
    def single_power(self) -> float | None:
        """``p`` when the regularizer is ``coef·Lp`` (closed forms apply), else ``None``."""
        return self.terms[0].power if len(self.terms) == 1 else None

    @property
    def sum_of_powers(self) -> tuple[PowerTerm, ...]:
        """``R`` is its terms."""
        return self.terms

    def costs_for(self, sink: CostSink[T]) -> T:
        """Adapters aggregate its terms."""
        return sink.power_costs(self.terms)

    def cost(self, x: np.ndarray | float) -> np.ndarray:
        """Elementwise ``g(|x|)``."""
        a = np.abs(np.asarray(x, dtype=np.float64))
        return sum((t.coef * a**t.power for t in self.terms), np.zeros_like(a))

    def __str__(self) -> str:
        parts = [f"{t.coef:g}*l{t.power:g}" if t.coef != 1 else f"l{t.power:g}" for t in self.terms]
        return "+".join(parts)
