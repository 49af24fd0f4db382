"""The sentences of the ``lnn`` and ``lnn-relu`` summaries, each derived from the numbers.

Every conclusion the two summaries state is computed here from measured values against a
threshold fixed in this module *before* any run (the constants below); nothing is fixed text.
Each function takes plain numbers, so a test can feed values on both sides of a threshold and
see the sentence flip.

>>> conservation_sentence({"linear-2": 1.01}, {"relu-2": 0.02}, {"relu-2": 0.98})[:61]
'Linear nets: log–log slope of the drift of C_l against η 1.01'
>>> eq29_sentence(gate_error=1e-14, diagonal=1e-17, rhs_errors=(0.2, 2.0))[:40]
'The within-sample gate formula dC_l/dt ='
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "DRIFT_BROKEN",
    "EQ29_MATCH",
    "EQ29_MISMATCH",
    "KAPPA1_UNITY_TOLERANCE",
    "KAPPA_TOLERANCE",
    "LOOSE_FACTOR",
    "MISMATCH_VANISHED",
    "PAPER_KAPPA1",
    "PAPER_KAPPA2",
    "PRODUCT_FIT_RATIO",
    "ROUNDING_TOLERANCE",
    "SHARP_TRANSITION",
    "SLOPE_TOLERANCE",
    "SPREAD_CHANGE",
    "STALL_FRACTION",
    "bound_sentence",
    "conjecture4_sentence",
    "conservation_sentence",
    "conservation_verdict",
    "depth_sentence",
    "eq29_sentence",
    "identity_sentence",
    "norms_sentence",
    "off_diagonal_sentence",
    "transition_sharpness",
]

#: ``final ‖W_L⋯W_1‖ / ‖Σ_yx‖`` at least this (every net): "the product converges to Σ_yx".
PRODUCT_FIT_RATIO = 0.95
#: The layer-norm spread ``max_l ‖W_l‖ − min_l ‖W_l‖`` changed by more than this fraction of its
#: start: "the norms are not equidistant" (the conservation law fixes the squared norms' gaps).
SPREAD_CHANGE = 0.1
#: ``|slope − 1| ≤`` this: drift ∝ η (a finite-step effect); ``|slope| ≤`` this: independent of η.
SLOPE_TOLERANCE = 0.15
#: κ1, κ2 read off the paper's Fig. 1 i, and the absolute difference counted as agreement.
PAPER_KAPPA1, PAPER_KAPPA2, KAPPA_TOLERANCE = 0.98, 0.65, 0.1
#: ``|κ1 − 1| ≤`` this: the paper's ``(1 + 2κ1)`` and the correct ``(1 + 2/κ1)`` coincide here.
KAPPA1_UNITY_TOLERANCE = 0.05
#: The bound's plateau ``M/κ2`` at least this × ``‖Σ_yx‖``: "the bound is loose".
LOOSE_FACTOR = 2.0
#: Relative residuals at most this count as "holds to rounding" (float64).
ROUNDING_TOLERANCE = 1e-8
#: Eq. 29 as printed: relative error ≤ EQ29_MATCH "matches", ≥ EQ29_MISMATCH "does not match".
EQ29_MATCH, EQ29_MISMATCH = 0.01, 0.1
#: A rise is "a plateau then a sharp transition" when ``(t90 − t10)/t90`` is at most this.
SHARP_TRANSITION = 0.5
#: Conjecture 4: the upper layers' relative Gram-rate mismatch "tends to 0" when it ends below this.
MISMATCH_VANISHED = 0.1
#: ... and it "stalled" when over the second half it fell by less than this fraction of its mid value.
STALL_FRACTION = 0.1
#: Relative drift of the whole matrix C_l above this: "the off-diagonal part is not conserved".
DRIFT_BROKEN = 0.05


def _band(slope: float) -> str:
    if abs(slope - 1.0) <= SLOPE_TOLERANCE:
        return "∝ η"
    if abs(slope) <= SLOPE_TOLERANCE:
        return "independent of η"
    return "neither ∝ η nor independent of η"


def _range(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3g}" if np.isclose(lo, hi, rtol=5e-3) else f"{lo:.3g}–{hi:.3g}"


def conservation_verdict(linear: Mapping[str, float], relu: Mapping[str, float]) -> str:
    """The ``lnn`` claim (linear nets conserve C_l, ReLU breaks it) from the drift slopes.

    *supported* when every linear slope is within :data:`SLOPE_TOLERANCE` of 1 and every ReLU
    slope within it of 0; *partly supported* when only the linear half holds; else *not supported*.
    """
    linear_ok = all(_band(s) == "∝ η" for s in linear.values())
    relu_broken = all(_band(s) == "independent of η" for s in relu.values())
    if linear_ok and relu_broken:
        return "supported"
    if linear_ok:
        return "partly supported (the linear law holds; the ReLU drift still shrinks with η)"
    return "not supported"


def conservation_sentence(linear: Mapping[str, float], relu: Mapping[str, float],
                          relu_diagonal: Mapping[str, float]) -> str:
    """What the log–log slopes of the drift of C_l against η say, per net family."""
    lin = list(linear.values())
    rel = list(relu.values())
    diag = list(relu_diagonal.values())
    lin_band = {_band(s) for s in lin}
    text = (f"Linear nets: log–log slope of the drift of C_l against η {_range(lin)}, so the drift is "
            f"{' / '.join(sorted(lin_band))} at fixed time")
    text += (" — a finite-step effect (exactly η²(G_lG_lᵀ − G_{l+1}ᵀG_{l+1}) per step) that vanishes "
             "in the gradient flow (Theorem 1)." if lin_band == {"∝ η"} else
             ": not the finite-step signature the gradient-flow law predicts.")
    rel_band = {_band(s) for s in rel}
    text += f" ReLU nets: slope {_range(rel)}, the matrix drift is {' / '.join(sorted(rel_band))}"
    text += (" — the symmetry is broken by the dynamics themselves." if rel_band == {"independent of η"}
             else "." if rel_band != {"∝ η"} else " — no sign that ReLU breaks the matrix law here.")
    if diag:
        diag_band = {_band(s) for s in diag}
        text += (f" Its diagonal (the per-neuron L2 deficits IN − OUT) drifts with slope {_range(diag)}: "
                 + ("∝ η, so the per-neuron balance law survives ReLU." if diag_band == {"∝ η"} else
                    f"{' / '.join(sorted(diag_band))}, so the per-neuron law is not seen to survive ReLU."))
    return text


def norms_sentence(fit_ratios: Mapping[str, float], spread_start: Mapping[str, float],
                   spread_end: Mapping[str, float]) -> str:
    """Whether the product fits Σ_yx and whether the layer norms stay equidistant."""
    worst = min(fit_ratios, key=lambda k: fit_ratios[k])
    if fit_ratios[worst] >= PRODUCT_FIT_RATIO:
        text = (f"The product W_L⋯W_1 converges to Σ_yx in every net (final ‖ΠW‖/‖Σ_yx‖ ≥ "
                f"{fit_ratios[worst]:.3g}; threshold {PRODUCT_FIT_RATIO:g}).")
    else:
        text = (f"The product W_L⋯W_1 has not reached Σ_yx in {worst} (final ‖ΠW‖/‖Σ_yx‖ = "
                f"{fit_ratios[worst]:.3g} < {PRODUCT_FIT_RATIO:g}).")
    change = {k: abs(spread_end[k] - spread_start[k]) / max(spread_start[k], 1e-300) for k in spread_start}
    moved = sorted(k for k, v in change.items() if v > SPREAD_CHANGE)
    if moved:
        text += (f" The spread of the layer norms changes by more than {SPREAD_CHANGE:.0%} of its start in "
                 f"{', '.join(moved)} (up to {max(change.values()):.0%}): the norms are not equidistant, as Fig. 1 "
                 "suggests; the conservation law fixes the gaps of the squared norms, trace C_l = "
                 "‖W_l‖² − ‖W_{l+1}‖², so the gap between the norms shrinks as they grow.")
    else:
        text += (f" The spread of the layer norms stays within {SPREAD_CHANGE:.0%} of its start in every net "
                 f"(largest change {max(change.values()):.1%}): the norms stay about equidistant, as Fig. 1 shows.")
    return text


def bound_sentence(kappa1: Sequence[float], kappa2: Sequence[float], plateau_over_sigma: Sequence[float]) -> str:
    """κ1, κ2 against the paper's values, the bound's looseness and which algebra slip matters."""
    def compare(name: str, values: Sequence[float], paper: float) -> str:
        agree = all(abs(v - paper) <= KAPPA_TOLERANCE for v in values)
        verb = "agrees with" if agree else "does not reproduce"
        return f"{name} = {_range(values)} {verb} the paper's {paper:g} (tolerance ±{KAPPA_TOLERANCE:g})"

    text = f"{compare('κ1', kappa1, PAPER_KAPPA1)}; {compare('κ2', kappa2, PAPER_KAPPA2)}."
    loose = min(plateau_over_sigma)
    text += (f" The bound's plateau M/κ2 is {_range(plateau_over_sigma)} × ‖Σ_yx‖: "
             + (f"the bound holds but is loose (≥ {LOOSE_FACTOR:g}×)." if loose >= LOOSE_FACTOR
                else f"the bound is tight (< {LOOSE_FACTOR:g}× in some net)."))
    unity = all(abs(k - 1.0) <= KAPPA1_UNITY_TOLERANCE for k in kappa1)
    text += (" From ‖Σ_yx‖ ≥ κ1‖ΠW‖ one gets ‖Σ_yx − ΠW‖ ≤ (1 + 2/κ1)‖Σ_yx‖ − ‖ΠW‖, not the printed "
             "(1 + 2κ1); "
             + (f"the two coincide here (|κ1 − 1| ≤ {KAPPA1_UNITY_TOLERANCE:g})." if unity else
                f"here they differ (κ1 is not within {KAPPA1_UNITY_TOLERANCE:g} of 1), so M as printed is wrong "
                "for these runs."))
    return text


def transition_sharpness(times: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """``(t90 − t10) / t90`` of the first times ``values`` reach 10 % and 90 % of ``target``.

    ``None`` when 90 % is never reached. Near 0: a long plateau, then a sharp rise; 1: no plateau.

    >>> transition_sharpness(np.arange(10.0), np.array([0, 0, 0, 0, 0, 0, 0, 0, 0.5, 1.0]), 1.0)
    0.1111111111111111
    """
    values = np.asarray(values, dtype=np.float64)
    hit90 = np.nonzero(values >= 0.9 * target)[0]
    if not hit90.size:
        return None
    t10 = float(times[np.nonzero(values >= 0.1 * target)[0][0]])
    t90 = float(times[hit90[0]])
    return (t90 - t10) / t90 if t90 > 0 else 1.0


def depth_sentence(trained: Mapping[str, float | None], bound: Mapping[str, float | None]) -> str:
    """Where the paper's "deeper: a plateau, then a sharp transition" shows (trained nets vs bound)."""
    def where(found: Mapping[str, float | None]) -> list[str]:
        return [k for k, v in found.items() if v is not None and v <= SHARP_TRANSITION]

    def show(found: Mapping[str, float | None]) -> str:
        return ", ".join(f"{k}: {'never reaches 90 %' if v is None else f'{v:.2f}'}" for k, v in found.items())

    sharp_t, sharp_b = where(trained), where(bound)
    text = (f"Sharpness (t90 − t10)/t90 of the rise (≤ {SHARP_TRANSITION:g}: a plateau, then a sharp "
            f"transition) — trained nets: {show(trained)}; bound curves: {show(bound)}. ")
    if sharp_t and sharp_b:
        return text + (f"The paper's reading shows both in the trained nets ({', '.join(sharp_t)}) and in "
                       f"the bound curves ({', '.join(sharp_b)}).")
    if sharp_t:
        return text + f"The paper's reading shows in the trained nets ({', '.join(sharp_t)}), not in the bound curves."
    if sharp_b:
        return text + f"The paper's reading shows in the bound curves ({', '.join(sharp_b)}), not in the trained nets."
    return text + "Neither the trained nets nor the bound curves show it."


