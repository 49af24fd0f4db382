"""Shared types of the balancing algorithms: options, history and results.

Every algorithm is a function ``(problem, reg, options) -> SolveResult`` working on log-scales
``u`` only. Convergence is judged on the *relative deficit* ``|IN − c·OUT| / (IN + c·OUT)`` of
the free units, never on changes of ``R``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["HistoryEntry", "SolveOptions", "SolveResult"]


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

    @property
    def sweeps(self) -> int:
        return self.history[-1].sweep if self.history else 0
