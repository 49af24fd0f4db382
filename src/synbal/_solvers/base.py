"""Shared types of the balancing algorithms: options, history and results.

Every algorithm is a function ``(problem, reg, options) -> SolveResult`` working on log-scales
``u`` only. Convergence is judged on the *relative deficit* ``|IN − c·OUT| / (IN + c·OUT)`` of
the free units, never on changes of ``R``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from synbal.errors import NumericRangeError

if TYPE_CHECKING:
    from synbal._problem.problem import BalanceProblem

__all__ = ["LOG_SCALE_LIMIT", "HistoryEntry", "SolveOptions", "SolveResult", "check_range"]

#: An iterate with some unit's log-scale beyond this (the source's scale, origin included) is
#: heading for a state float64 cannot hold (e^±745 ends its range): the solvers stop there.
LOG_SCALE_LIMIT = 800.0


def check_range(problem: BalanceProblem, u: np.ndarray) -> None:
    """Raise :class:`~synbal.errors.NumericRangeError` as soon as a scale leaves float64 for good."""
    total = u if problem.origin is None else problem.origin + u
    worst = float(np.max(np.abs(total), initial=0.0))
    if not worst <= LOG_SCALE_LIMIT:  # also NaN
        k = int(np.argmax(np.where(np.isfinite(total), np.abs(total), np.inf)))
        name = (problem.names or [])[k] if problem.names is not None else str(k)
        if np.isnan(total[k]):
            raise NumericRangeError(
                f"the log-scale of unit {name!r} became NaN on the way to the balanced state (its costs left "
                "the float64 range): that state cannot be computed in float64"
            )
        raise NumericRangeError(
            f"the scale of unit {name!r} passed e^{total[k]:.6g} on the way to the balanced state: "
            "that state cannot be represented in float64"
        )


@dataclass(frozen=True)
class HistoryEntry:
    """The state after one sweep (or one outer iteration of a solver)."""

    sweep: int
    regularizer: float
    max_relative_deficit: float

    def as_dict(self) -> dict[str, float]:
        return {
            "sweep": int(self.sweep),
            "regularizer": float(self.regularizer),
            "max_relative_deficit": float(self.max_relative_deficit),
        }


@dataclass
class SolveOptions:
    """Options common to every method.

    ``tol`` is the target max relative deficit; ``max_sweeps`` bounds the number of sweeps (a
    sweep = as many single-unit steps as there are free units, or one pass over all sets);
    ``theta`` in (0, 1] makes every step partial (``λ*^θ``); ``seed`` drives random orders;
    ``sets`` are the groups of the ``tied`` method (default: the problem's layers);
    ``callback(sweep, u)`` is called after each sweep.
    """

    tol: float = 1e-10
    max_sweeps: int = 10_000
    theta: float = 1.0
    seed: int | None = None
    sets: list[np.ndarray] | None = None
    closed_form: bool = False
    progress: bool = False
    callback: Callable[[int, np.ndarray], None] | None = None


@dataclass
class SolveResult:
    """Log-scales found, whether the tolerance was met, and the per-sweep history."""

    u: np.ndarray
    converged: bool
    history: list[HistoryEntry] = field(default_factory=list)
    steps: int = 0
    notes: list[str] = field(default_factory=list)  #: why the solver stopped, when it is worth saying

    @property
    def sweeps(self) -> int:
        return self.history[-1].sweep if self.history else 0