def eq29_sentence(*, gate_error: float, diagonal: float, rhs_errors: tuple[float, float]) -> str:
    """Whether the exact within-sample formula holds and whether the printed eq. 29 matches.

    ``gate_error``: largest relative error of the within-sample gate formula; ``diagonal``: largest
    ``|diag dC_l/dt|`` relative to the rate scale; ``rhs_errors``: (min, max) relative error of
    the printed eq. 29 right-hand side against the exact rate.
    """
    exact = gate_error <= ROUNDING_TOLERANCE
    text = ("The within-sample gate formula dC_l/dt = −Σ_i (d_ij − d_ik)(ã_ij z_ik − ã_ik z_ij) — a sum over "
            "samples of neuron pairs gated differently on the same sample — "
            + (f"holds to rounding (largest relative error {gate_error:.1e} ≤ {ROUNDING_TOLERANCE:g})"
               if exact else f"does NOT hold (relative error {gate_error:.2g} > {ROUNDING_TOLERANCE:g})"))
    text += (f", and the rate is zero on the diagonal ({diagonal:.1e})." if diagonal <= ROUNDING_TOLERANCE
             else f"; the diagonal of the rate is not zero ({diagonal:.2g}).")
    lo, hi = rhs_errors
    if hi <= EQ29_MATCH:
        verdict = f"matches the exact rate (relative error ≤ {hi:.2g})"
    elif lo >= EQ29_MISMATCH:
        verdict = (f"does not match the exact rate (relative error {lo:.2g}–{hi:.2g}, never below "
                   f"{EQ29_MISMATCH:g}); it attributes the breaking to coupling between samples through eq. 27, "
                   "which does not hold in general")
    else:
        verdict = f"matches only in part (relative error {lo:.2g}–{hi:.2g})"
    return text + f" The paper's eq. 29, evaluated literally with frozen gates, {verdict}."


