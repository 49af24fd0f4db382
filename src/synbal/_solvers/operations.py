"""Single operations of the theory: scale units, balance one unit or one tied set.

These act on any source synbal can extract (a :class:`~synbal._adapters.graph.Graph`, a
:class:`~synbal._adapters.dense.DenseNet`, a PyTorch model) and return a new network unless
``inplace=True``.

>>> import synbal
>>> from synbal._solvers.operations import balance_units, scale_units
>>> g = synbal.Graph.from_dict({"format": "synbal.graph/1",
...     "units": [{"name": "x", "role": "input"},
...               {"name": "h", "role": "hidden", "activation": "relu"},
...               {"name": "y", "role": "output"}],
...     "edges": [["x", "h", 4.0], ["h", "y", 0.25]]})
>>> [w for _, _, w in scale_units(g, {"h": 2.0}).edges]
[8.0, 0.125]
>>> step = balance_units(g, ["h"], "l2")
>>> step.scales, step.delta_regularizer   # ΔR = (√IN − √OUT)² = (4 − 0.25)²
({'h': 0.25}, 14.0625)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synbal._adapters.protocol import adapter_for
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import RegularizerSpec, parse_regularizer
from synbal._solvers.steps import balance_in_order, step_set
from synbal.errors import SynbalError

__all__ = ["BalanceStep", "balance_units", "scale_units"]


def _indices(problem: BalanceProblem, names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(problem.names or [])}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise SynbalError(f"not scalable units of this network: {', '.join(map(str, unknown))}")
    return np.array([index[name] for name in names], dtype=np.int64)


def scale_units(net: Any, scales: Mapping[str, float], *, inplace: bool = False, **options: Any) -> Any:
    """Multiply each named unit's incoming weights (and bias) by ``λ`` and outgoing by ``1/λ^c``.

    The network's function is unchanged for every ``λ > 0``; scalings commute and compose.
    """
    bad = {k: v for k, v in scales.items() if not (np.isfinite(v) and v > 0)}
    if bad:
        raise SynbalError(f"scales must be finite and > 0, got {bad}")
    adapter = adapter_for(net, **options)
    problem = adapter.problem(parse_regularizer("l2"))
    u = np.zeros(problem.n)
    u[_indices(problem, list(scales))] = np.log(np.array(list(scales.values()), dtype=np.float64))
    return adapter.apply(u, inplace=inplace)


@dataclass
class BalanceStep:
    """Result of :func:`balance_units`: the new network, the λ applied, and the drop of ``R``."""

    net: Any
    scales: dict[str, float]
    delta_regularizer: float


def balance_units(
    net: Any,
    units: Sequence[str],
    reg: RegularizerSpec = "l2",
    *,
    tied: bool = False,
    theta: float = 1.0,
    inplace: bool = False,
    **options: Any,
) -> BalanceStep:
    """Balance the named units one after the other, or as one tied set (one common λ).

    ``theta`` in (0, 1] applies ``λ*^θ`` (a partial, still favourable step). Closed forms are
    used for a single Lp (BiLU and BiPU); sums of powers and custom costs are solved numerically.
    """
    if not 0.0 < theta <= 1.0:
        raise SynbalError(f"theta must be in (0, 1], got {theta}")
    regularizer = parse_regularizer(reg)
    adapter = adapter_for(net, **options)
    problem = adapter.problem(regularizer)
    idx = _indices(problem, list(units))
    u = np.zeros(problem.n)
    before = problem.value(u)
    if tied and problem.custom is None and np.unique(problem.degree[idx]).size > 1:
        raise SynbalError("a tied set must contain units of one degree c")
    if tied:
        step_set(problem, u, idx, theta, tied=True)
    else:
        balance_in_order(problem, u, idx, theta)
    after = problem.value(u)
    names = problem.names or []
    return BalanceStep(
        net=adapter.apply(u, inplace=inplace),
        scales={names[i]: float(np.exp(u[i])) for i in idx},
        delta_regularizer=before - after,
    )
