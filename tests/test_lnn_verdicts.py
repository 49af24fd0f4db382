"""The lnn / lnn-relu summary sentences flip at their pre-stated thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from synbal.experiments import _lnn_verdicts as w


def test_conservation_verdict_and_sentence_flip_at_the_slope_tolerance() -> None:
    ok, off = 1.0 + 0.9 * w.SLOPE_TOLERANCE, 1.0 + 1.1 * w.SLOPE_TOLERANCE
    assert w.conservation_verdict({"linear-2": ok}, {"relu-2": 0.0}) == "supported"
    assert w.conservation_verdict({"linear-2": off}, {"relu-2": 0.0}) == "not supported"
    assert w.conservation_verdict({"linear-2": 1.0}, {"relu-2": 1.0}).startswith("partly supported")
    assert "vanishes in the gradient flow" in w.conservation_sentence({"a": ok}, {"b": 0.0}, {"b": 1.0})
    assert "not the finite-step signature" in w.conservation_sentence({"a": off}, {"b": 0.0}, {"b": 1.0})
    assert "survives ReLU" in w.conservation_sentence({"a": 1.0}, {"b": 0.0}, {"b": 1.0})
    assert "not seen to survive" in w.conservation_sentence({"a": 1.0}, {"b": 0.0}, {"b": 0.5})
    assert "broken by the dynamics" in w.conservation_sentence({"a": 1.0}, {"b": 0.0}, {})
    assert "no sign that ReLU breaks" in w.conservation_sentence({"a": 1.0}, {"b": 1.0}, {})


def test_norms_sentence_flips_on_fit_and_spread() -> None:
    fit = w.PRODUCT_FIT_RATIO
    text = w.norms_sentence({"n": fit + 0.01}, {"n": 1.0}, {"n": 1.0 + 0.5 * w.SPREAD_CHANGE})
    assert "converges to Σ_yx in every net" in text and "about equidistant" in text
    text = w.norms_sentence({"n": fit - 0.01}, {"n": 1.0}, {"n": 1.0 + 2 * w.SPREAD_CHANGE})
    assert "has not reached Σ_yx in n" in text and "not equidistant" in text


def test_bound_sentence_flips_on_kappas_looseness_and_unity() -> None:
    agree = w.bound_sentence([w.PAPER_KAPPA1], [w.PAPER_KAPPA2 + 0.5 * w.KAPPA_TOLERANCE], [w.LOOSE_FACTOR * 0.9])
    assert "κ2 = 0.7 agrees" in agree and "tight" in agree and "coincide here" in agree
    differ = w.bound_sentence([1.2], [w.PAPER_KAPPA2 + 2 * w.KAPPA_TOLERANCE], [w.LOOSE_FACTOR * 1.1])
    assert "does not reproduce the paper's 0.65" in differ and "loose" in differ and "differ" in differ


def test_transition_sharpness_and_depth_sentence() -> None:
    t = np.linspace(0.0, 10.0, 101)
    step = (t >= 9.0).astype(float)
    ramp = t / 10.0
    assert w.transition_sharpness(t, step, 1.0) == pytest.approx(0.0)
    assert w.transition_sharpness(t, ramp, 1.0) == pytest.approx(8.0 / 9.0)
    assert w.transition_sharpness(t, 0.5 * ramp, 1.0) is None
    sharp, smooth = w.SHARP_TRANSITION - 0.1, w.SHARP_TRANSITION + 0.1
    assert "not in the bound curves" in w.depth_sentence({"net": sharp}, {"bound": smooth})
    assert "not in the trained nets" in w.depth_sentence({"net": smooth}, {"bound": sharp})
    assert "both" in w.depth_sentence({"net": sharp}, {"bound": sharp})
    assert "Neither" in w.depth_sentence({"net": None}, {"bound": smooth})


def test_eq29_sentence_flips() -> None:
    good = w.eq29_sentence(gate_error=1e-14, diagonal=1e-15, rhs_errors=(0.001, w.EQ29_MATCH / 2))
    assert "holds to rounding" in good and "zero on the diagonal" in good and "matches the exact rate" in good
    bad = w.eq29_sentence(gate_error=1e-3, diagonal=0.1, rhs_errors=(w.EQ29_MISMATCH * 2, 3.0))
    assert "does NOT hold" in bad and "not zero" in bad and "does not match" in bad
    assert "only in part" in w.eq29_sentence(gate_error=0, diagonal=0, rhs_errors=(0.05, 0.05))


def test_identity_and_off_diagonal_sentences_flip() -> None:
    assert "rounding" in w.identity_sentence(w.ROUNDING_TOLERANCE / 2, 0.3)
    assert "FAILS" in w.identity_sentence(w.ROUNDING_TOLERANCE * 2, 0.3)
    broken = w.off_diagonal_sentence([w.DRIFT_BROKEN * 2], [0.01], [1e-12])
    kept = w.off_diagonal_sentence([w.DRIFT_BROKEN / 2], [0.01], [1e-3])
    assert "not conserved" in broken and "to rounding" in broken
    assert "is conserved as well" in kept and "law FAILS" in kept


def test_conjecture4_three_outcomes() -> None:
    early, lower, upper = [1.0, 1.0], [0], [1]
    low = w.MISMATCH_VANISHED / 2
    assert w.conjecture4_sentence(early, [0.5, 0.5], [0.9, low], upper, lower)[0] == "supported"
    assert w.conjecture4_sentence(early, [0.5, 0.5], [0.9, 0.3], upper, lower)[0] == "inconclusive"
    verdict, text = w.conjecture4_sentence(early, [0.5, 0.5], [0.2, 0.48], upper, lower)
    assert verdict == "not supported" and "stalled" in text and "not as" not in text
    assert w.conjecture4_sentence(early, [1.0, 1.0], [0.5, 1.2], upper, lower)[0] == "not supported"
