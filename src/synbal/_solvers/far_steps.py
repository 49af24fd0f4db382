"""Exact local steps for units far from balance: the globalisation Newton lacks across scales.

Far from its minimum a unit's cost is dominated by one exponential (``IN·e^{pt}`` or
``OUT·e^{-pct}``), and a Newton step moves it by only ``1/p`` (or ``1/(pc)``) in ``t``: a BiPU
of degree 100 under ``l0.5`` advances ``0.02`` per step. A line search on ``R`` cannot lengthen
that step when the unit's costs are far below the rounding level of ``R`` (``1e73`` next to
``1e299``): its directional derivative is noise there. The exact balancing step of the unit
(:func:`~synbal._solvers.steps.optimal_log_steps`) does not care about other units' scale,
and steps of *independent* units (no weight between any two of them) do not interact, so
taking them together is block coordinate descent: ``R`` cannot increase.

:func:`far_unit_steps` picks the free units whose relative deficit exceeds ``FAR`` (one side
more than three times the other), keeps an independent subset of them (every unit whose
deficit outranks each far neighbour's; one vectorised round of Luby's method) and balances
those exactly.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> # x -> h -> y with a degree-100 BiPU: IN = 1, OUT = 1e60 (l2)
>>> prob = BalanceProblem(np.array([100.0]), [CostBlock(2.0, [0], [-1], [[1.0]]),
...                                           CostBlock(2.0, [-1], [0], [[1e60]])])
>>> u = np.zeros(1)
>>> moved = far_unit_steps(prob, u, prob.relative_deficit(u), prob.free_mask())
>>> moved, float(prob.max_relative_deficit(u)) < 1e-12
(1, True)
"""

from __future__ import annotations

import numpy as np

from synbal._problem.problem import BalanceProblem
from synbal._solvers.steps import SetCosts, optimal_log_steps

__all__ = ["FAR", "far_unit_steps", "independent_subset"]

#: A unit is *far* from balance when ``|IN − c·OUT| / (IN + c·OUT)`` exceeds this.
FAR = 0.5


def independent_subset(adjacency: object, candidates: np.ndarray, priority: np.ndarray) -> np.ndarray:
    """Candidates (bool mask) whose ``priority`` beats that of every candidate neighbour.

    ``adjacency`` is a symmetric CSR unit graph without self-loops. Ties are broken by the lower
    index, so the result is never empty when ``candidates`` is not, and no two chosen units are
    neighbours.

    >>> import scipy.sparse as sp
    >>> path = sp.csr_array(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> independent_subset(path, np.array([True, True, True]), np.array([0.9, 0.9, 0.2])).tolist()
    [True, False, False]
    """
    import scipy.sparse as sp

    assert isinstance(adjacency, sp.csr_array)
    n = candidates.size
    # rank by (priority descending, index ascending): rank 0 is the best
    order = np.lexsort((np.arange(n), -priority))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    neighbour_rank = np.where(candidates[adjacency.indices], rank[adjacency.indices], n)
    best_neighbour = np.full(n, n, dtype=np.int64)
    nonempty = np.diff(adjacency.indptr) > 0
    if nonempty.any():  # segments of the non-empty rows (an empty row adds nothing between them)
        best_neighbour[nonempty] = np.minimum.reduceat(neighbour_rank, adjacency.indptr[:-1][nonempty])
    return candidates & (rank < best_neighbour)


def far_unit_steps(problem: BalanceProblem, u: np.ndarray, rel: np.ndarray, free: np.ndarray) -> int:
    """Balance exactly (in place on ``u``) an independent set of the free units farther than ``FAR``
    from balance; return how many moved."""
    far = free & (rel > FAR)
    if not far.any():
        return 0
    members = np.flatnonzero(independent_subset(problem.unit_adjacency(), far, rel))
    costs = SetCosts(problem).costs(u, members)
    step = optimal_log_steps(costs, problem.degree[members])
    moved = np.isfinite(step) & (step != 0)
    u[members[moved]] += step[moved]
    return int(moved.sum())
