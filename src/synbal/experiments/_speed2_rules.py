"""The decision rules of ``speed2``, fixed in code before any run (issue 14).

Each balanced arm is compared with plain training, **paired by seed** (seed ``s`` of both arms
starts from the same weights and sees the same minibatches), with a 95 % confidence interval
of the mean paired difference (Student t, ``n − 1`` degrees of freedom):

* **Supported**: the arm is ahead by at least :data:`MIN_GAIN_POINTS` in final test accuracy with
  the interval excluding 0, *or* it reaches the accuracy threshold at least
  :data:`MIN_SPEEDUP` (25 %) sooner with the interval of the relative saving excluding 0;
* **Refuted**: (not supported and) the accuracy interval lies within ±:data:`NULL_BAND_POINTS`;
* **Inconclusive** otherwise. An Inconclusive arm whose whole accuracy interval lies below
  −:data:`NULL_BAND_POINTS` is also flagged ``behind`` (worse than plain beyond the null band): the
  issue's labels name no such outcome, so the flag describes it without changing the label.

>>> d = paired_decision([90.0, 91.0, 90.5], [91.0, 92.1, 91.4], [10, 10, 10], [9, 9, 9])
>>> d["decision"], round(d["accuracy"]["mean"], 2)
('Supported', 1.0)
>>> paired_decision([90.0, 91.0, 92.0], [90.05, 91.0, 92.05], [10] * 3, [10] * 3)["decision"]
'Refuted'
>>> d = paired_decision([90.0, 91.0, 92.0], [80.0, 82.0, 81.0], [10] * 3, [None] * 3)
>>> d["decision"], d["behind"]
('Inconclusive', True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from synbal.errors import SynbalError

__all__ = ["MIN_GAIN_POINTS", "MIN_SPEEDUP", "NULL_BAND_POINTS", "mean_ci", "paired_decision"]

#: Supported: ahead by at least this many accuracy points (interval excluding 0) ...
MIN_GAIN_POINTS = 0.5
#: ... or at least this fraction fewer steps to the threshold (interval excluding 0).
MIN_SPEEDUP = 0.25
#: Refuted: the interval of the accuracy difference lies within ± this many points.
NULL_BAND_POINTS = 0.3
#: Confidence level of the intervals.
CONFIDENCE = 0.95


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and the 95 % t-interval of ``values`` (``nan`` bounds with fewer than two values).

    >>> c = mean_ci([1.0, 2.0, 3.0])
    >>> c["mean"], round(c["low"], 3), round(c["high"], 3)
    (2.0, -0.484, 4.484)
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise SynbalError("mean_ci needs at least one value")
    mean = float(arr.mean())
    if arr.size < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(arr.size)}


def _saving(plain: Sequence[float | None], arm: Sequence[float | None]) -> list[float]:
    """Per seed, ``1 − steps_arm / steps_plain``; a run that never reached counts as ∞ steps.

    Seeds where plain never reached the threshold are skipped when the arm did not either, and
    count as a saving of 1 when only the arm reached it (sooner than never).
    """
    out = []
    for p, a in zip(plain, arm, strict=True):
        if p is None:
            if a is not None:
                out.append(1.0)
            continue
        out.append(-math.inf if a is None else 1.0 - a / p)
    return out


def paired_decision(plain_acc: Sequence[float], arm_acc: Sequence[float],
                    plain_steps: Sequence[float | None], arm_steps: Sequence[float | None]) -> dict[str, Any]:
    """The decision for one arm against plain: accuracies in points, steps to the threshold
    (``None``: never reached), both per seed in the same seed order."""
    if len(plain_acc) != len(arm_acc) or len(plain_acc) != len(plain_steps) or len(arm_steps) != len(plain_acc):
        raise SynbalError("paired_decision: every list needs one value per seed, in the same order")
    acc = mean_ci([a - p for p, a in zip(plain_acc, arm_acc, strict=True)])
    savings = [s for s in _saving(plain_steps, arm_steps) if math.isfinite(s)]
    never = sum(1 for s in _saving(plain_steps, arm_steps) if not math.isfinite(s))
    speed = mean_ci(savings) if savings and never == 0 else None
    gain_ok = acc["mean"] >= MIN_GAIN_POINTS and acc["low"] > 0
    speed_ok = speed is not None and speed["mean"] >= MIN_SPEEDUP and speed["low"] > 0
    if gain_ok or speed_ok:
        decision = "Supported"
    elif acc["low"] >= -NULL_BAND_POINTS and acc["high"] <= NULL_BAND_POINTS:
        decision = "Refuted"
    else:
        decision = "Inconclusive"
    behind = decision == "Inconclusive" and acc["high"] < -NULL_BAND_POINTS
    return {"decision": decision, "behind": behind, "accuracy": acc, "speedup": speed, "arm_never_reached": never,
            "by": [w for w, ok in (("accuracy", gain_ok), ("speed", speed_ok)) if ok]}
