"""Longest-path depths of a directed graph (Kahn's algorithm), compiled: linear in the edges.

>>> import numpy as np
>>> depth, acyclic = longest_path_depths(4, np.array([0, 1, 0, 2]), np.array([1, 2, 2, 3]))
>>> depth.tolist(), acyclic
([0, 1, 2, 3], True)
>>> longest_path_depths(2, np.array([0, 1]), np.array([1, 0]))[1]  # a cycle
False
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["longest_path_depths"]


@numba.njit(cache=True)
def _kahn(n, starts, targets, indeg):  # type: ignore[no-untyped-def]
    depth = np.zeros(n, dtype=np.int64)
    stack = np.empty(n, dtype=np.int64)
    top = 0
    for k in range(n):
        if indeg[k] == 0:
            stack[top] = k
            top += 1
    done = 0
    while top > 0:
        top -= 1
        j = stack[top]
        done += 1
        dj = depth[j] + 1
        for e in range(starts[j], starts[j + 1]):
            i = targets[e]
            if depth[i] < dj:
                depth[i] = dj
            indeg[i] -= 1
            if indeg[i] == 0:
                stack[top] = i
                top += 1
    return depth, done == n


def longest_path_depths(n: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(depth, acyclic)``: each node's longest-path depth from the sources among ``n`` nodes joined
    by the edges ``src[k] -> dst[k]``, and whether the graph has no cycle (else depths are partial)."""
    order = np.argsort(src, kind="stable")
    starts = np.searchsorted(src[order], np.arange(n + 1)).astype(np.int64)
    targets = np.ascontiguousarray(dst[order], dtype=np.int64)
    indeg = np.bincount(dst, minlength=n).astype(np.int64)
    depth, acyclic = _kahn(n, starts, targets, indeg)
    return depth, bool(acyclic)
