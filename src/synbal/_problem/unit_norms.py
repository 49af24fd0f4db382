"""The per-unit costs ``S_k(u)`` of the ℓ_{p,q} norm, its value, and its stationarity test.

For each non-input unit ``k``, ``S_k = Σ_{j→k} |w_kj|^p`` at log-scales ``u``; the norm combines
them (:meth:`synbal._problem.lpq.LpqRegularizer.norm_from_unit_costs`). The multiplicative
update (:mod:`synbal._solvers.multiplicative`, where the derivation is) and the stationarity
that stops it come from the same weighted sums, so both live here; the regularizer
(:class:`~synbal._problem.lpq.LpqRegularizer`) uses them for its objective and stationarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from synbal._problem.problem import BalanceProblem, CostBlock
from synbal.errors import RegularizerError

__all__ = ["NormSpec", "UnitNorms", "max_stationarity", "multiplicative_step", "norm_at"]


class NormSpec(Protocol):
    """What the per-unit machinery needs of an ℓ_{p,q} regularizer."""

    @property
    def p(self) -> float: ...
    @property
    def q(self) -> float: ...
    @property
    def include_bias(self) -> bool: ...
    @property
    def is_max_norm(self) -> bool: ...
    def norm_from_unit_costs(self, unit_costs: np.ndarray) -> float: ...


@dataclass
class _Rows:
    """One cost block with the global row index (unit of the ℓ_{p,q} norm) of each row."""

    block: CostBlock
    rows: np.ndarray  # index into S (scalable units first, then fixed units)
    _pattern: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None

    @property
    def pattern(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Where ``A > 0`` (for the max-norm's ``m_i``): a dense mask or ``(rows, cols)``; cached."""
        if self._pattern is None:
            if self.block.is_sparse:
                coo = sp.coo_array(self.block.matrix)
                keep = coo.data > 0
                self._pattern = (coo.row[keep], coo.col[keep])
            else:  # dense or matrix-free: materialised once
                self._pattern = np.asarray(self.block.explicit()) > 0
        return self._pattern


