"""Inverse pairs of slots: a query dimension against the key dimension it meets in ``q kᵀ``.

Attention rules record that slot ``a`` (a query entry) and slot ``b`` (the key entry it is multiplied
with) must scale inversely, ``λ_a λ_b = 1``. After the ties are merged into components, the pairs join
components into *pieces*; a piece is one scalable group when its components split into two sides
with every pair across them (a bipartite piece): the side of the first query component keeps sign
+1, the other side gets sign −1 (its slots scale by ``1/λ``). A piece that is not bipartite (a
component paired with itself, or an odd cycle) has only ``λ = 1``: it is fixed.

>>> import numpy as np
>>> comp = np.array([0, 1, 2, 3, 3])  # slots 3 and 4 are already tied
>>> ties, negative, bad = merge_inverse(comp, np.array([1, 2]), np.array([3, 4]))
>>> ties[0].tolist(), ties[1].tolist(), negative.tolist(), bad.tolist()
([1, 1], [2, 4], [3, 4], [])
>>> merge_inverse(comp, np.array([1, 3]), np.array([3, 1]))[2].tolist()  # 1 ~ 1/3 and 3 ~ 1/1: consistent
[]
>>> merge_inverse(comp, np.array([1, 2, 1]), np.array([2, 3, 3]))[2].tolist()  # 1~1/2, 2~1/3, 1~1/3: odd
[1, 2, 3, 4]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["merge_inverse"]


def merge_inverse(comp: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray],
                                                                          np.ndarray, np.ndarray]:
    """``((tie_a, tie_b), negative, bad)`` for the inverse pairs ``a[k] ~ 1/b[k]`` of slots with
    components ``comp``: the extra ties that make each bipartite piece one component, the slots of
    its negative side, and the slots of pieces that are not bipartite (to be fixed)."""
    ca, cb = comp[a], comp[b]
    ncomp = int(comp.max()) + 1 if comp.size else 0
    # the doubled graph: node c (component c scaled by λ) and ncomp + c (scaled by 1/λ)
    rows = np.concatenate([ca, ca + ncomp])
    cols = np.concatenate([cb + ncomp, cb])
    graph = sp.coo_array((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(2 * ncomp, 2 * ncomp))
    _, label = connected_components(graph, directed=False)
    involved = np.zeros(ncomp, dtype=bool)
    involved[ca] = involved[cb] = True
    odd = involved & (label[:ncomp] == label[ncomp:])  # λ ~ 1/λ: only λ = 1
    _, piece = connected_components(graph + graph.T + sp.coo_array(
        (np.ones(ncomp, dtype=np.int8), (np.arange(ncomp), np.arange(ncomp) + ncomp)), shape=graph.shape),
        directed=False)
    piece = piece[:ncomp]
    bad_piece = np.unique(piece[odd])
    bad_comp = involved & np.isin(piece, bad_piece)
    # the reference (positive) side of each piece: the side of its first query component
    ref = np.full(int(piece.max()) + 1, -1, dtype=np.int64)
    for c in ca[::-1].tolist():
        ref[piece[c]] = label[c]
    ok = involved & ~bad_comp
    negative_comp = ok & (label[:ncomp] != ref[piece])
    slot_rep = np.full(ncomp, -1, dtype=np.int64)  # one slot of each involved component
    slot_rep[comp[np.concatenate([b, a])]] = np.concatenate([b, a])
    first_of_piece = np.full(piece.max() + 1, -1, dtype=np.int64)
    first_of_piece[piece[ca[::-1]]] = slot_rep[ca[::-1]]
    members = np.flatnonzero(ok)
    ties = (np.full(members.size, 0, dtype=np.int64) + first_of_piece[piece[members]], slot_rep[members])
    keep = ties[0] != ties[1]
    slots = np.arange(comp.size)
    return (ties[0][keep], ties[1][keep]), slots[negative_comp[comp]], slots[bad_comp[comp]]
