"""Log-domain conditioning: weights from 1e-300 to 1e300 balanced with any power.

A cost ``coef·|w|^p`` leaves float64 long before a weight does (``(1e150)^3 = inf``,
``(1e-150)^3 = 0``), although the *balanced* state usually lies well within range. Before a
problem is built from such weights, :func:`condition` finds log-scales ``u0`` that bring every
unit's largest incoming and outgoing weights to a common magnitude — the ``p → ∞`` limit of
balancing, computed on ``log|w|`` alone, so it is exact whatever the magnitudes — and the problem
is built from the weights scaled by ``u0`` (its *origin*). Solvers then see moderate costs; the
final log-scales are ``u0 + u``. Nothing changes for ordinary weights: :func:`needs_conditioning`
is a min/max test, and only when it fires is any of this run.

Scaling a weight by ``e^d`` is done by :func:`scale_weights` on the weight's mantissa and
exponent separately, so ``1e-320 · e^{720}`` gives ``4.9e-8`` instead of ``0 · inf``.

>>> import numpy as np
>>> w = np.array([1e150, 1e-150])   # x -> h -> y
>>> u0 = condition(np.array([0, -1]), np.array([-1, 0]), np.log(np.abs(w)), np.ones(1))
>>> np.abs(np.log(scale_weights(w, np.array([u0[0], -u0[0]])))) < 1.0  # both within an e-fold of 1
array([ True,  True])
>>> needs_conditioning(np.log(np.abs(w)), 0.0, [(1.0, 2.0)])
True
>>> float(scale_weights(np.array([1e-320]), np.array([720.0]))[0])  # doctest: +ELLIPSIS
4.92...e-08
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LOG_MAX", "LOG_SAFE", "condition", "needs_conditioning", "scale_weights"]

#: Costs ``e^L`` with ``|L| <= LOG_SAFE`` (about 1e±100) are used as they are: products and sums
#: of a few of them, and the balancing steps between them, stay well inside float64.
LOG_SAFE = 230.0
#: ``log`` of the largest float64.
LOG_MAX = float(np.log(np.finfo(np.float64).max))
#: Jacobi sweeps of the conditioning (it need not converge: it only has to remove the spread).
SWEEPS = 400


def needs_conditioning(log_mag: np.ndarray, log_coef: np.ndarray | float,
                       terms: Sequence[tuple[float, float]]) -> bool:
    """Whether some cost ``coef·c·|w|^p`` of a term ``(c, p)`` leaves the safe range.

    ``log_mag = log|w|`` and ``log_coef = log coef`` of the non-zero, costed weights.
    """
    return any(float(np.abs(np.log(c) + log_coef + p * log_mag).max(initial=0.0)) > LOG_SAFE for c, p in terms)


def _segment_max(keys: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """``max(values[keys == i])`` for ``i < n`` (``-inf`` where a key has no value)."""
    out = np.full(n, -np.inf)
    if keys.size:
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        out[k[starts]] = np.maximum.reduceat(values[order], starts)
    return out


def condition(dst: np.ndarray, src: np.ndarray, log_mag: np.ndarray, degree: np.ndarray,
              sweeps: int = SWEEPS) -> np.ndarray:
    """Log-scales ``u0`` that balance each unit's largest incoming against its largest outgoing weight.

    ``dst``/``src`` are the unit indices of every non-zero weight (``-1`` for a fixed unit, a bias
    is a weight from a fixed unit), ``log_mag`` its ``log|w|`` and ``degree`` the units' ``c``.
    With ``M_in(i) = u_i + max_j(log|w_ij| − c_j u_j)`` and ``M_out(i) = max_r(log|w_ri| + u_r) −
    c_i u_i``, a damped Jacobi sweep moves every unit by ``(M_out − M_in) / (2(1 + c_i))``; it stops
    when no unit moves by more than one e-fold (units without incoming or outgoing weights, and
    self-loops, are ignored).
    """
    n = degree.size
    keep = (dst != src) & np.isfinite(log_mag)
    dst, src, ell = dst[keep], src[keep], log_mag[keep]
    into, outof = dst >= 0, src >= 0
    u = np.zeros(n + 1)  # the last entry is the fixed unit
    ce = np.append(degree, 1.0)
    for _ in range(sweeps):
        m_in = u[:-1] + _segment_max(dst[into], ell[into] - ce[src[into]] * u[src[into]], n)
        m_out = _segment_max(src[outof], ell[outof] + u[dst[outof]], n) - degree * u[:-1]
        with np.errstate(invalid="ignore"):  # inf - inf where a unit has no weight on one side: step 0
            step = np.where(np.isfinite(m_in) & np.isfinite(m_out), (m_out - m_in) / (2.0 * (1.0 + degree)), 0.0)
        u[:-1] += step
        if float(np.abs(step).max(initial=0.0)) <= 1.0:
            break
    return u[:-1]


def scale_weights(w: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``w·e^d`` elementwise without intermediate overflow or underflow (``inf`` only if the result is)."""
    mant, expo = np.frexp(np.asarray(w, dtype=np.float64))
    k = np.floor(np.asarray(d, dtype=np.float64) / np.log(2.0))
    r = d - k * np.log(2.0)
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(mant * np.exp(r), np.clip(expo + k, -10_000, 10_000).astype(np.int64))
