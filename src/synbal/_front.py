"""The public front end: :func:`balance` and :func:`deficit` for any supported source.

Both run extract → solve → apply: the source's adapter builds a balance problem, an algorithm
finds log-scales on it, and the adapter writes the scales back (to a copy unless ``inplace``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from synbal._adapters.protocol import adapter_for, check_adapter_options
from synbal._linf.front import balance_max, deficit_max
from synbal._problem.metrics import DeficitReport, deficit_report
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer, RegularizerSpec, parse_regularizer
from synbal._problem.rounding import round_log_scales, scale_factors
from synbal._result import BalanceResult
from synbal._solvers import method_named, solve
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import NumericRangeError, SynbalError

if TYPE_CHECKING:
    from synbal._linf.regularizer import MaxNormRegularizer

__all__ = ["NO_SCALABLE_UNITS", "BalanceResult", "balance", "deficit"]

NO_SCALABLE_UNITS = "no scalable units: nothing to balance, the network is returned unchanged"


def balance(net: Any, reg: RegularizerSpec = "l2", method: str = "exact", *, tol: float = 1e-10,
            max_sweeps: int = 10_000, seed: int | None = None, inplace: bool = False, theta: float = 1.0,
            sets: list[list[str]] | None = None, closed_form: bool = False, progress: bool = False,
            round_scales: str | None = None, **adapter_options: Any) -> BalanceResult:
    """Balance every scalable unit of ``net`` for the regularizer ``reg``.

    ``net`` is a :class:`synbal.Graph`, a :class:`synbal.DenseNet` or a ``torch.nn.Module`` (then
    pass ``example_inputs=``; such keywords go to its adapter). ``reg`` is ``"l2"``, ``"l1"``,
    ``"l0.5"``, ``"1*l2+0.01*l1"``, ``"l2,1"`` (ℓ_{p,q}), ``"linf"`` (max-norm: methods ``exact``,
    ``cyclic``, ``stochastic``; see :mod:`synbal._linf`), or a regularizer object. ``method`` is
    a name of :data:`synbal.METHODS`: ``exact`` (straight to the unique balanced state),
    ``stochastic`` (one random unit per step), ``cyclic``, ``layer`` (independent sets at once),
    ``alternating`` (two colour classes), ``tied`` (one λ per set: ``sets`` are unit-name groups,
    default the layers; ``closed_form=True`` is Appendix B), ``multiplicative`` (ℓ_{p,q}). An
    option the method (or the adapter) does not take is an :class:`~synbal.errors.OptionError`.

    It stops when the max relative deficit ``|IN − c·OUT| / (IN + c·OUT)`` is at most ``tol`` or
    after ``max_sweeps`` sweeps; ``seed`` drives random orders, ``theta ∈ (0, 1]`` makes steps
    partial, ``inplace`` modifies ``net`` itself. ``round_scales="pow2"`` rounds every scale to a
    power of two (exact rescaling in any float format; a PyTorch model is verified bit-for-bit).

    >>> import synbal
    >>> g = synbal.Graph.from_dict({"format": "synbal.graph/1",
    ...     "units": [{"name": "x", "role": "input"},
    ...               {"name": "h", "role": "hidden", "activation": "relu"},
    ...               {"name": "y", "role": "output"}],
    ...     "edges": [["x", "h", 4.0], ["h", "y", 0.25]]})
    >>> res = synbal.balance(g, "l2")
    >>> round(res.scales["h"], 6), res.converged
    (0.25, True)
    >>> [round(w, 6) for _, _, w in res.net.edges]
    [1.0, 1.0]
    """
    options = SolveOptions(tol=tol, max_sweeps=max_sweeps, theta=theta, seed=seed, closed_form=closed_form,
                           progress=progress)
    _check_options(net, method, {"theta": theta, "sets": sets, "closed_form": closed_form}, adapter_options)
    if round_scales is not None:
        round_log_scales(np.zeros(0), round_scales)  # an unknown mode fails before any work
    regularizer = parse_regularizer(reg)
    if regularizer.aggregated() is None:  # not additive (the max-norm): its own extraction and solver
        return balance_max(net, cast("MaxNormRegularizer", regularizer), method, tol=tol, max_sweeps=max_sweeps,
                           seed=seed, inplace=inplace, **adapter_options)
    start = time.perf_counter()
    adapter = adapter_for(net, **adapter_options)
    problem = adapter.problem(regularizer)
    notes = list(getattr(adapter, "notes", list)())  # optional adapter hook (e.g. BatchNorm folded)
    options.sets = _resolve_sets(problem, sets) if problem.n else None
    solver = getattr(adapter, "solve", solve)  # distributed adapters solve collectively or on one rank
    result = solver(problem, regularizer, method, options) if problem.n else _nothing_to_do(problem, regularizer, notes)
    final = _final_state(problem, regularizer, result, round_scales)
    return BalanceResult(
        net=adapter.apply(final.u, inplace=inplace), scales=final.scales, log_scales=final.u,
        converged=bool(result.converged), history=result.history, method=method, regularizer=str(regularizer),
        regularizer_before=final.before, regularizer_after=final.after,
        # the solver's own measure at its final state (per set for method "tied"), or at the rounded scales
        max_relative_deficit=final.deficit, seconds=time.perf_counter() - start, problem=problem,
        excluded={**adapter.excluded(), **_drifting(problem)}, notes=notes + result.notes, round_scales=round_scales,
        rounding_cost=final.rounding_cost,
    )


def _nothing_to_do(problem: BalanceProblem, regularizer: Regularizer, notes: list[str]) -> SolveResult:
    """The result for a problem without scalable units (noted in ``notes``)."""
    notes.insert(0, NO_SCALABLE_UNITS)
    return SolveResult(np.zeros(0), True, [HistoryEntry(0, regularizer.objective(problem)(np.zeros(0)), 0.0)])


#: The keywords of :func:`balance` itself (besides the adapter's options).
BALANCE_OPTIONS = ("tol", "max_sweeps", "seed", "inplace", "theta", "sets", "closed_form", "progress",
                   "round_scales")


def _check_options(net: Any, method: str, given: dict[str, Any], adapter_options: dict[str, Any]) -> None:
    """Typed errors for an unknown method, an option it does not take, a keyword nobody takes."""
    chosen = method_named(method)
    chosen.check(given)
    check_adapter_options(net, adapter_options, also=BALANCE_OPTIONS)


@dataclass
class _Final:
    """The balanced state as returned: log-scales (origin shift and rounding applied), scales, R, deficit."""

    u: np.ndarray
    scales: dict[str, float]
    before: float
    after: float
    deficit: float
    rounding_cost: float | None


def _final_state(problem: BalanceProblem, regularizer: Regularizer, result: SolveResult,
                 round_scales: str | None) -> _Final:
    """From the solver's log-scales to the result's, measuring ``R`` before and after once each.

    The solvers record R at their start (u = 0) and at their final state; those values are reused
    (each costs a read of every weight) where they are the additive R. Everything is measured
    before applying: matrix-free problems read the source's weights, which an in-place apply changes.
    """
    objective = regularizer.objective(problem)
    history = result.history
    additive = regularizer.additive
    starts_at_zero = bool(history) and history[0].sweep == 0
    before = history[0].regularizer if additive and starts_at_zero else objective(np.zeros(problem.n))
    after = history[-1].regularizer if additive and history else objective(result.u)
    deficit = history[-1].max_relative_deficit if history else problem.max_relative_deficit(result.u)
    origin = 0.0 if problem.origin is None else problem.origin  # see synbal._problem.conditioning
    u, cost = origin + result.u, None
    if problem.origin is not None:  # costs were taken at a rescaled origin
        before = _value_as_given(problem, objective) if problem.origin_value is None or not additive \
            else problem.origin_value
    if round_scales is not None:
        u = round_log_scales(u, round_scales, problem if problem.origin is None else None)
        rounded = objective(u - origin)
        cost = (rounded - after) / after if after > 0 else 0.0
        after, deficit = rounded, problem.max_relative_deficit(u - origin)
    return _Final(u, _checked_scales(problem, u, after, deficit), before, after, deficit, cost)


def _drifting(problem: BalanceProblem) -> dict[str, str]:
    """Units left alone because the regularizer has no minimum over their scales."""
    names = problem.names or []
    return {names[i]: "no balanced state: scaling it (with the units it feeds or is fed by) towards 0 or ∞ "
                      "lowers the regularizer forever, e.g. a cycle with no path to an output; left unchanged"
            for i in np.flatnonzero(problem.drifting_mask()).tolist()}


def _value_as_given(problem: BalanceProblem, objective: Callable[[np.ndarray], float]) -> float:
    """The objective at the source's own weights for a problem costed at a rescaled origin."""
    assert problem.origin is not None
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        value = objective(-problem.origin)
    return value if np.isfinite(value) else float("inf")


