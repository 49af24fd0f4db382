"""Balancing methods on a :class:`~synbal._problem.problem.BalanceProblem`.

``METHODS`` maps each method name to its :class:`~synbal._solvers.method.Method`: the options
it takes and its solver ``(problem, reg, options) -> SolveResult``.

>>> sorted(METHODS)
['alternating', 'cyclic', 'exact', 'layer', 'multiplicative', 'stochastic', 'tied']
>>> METHODS["tied"].accepted()
('tol', 'max_sweeps', 'seed', 'progress', 'theta', 'sets', 'closed_form')
"""

from __future__ import annotations

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal._solvers.method import EXACT, MULTIPLICATIVE, Method, given_options
from synbal._solvers.schedules import SCHEDULES
from synbal.errors import SynbalError

__all__ = ["METHODS", "HistoryEntry", "Method", "SolveOptions", "SolveResult", "method_named", "solve"]

METHODS: dict[str, Method] = {m.name: m for m in (EXACT, MULTIPLICATIVE, *SCHEDULES)}


def register_method(method: Method) -> None:
    """Make ``method`` available as ``balance(..., method=method.name)``."""
    METHODS[method.name] = method


def method_named(name: str) -> Method:
    """The registered method ``name``; a :class:`~synbal.errors.SynbalError` listing them otherwise."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise SynbalError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}") from None


def solve(problem: BalanceProblem, reg: Regularizer, method: str, options: SolveOptions) -> SolveResult:
    """Run ``method`` on ``problem`` and return log-scales, convergence and history."""
    solver = method_named(method)
    if not 0.0 < options.theta <= 1.0:
        raise SynbalError(f"theta must be in (0, 1], got {options.theta}")
    solver.check(given_options(options))
    reg.check_method(method)
    if options.tol <= 0 or options.max_sweeps < 1:
        raise SynbalError(f"tol must be > 0 and max_sweeps >= 1 (got {options.tol}, {options.max_sweeps})")
    return solver.run(problem, reg, options)