class UnitNorms:
    """Per-unit incoming costs ``S_k(u)`` of a balance problem and the update's weighted sums.

    ``S`` has one entry per scalable unit followed by one per fixed unit that receives weights
    (fixed rows are merged by their ``fixed_ids``; without ids every fixed row is its own
    unit). Bias blocks are dropped unless ``include_bias``.

    >>> import numpy as np
    >>> from synbal._problem.problem import CostBlock
    >>> blocks = [CostBlock(2.0, [0, 1], [-1], [[1.0], [4.0]]),
    ...           CostBlock(2.0, [-1], [0, 1], [[9.0, 16.0]], fixed_ids=np.array([7]))]
    >>> norms = UnitNorms(BalanceProblem(np.ones(2), blocks), p=2.0, include_bias=False)
    >>> norms.costs(np.zeros(2)).tolist()   # h0, h1, the output (id 7)
    [1.0, 4.0, 25.0]
    """

    def __init__(self, problem: BalanceProblem, p: float, include_bias: bool) -> None:
        from synbal._problem.signed import require_unsigned

        require_unsigned(problem, "ℓ_{p,q} balancing (per-unit incoming norms)",
                         "balance a sum of powers such as 'l2' instead")
        blocks = [b for b in problem.blocks if include_bias or not b.bias]
        bad = sorted({b.power for b in blocks if b.power != p})
        if bad:
            raise RegularizerError(
                f"ℓ_{{p,q}} balancing with p={p:g} got cost blocks of power(s) "
                f"{', '.join(f'{x:g}' for x in bad)}; the adapter must aggregate |w|^{p:g}"
            )
        self.p = float(p)
        self.n = problem.n
        self.degree = problem.degree
        # the problem the update lives on: its free mask treats units whose penalised
        # incoming or outgoing cost is zero as dead (their optimal scale is 0 or ∞).
        self.problem = BalanceProblem(problem.degree, blocks, names=problem.names, layers=problem.layers)
        fixed_index: dict[int, int] = {}
        self._rows: list[_Rows] = []
        anonymous = -1
        for b in blocks:
            rows = b.dst.copy()
            fixed = np.flatnonzero(b.dst < 0)
            for r in fixed:
                if b.fixed_ids is not None:
                    key = int(b.fixed_ids[r])
                else:
                    key = anonymous  # a fresh fixed unit per anonymous row
                    anonymous -= 1
                if b.fixed_ids is not None and key < 0:
                    key = anonymous  # negative ids are treated as anonymous too
                    anonymous -= 1
                rows[r] = self.n + fixed_index.setdefault(key, len(fixed_index))
            self._rows.append(_Rows(b, rows))
        self.size = self.n + len(fixed_index)

    def _xy(self, b: CostBlock, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ue = np.append(u, 0.0)
        ce = np.append(self.degree, 1.0)
        return np.exp(-self.p * ce[b.src] * ue[b.src]), np.exp(self.p * ue[b.dst])

    def costs(self, u: np.ndarray) -> np.ndarray:
        """``S_k(u)`` for every unit of the norm (scalable units first), accumulated in float64."""
        s = np.zeros(self.size)
        for r in self._rows:
            x, y = self._xy(r.block, u)
            np.add.at(s, r.rows, y * (r.block.matrix @ x))
        return s

    def weighted_out(self, u: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``Σ_k weight_k a_ki`` for every scalable unit ``i`` (costs of its outgoing weights)."""
        out = np.zeros(self.n + 1)
        for r in self._rows:
            x, y = self._xy(r.block, u)
            col = r.block.matrix.T @ (weight[r.rows] * y)
            np.add.at(out, r.block.src, x * col)
        return out[:-1]

    def out_max(self, s: np.ndarray) -> np.ndarray:
        """``m_i = max{S_k : unit i feeds k}`` for every scalable unit (0 if it feeds none)."""
        out = np.zeros(self.n + 1)
        for r in self._rows:
            srow = s[r.rows]
            pattern = r.pattern
            if isinstance(pattern, np.ndarray):
                col = (pattern * srow[:, None]).max(axis=0) if srow.size else np.zeros(pattern.shape[1])
            else:
                pr, pc = pattern
                col = np.zeros(r.block.src.size)
                np.maximum.at(col, pc, srow[pr])
            np.maximum.at(out, r.block.src, col)
        return out[:-1]


def multiplicative_step(
    norms: UnitNorms, reg: NormSpec, u: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(δ, stationarity, S)`` at ``u``: the update's log-step and relative stationarity of
    every unit (0 outside ``free``), and the per-unit costs ``S`` of the norm at ``u``.

    ``u + δ`` is one parallel multiplicative update (see the module docstring).
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # dead units: log 0, −∞ − (−∞)
        return _step(norms, reg, u, free)


def _step(
    norms: UnitNorms, reg: NormSpec, u: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = reg.p
    c = norms.degree
    s = norms.costs(u)
    log_s = np.log(s)
    if reg.is_max_norm:
        log_gap = np.log(norms.out_max(s)) - log_s[: norms.n]
        step_scale = 2.0 * p * (1.0 + c)
    else:
        r = reg.q / p
        live = s > 0
        top = float(log_s[live].max()) if live.any() else 0.0
        # weights S^{r-1}, shifted by the largest S (the shift cancels in the ratio)
        weight = np.where(live, np.exp((r - 1.0) * (np.where(live, log_s, top) - top)), 0.0)
        log_in = r * (log_s[: norms.n] - top) + top  # log(S_i^r) − (r−1)·top
        log_out = np.log(c) + np.log(norms.weighted_out(u, weight))
        log_gap = log_out - log_in
        step_scale = 2.0 * max(p, reg.q) * (1.0 + c)
    ok = free & np.isfinite(log_gap)
    delta = np.where(ok, log_gap / step_scale, 0.0)
    stationarity = np.where(ok, np.abs(np.tanh(np.where(ok, log_gap, 0.0) / 2.0)), 0.0)
    return delta, stationarity, s


def norm_at(problem: BalanceProblem, reg: NormSpec, u: np.ndarray | None = None) -> float:
    """``‖W‖_{p,q}`` of the problem's weights at log-scales ``u`` (default 0)."""
    v = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    return reg.norm_from_unit_costs(UnitNorms(problem, reg.p, reg.include_bias).costs(v))


def max_stationarity(problem: BalanceProblem, reg: NormSpec, u: np.ndarray | None = None) -> float:
    """Largest relative stationarity of the free units at ``u`` (0 at the ℓ_{p,q} minimum)."""
    v = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    norms = UnitNorms(problem, reg.p, reg.include_bias)
    _, stat, _ = multiplicative_step(norms, reg, v, norms.problem.free_mask())
    return float(stat.max()) if stat.size else 0.0