def _checked_scales(problem: BalanceProblem, u: np.ndarray, after: float, deficit: float) -> dict[str, float]:
    """Every unit's scale ``e^u``; a typed error when the result cannot be represented in float64.

    A balanced state whose ``R`` or deficit is not finite, or whose scale of some unit is 0 or
    infinite, is never returned as a result.
    """
    names = problem.names or []
    if not np.all(np.isfinite(u)):
        bad = int(np.flatnonzero(~np.isfinite(u))[0])
        raise NumericRangeError(f"the log-scale of unit {names[bad]!r} is not finite: balancing broke down")
    with np.errstate(over="ignore", under="ignore"):
        lam = scale_factors(u)  # exact powers of two for pow2-rounded log-scales
    bad_scale = np.flatnonzero((lam == 0) | ~np.isfinite(lam))
    if bad_scale.size:
        k = int(bad_scale[0])
        raise NumericRangeError(
            f"the balanced scale of unit {names[k]!r} is e^{u[k]:.6g}, outside the float64 range "
            f"({bad_scale.size} units): the balanced state cannot be represented"
        )
    if not (np.isfinite(after) and np.isfinite(deficit)):
        raise NumericRangeError(
            f"the regularizer of the balanced network is {after} (max relative deficit {deficit}): "
            "it cannot be represented in float64"
        )
    return dict(zip(names, lam.tolist(), strict=True))


