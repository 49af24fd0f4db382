"""What :func:`synbal.balance` returns: :class:`BalanceResult` (shared by the additive and max-norm fronts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbal._problem.problem import BalanceProblem
from synbal._solvers.base import HistoryEntry

__all__ = ["BalanceResult"]


@dataclass
class BalanceResult:
    """What :func:`balance` returns.

    ``net`` is the balanced network (same type as the input), ``scales`` the multiplier ``λ``
    of every scalable unit by name, ``converged`` whether the max relative deficit reached
    ``tol``, ``history`` one entry per sweep (regularizer and max relative deficit).
    With ``round_scales="pow2"`` the scales are powers of two: ``regularizer_after`` and
    ``max_relative_deficit`` are those of the rounded scales, and ``rounding_cost`` is what the
    rounding adds to ``R`` (relative to the unrounded optimum). ``notes`` says anything else worth
    knowing (no scalable units, which model ``R`` refers to, …).

    >>> import numpy as np, synbal
    >>> res = synbal.balance(synbal.Graph.from_layers([np.array([[4.0]]), np.array([[0.25]])]), "l2")
    >>> res.converged, res.regularizer_before, round(res.regularizer_after, 12), res.report()["units"]
    (True, 16.0625, 2.0, 1)
    """

    net: Any
    scales: dict[str, float]
    log_scales: np.ndarray
    converged: bool
    history: list[HistoryEntry]
    method: str
    regularizer: str
    regularizer_before: float
    regularizer_after: float
    max_relative_deficit: float
    seconds: float
    problem: BalanceProblem = field(repr=False)
    excluded: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    round_scales: str | None = None
    rounding_cost: float | None = None

    @property
    def sweeps(self) -> int:
        return self.history[-1].sweep if self.history else 0

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary (the CLI's ``--report``)."""
        return {
            "method": self.method,
            "regularizer": self.regularizer,
            "regularizer_before": self.regularizer_before,
            "regularizer_after": self.regularizer_after,
            "max_relative_deficit": self.max_relative_deficit,
            "converged": self.converged,
            "sweeps": self.sweeps,
            "seconds": self.seconds,
            "units": self.problem.n,
            "history": [h.as_dict() for h in self.history],
            "excluded": dict(self.excluded),
            "notes": list(self.notes),
            "round_scales": self.round_scales,
            "rounding_cost": self.rounding_cost,
        }
