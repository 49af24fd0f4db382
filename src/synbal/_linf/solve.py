"""The canonical max-balanced state for degree-1 units: Schneider & Schneider's contraction.

With every scalable unit of degree 1, scaling is a *diagonal similarity* of the graph whose
nodes are the units plus one fixed node ``0`` (all visible / non-scalable / dead units and the
bias constant, which all keep ``u = 0``): an edge ``j → i`` weighs ``a_ij + u_i − u_j`` in logs,
so every cycle keeps its mean weight. The canonical state (see :mod:`synbal._linf`) is found by
the max-balancing algorithm of Schneider & Schneider (1991):

1. ``μ`` = the largest mean weight of a cycle of the current graph. No scaling can push all
   weights below ``μ``; potentials ``δ`` from a longest-path computation with weights ``w − μ``
   bring every edge to ``≤ μ``.
2. The edges then at exactly ``μ`` that lie on cycles (strong components of the tight edges)
   are at ``μ`` in *every* lexicographically minimal state, so their units' relative scales are
   final: each such component is contracted into one node (into ``0`` if it contains it).
3. Repeat until everything is contracted into ``0``.

Each round merges at least one cycle, so there are at most ``n`` rounds. When the units other
than ``0`` form an acyclic graph (feed-forward nets without residual ties) every cycle passes
through ``0``, and the cycle means come from a longest-path recursion as deep as the network;
otherwise Karp's algorithm is used (``O(n·m)`` per round).

>>> import numpy as np
>>> # x -(4)-> h -(1/4)-> y: h is scaled by 1/4, both weights become 1
>>> u, rounds, unreachable = max_balance_unit_degree(1, np.array([0, -1]), np.array([-1, 0]),
...                                                  np.log([4.0, 0.25]), np.zeros(1, dtype=bool))
>>> float(np.exp(u[0])), rounds
(0.25, 1)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from synbal.errors import SynbalError

__all__ = ["max_balance_unit_degree"]

_TOL = 1e-10


def max_balance_unit_degree(
    n: int, dst: np.ndarray, src: np.ndarray, loga: np.ndarray, dead: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """Log-scales of the max-balanced state of ``n`` degree-1 units.

    ``dst``/``src`` (``-1`` = fixed) and ``loga`` are the pair edges; ``dead`` units are treated
    as fixed. Returns ``(u, rounds, unreachable)``: units not in the strong component of the
    fixed node (no path from the inputs or none to the outputs) are left at ``u = 0``.
    """
    node = np.arange(n + 1)
    node[:n][dead] = n
    s = node[np.where(src < 0, n, src)]
    d = node[np.where(dst < 0, n, dst)]
    keep = s != d
    s, d, a = s[keep], d[keep], np.asarray(loga, dtype=np.float64)[keep]
    adj = sp.csr_array((np.ones(s.size), (s, d)), shape=(n + 1, n + 1))
    _, label = connected_components(adj, directed=True, connection="strong")
    inside = label == label[n]
    unreachable = ~inside[:n] & ~dead
    keep = inside[s] & inside[d]
    s, d, a = s[keep], d[keep], a[keep]
    u = np.zeros(n + 1)
    rep = np.arange(n + 1)
    rounds = 0
    while True:
        rs, rd = rep[s], rep[d]
        act = rs != rd  # edges inside a contracted node stay there: drop them for good
        if not act.any():
            break
        s, d, a, rs, rd = s[act], d[act], a[act], rs[act], rd[act]
        present = np.zeros(n + 1, dtype=bool)
        present[rs] = present[rd] = present[n] = True
        nodes = np.flatnonzero(present)
        index = np.cumsum(present) - 1
        cs, cd, root = index[rs], index[rd], int(index[n])
        w = a + u[d] - u[s]
        mu, delta = _mean_and_potentials(nodes.size, root, cs, cd, w)
        shift = np.zeros(n + 1)
        shift[nodes] = delta
        u += shift[rep]
        w = w + delta[cd] - delta[cs]
        rep = _contract(rep, nodes, root, n, cs, cd, w, mu)
        rounds += 1
    return u[:n], rounds, unreachable


def _contract(rep: np.ndarray, nodes: np.ndarray, root: int, n: int, cs: np.ndarray, cd: np.ndarray,
              w: np.ndarray, mu: float) -> np.ndarray:
    """Merge every strong component of the edges at ``μ`` (into the fixed node ``n`` if it holds it)."""
    k = nodes.size
    for tol in (_TOL, 1e-8, 1e-6):
        tight = w >= mu - tol * max(1.0, abs(mu))
        adj = sp.csr_array((np.ones(int(tight.sum())), (cs[tight], cd[tight])), shape=(k, k))
        ncomp, label = connected_components(adj, directed=True, connection="strong")
        size = np.bincount(label, minlength=ncomp)
        if (size >= 2).any():
            break
    else:  # pragma: no cover - a maximum-mean cycle is always tight up to rounding
        raise SynbalError("max-balancing found no critical cycle (numerical trouble)")
    target = np.full(ncomp, -1)
    for lab in np.flatnonzero(size >= 2):
        members = np.flatnonzero(label == lab)
        target[lab] = n if root in members else int(nodes[members].min())
    where = np.full(n + 1, -1)
    where[nodes] = target[label]
    moved = where[rep] >= 0
    out = rep.copy()
    out[moved] = where[rep[moved]]
    return out


def _mean_and_potentials(k: int, root: int, cs: np.ndarray, cd: np.ndarray,
                         w: np.ndarray) -> tuple[float, np.ndarray]:
    """``μ`` = max cycle mean, and potentials ``δ`` (``δ_root = 0``) with ``w + δ_dst − δ_src ≤ μ``."""
    inner = (cs != root) & (cd != root)
    adj = sp.csr_array((np.ones(int(inner.sum())), (cs[inner], cd[inner])), shape=(k, k))
    ncomp, _ = connected_components(adj, directed=True, connection="strong")
    if ncomp == k:
        return _acyclic(k, root, cs, cd, w)
    return _karp(k, root, cs, cd, w)


def _push(vals: np.ndarray, cs: np.ndarray, cd: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``out[v] = max over edges s → v of vals[s] + w`` (``-inf`` without incoming edges)."""
    out = np.full(k, -np.inf)
    np.maximum.at(out, cd, vals[cs] + w)
    return out


