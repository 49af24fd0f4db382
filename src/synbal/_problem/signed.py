"""Signed unit coefficients: units that scale some of their rows *down* (queries against keys).

Only ``q kᵀ`` reaches the softmax, so multiplying query dimension ``d`` (a row of ``W_Q`` and its
bias) by ``λ`` and key dimension ``d`` (a row of ``W_K`` and its bias) by ``1/λ`` changes nothing.
One unit ``u = log λ`` scales the ``W_Q`` rows up and the ``W_K`` rows down; both read columns that
may belong to other units (a norm gain ``j``). A :class:`~synbal._problem.problem.CostBlock` with
``row_sign = s ∈ {+1, −1}`` says that a weight from ``j`` to row ``i`` is multiplied by
``exp(s u_i − c_j u_j)``.

**Value, IN, OUT.** With ``a_e = s_e e_i − c_j e_j`` (``e_k`` the unit vectors, fixed units dropped)
each weight's cost is ``T_e(u) = A_e exp(p a_e·u)`` and ``R = Σ_e T_e``. The ``IN`` of a unit is the
cost of the weights it scales up (rows of sign +1), its ``OUT`` those it scales down (columns, with
their degree ``c``, and rows of sign −1); a unit with a row of sign −1 must have ``c = 1`` so that
both parts of ``OUT`` carry the same coefficient.

**Gradient.** ``∂R/∂u = Σ_e p T_e a_e``: at unit ``k`` the rows of sign +1 give ``p T``, those of
sign −1 ``−p T``, the columns ``−p c_k T``, so ``∂R/∂u_k = Σ_p p (IN_k − c_k OUT_k)`` exactly as
without signs, and "balanced" (``IN = c·OUT``) is still "stationary".

**Hessian.** ``∇²R = Σ_e p² T_e a_e a_eᵀ``: a sum of rank-one positive semidefinite terms, so ``R``
stays convex in ``u``. Its diagonal is ``Σ_p p² (IN + c² OUT)`` (``s² = 1``; a block of sign −1 never
joins a unit to itself), its off-diagonal entry for a weight ``j → i`` is ``−p² s_e c_j T_e`` — of
either sign, so it is no longer a grounded Laplacian. On a connected set of units that some weight
ties to a fixed unit no direction ``d ≠ 0`` has ``a_e·d = 0`` for every weight (``d_i = s c_j d_j``
along each weight propagates ``d = 0`` from the fixed unit), so the Hessian is positive definite
there and the minimiser is unique.

**Existence.** ``R`` has a minimiser iff no direction lowers one term and raises none, i.e. by
Stiemke's theorem iff a flow ``y > 0`` on every weight has ``Σ_e y_e a_e = 0`` at every unit; with
signs that is :func:`~synbal._problem.drift.positive_flow_exists` with a flow entering its row with
``s_e`` (:func:`signed_drifting`). Reachability arguments that assume ``s = +1`` (a layered net
cannot drift; a free component with ``c = 1`` moves no weight when shifted) do not hold here.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> # one Q/K unit: Q row cost 4 (scaled up), K row cost 1 (scaled down): λ⁴ = 1/4 at balance
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
...                                    CostBlock(2.0, [0], [-1], [[1.0]], row_sign=-1.0)])
>>> IN, OUT = prob.in_out(np.zeros(1))
>>> float(IN[0]), float(OUT[0]), float(prob.max_relative_deficit(np.array([np.log(0.5) / 2])))
(4.0, 1.0, 0.0)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from synbal._problem.drift import positive_flow_exists
from synbal.errors import UnsupportedProblemError

__all__ = ["require_unsigned", "signed_drifting"]


class _MaybeSigned(Protocol):
    @property
    def signed(self) -> bool: ...


def require_unsigned(problem: _MaybeSigned, what: str,
                     hint: str = "use method 'exact', 'layer', 'alternating', 'cyclic' or 'stochastic'") -> None:
    """Raise :class:`~synbal.errors.UnsupportedProblemError` when ``problem`` has signed rows (``hint``
    ends the message: what to do instead).

    >>> from synbal._problem.problem import BalanceProblem, CostBlock
    >>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[1.0]], row_sign=-1.0)])
    >>> require_unsigned(prob, "the compiled kernels")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.UnsupportedProblemError: the compiled kernels cannot solve a problem with signed ...
    """
    if problem.signed:
        raise UnsupportedProblemError(
            f"{what} cannot solve a problem with signed unit coefficients (query/key pairs scale "
            f"their key rows down); {hint}"
        )


def signed_drifting(parts: list[np.ndarray], edges: tuple[np.ndarray, np.ndarray, np.ndarray],
                    degree: np.ndarray) -> np.ndarray:
    """Units of the connected ``parts`` whose cost has no minimiser (no positive signed flow).

    ``edges`` are the destination, source (``-1`` fixed) and row sign of every weight of non-zero cost.

    >>> # unit 0: Q row from the constant, K row from unit 1; unit 1: from the constant. A minimum exists
    >>> edges = (np.array([0, 0, 1]), np.array([-1, 1, -1]), np.array([1.0, -1.0, 1.0]))
    >>> signed_drifting([np.array([0, 1])], edges, np.ones(2)).tolist()
    [False, False]
    >>> # unit 0: K row from unit 1; unit 1: from unit 0. Growing both by t lowers both weights
    >>> edges = (np.array([0, 1]), np.array([1, 0]), np.array([-1.0, 1.0]))
    >>> signed_drifting([np.array([0, 1])], edges, np.ones(2)).tolist()
    [True, True]
    """
    r, c, s = edges
    out = np.zeros(degree.size, dtype=bool)
    for members in parts:
        # a single live unit has weights in and out (it is not dead): a positive flow balances it
        if members.size > 1 and not positive_flow_exists(members, r, c, degree, sign=s):
            out[members] = True
    return out
