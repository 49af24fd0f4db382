"""What a balancing method is: a name, the options it takes, and its solver.

Every method takes ``tol``, ``max_sweeps``, ``seed`` (deterministic methods ignore it: the
command line shares it with model initialisation) and ``progress``; beyond those it declares
which of ``theta``, ``sets`` and ``closed_form`` it takes. An option it does not take, given a
value other than its default, is an :class:`~synbal.errors.OptionError` naming the options it
does take. The registry of names is :data:`synbal._solvers.METHODS`.

>>> EXACT.options, EXACT.accepted()
((), ('tol', 'max_sweeps', 'seed', 'progress'))
>>> EXACT.check({"closed_form": True})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
synbal.errors.OptionError: method 'exact' does not take closed_form=True; it takes tol, max_sweeps, seed, progress
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from synbal._solvers.base import SolveOptions, SolveResult
from synbal._solvers.exact import solve_exact
from synbal._solvers.multiplicative import solve_multiplicative
from synbal.errors import OptionError

if TYPE_CHECKING:
    from synbal._problem.problem import BalanceProblem
    from synbal._problem.regularizers import Regularizer

__all__ = ["COMMON_OPTIONS", "EXACT", "MULTIPLICATIVE", "SPECIFIC_OPTIONS", "Method", "given_options"]

#: Options every method takes.
COMMON_OPTIONS = ("tol", "max_sweeps", "seed", "progress")
#: Options only some methods take, with the value that means "not given".
SPECIFIC_OPTIONS: dict[str, Any] = {"theta": 1.0, "sets": None, "closed_form": False}


def given_options(options: SolveOptions) -> dict[str, Any]:
    """The method-specific options of ``options`` by name."""
    return {name: getattr(options, name) for name in SPECIFIC_OPTIONS}


def _is_given(value: Any, default: Any) -> bool:
    """Whether ``value`` differs from the option's "not given" value (``None``, or a scalar)."""
    return value is not None if default is None else bool(value != default)


class Method:
    """A balancing method: subclasses set ``name``, ``summary``, ``options`` and implement :meth:`run`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()  # the SPECIFIC_OPTIONS it takes

    def accepted(self) -> tuple[str, ...]:
        """Every option this method takes."""
        return COMMON_OPTIONS + self.options

    def check(self, given: Mapping[str, Any]) -> None:
        """Raise :class:`~synbal.errors.OptionError` for a given option this method does not take."""
        for key, default in SPECIFIC_OPTIONS.items():
            value = given.get(key, default)
            if key not in self.options and _is_given(value, default):
                raise OptionError(
                    f"method {self.name!r} does not take {key}={value!r}; it takes {', '.join(self.accepted())}"
                )

    def run(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        """Log-scales, convergence and history of this method on ``problem``."""
        raise NotImplementedError

    def __call__(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        return self.run(problem, reg, options)

    def __repr__(self) -> str:
        return f"<method {self.name!r}>"


class _Exact(Method):
    name = "exact"
    summary = "straight to the unique balanced state (damped Newton / two-level)"

    def run(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        return solve_exact(problem, reg, options)


class _Multiplicative(Method):
    name = "multiplicative"
    summary = "parallel multiplicative updates for the ℓ_{p,q} norm"
    options = ("theta",)

    def run(self, problem: BalanceProblem, reg: Regularizer, options: SolveOptions) -> SolveResult:
        return solve_multiplicative(problem, reg, options)


EXACT: Method = _Exact()
MULTIPLICATIVE: Method = _Multiplicative()
