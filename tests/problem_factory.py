"""Random balance problems for the algorithm tests (no adapter involved)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from synbal._problem.problem import BalanceProblem, CostBlock


def random_problem(
    rng: np.random.Generator,
    n: int = 12,
    n_fixed: int = 4,
    density: float = 0.3,
    powers: tuple[float, ...] = (2.0,),
    bipu: bool = False,
    recurrent: bool = True,
    bias: bool = True,
    log10_range: float = 2.0,
) -> BalanceProblem:
    """A general unit graph: ``n`` scalable units and ``n_fixed`` fixed ones, random edges.

    Weights are ``10**U(-log10_range, log10_range)``; ``recurrent`` allows cycles and
    self-loops; every unit receives from and sends to at least one fixed unit so that the
    problem is grounded.
    """
    m = n + n_fixed
    mask = rng.random((m, m)) < density
    if not recurrent:
        order = rng.permutation(m)
        rank = np.empty(m, dtype=int)
        rank[order] = np.arange(m)
        mask &= rank[:, None] > rank[None, :]
    mask[n:, n:] = False
    for i in range(n):  # ground every unit
        mask[i, n + rng.integers(n_fixed)] = True
        mask[n + rng.integers(n_fixed), i] = True
    mags = 10.0 ** rng.uniform(-log10_range, log10_range, size=(m, m)) * mask
    degree = np.ones(n)
    if bipu:
        degree = np.where(rng.random(n) < 0.4, rng.choice([0.5, 2.0, 3.0], size=n), 1.0)
    ids = np.concatenate([np.arange(n), np.full(n_fixed, -1)])
    blocks = []
    for k, p in enumerate(powers):
        coef = 1.0 / (k + 1)
        blocks.append(CostBlock(p, ids, ids, sp.csr_array(coef * mags**p)))
        if bias:
            b = 10.0 ** rng.uniform(-log10_range, log10_range, size=(n, 1)) * (rng.random((n, 1)) < 0.5)
            blocks.append(CostBlock(p, np.arange(n), [-1], coef * b**p, bias=True))
    return BalanceProblem(degree, blocks)


def layered_problem(
    rng: np.random.Generator,
    widths: list[int],
    p: float = 2.0,
    bias: bool = True,
) -> BalanceProblem:
    """A dense layered net (first and last widths are the fixed input and output layers)."""
    idx = []
    layers = []
    off = 0
    for k, w in enumerate(widths):
        if k in (0, len(widths) - 1):
            idx.append(np.full(w, -1))
        else:
            idx.append(np.arange(off, off + w))
            layers.append(idx[-1])
            off += w
    blocks = []
    for k in range(1, len(widths)):
        W = rng.normal(size=(widths[k], widths[k - 1])) * np.exp(rng.normal(size=(widths[k], 1)))
        blocks.append(CostBlock(p, idx[k], idx[k - 1], np.abs(W) ** p))
        if bias and 0 < k < len(widths) - 1:
            blocks.append(CostBlock(p, idx[k], [-1], np.abs(rng.normal(size=(widths[k], 1))) ** p, bias=True))
    return BalanceProblem(np.ones(off), blocks, layers=layers)