def identity_sentence(sq_residual: float, step_share: float) -> str:
    """The exact finite-step squared-norm identity of bias-free ReLU nets, and the step term's share."""
    holds = sq_residual <= ROUNDING_TOLERANCE
    return ("Checked exactly: after removing Σ η²‖G_l‖², the squared-norm growth of the layers "
            + (f"agrees to {sq_residual:.1e} (relative; ≤ {ROUNDING_TOLERANCE:g}: rounding)" if holds else
               f"differs by {sq_residual:.2g} (relative; above {ROUNDING_TOLERANCE:g}: the identity FAILS)")
            + f", while the finite-step term is up to {step_share:.3g} of a layer's squared-norm growth.")


def conjecture4_sentence(early: Sequence[float], mid: Sequence[float], end: Sequence[float],
                         upper: Sequence[int], lower: Sequence[int]) -> tuple[str, str]:
    """``(verdict, sentence)`` for Conjecture 4 from the relative Gram-rate mismatch per hidden layer.

    ``early``, ``mid``, ``end``: the mismatch averaged over the first, middle and last 10 % of
    training. *supported*: every upper layer's mismatch fell and ends below
    :data:`MISMATCH_VANISHED`; *not supported*: in some upper layer it did not fall, or it is
    above the threshold and fell by less than :data:`STALL_FRACTION` of its mid-training value
    over the second half (stalled); *inconclusive* otherwise (still falling towards 0).

    >>> conjecture4_sentence([1, 1], [0.5, 0.5], [0.45, 0.45], [1], [0])[0]
    'not supported'
    >>> conjecture4_sentence([1, 1], [0.5, 0.5], [0.2, 0.2], [1], [0])[0]
    'inconclusive'
    """
    up_end = [end[k] for k in upper]
    fell = [end[k] < early[k] for k in upper]
    stalled = [end[k] >= MISMATCH_VANISHED and mid[k] - end[k] < STALL_FRACTION * mid[k] for k in upper]
    ordering = np.mean(up_end) < np.mean([end[k] for k in lower])
    order = ("below" if ordering else "not below") + " the lower layers' mismatch"
    base = (f"The upper layers' mismatch ends at {_range(up_end)} ({order}); it fell during training in "
            f"{sum(fell)}/{len(fell)} upper layers and stalled over the second half (fell by less than "
            f"{STALL_FRACTION:.0%} of its mid-training value) in {sum(stalled)}/{len(stalled)}. "
            f"Threshold for 'tends to 0': < {MISMATCH_VANISHED:g}.")
    if all(v < MISMATCH_VANISHED for v in up_end) and all(fell):
        return "supported", base + " Conjecture 4 is supported by this run."
    if all(fell) and not any(stalled):
        return "inconclusive", base + (" The mismatch is still falling but has not reached the threshold: "
                                       "Conjecture 4 is neither confirmed nor refuted by this run.")
    return "not supported", base + (" The mismatch does not fall towards 0 in every upper layer: Conjecture 4 "
                                    "as stated is not supported by this run"
                                    + (", even though the ordering between layers is as predicted." if ordering
                                       else ", nor is the ordering between layers the predicted one."))


