"""Balancing algorithms on a :class:`~synbal._problem.problem.BalanceProblem`.

``METHODS`` maps each method name to its solver ``(problem, reg, options) -> SolveResult``.
"""

from __future__ import annotations

from collections.abc import Callable

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import RegularizerError, SynbalError

__all__ = ["METHODS", "HistoryEntry", "SolveOptions", "SolveResult", "solve"]

Solver = Callable[[BalanceProblem, Regularizer, SolveOptions], SolveResult]
METHODS: dict[str, Solver] = {}


def register_method(name: str, solver: Solver) -> None:
    """Make ``solver`` available as ``balance(..., method=name)``."""
    METHODS[name] = solver


def solve(problem: BalanceProblem, reg: Regularizer, method: str, options: SolveOptions) -> SolveResult:
    """Run ``method`` on ``problem`` and return log-scales, convergence and history."""
    try:
        solver = METHODS[method]
    except KeyError:
        raise SynbalError(
            f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}"
        ) from None
    if not 0.0 < options.theta <= 1.0:
        raise SynbalError(f"theta must be in (0, 1], got {options.theta}")
    from synbal._problem.lpq import LpqRegularizer

    if isinstance(reg, LpqRegularizer) and method != "multiplicative" and not reg.reduces_to_lp:
        raise RegularizerError(
            f"regularizer {reg} is not additive: only method 'multiplicative' minimises it "
            "(other methods balance additive costs; use 'lP' for p = q)"
        )
    if options.tol <= 0 or options.max_sweeps < 1:
        raise SynbalError(f"tol must be > 0 and max_sweeps >= 1 (got {options.tol}, {options.max_sweeps})")
    return solver(problem, reg, options)


def _register_builtin() -> None:
    from synbal._solvers import exact, multiplicative, schedules

    register_method("exact", exact.solve_exact)
    register_method("multiplicative", multiplicative.solve_multiplicative)
    for name in schedules.SCHEDULES:
        register_method(name, schedules.make_solver(name))


_register_builtin()
