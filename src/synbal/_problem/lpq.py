"""The ℓ_{p,q} norm of a network's weights, and its ``"lP,Q"`` spelling.

For each non-input unit ``k`` let ``S_k = Σ_{j→k} |w_kj|^p`` be the ``p``-th power of the ℓp norm
of its incoming weights (its bias included only on request). The entrywise ℓ_{p,q} norm
combines these per-unit norms by an ℓq norm::

    ‖W‖_{p,q} = ( Σ_k S_k^{q/p} )^{1/q}          (q < ∞)
    ‖W‖_{p,∞} = max_k S_k^{1/p}                  (the max-norm)

``p = q`` gives the plain entrywise ℓp norm (``Σ|w|^p = ‖W‖_{p,p}^p``, the ``"lP"``
regularizer). Rescaling hidden units changes the ``S_k`` but not the network's function; the
``multiplicative`` method (:mod:`synbal._solvers.multiplicative`) finds the rescaling of
minimal ℓ_{p,q} norm.

Adapters see this regularizer as the single power ``p`` (:attr:`LpqRegularizer.terms`): they
aggregate ``|w|^p`` exactly as for ``"lP"`` (bias blocks marked ``bias=True``, rows of fixed
units identified across blocks by ``fixed_ids``), and the algorithm combines the rows per unit.

>>> reg = parse_lpq("l2,1")
>>> reg.p, reg.q, reg.include_bias, str(reg)
(2.0, 1.0, False, 'l2,1')
>>> parse_lpq("L1,inf+bias")
LpqRegularizer(p=1.0, q=inf, include_bias=True)
>>> float(reg.norm_from_unit_costs(np.array([9.0, 16.0])))  # 3 + 4
7.0
>>> float(parse_lpq("l2,inf").norm_from_unit_costs(np.array([9.0, 16.0])))
4.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np

from synbal._problem.powers import PowerRegularizer, PowerTerm
from synbal._problem.regularizer_base import RegularizerBehaviour
from synbal._problem.unit_norms import max_stationarity, norm_at
from synbal.errors import RegularizerError

if TYPE_CHECKING:
    from synbal._problem.costs import CostSink
    from synbal._problem.problem import BalanceProblem

__all__ = ["LpqRegularizer", "is_lpq_spec", "parse_lpq"]

T = TypeVar("T")

_SPEC = re.compile(
    r"^\s*[lL](?P<p>[0-9.eE+-]+?)\s*,\s*(?P<q>inf|Inf|INF|∞|[0-9.eE+-]+?)\s*(?P<bias>\+\s*bias)?\s*$"
)


@dataclass(frozen=True)
class LpqRegularizer(RegularizerBehaviour):
    """``‖W‖_{p,q}``: per-unit ℓp norms of incoming weights, combined by an ℓq norm.

    ``p`` is finite and ``> 0``; ``q > 0`` or ``math.inf`` (max-norm). ``include_bias`` counts
    each unit's bias among its incoming weights (biases are always *scaled*, so the function
    is preserved either way; this only decides whether they are *penalised*).
    """

    p: float
    q: float
    include_bias: bool = False

    additive: ClassVar[bool] = False
    default_method: ClassVar[str] = "multiplicative"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.p) and self.p > 0):
            raise RegularizerError(f"ℓ_{{p,q}} regularizer: p must be a finite number > 0, got p={self.p}")
        if math.isnan(self.q) or self.q <= 0:
            raise RegularizerError(f"ℓ_{{p,q}} regularizer: q must be > 0 or inf, got q={self.q}")

    @property
    def terms(self) -> tuple[PowerTerm, ...]:
        """The single power term ``|w|^p`` adapters aggregate (as for ``"lP"``)."""
        return (PowerTerm(1.0, float(self.p)),)

    @property
    def powers(self) -> tuple[float, ...]:
        return (float(self.p),)

    @property
    def single_power(self) -> float:
        """The power ``p`` adapters aggregate."""
        return float(self.p)

    @property
    def is_max_norm(self) -> bool:
        return math.isinf(self.q)

    @property
    def reduces_to_lp(self) -> bool:
        """``p = q`` with biases penalised: exactly the ``"lP"`` problem (``‖W‖^p = Σ|w|^p``)."""
        return self.p == self.q and self.include_bias

    @property
    def per_unit(self) -> bool:
        """The norm combines per-unit sums (unless it reduces to ``"lP"``)."""
        return not self.reduces_to_lp

    @classmethod
    def of(cls, reg: object) -> LpqRegularizer | None:
        """The ℓ_{p,q} regularizer behind ``reg``: itself, ``"lP"`` as ``ℓ_{p,p}`` with biases, else ``None``.

        >>> LpqRegularizer.of(PowerRegularizer((PowerTerm(1.0, 2.0),)))
        LpqRegularizer(p=2.0, q=2.0, include_bias=True)
        """
        if isinstance(reg, cls):
            return reg
        p = getattr(reg, "single_power", None)  # a power regularizer of one term
        return None if p is None else cls(p, p, include_bias=True)

    def methods(self) -> tuple[str, ...] | None:
        return None if self.reduces_to_lp else ("multiplicative",)

    def _method_refusal(self, method: str, allowed: tuple[str, ...]) -> str:
        return (f"regularizer {self} is not additive: only method 'multiplicative' minimises it "
                "(other methods balance additive costs; use 'lP' for p = q)")

    def aggregated(self) -> PowerRegularizer:
        """Adapters aggregate ``|w|^p`` (as for ``"lP"``); the solver combines the rows per unit."""
        return PowerRegularizer(self.terms)

    def costs_for(self, sink: CostSink[T]) -> T:
        """Adapters aggregate ``|w|^p`` (its per-unit rows; :attr:`sum_of_powers` stays ``None``: ``R`` is a norm)."""
        return sink.power_costs(self.terms)

    def objective(self, problem: BalanceProblem) -> Callable[[np.ndarray], float]:
        """``‖W‖_{p,q}`` at ``u`` (``Σ|w|^p`` when it reduces to ``"lP"``)."""
        if self.reduces_to_lp:
            return problem.value
        return lambda u: norm_at(problem, self, u)

    def stationarity(self, problem: BalanceProblem, u: np.ndarray) -> float:
        """The weighted balance residual of the multiplicative update (0 at the minimum)."""
        return max_stationarity(problem, self, u)

    def cost(self, x: np.ndarray | float) -> np.ndarray:
        """Elementwise per-weight cost ``|x|^p`` (summed per unit into ``S_k``)."""
        return np.abs(np.asarray(x, dtype=np.float64)) ** self.p

    def norm_from_unit_costs(self, unit_costs: np.ndarray) -> float:
        """``‖W‖_{p,q}`` from the per-unit sums ``S_k = Σ_{j→k} |w_kj|^p`` (zeros allowed).

        Computed relative to the largest ``S`` so that large ``q/p`` does not overflow.
        """
        s = np.asarray(unit_costs, dtype=np.float64)
        if np.any(s < 0) or not np.all(np.isfinite(s)):
            raise RegularizerError("per-unit costs of an ℓ_{p,q} norm must be finite and >= 0")
        s = s[s > 0]
        if s.size == 0:
            return 0.0
        top = np.float64(s.max())  # numpy powers give inf past float64 (Python floats raise OverflowError)
        with np.errstate(over="ignore"):
            if self.is_max_norm:
                return float(top ** (1.0 / self.p))
            total = np.float64(np.sum((s / top) ** (self.q / self.p)))  # in [1, len(s)]: no overflow
            return float(top ** (1.0 / self.p) * total ** (1.0 / self.q))

    def __str__(self) -> str:
        q = "inf" if self.is_max_norm else f"{self.q:g}"
        return f"l{self.p:g},{q}" + ("+bias" if self.include_bias else "")


def is_lpq_spec(spec: str) -> bool:
    """Whether a regularizer string is of the ℓ_{p,q} kind (it contains a comma)."""
    return "," in spec


def parse_lpq(spec: str, *, include_bias: bool | None = None) -> LpqRegularizer:
    """Parse ``"lP,Q"`` (``Q`` a number or ``inf``), optionally suffixed ``"+bias"``.

    ``include_bias`` overrides the suffix when given. Raises
    :class:`~synbal.errors.RegularizerError` naming the bad string.

    >>> parse_lpq("l2,4")
    LpqRegularizer(p=2.0, q=4.0, include_bias=False)
    >>> parse_lpq("l2 , 1", include_bias=True).include_bias
    True
    >>> parse_lpq("l2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.RegularizerError: cannot parse ℓ_{p,q} regularizer 'l2'; expected e.g. 'l2,1', ...
    """
    if not isinstance(spec, str):
        raise RegularizerError(f"ℓ_{{p,q}} regularizer must be a string such as 'l2,1', got {spec!r}")
    m = _SPEC.match(spec)
    if m is None:
        raise RegularizerError(
            f"cannot parse ℓ_{{p,q}} regularizer {spec!r}; expected e.g. 'l2,1', 'l1,inf' or 'l2,1+bias'"
        )
    q_text = m.group("q")
    try:
        p = float(m.group("p"))
        q = math.inf if q_text.lower() in ("inf", "∞") else float(q_text)
    except ValueError as exc:
        raise RegularizerError(f"cannot parse ℓ_{{p,q}} regularizer {spec!r}") from exc
    bias = bool(m.group("bias")) if include_bias is None else include_bias
    try:
        return LpqRegularizer(p, q, bias)
    except RegularizerError as exc:
        raise RegularizerError(f"regularizer {spec!r}: {exc}") from None
