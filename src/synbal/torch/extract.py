"""Extraction: one pass over a model's parameters builds the balance problem of its groups.

For a power regularizer every parameter becomes one :class:`~synbal.problem.CostBlock` per power:
rows are destination groups (or, for fixed rows, one row per fixed unit with ``fixed_ids``
naming it), columns are source groups (all fixed sources share the column ``-1``), and
``A[r, k] = Σ coef·|w|^p`` over the entries between them — a conv kernel's taps, a flatten
block, a shared filter all collapse into one entry. Sums run in float64 whatever the dtype.
Parameters no rule scales (PReLU slopes, LayerNorm affine, …) are counted as fixed costs, so
``R`` is the model's total.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from synbal.errors import RegularizerError
from synbal.lpq import LpqRegularizer
from synbal.problem import BalanceProblem, CostBlock, CustomCosts
from synbal.regularizers import CustomRegularizer, PowerRegularizer, Regularizer
from synbal.torch.discovery import Discovery, ParamUse, check_finite

__all__ = ["build_problem"]

_DENSE_LIMIT = 1 << 21  # larger blocks are stored sparse


def _reduced_power(name: str, p: torch.Tensor, axes: tuple[int, ...], power: float, coef: float) -> np.ndarray:
    """``coef·Σ|p|^power`` over ``axes`` (keeping dims), in float64; NaN/Inf weights are refused."""
    a = p.detach().to(torch.float64, copy=True)
    if power == 2.0:
        a.mul_(a)
    elif power == 1.0:
        a.abs_()
    else:
        a.abs_().pow_(power)
    if axes:
        a = a.sum(dim=axes, keepdim=True)
    if coef != 1.0:
        a = a * coef
    out = a.cpu().numpy()
    if not np.all(np.isfinite(out)):  # a NaN/Inf weight propagates into its sum
        check_finite(name, p)
    return out


def _labels(d: Discovery, use: ParamUse, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per entry of the reduced parameter: the row key (group, or ``n + slot`` when fixed) and
    the column group (``-1`` when fixed)."""
    n = d.n
    g_row = d.group_of_slot[use.row]
    row_key = np.where(g_row >= 0, g_row, n + use.row)
    col = d.group_of_slot[use.col]
    return (np.broadcast_to(row_key, shape).ravel(), np.broadcast_to(col, shape).ravel())


def _block(power: float, values: np.ndarray, row_key: np.ndarray, col: np.ndarray, n: int,
           bias: bool) -> CostBlock:
    rows, r_idx = np.unique(row_key, return_inverse=True)
    cols, c_idx = np.unique(col, return_inverse=True)
    dst = np.where(rows < n, rows, -1)
    shape = (rows.size, cols.size)
    flat = values.ravel()
    if rows.size * cols.size <= _DENSE_LIMIT:
        matrix: np.ndarray | sp.csr_array = np.bincount(
            r_idx.ravel() * cols.size + c_idx.ravel(), weights=flat, minlength=rows.size * cols.size
        ).reshape(shape)
    else:
        matrix = sp.coo_array((flat, (r_idx.ravel(), c_idx.ravel())), shape=shape).tocsr()
    return CostBlock(power, dst, cols, matrix, bias=bias, fixed_ids=rows)


def _use_blocks(d: Discovery, use: ParamUse, reg: PowerRegularizer | LpqRegularizer) -> list[CostBlock]:
    p = d.params[use.name]
    axes = tuple(a for a in range(p.dim()) if use.row.shape[a] == 1 and use.col.shape[a] == 1)
    blocks = []
    for term in reg.terms:
        values = _reduced_power(use.name, p, axes, term.power, term.coef)
        row_key, col = _labels(d, use, values.shape)
        blocks.append(_block(term.power, values, row_key, col, d.n, use.bias))
    return blocks


def _unused_blocks(d: Discovery, reg: PowerRegularizer | LpqRegularizer, first_id: int) -> list[CostBlock]:
    """Parameters that never scale: one fixed row per entry along their first axis."""
    blocks = []
    next_id = first_id
    for name in d.unused:
        p = d.params[name]
        rows = int(p.shape[0]) if p.dim() else 1
        axes = tuple(range(1, p.dim()))
        for term in reg.terms:
            values = _reduced_power(name, p, axes, term.power, term.coef).reshape(rows, 1)
            blocks.append(CostBlock(term.power, np.full(rows, -1), np.array([-1]), values,
                                    fixed_ids=np.arange(next_id, next_id + rows)))
        next_id += rows
    return blocks


def _custom(d: Discovery, reg: CustomRegularizer) -> CustomCosts:
    dst, src, mag = [], [], []
    for use in d.uses.values():
        p = d.params[use.name]
        shape = tuple(p.shape)
        dst.append(np.broadcast_to(d.group_of_slot[use.row], shape).ravel())
        src.append(np.broadcast_to(d.group_of_slot[use.col], shape).ravel())
        check_finite(use.name, p)
        mag.append(p.detach().to(torch.float64).abs().cpu().numpy().ravel())
    for name in d.unused:
        p = d.params[name]
        check_finite(name, p)
        dst.append(np.full(p.numel(), -1))
        src.append(np.full(p.numel(), -1))
        mag.append(p.detach().to(torch.float64).abs().cpu().numpy().ravel())
    all_dst = np.concatenate(dst) if dst else np.zeros(0, dtype=np.int64)
    return CustomCosts(all_dst, np.concatenate(src) if src else all_dst,
                       np.concatenate(mag) if mag else np.zeros(0), np.ones(all_dst.size), reg.g, reg.dg)


def build_problem(d: Discovery, reg: Regularizer) -> BalanceProblem:
    """The :class:`~synbal.problem.BalanceProblem` of a discovered model for ``reg`` (all degrees 1)."""
    degree = np.ones(d.n)
    if isinstance(reg, CustomRegularizer):
        return BalanceProblem(degree, [], names=list(d.names), layers=d.layers, custom=_custom(d, reg))
    if not isinstance(reg, (PowerRegularizer, LpqRegularizer)):
        raise RegularizerError(f"cannot use regularizer {reg!r} on a PyTorch model")
    blocks: list[CostBlock] = []
    for use in d.uses.values():
        blocks.extend(_use_blocks(d, use, reg))
    blocks.extend(_unused_blocks(d, reg, d.n + d.table.n_slots))
    return BalanceProblem(degree, blocks, names=list(d.names), layers=d.layers)