def off_diagonal_sentence(matrix_drift: Sequence[float], deficit_drift: Sequence[float],
                          deficit_residual: Sequence[float]) -> str:
    """Diagonal (per-neuron deficits) vs the whole matrix C_l, from their measured drifts."""
    law = max(deficit_residual) <= ROUNDING_TOLERANCE
    text = ("The diagonal (the synaptic-balance deficits) follows the exact finite-step law "
            "Δ(IN − OUT)_j = Σ_steps η²(‖row_j G_l‖² − ‖col_j G_{l+1}‖²) "
            + (f"to rounding (residual ≤ {max(deficit_residual):.1e})" if law else
               f"only to {max(deficit_residual):.2g} (above {ROUNDING_TOLERANCE:g}: the law FAILS)")
            + f"; its largest change is {max(deficit_drift):.3g} of the layer's mean incoming cost. ")
    worst = max(matrix_drift)
    if worst > DRIFT_BROKEN:
        return text + (f"The whole matrix C_l drifts by up to {worst:.3g} (relative, > {DRIFT_BROKEN:g}): "
                       "its off-diagonal part is not conserved.")
    return text + (f"The whole matrix C_l drifts by at most {worst:.3g} (relative, ≤ {DRIFT_BROKEN:g}): "
                   "in this run its off-diagonal part is conserved as well, to that level.")
