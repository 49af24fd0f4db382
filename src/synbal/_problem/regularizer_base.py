"""What every regularizer tells the rest of synbal, so that no caller needs to know its kind.

A regularizer says whether ``R`` is a sum of per-weight costs (:attr:`~RegularizerBehaviour.additive`),
and whether a sum of powers (:attr:`~RegularizerBehaviour.sum_of_powers`), what an adapter aggregates
for it (:meth:`~RegularizerBehaviour.aggregated`, built by :meth:`~RegularizerBehaviour.costs_for`:
adapters never ask which kind they hold, :mod:`synbal._problem.costs`), which methods can
minimise it (:meth:`~RegularizerBehaviour.check_method`, :attr:`~RegularizerBehaviour.default_method`),
its objective ``R(u)`` on a balance problem, and its stationarity test (0 when balanced). The
defaults here are those of the additive regularizers (powers and custom costs); the ℓ_{p,q}
norm (:mod:`synbal._problem.lpq`) and the max-norm (:mod:`synbal._linf.regularizer`) override them.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> from synbal._problem.regularizers import parse_regularizer
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]), CostBlock(2.0, [-1], [0], [[1.0]])])
>>> reg = parse_regularizer("l2")
>>> reg.objective(prob)(np.zeros(1)), reg.stationarity(prob, np.zeros(1)), reg.default_method
(5.0, 0.6, 'exact')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from synbal.errors import RegularizerError

if TYPE_CHECKING:
    from synbal._problem.costs import CostSink, PowerTerm
    from synbal._problem.problem import BalanceProblem

T = TypeVar("T")

__all__ = ["RegularizerBehaviour"]


class RegularizerBehaviour:
    """Behaviour shared by the regularizer types (a mixin of the frozen dataclasses)."""

    #: ``R`` is a sum of per-weight costs over the whole network, so a solver's recorded ``R``
    #: is ``R`` itself (the ℓ_{p,q} norm combines per-unit sums: it is not, even for ``p = q``).
    additive: ClassVar[bool] = True
    #: The method a caller that does not choose one uses (the weight-balancing flow).
    default_method: ClassVar[str] = "exact"

    @property
    def per_unit(self) -> bool:
        """Its value and deficits are a norm and stationarity of per-unit sums, not sums of IN/OUT costs."""
        return False

    def methods(self) -> tuple[str, ...] | None:
        """The methods that minimise this regularizer (``None``: every method)."""
        return None

    def check_method(self, method: str) -> None:
        """Raise :class:`~synbal.errors.RegularizerError` when ``method`` cannot minimise this regularizer."""
        allowed = self.methods()
        if allowed is not None and method not in allowed:
            raise RegularizerError(self._method_refusal(method, allowed))

    def _method_refusal(self, method: str, allowed: tuple[str, ...]) -> str:
        return f"method {method!r} does not minimise regularizer {self}; use one of {', '.join(allowed)}"

    def aggregated(self) -> Any:
        """The additive regularizer whose costs an adapter aggregates (``None``: no additive costs)."""
        return self

    def costs_for(self, sink: CostSink[T]) -> T:
        """``sink``'s problem built from this regularizer's per-weight costs (the adapters' one dispatch).

        Each kind with per-weight costs overrides it to call the sink's method for its shape; this
        default refuses with a :class:`~synbal.errors.RegularizerError` naming the regularizer and
        ``sink.where``.
        """
        raise RegularizerError(
            f"cannot use regularizer {self} on {sink.where}: it has no per-weight costs to aggregate")

    @property
    def sum_of_powers(self) -> tuple[PowerTerm, ...] | None:
        """``R`` itself as the terms of ``Σ_k coef_k Σ_w |w|^{p_k}``, or ``None`` when it is not one."""
        return None

    def objective(self, problem: BalanceProblem) -> Callable[[np.ndarray], float]:
        """``R(u)`` on ``problem`` (built from :meth:`aggregated`'s costs)."""
        return problem.value

    def stationarity(self, problem: BalanceProblem, u: np.ndarray) -> float:
        """The largest relative balance residual of the free units at ``u`` (0: balanced)."""
        return problem.max_relative_deficit(u)
