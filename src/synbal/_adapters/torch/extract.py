"""Extraction: one pass over a model's parameters builds the balance problem of its groups.

For a power regularizer every parameter becomes one :class:`~synbal._problem.problem.CostBlock` per power:
rows are destination groups (or, for fixed rows, one row per fixed unit with ``fixed_ids``
naming it), columns are source groups (all fixed sources share the column ``-1``), and
``A[r, k] = Σ coef·|w|^p`` over the entries between them — a conv kernel's taps, a flatten
block, a shared filter all collapse into one entry. Sums run in float64 whatever the dtype.
Parameters no rule scales (PReLU slopes, LayerNorm affine, …) are counted as fixed costs, so
``R`` is the model's total.

Two routes build a block, with the same result:

* **product blocks** (the fast path): when a parameter's row groups vary along one axis and its
  column groups along another (Linear, Conv, a Linear after a flatten, biases, BatchNorm's
  affine, RNN matrices), every row meets every column, so ``A`` is the weight's own matrix with
  the remaining axes (conv taps) summed and repeated rows/columns (a flatten's positions, the
  fixed input) added up. That is computed with tensor reductions over chunks of rows, upcast to
  float64 a chunk at a time (never a float64 copy of the whole weight). A CPU float32/float64
  matrix whose rows and columns map one-to-one onto increasing groups is not reduced at all: it
  becomes a matrix-free :class:`~synbal._compiled.powermatrix.PowerMatrix` over the parameter's own memory,
  exactly like the engine's :class:`~synbal._adapters.dense.DenseNet` blocks (so ``exact`` on an MLP runs
  the compiled chain solver).
* **label blocks** (irregular slots: grouped or transposed convolutions, locally connected
  layers, embeddings): the parameter is reduced over the axes along which nothing varies, and its
  entries are binned by their (row group, column group) pair.

Key rows (slots of sign −1: a query/key group scales them by ``1/λ``) get row keys of their own
(``n + slots + group``) and end in blocks with ``row_sign = −1`` (the ℓ_{p,q} solver refuses such a
problem). Custom costs have no signed form: there the query/key groups' rows are fixed rows, so
those groups are dead units and keep scale 1, as before query/key pairs were found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import torch

from synbal._adapters.torch.discovery import Discovery, ParamUse, check_finite
from synbal._adapters.torch.values import compress
from synbal._compiled.powermatrix import PowerMatrix, _pw
from synbal._problem.costs import CostFunction, PowerTerm
from synbal._problem.problem import BalanceProblem, CostBlock, CustomCosts
from synbal._problem.regularizers import Regularizer

__all__ = ["build_problem", "label_blocks", "product_blocks"]

_DENSE_LIMIT = 1 << 21  # larger label blocks are stored sparse
_CHUNK = 1 << 18  # entries per float64 temporary (2 MB) in the chunked reductions
_FUSED_SIZE = 1 << 16  # summed product blocks at least this large are kept as PowerMatrix(A, 1)


def _power_(a: torch.Tensor, power: float) -> torch.Tensor:
    """``|a|^power`` in place (``a`` is a float64 scratch tensor)."""
    if power == 2.0:
        return a.mul_(a)
    if power == 1.0:
        return a.abs_()
    return a.abs_().pow_(power)


def _chunks(rows: int, per_row: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK // max(1, per_row))
    return [(i, min(rows, i + step)) for i in range(0, rows, step)]


def _finite(name: str, p: torch.Tensor, sums: torch.Tensor) -> None:
    if not bool(torch.isfinite(sums).all()):  # a NaN/Inf weight propagates into its sum
        check_finite(name, p)


def power_sums(name: str, p: torch.Tensor, axes: tuple[int, ...], power: float) -> torch.Tensor:
    """``Σ|p|^power`` over ``axes`` (dims kept), in float64, one chunk of the first axis at a time.

    NaN/Inf weights raise :class:`~synbal.errors.InvalidWeightError`.

    >>> w = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    >>> power_sums("w", w, (1,), 2.0).tolist()
    [[5.0], [9.25]]
    """
    src = p.detach().reshape(1) if p.dim() == 0 else p.detach()
    out = torch.zeros([1 if a in axes else s for a, s in enumerate(src.shape)], dtype=torch.float64,
                      device=src.device)
    per_row = src[0].numel() if src.shape[0] else 0
    for i, j in _chunks(int(src.shape[0]), per_row):
        a = _power_(src[i:j].to(torch.float64, copy=True), power)
        s = a.sum(dim=axes, keepdim=True) if axes else a
        if 0 in axes:
            out += s
        else:
            out[i:j] = s
    _finite(name, p, out)
    return out.reshape(p.shape if p.dim() == 0 else out.shape)


# ---------------------------------------------------------------------------- keys
def qk_groups(d: Discovery) -> np.ndarray:
    """Mask of the groups with key slots (sign −1): the query/key pairs."""
    mask = np.zeros(d.n + 1, dtype=bool)
    if d.sign_of_slot is not None:
        mask[d.group_of_slot[d.sign_of_slot < 0]] = True  # a fixed slot (-1) marks the spare last entry
    return mask[:-1]


def _keys(d: Discovery, use: ParamUse) -> tuple[np.ndarray, np.ndarray]:
    """Row keys (group; ``n + slot`` when fixed; ``n + slots + group`` for a key row) and column
    groups (``-1`` fixed), each shrunk to size 1 along every axis where it is constant."""
    g_row = d.group_of_slot[use.row]
    if d.sign_of_slot is not None:
        g_row = np.where(d.sign_of_slot[use.row] < 0, d.n + d.table.n_slots + g_row, g_row)
    row_key = np.where(g_row >= 0, g_row, d.n + use.row)
    return compress(row_key), compress(d.group_of_slot[use.col])


def _signed_rows(d: Discovery, blocks: list[CostBlock]) -> list[CostBlock]:
    """Split off the key rows (keys ``≥ n + slots``) of each block into a block of ``row_sign = −1``."""
    base = d.n + d.table.n_slots
    out = []
    for b in blocks:
        keys = b.fixed_ids
        if keys is None or not (neg := keys >= base).any():
            out.append(b)
            continue
        matrix = b.matrix if neg.all() else b.explicit()
        for rows, sign in ((np.flatnonzero(~neg), 1.0), (np.flatnonzero(neg), -1.0)):
            if rows.size:
                dst = b.dst[rows] if sign > 0 else keys[rows] - base
                part = matrix if rows.size == b.dst.size else matrix[rows]
                out.append(CostBlock(b.power, dst, b.src, part, bias=b.bias,
                                     fixed_ids=keys[rows] if sign > 0 else dst, row_sign=sign))
    return out


@dataclass
class _Product:
    """A parameter whose row keys vary along axis ``ar`` only and column keys along ``ac`` only."""

    ar: int | None
    ac: int | None
    row_key: np.ndarray  # along ar (length 1 when ar is None)
    col_key: np.ndarray


def _product(row_key: np.ndarray, col_key: np.ndarray) -> _Product | None:
    varying_r = [a for a, s in enumerate(row_key.shape) if s > 1]
    varying_c = [a for a, s in enumerate(col_key.shape) if s > 1]
    if len(varying_r) > 1 or len(varying_c) > 1 or set(varying_r) & set(varying_c):
        return None
    return _Product(varying_r[0] if varying_r else None, varying_c[0] if varying_c else None,
                    row_key.reshape(-1), col_key.reshape(-1))


def _runs(inverse: np.ndarray, k: int) -> int | None:
    """``L`` when ``inverse`` is ``[0]*L + [1]*L + … + [k−1]*L`` (a flatten's positions), else None."""
    if k == 0 or inverse.size % k:
        return None
    length = inverse.size // k
    return length if np.array_equal(inverse, np.repeat(np.arange(k), length)) else None


def _identity(inverse: np.ndarray) -> bool:
    return bool(np.array_equal(inverse, np.arange(inverse.size)))


def _aggregate_cols(a: torch.Tensor, inverse: np.ndarray, k: int, runs: int | None,
                    index: torch.Tensor | None) -> torch.Tensor:
    """Sum the columns of ``a`` (chunk × columns) that share a key, in the order of the sorted keys."""
    if index is None and k == inverse.size:
        return a
    if k == 1:
        return a.sum(dim=1, keepdim=True)
    if runs is not None:
        return a.reshape(a.shape[0], k, runs).sum(dim=2)
    assert index is not None
    return torch.zeros(a.shape[0], k, dtype=a.dtype, device=a.device).index_add_(1, index, a)


@numba.njit(fastmath=True, cache=True)
def _summed(W: np.ndarray, p: float, row_of: np.ndarray, col_of: np.ndarray, out: np.ndarray) -> None:
    """``out[row_of[i], col_of[j]] += Σ_t |W[i, j, t]|^p`` in float64, reading ``W`` once in place."""
    n_r, n_c, taps = W.shape
    for i in range(n_r):
        r = row_of[i]
        for j in range(n_c):
            acc = 0.0
            for t in range(taps):
                acc += _pw(np.float64(W[i, j, t]), p)
            out[r, col_of[j]] += acc


def _product_view(p: torch.Tensor, pr: _Product) -> torch.Tensor:
    """``p`` with the row axis first, the column axis second and everything else flattened last."""
    order = [a for a in (pr.ar, pr.ac) if a is not None]
    view = p.detach().permute(*order, *[a for a in range(p.dim()) if a not in order])
    if pr.ar is None:
        view = view.unsqueeze(0)
    if pr.ac is None:
        view = view.unsqueeze(1)
    return view


def _product_matrix(name: str, p: torch.Tensor, pr: _Product, power: float) -> tuple[np.ndarray, np.ndarray,
                                                                                   np.ndarray]:
    """``(rows, cols, A)``: the sorted distinct keys and the float64 cost matrix between them.

    CPU float32/float64 parameters whose axes are already in (row, column, taps) order are read
    in place by a compiled kernel; others are reduced by tensor operations a chunk at a time.
    """
    rows, r_inv = np.unique(pr.row_key, return_inverse=True)
    cols, c_inv = np.unique(pr.col_key, return_inverse=True)
    view = _product_view(p, pr)
    n_r, n_c = int(view.shape[0]), int(view.shape[1])
    if view.device.type == "cpu" and view.is_contiguous() and view.dtype in (torch.float32, torch.float64):
        matrix = np.zeros((rows.size, cols.size))
        _summed(view.numpy().reshape(n_r, n_c, -1), power, r_inv, c_inv, matrix)
        if not np.isfinite(matrix).all():  # a NaN/Inf weight propagates into its sum
            check_finite(name, p)
        return rows, cols, matrix
    runs = _runs(c_inv, cols.size)
    plain = runs is not None or cols.size == 1 or _identity(c_inv)
    c_index = None if plain else torch.from_numpy(c_inv).to(view.device)
    r_identity = _identity(r_inv)
    out = torch.zeros(rows.size, cols.size, dtype=torch.float64, device=view.device)
    r_index = None if r_identity else torch.from_numpy(r_inv).to(view.device)
    for i, j in _chunks(n_r, view[0].numel() if n_r else 0):
        a = _power_(view[i:j].to(torch.float64, copy=True), power).reshape(j - i, n_c, -1).sum(dim=2)
        a = _aggregate_cols(a, c_inv, cols.size, runs, c_index)
        if r_identity:
            out[i:j] = a
        else:
            assert r_index is not None
            out.index_add_(0, r_index[i:j], a)
    _finite(name, p, out)
    return rows, cols, out.cpu().numpy()


def _matrix_free(p: torch.Tensor, pr: _Product) -> bool:
    """Whether ``p`` is a CPU float32/float64 matrix whose rows and columns are increasing keys."""
    return (p.dim() == 2 and pr.ar == 0 and pr.ac == 1 and p.device.type == "cpu" and p.is_contiguous()
            and p.dtype in (torch.float32, torch.float64)
            and bool(np.all(pr.row_key[1:] > pr.row_key[:-1])) and bool(np.all(pr.col_key[1:] > pr.col_key[:-1])))


def _all_finite(name: str, weights: np.ndarray, p: torch.Tensor) -> None:
    """One summing read (any NaN/Inf makes the sum non-finite); the exact test only if it is not finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.isfinite(weights.sum()):
            check_finite(name, p)


def product_blocks(d: Discovery, use: ParamUse, terms: tuple[PowerTerm, ...]) -> list[CostBlock] | None:
    """The blocks of a product-structured parameter (see the module docstring), or ``None``."""
    p = d.params[use.name]
    if p.dim() == 0 or p.numel() == 0:
        return None
    pr = _product(*_keys(d, use))
    if pr is None:
        return None
    n = d.n
    if _matrix_free(p, pr):
        weights = p.detach().numpy()
        _all_finite(use.name, weights, p)
        dst = np.where(pr.row_key < n, pr.row_key, -1)
        return [CostBlock(t.power, dst, pr.col_key, PowerMatrix(weights, t.power, t.coef), bias=use.bias,
                          fixed_ids=pr.row_key) for t in terms]
    blocks = []
    for t in terms:
        rows, cols, matrix = _product_matrix(use.name, p, pr, t.power)
        if t.coef != 1.0:
            matrix *= t.coef
        # large summed blocks (conv taps, a flatten's positions) give A x and Aᵀ y in one read
        costs = PowerMatrix(matrix, 1.0) if matrix.size >= _FUSED_SIZE else matrix
        blocks.append(CostBlock(t.power, np.where(rows < n, rows, -1), cols, costs, bias=use.bias, fixed_ids=rows))
    return blocks


# ---------------------------------------------------------------------------- label blocks
def _label_block(power: float, values: np.ndarray, row_key: np.ndarray, col: np.ndarray, n: int,
                 bias: bool) -> CostBlock:
    """Bin ``values`` by (row key, column) pair; keys are unique'd on their small compressed arrays."""
    if values.ndim == 0:  # a scalar parameter (e.g. the old weight_norm's g with dim=None)
        values, row_key, col = values.reshape(1), row_key.reshape(1), col.reshape(1)
    rows, r_inv = np.unique(row_key, return_inverse=True)
    cols, c_inv = np.unique(col, return_inverse=True)
    shape = values.shape
    r_idx = np.broadcast_to(r_inv.reshape(row_key.shape), shape).ravel()
    c_idx = np.broadcast_to(c_inv.reshape(col.shape), shape).ravel()
    dst = np.where(rows < n, rows, -1)
    flat = values.ravel()
    if rows.size * cols.size <= _DENSE_LIMIT:
        matrix: np.ndarray | sp.csr_array = np.bincount(
            r_idx * cols.size + c_idx, weights=flat, minlength=rows.size * cols.size
        ).reshape(rows.size, cols.size)
    else:
        matrix = sp.coo_array((flat, (r_idx, c_idx)), shape=(rows.size, cols.size)).tocsr()
    return CostBlock(power, dst, cols, matrix, bias=bias, fixed_ids=rows)


def label_blocks(d: Discovery, use: ParamUse, terms: tuple[PowerTerm, ...]) -> list[CostBlock]:
    """The blocks of any parameter, through per-entry (row group, column group) labels."""
    p = d.params[use.name]
    row_key, col = _keys(d, use)
    axes = tuple(a for a in range(p.dim()) if row_key.shape[a] == 1 and col.shape[a] == 1)
    blocks = []
    for term in terms:
        values = power_sums(use.name, p, axes, term.power).cpu().numpy()
        if term.coef != 1.0:
            values = values * term.coef
        blocks.append(_label_block(term.power, values, row_key, col, d.n, use.bias))
    return blocks


def _unused_blocks(d: Discovery, terms: tuple[PowerTerm, ...], first_id: int) -> list[CostBlock]:
    """Parameters that never scale: one fixed row per entry along their first axis."""
    blocks = []
    next_id = first_id
    for name in d.unused:
        p = d.params[name]
        rows = int(p.shape[0]) if p.dim() else 1
        axes = tuple(range(1, p.dim()))
        for term in terms:
            values = power_sums(name, p, axes, term.power).cpu().numpy().reshape(rows, 1) * term.coef
            blocks.append(CostBlock(term.power, np.full(rows, -1), np.array([-1]), values,
                                    fixed_ids=np.arange(next_id, next_id + rows)))
        next_id += rows
    return blocks


def _custom(d: Discovery, g: CostFunction, dg: CostFunction) -> CustomCosts:
    dst, src, mag = [], [], []
    for use in d.uses.values():
        p = d.params[use.name]
        shape = tuple(p.shape)
        rows = d.group_of_slot[use.row]
        rows = np.where(np.append(qk_groups(d), False)[rows], -1, rows)  # query/key pairs stay fixed here
        dst.append(np.broadcast_to(rows, shape).ravel())
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
                       np.concatenate(mag) if mag else np.zeros(0), np.ones(all_dst.size), g, dg)


def build_problem(d: Discovery, reg: Regularizer, *, fast: bool = True) -> BalanceProblem:
    """The :class:`~synbal._problem.problem.BalanceProblem` of a discovered model for ``reg`` (all degrees 1).

    ``fast=False`` builds every block through labels (the reference the product blocks are
    tested against).
    """
    return reg.costs_for(_ModelCosts(d, fast))


@dataclass(frozen=True)
class _ModelCosts:
    """A discovered model's :class:`~synbal._problem.costs.CostSink`."""

    d: Discovery
    fast: bool
    where: str = "a PyTorch model"

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> BalanceProblem:
        d = self.d
        blocks: list[CostBlock] = []
        for use in d.uses.values():
            product = product_blocks(d, use, terms) if self.fast else None
            blocks.extend(_signed_rows(d, product if product is not None else label_blocks(d, use, terms)))
        blocks.extend(_unused_blocks(d, terms, d.n + d.table.n_slots))
        return BalanceProblem(np.ones(d.n), blocks, names=d.names, layers=d.layers)

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> BalanceProblem:
        return BalanceProblem(np.ones(self.d.n), [], names=self.d.names, layers=self.d.layers,
                              custom=_custom(self.d, g, dg))
