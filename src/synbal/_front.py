"""The public front end: :func:`balance` and :func:`deficit` for any supported source.

Both run extract → solve → apply: the source's adapter builds a balance problem, an algorithm
finds log-scales on it, and the adapter writes the scales back (to a copy unless ``inplace``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbal._adapters.protocol import adapter_for
from synbal._linf.regularizer import MaxNormRegularizer
from synbal._problem.lpq import LpqRegularizer
from synbal._problem.metrics import DeficitReport, deficit_report
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer, RegularizerSpec, parse_regularizer
from synbal._problem.rounding import round_log_scales, scale_factors
from synbal._solvers import METHODS, solve
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import NumericRangeError, SynbalError

__all__ = ["NO_SCALABLE_UNITS", "BalanceResult", "balance", "deficit"]

NO_SCALABLE_UNITS = "no scalable units: nothing to balance, the network is returned unchanged"


@dataclass
class BalanceResult:
    """What :func:`balance` returns.

    ``net`` is the balanced network (same type as the input), ``scales`` the multiplier ``λ``
    of every scalable unit by name, ``converged`` whether the max relative deficit reached
    ``tol``, ``history`` one entry per sweep (regularizer and max relative deficit).
    With ``round_scales="pow2"`` the scales are powers of two: ``regularizer_after`` and
    ``max_relative_deficit`` are those of the rounded scales, and ``rounding_cost`` is what the
    rounding adds to ``R`` (relative to the unrounded optimum). ``notes`` says anything else worth
    knowing (no scalable units, which model ``R`` refers to, …).
    """

    net: Any
    scales: dict[str, float]
    log_scales: np.ndarray
    converged: bool
    history: list[HistoryEntry]
    method: str
    regularizer: str
    regularizer_before: float
    regularizer_after: float
    max_relative_deficit: float
    seconds: float
    problem: BalanceProblem = field(repr=False)
    excluded: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    round_scales: str | None = None
    rounding_cost: float | None = None

    @property
    def sweeps(self) -> int:
        return self.history[-1].sweep if self.history else 0

    def report(self) -> dict[str, Any]:
        """A JSON-ready summary (the CLI's ``--report``)."""
        return {
            "method": self.method,
            "regularizer": self.regularizer,
            "regularizer_before": self.regularizer_before,
            "regularizer_after": self.regularizer_after,
            "max_relative_deficit": self.max_relative_deficit,
            "converged": self.converged,
            "sweeps": self.sweeps,
            "seconds": self.seconds,
            "units": self.problem.n,
            "history": [h.as_dict() for h in self.history],
            "excluded": dict(self.excluded),
            "notes": list(self.notes),
            "round_scales": self.round_scales,
            "rounding_cost": self.rounding_cost,
        }


def balance(
    net: Any,
    reg: RegularizerSpec = "l2",
    method: str = "exact",
    *,
    tol: float = 1e-10,
    max_sweeps: int = 10_000,
    seed: int | None = None,
    inplace: bool = False,
    theta: float = 1.0,
    sets: list[list[str]] | None = None,
    closed_form: bool = False,
    progress: bool = False,
    round_scales: str | None = None,
    **adapter_options: Any,
) -> BalanceResult:
    """Balance every scalable unit of ``net`` for the regularizer ``reg``.

    Parameters
    ----------
    net:
        A :class:`synbal.Graph` or a ``torch.nn.Module`` (then pass ``example_inputs=``).
    reg:
        ``"l2"``, ``"l1"``, ``"l0.5"``, ``"1*l2+0.01*l1"``, ``"linf"`` (max-norm: methods
        ``exact``, ``cyclic``, ``stochastic``; see :mod:`synbal._linf`), or a regularizer object.
    method:
        ``exact`` (straight to the unique balanced state), ``stochastic`` (one random unit per
        step), ``cyclic``, ``layer`` (independent sets at once), ``alternating`` (two colour
        classes), ``tied`` (one λ per set), ``multiplicative`` (ℓ_{p,q}, if available).
    tol:
        Stop when the max relative deficit ``|IN − c·OUT| / (IN + c·OUT)`` is at most ``tol``.
    max_sweeps, seed, theta:
        Sweep budget, random seed, and partial-step exponent ``θ ∈ (0, 1]``.
    inplace:
        Modify ``net`` itself instead of a copy.
    sets:
        Unit-name groups for ``method="tied"`` (default: the network's layers).
    round_scales:
        ``"pow2"``: round every scale to the nearest power of two (in the log domain), so that
        rescaling is exact in any floating-point format; a PyTorch model is then verified to
        compute bit-for-bit the same outputs. ``rounding_cost`` reports what it costs in ``R``.

    Examples
    --------
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
    if method not in METHODS:
        raise SynbalError(f"unknown method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    if round_scales is not None:
        round_log_scales(np.zeros(0), round_scales)  # an unknown mode fails before any work
    regularizer = parse_regularizer(reg)
    if isinstance(regularizer, MaxNormRegularizer):  # not additive: its own extraction and solver
        from synbal._linf.front import balance_max

        return balance_max(net, regularizer, method, tol=tol, max_sweeps=max_sweeps, seed=seed,
                           inplace=inplace, **adapter_options)
    start = time.perf_counter()
    adapter = adapter_for(net, **adapter_options)
    problem = adapter.problem(regularizer)
    objective = _objective(problem, regularizer)
    notes = list(getattr(adapter, "notes", list)())  # optional adapter hook (e.g. BatchNorm folded)
    if problem.n == 0:
        result = SolveResult(np.zeros(0), True, [HistoryEntry(0, objective(np.zeros(0)), 0.0)])
        notes.insert(0, NO_SCALABLE_UNITS)
    else:
        options = SolveOptions(tol=tol, max_sweeps=max_sweeps, theta=theta, seed=seed,
                               sets=_resolve_sets(problem, sets), closed_form=closed_form, progress=progress)
        # distributed adapters solve collectively (sharded) or on one rank (replicated)
        solver = getattr(adapter, "solve", solve)
        result = solver(problem, regularizer, method, options)
    # The solvers record R at their start (u = 0) and at their final state; reuse those values
    # (each costs a read of every weight) where they are the additive R. Anything measured here
    # must be measured before applying: matrix-free problems read the source's weights, which
    # an in-place apply changes.
    history = result.history
    additive = not isinstance(regularizer, LpqRegularizer)
    starts_at_zero = bool(history) and history[0].sweep == 0
    before = history[0].regularizer if additive and starts_at_zero else objective(np.zeros(problem.n))
    after = history[-1].regularizer if additive and history else objective(result.u)
    final_deficit = (
        result.history[-1].max_relative_deficit if result.history else problem.max_relative_deficit(result.u)
    )
    origin = 0.0 if problem.origin is None else problem.origin  # see synbal._problem.conditioning
    u, cost = origin + result.u, None
    if problem.origin is not None:  # costs were taken at a rescaled origin
        before = _value_as_given(problem, objective) if problem.origin_value is None or not additive \
            else problem.origin_value
    if round_scales is not None:
        u = round_log_scales(u, round_scales, problem if problem.origin is None else None)
        rounded = objective(u - origin)
        cost = (rounded - after) / after if after > 0 else 0.0
        after, final_deficit = rounded, problem.max_relative_deficit(u - origin)
    scales = _checked_scales(problem, u, after, final_deficit)
    balanced = adapter.apply(u, inplace=inplace)
    seconds = time.perf_counter() - start
    return BalanceResult(
        net=balanced,
        scales=scales,
        log_scales=u,
        converged=bool(result.converged),
        history=result.history,
        method=method,
        regularizer=str(regularizer),
        regularizer_before=before,
        regularizer_after=after,
        # the solver's own measure at its final state (per set for method "tied"), or at the rounded scales
        max_relative_deficit=final_deficit,
        seconds=seconds,
        problem=problem,
        excluded={**adapter.excluded(), **_drifting(problem)},
        notes=notes,
        round_scales=round_scales,
        rounding_cost=cost,
    )


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


def _objective(problem: BalanceProblem, reg: Regularizer) -> Callable[[np.ndarray], float]:
    """``R(u)``: the problem's additive cost, or the ℓ_{p,q} norm for an ℓ_{p,q} regularizer."""
    if isinstance(reg, LpqRegularizer) and not reg.reduces_to_lp:
        from synbal._solvers.multiplicative import lpq_norm

        return lambda u: lpq_norm(problem, reg, u)
    return problem.value


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
    if isinstance(regularizer, MaxNormRegularizer):
        from synbal._linf.front import deficit_max

        return deficit_max(net, regularizer, **adapter_options)
    adapter = adapter_for(net, **adapter_options)
    # the weights exactly as given (never rescaled); values beyond float64 are reported as inf
    as_given = getattr(adapter, "problem_as_given", adapter.problem)
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        problem = as_given(regularizer)
        if isinstance(regularizer, LpqRegularizer) and not regularizer.reduces_to_lp:
            from synbal._solvers.multiplicative import lpq_max_stationarity, lpq_norm

            report = deficit_report(problem, regularizer=str(regularizer), excluded=adapter.excluded())
            report.regularizer_value = lpq_norm(problem, regularizer)
            report.max_relative_deficit = lpq_max_stationarity(problem, regularizer)
            return report
        l2 = problem if str(regularizer) == "l2" else as_given(parse_regularizer("l2"))
        return deficit_report(
            problem,
            regularizer=str(regularizer),
            frobenius_norm=float(np.sqrt(l2.value(np.zeros(l2.n)))),
            excluded=adapter.excluded(),
        )
