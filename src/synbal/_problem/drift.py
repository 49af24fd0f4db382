"""Whether a group of units with BiPUs among them has a balanced state: a positive generalised flow.

``R(u) = Σ_e A_e exp(p(u_i − c_j u_j))`` over the weights ``e: j → i`` of non-zero cost has a
minimiser iff no direction ``d`` lowers some term and raises none, i.e. no ``d`` with
``L_e(d) = d_i − c_j d_j ≤ 0`` on every edge and ``< 0`` on one. By Stiemke's theorem of the
alternative this is so iff some flow ``y > 0`` on *every* edge satisfies, at every scalable unit
``k``, ``Σ_{e into k} y_e = c_k Σ_{e out of k} y_e`` (the transpose of the map ``d ↦ L(d)``;
fixed units are free sources and sinks). For BiLUs (``c = 1``) that is an ordinary circulation and
reduces to reachability: every unit must be reachable from the fixed units and reach them
(:meth:`~synbal._problem.problem.BalanceProblem.drifting_mask`). With BiPUs the gains ``c_k``
make it a linear programme: maximise ``Σ_e t_e`` with ``0 ≤ t_e ≤ min(1, y_e)`` under the
conservation constraints; the flow is strictly positive everywhere iff the optimum is the number
of edges (the constraints are homogeneous in ``y``, so any positive flow scales up to ``y ≥ 1``).

>>> import numpy as np
>>> # x -> h0 <-> h1, nothing reaches an output. h0 has degree 2, h1 is a ReLU:
>>> # flow x->h0 = flow h1->h0 = flow h0->h1 = 1 conserves (1 + 1 = 2·1): a minimum exists
>>> dst, src = np.array([0, 1, 0]), np.array([-1, 0, 1])
>>> positive_flow_exists(np.array([0, 1]), dst, src, np.array([2.0, 1.0]))
True
>>> # with degree 0.5 instead, x->h0 would need a negative flow: the scales drift for ever
>>> positive_flow_exists(np.array([0, 1]), dst, src, np.array([0.5, 1.0]))
False
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["MAX_LP_EDGES", "positive_flow_exists"]

#: Groups with more weights than this are not tested (the linear programme would dominate the run):
#: they are balanced as if a minimum existed, and a solver then stops at its sweep budget.
MAX_LP_EDGES = 200_000


def positive_flow_exists(members: np.ndarray, dst: np.ndarray, src: np.ndarray, degree: np.ndarray,
                         sign: np.ndarray | None = None) -> bool:
    """Whether the weights touching ``members`` carry a flow ``> 0`` conserved (with gains) at each member.

    ``dst``/``src`` list the weights of non-zero cost by unit index (``-1`` fixed); units outside
    ``members`` count as fixed. ``degree`` holds every unit's ``c``; ``sign`` (default all +1) the
    row sign of each weight (``L_e(d) = s_e d_i − c_j d_j``: a flow enters its row with ``s_e``).
    Groups beyond :data:`MAX_LP_EDGES` weights are assumed to have a flow (not tested).
    """
    from scipy.optimize import linprog

    inside = np.zeros(degree.size + 1, dtype=bool)
    inside[members] = True
    touch = inside[dst] | inside[src]
    d, s = dst[touch], src[touch]
    row_sign = np.ones(d.size) if sign is None else np.asarray(sign, dtype=np.float64)[touch]
    m = d.size
    if m == 0 or m > MAX_LP_EDGES:
        return True
    row_of = np.full(degree.size + 1, -1, dtype=np.int64)
    row_of[members] = np.arange(members.size)
    edge = np.arange(m)
    c_ext = np.append(degree, 1.0)
    # conservation at each member: +y for a weight into it, −c·y for a weight out of it (both for a self-loop)
    rows = np.concatenate([row_of[d][inside[d]], row_of[s][inside[s]]])
    cols = np.concatenate([edge[inside[d]], edge[inside[s]]])
    vals = np.concatenate([row_sign[inside[d]], -c_ext[s][inside[s]]])
    conserve = sp.csr_array((vals, (rows, cols)), shape=(members.size, m))
    a_eq = sp.hstack([conserve, sp.csr_array((members.size, m))]).tocsr()  # variables: y, then t
    a_ub = sp.hstack([-sp.eye_array(m), sp.eye_array(m)]).tocsr()  # t_e − y_e ≤ 0
    res = linprog(np.concatenate([np.zeros(m), -np.ones(m)]), A_ub=a_ub, b_ub=np.zeros(m), A_eq=a_eq,
                  b_eq=np.zeros(members.size), bounds=[(0, None)] * m + [(0, 1)] * m, method="highs")
    return bool(res.status == 0 and -res.fun > m - 0.5)
