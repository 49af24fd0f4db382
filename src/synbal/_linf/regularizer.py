"""The max-norm (range) regularizer ``"linf"`` and its spelling.

``"linf"`` measures each unit by the *largest* magnitude among its incoming weights (``IN``)
and among its outgoing weights (``OUT``); the whole network by its largest weight. Biases are
always *scaled* with their unit (the function is preserved either way) but by default not
*counted*: post-training quantization keeps biases at 32 bits, so only the weights' ranges
matter. ``"linf+bias"`` counts each bias as an incoming weight (the convention of ``"lP"``,
whose ``p → ∞`` limit it then is).

>>> parse_linf("linf")
MaxNormRegularizer(include_bias=False)
>>> str(parse_linf("Linf + bias"))
'linf+bias'
>>> is_linf_spec("l2"), is_linf_spec("linf"), is_linf_spec("l∞")
(False, True, True)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal.errors import RegularizerError

if TYPE_CHECKING:
    from synbal._problem.problem import BalanceProblem

__all__ = ["LINF_METHODS", "MaxNormRegularizer", "is_linf_spec", "parse_linf"]

#: The methods that minimise the max-norm (:func:`synbal._linf.front.solve_max`).
LINF_METHODS = ("exact", "cyclic", "stochastic")

_SPEC = re.compile(r"^\s*(?:l\s*_?\s*(?:inf|∞)|max)\s*(?P<bias>\+\s*bias)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class MaxNormRegularizer(RegularizerBehaviour):
    """``max_w |w|``: per unit ``IN = max |incoming w|``, ``OUT = max |outgoing w|``.

    Not additive, so the usual solvers do not apply: it aggregates no costs
    (:meth:`aggregated` is ``None``) and :func:`synbal.balance` routes it to
    :mod:`synbal._linf.solve` (see :mod:`synbal._linf` for what is and is not unique).
    """

    include_bias: bool = False

    additive: ClassVar[bool] = False

    def methods(self) -> tuple[str, ...]:
        return LINF_METHODS

    def _method_refusal(self, method: str, allowed: tuple[str, ...]) -> str:
        return f"method {method!r} does not minimise the max-norm; use one of {', '.join(allowed)}"

    def aggregated(self) -> None:
        """No additive costs: the max-norm has its own extraction (:func:`synbal._linf.front.max_problem`)."""
        return None

    def objective(self, problem: BalanceProblem) -> Callable[[np.ndarray], float]:
        raise RegularizerError("the max-norm is measured on its pair graph (synbal._linf), not on additive costs")

    def stationarity(self, problem: BalanceProblem, u: np.ndarray) -> float:
        raise RegularizerError("the max-norm is measured on its pair graph (synbal._linf), not on additive costs")

    def cost(self, x: np.ndarray | float) -> np.ndarray:
        """Elementwise ``|x|`` (combined by ``max``, not by a sum)."""
        return np.abs(np.asarray(x, dtype=np.float64))

    def __str__(self) -> str:
        return "linf+bias" if self.include_bias else "linf"


def is_linf_spec(spec: str) -> bool:
    """Whether a regularizer string names the max-norm (``linf``, ``l∞``, ``max``, ``+bias``)."""
    return _SPEC.match(spec) is not None


def parse_linf(spec: str) -> MaxNormRegularizer:
    """Parse ``"linf"`` / ``"l∞"`` / ``"max"``, optionally suffixed ``"+bias"``."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    if m is None:
        raise RegularizerError(f"cannot parse max-norm regularizer {spec!r}; expected 'linf' or 'linf+bias'")
    return MaxNormRegularizer(include_bias=bool(m.group("bias")))
