"""Scales rounded to powers of two: rescaling that is exact in every floating-point format.

Multiplying a float by ``2^k`` only changes its exponent, so a network whose scales are powers of
two computes bit-for-bit the same outputs after balancing (in float64, float32, float16 and
bfloat16 alike, barring overflow and subnormal numbers). ``round_log_scales(u, "pow2")`` rounds
each log-scale to the nearest multiple of ``ln 2`` (the nearest power of two in the log domain);
given the problem, it then moves independent sets of units by one power of two while that
lowers ``R`` (rounding each unit alone can cost more than it must, as neighbours round
together). :func:`pow2_exponents` recovers the integer exponents from such log-scales, so that
adapters can apply them as exact powers of two.

>>> import numpy as np
>>> u = round_log_scales(np.array([0.3, -1.2, 2.0]), "pow2")
>>> pow2_exponents(u).tolist(), [float(np.ldexp(1.0, int(k))) for k in pow2_exponents(u)]
([0.0, -2.0, 3.0], [1.0, 0.25, 8.0])
>>> pow2_exponents(np.array([0.3])) is None
True
"""

from __future__ import annotations

import math

import numpy as np

from synbal._problem.problem import BalanceProblem
from synbal.errors import SynbalError

__all__ = ["ROUNDINGS", "pow2_exponents", "round_log_scales", "scale_factors"]

ROUNDINGS = ("pow2",)
_LN2 = math.log(2.0)


def round_log_scales(u: np.ndarray, mode: str, problem: BalanceProblem | None = None) -> np.ndarray:
    """``u`` rounded as ``mode`` says (``"pow2"``: to multiples of ``ln 2``, refined on ``problem``)."""
    if mode not in ROUNDINGS:
        raise SynbalError(f"unknown round_scales {mode!r}; choose one of {', '.join(ROUNDINGS)} (or None)")
    k = np.rint(np.asarray(u, dtype=np.float64) / _LN2)
    if problem is not None and problem.n:
        k = _descend(problem, k)
    return k * _LN2


def _descend(problem: BalanceProblem, k: np.ndarray, max_sweeps: int = 10) -> np.ndarray:
    """Move units by ``±1`` in the exponent, one independent set at a time, while ``R`` drops.

    Units of an independent set share no weight, so the change of ``R`` when some of them move
    is the sum of their own changes: each is read off ``IN + OUT`` at the moved scales (three
    reads of the weights per set and sweep).
    """
    k = k.copy()
    sets = [s for s in problem.colouring() if s.size]
    for _ in range(max_sweeps):
        moved = False
        for s in sets:
            u = k * _LN2
            base = np.add(*problem.in_out(u))[s]
            change = []
            for step in (1.0, -1.0):
                v = u.copy()
                v[s] += step * _LN2
                change.append(np.add(*problem.in_out(v))[s] - base)
            up, down = change
            gain = np.minimum(up, down)
            move = gain < -1e-12 * np.abs(base)
            k[s[move]] += np.where(up[move] <= down[move], 1.0, -1.0)
            moved |= bool(move.any())
        if not moved:
            break
    return k


def pow2_exponents(u: np.ndarray) -> np.ndarray | None:
    """The integer exponents ``k`` when every log-scale is exactly ``k·ln 2`` as rounded here, else ``None``."""
    u = np.asarray(u, dtype=np.float64)
    k = np.rint(u / _LN2)
    return k if np.array_equal(k * _LN2, u) else None


def scale_factors(u: np.ndarray) -> np.ndarray:
    """``exp(u)``, as exact powers of two when ``u`` holds whole multiples of ``ln 2``.

    >>> scale_factors(round_log_scales(np.array([1.4, -0.7]), "pow2")).tolist()
    [4.0, 0.5]
    """
    k = pow2_exponents(u)
    return np.exp(np.asarray(u, dtype=np.float64)) if k is None else np.ldexp(1.0, k.astype(np.int64))