def _acyclic(k: int, root: int, cs: np.ndarray, cd: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Every cycle passes through ``root``: longest paths ``root → v`` by number of edges."""
    to_root = cd == root
    from_root = cs == root
    inner = ~to_root & ~from_root
    start = np.full(k, -np.inf)
    np.maximum.at(start, cd[from_root], w[from_root])
    paths = [start]  # paths[j-1][v]: heaviest root → v path with j edges through non-root units
    mu = -np.inf
    while np.isfinite(paths[-1]).any():
        j = len(paths)
        back = paths[-1][cs[to_root]] + w[to_root]
        if back.size:
            mu = max(mu, float(back.max()) / (j + 1))
        paths.append(_push(paths[-1], cs[inner], cd[inner], w[inner], k))
    best = np.full(k, -np.inf)
    for j, p in enumerate(paths, start=1):
        best = np.maximum(best, p - j * mu)
    best[root] = 0.0
    return mu, -best


def _karp(k: int, root: int, cs: np.ndarray, cd: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Karp's maximum cycle mean from ``root`` (which reaches every node), then Bellman–Ford."""
    walks = np.full((k + 1, k), -np.inf)
    walks[0, root] = 0.0
    for j in range(1, k + 1):
        walks[j] = _push(walks[j - 1], cs, cd, w, k)
    last = walks[k]
    ok = np.isfinite(last)
    with np.errstate(invalid="ignore"):
        ratios = (last[None, :] - walks[:k]) / (k - np.arange(k))[:, None]
    ratios = np.where(np.isfinite(walks[:k]), ratios, np.inf)
    mu = float(ratios.min(axis=0)[ok].max())
    longest = np.full(k, -np.inf)
    longest[root] = 0.0
    for _ in range(k):
        nxt = np.maximum(longest, _push(longest, cs, cd, w - mu, k))
        nxt[root] = 0.0
        base = np.where(np.isfinite(longest), np.abs(longest), 0.0)
        if not np.any(nxt > longest + 1e-13 * np.maximum(1.0, base)):
            break
        longest = nxt
    return mu, -longest