def _resolve_sets(problem: BalanceProblem, sets: list[list[str]] | None) -> list[np.ndarray] | None:
    if sets is None:
        return None
    index = {name: i for i, name in enumerate(problem.names or [])}
    resolved = []
    for group in sets:
        missing = [name for name in group if name not in index]
        if missing:
            raise SynbalError(f"tied set names unknown or non-scalable units: {', '.join(missing)}")
        resolved.append(np.array([index[name] for name in group], dtype=np.int64))
    return resolved


def deficit(net: Any, reg: RegularizerSpec = "l2", **adapter_options: Any) -> DeficitReport:
    """Per-unit IN/OUT costs, deficits, relative deficits and totals of ``net``.

    >>> import synbal
    >>> g = synbal.Graph.from_dict({"format": "synbal.graph/1",
    ...     "units": [{"name": "x", "role": "input"},
    ...               {"name": "h", "role": "hidden", "activation": "relu"},
    ...               {"name": "y", "role": "output"}],
    ...     "edges": [["x", "h", 2.0], ["h", "y", 1.0]]})
    >>> rep = synbal.deficit(g, "l2")
    >>> rep.units[0].IN, rep.units[0].OUT, rep.overall_deficit
    (4.0, 1.0, 9.0)
    """
    regularizer = parse_regularizer(reg)
    if regularizer.aggregated() is None:  # the max-norm: its own extraction
        return deficit_max(net, cast("MaxNormRegularizer", regularizer), **adapter_options)
    adapter = adapter_for(net, **adapter_options)
    # the weights exactly as given (never rescaled); values beyond float64 are reported as inf
    as_given = getattr(adapter, "problem_as_given", adapter.problem)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        problem = as_given(regularizer)
        if regularizer.per_unit:  # a norm of per-unit sums: its own value and stationarity
            report = deficit_report(problem, regularizer=str(regularizer), excluded=adapter.excluded())
            report.regularizer_value = regularizer.objective(problem)(np.zeros(problem.n))
            report.max_relative_deficit = regularizer.stationarity(problem, np.zeros(problem.n))
            return report
        l2 = problem if str(regularizer) == "l2" else as_given(parse_regularizer("l2"))
        return deficit_report(
            problem,
            regularizer=str(regularizer),
            frobenius_norm=float(np.sqrt(l2.value(np.zeros(l2.n)))),
            excluded=adapter.excluded(),
        )
