"""The balance problem: scalable units, their degrees, and aggregated weight costs.

Adapters (explicit graphs, PyTorch models) *extract* a :class:`BalanceProblem`; algorithms work
only on it and on the log-scales ``u`` (``u_i = log Λ_i``); adapters then *apply* ``exp(u)`` to
their weights. Nothing here touches model tensors.

Scaling unit ``i`` of degree ``c_i`` by ``Λ_i = e^{u_i}`` multiplies each weight ``w_ij`` (from
unit ``j`` to unit ``i``) by ``exp(u_i − c_j u_j)``; visible and non-scalable units are *fixed*
(index ``-1`` below, ``u = 0``), a bias is a weight from a fixed unit. For a power regularizer
the cost of all weights between two units collapses into one number per power, so the problem
is a set of non-negative :class:`CostBlock` matrices ``A[i, j] = Σ coef·|w|^p`` — one per dense
layer (rows = destination units, columns = source units) or one sparse matrix for a general
graph. With ``x_j = exp(−p c_j u_j)`` and ``y_i = exp(p u_i)``:

* ``IN_i = y_i (A x)_i``, ``OUT_j = x_j (Aᵀ y)_j``, ``R = Σ_i y_i (A x)_i``;
* ``∂R/∂u_i = Σ_p p (IN_i − c_i OUT_i)``, so "every unit balanced" ⇔ "global minimum";
* the Hessian is a weighted graph Laplacian grounded at the fixed units.

A block may carry ``row_sign = −1`` (queries against keys: its rows scale *down* with their
unit, ``exp(−u_i − c_j u_j)``); such costs count in the unit's ``OUT``, and the Hessian is then
a sum of rank-one terms instead of a Laplacian — see :mod:`synbal._problem.signed`.

All sums are accumulated in float64 whatever the dtype of the weights.

>>> import numpy as np
>>> # input -> h0 -> output with weights 2 and 0.5, L2: IN = 4, OUT = 0.25
>>> blk_in = CostBlock(2.0, np.array([0]), np.array([-1]), np.array([[4.0]]))
>>> blk_out = CostBlock(2.0, np.array([-1]), np.array([0]), np.array([[0.25]]))
>>> prob = BalanceProblem(np.ones(1), [blk_in, blk_out], names=["h0"])
>>> IN, OUT = prob.in_out(np.zeros(1))
>>> float(IN[0]), float(OUT[0]), float(prob.value(np.zeros(1)))
(4.0, 0.25, 4.25)
>>> float(prob.max_relative_deficit(np.log(np.array([0.5]))))  # λ* = (OUT/IN)^(1/4) = 0.5
0.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar, overload

import numpy as np
import scipy.sparse as sp

from synbal._problem.drift import positive_flow_exists
from synbal.errors import GraphFormatError

__all__ = ["BalanceProblem", "CostBlock", "CustomCosts", "GeneratedNames", "Matrix", "Records"]

#: A dense ``np.ndarray`` or a scipy CSR matrix/array (scipy ships no type information).
Matrix: TypeAlias = Any

FIXED = -1
T = TypeVar("T")


class Records(Sequence[T], Generic[T]):
    """A read-only sequence whose items are made on access by ``make(i)``: a report on 100,000
    units builds no record nobody reads. Compares equal to a list of the same items.

    >>> recs = Records(3, lambda i: i * i)
    >>> len(recs), recs[2], recs[-1], recs[:2], recs == [0, 1, 4]
    (3, 4, 4, [0, 1], True)
    """

    def __init__(self, count: int, make: Callable[[int], T]) -> None:
        self._count = int(count)
        self._make = make

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> list[T]: ...

    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(*index.indices(self._count))]
        i = int(index)
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"index {index} out of range for {self._count} items")
        return self._make(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (list, tuple, Records)):
            return len(other) == self._count and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._count})"


class GeneratedNames(Records[str]):
    """Unit names made on demand, so a large problem does not build a list of strings it may never read.

    >>> names = GeneratedNames(3, lambda i: f"unit{i}")
    >>> len(names), names[1], list(names), names == ["unit0", "unit1", "unit2"]
    (3, 'unit1', ['unit0', 'unit1', 'unit2'], True)
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash((self._count, self[0] if self._count else None))

    def __repr__(self) -> str:
        return repr(list(self)) if self._count <= 8 else f"GeneratedNames({self._count}: {self[0]!r}, ...)"


def _repeats(idx: np.ndarray) -> bool:
    """Whether a unit index (``>= 0``) occurs twice; cheap for the usual increasing index arrays."""
    if idx.size < 2 or (idx[-1] < 0 and idx.max() < 0) or bool((idx[1:] > idx[:-1]).all()):
        return False  # all fixed, or increasing
    real = idx[idx >= 0]
    return bool(real.size) and int(np.bincount(real).max()) > 1


def _components(adjacency: sp.csr_array, members: np.ndarray) -> list[np.ndarray]:
    """The connected parts (unit indices) of the units in the mask ``members`` of a symmetric unit graph."""
    from scipy.sparse.csgraph import connected_components

    idx = np.flatnonzero(members)
    if idx.size == 0:
        return []
    count, labels = connected_components(adjacency[idx][:, idx], directed=False)
    order = np.argsort(labels, kind="stable")
    return np.split(idx[order], np.flatnonzero(np.diff(labels[order])) + 1) if count > 1 else [idx]


def _closure(graph: sp.csr_array, seeds: np.ndarray, size: int) -> np.ndarray:
    """Every node reachable from ``seeds`` (included) along ``graph``'s edges."""
    from scipy.sparse.csgraph import breadth_first_order

    src = size  # a virtual source joined to every seed
    aug = sp.csr_array(sp.vstack([sp.hstack([graph, sp.csr_array((size, 1))]),
                                  sp.csr_array((np.ones(seeds.size), (np.zeros(seeds.size, dtype=np.int64), seeds)),
                                               shape=(1, size + 1))]))
    out = np.zeros(size + 1, dtype=bool)
    out[breadth_first_order(aug, src, directed=True, return_predecessors=False)] = True
    return out[:size]


@dataclass
class CostBlock:
    """Aggregated costs ``A[r, k] = Σ coef·|w|^power`` of the weights from ``src[k]`` to ``dst[r]``.

    ``dst`` and ``src`` hold unit indices (``-1`` = a fixed unit: visible, non-scalable, or the
    constant 1 that a bias hangs from). Indices ``≥ 0`` must not repeat within ``dst`` or within
    ``src``; several fixed rows/columns are fine. ``matrix`` is a dense array or a CSR matrix of
    shape ``(len(dst), len(src))`` with non-negative float64 entries.

    Adapters must cover *every* weight (also those between two fixed units, ``dst = src = -1``)
    so that ``R`` is the network's total. ``bias=True`` marks a block of bias costs (its single
    column is the constant unit). ``fixed_ids`` (optional, one int per row) identifies the
    fixed unit behind each ``dst = -1`` row, so the same visible unit can be recognised across
    blocks (needed by per-unit norms such as ℓ_{p,q}); rows of scalable units carry their unit
    index there, and ``None`` means every fixed row is a distinct unit.
    """

    power: float
    dst: np.ndarray
    src: np.ndarray
    matrix: Matrix
    bias: bool = False
    fixed_ids: np.ndarray | None = None
    row_sign: float = 1.0

    def __post_init__(self) -> None:
        self.dst = np.asarray(self.dst, dtype=np.int64)
        self.src = np.asarray(self.src, dtype=np.int64)
        self.row_sign = float(self.row_sign)
        if self.row_sign not in (1.0, -1.0):
            raise GraphFormatError(f"cost block row_sign must be +1 or -1, got {self.row_sign}")
        from synbal._compiled.powermatrix import PowerMatrix

        if sp.issparse(self.matrix):
            self.matrix = sp.csr_array(self.matrix, dtype=np.float64)
        elif not isinstance(self.matrix, PowerMatrix):
            self.matrix = np.asarray(self.matrix, dtype=np.float64)
        if self.matrix.shape != (self.dst.size, self.src.size):
            raise GraphFormatError(
                f"cost block shape {self.matrix.shape} does not match "
                f"{self.dst.size} destination and {self.src.size} source units"
            )
        for name, idx in (("dst", self.dst), ("src", self.src)):
            if _repeats(idx):
                raise GraphFormatError(f"cost block {name} indices repeat a unit")
        if self.row_sign < 0 and np.intersect1d(self.dst[self.dst >= 0], self.src[self.src >= 0]).size:
            raise GraphFormatError("a cost block with row_sign = -1 joins a unit to itself")

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.matrix)

    def total(self) -> float:
        return float(self.matrix.sum())

    def factors(self, ue: np.ndarray, ce: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` with ``x_k = exp(−p c_k u_k)`` over sources and ``y_r = exp(±p u_r)`` (the
        block's ``row_sign``) over destinations, given ``u`` and ``c`` extended by the fixed slot
        (``u = 0``, ``c = 1``)."""
        p = self.power
        return np.exp(-p * ce[self.src] * ue[self.src]), np.exp(self.row_sign * p * ue[self.dst])

    def explicit(self) -> Matrix:
        """The costs as a numpy array or scipy sparse matrix (materialising matrix-free blocks)."""
        if sp.issparse(self.matrix) or isinstance(self.matrix, np.ndarray):
            return self.matrix
        return np.asarray(self.matrix)


@dataclass
class CustomCosts:
    """Per-weight magnitudes for a non-power cost ``g`` (one entry per weight or bias).

    ``dst``/``src`` are unit indices (``-1`` fixed), ``magnitude = |w|``, ``coef`` the per-weight
    coefficient, ``g``/``dg`` the cost and its derivative (from a
    :class:`~synbal._problem.regularizers.CustomRegularizer`). Every weight must be listed, including
    those between two fixed units, so that ``R`` is the network's total.
    """

    dst: np.ndarray
    src: np.ndarray
    magnitude: np.ndarray
    coef: np.ndarray
    g: Callable[[np.ndarray], np.ndarray]
    dg: Callable[[np.ndarray], np.ndarray]

    def __post_init__(self) -> None:
        self.dst = np.asarray(self.dst, dtype=np.int64)
        self.src = np.asarray(self.src, dtype=np.int64)
        self.magnitude = np.abs(np.asarray(self.magnitude, dtype=np.float64))
        self.coef = np.broadcast_to(np.asarray(self.coef, dtype=np.float64), self.magnitude.shape)

    def scaled(self, u: np.ndarray, degree: np.ndarray) -> np.ndarray:
        """Current magnitudes ``|w| exp(u_dst − c_src u_src)``."""
        ue = np.append(u, 0.0)
        ce = np.append(degree, 1.0)
        return self.magnitude * np.exp(ue[self.dst] - ce[self.src] * ue[self.src])

    def parts(self, u: np.ndarray, degree: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per unit: ``IN``, ``OUT`` costs and the ``m·g'(m)`` sums of incoming / outgoing weights."""
        n = degree.size
        m = self.scaled(u, degree)
        cost = self.coef * np.asarray(self.g(m), dtype=np.float64)
        slope = self.coef * m * np.asarray(self.dg(m), dtype=np.float64)
        dst = np.where(self.dst < 0, n, self.dst)
        src = np.where(self.src < 0, n, self.src)
        IN = np.bincount(dst, cost, minlength=n + 1)[:n]
        OUT = np.bincount(src, cost, minlength=n + 1)[:n]
        d_in = np.bincount(dst, slope, minlength=n + 1)[:n]
        d_out = np.bincount(src, slope, minlength=n + 1)[:n]
        return IN, OUT, d_in, d_out


@dataclass
class BalanceProblem:
    """Everything the balancing algorithms need, and nothing about where it came from.

    Parameters
    ----------
    degree:
        ``c_i`` for each scalable unit (group of tied neurons), shape ``(n,)``.
    blocks:
        Aggregated power costs (see :class:`CostBlock`). Empty when ``custom`` is given.
    names:
        A readable name per unit (for reports and errors).
    layers:
        Optional ordered independent sets of units (the hidden layers of a layered net), used
        by the ``layer``, ``alternating`` and ``tied`` schedules.
    custom:
        Per-weight magnitudes for a custom cost ``g`` (then ``g``/``dg`` come from the
        regularizer passed to the algorithms).
    origin:
        Log-scales the costs were computed at (``None``: the source's weights as given). An
        adapter whose weights span too many orders of magnitude for ``|w|^p`` (see
        :mod:`synbal._problem.conditioning`) costs them pre-scaled by ``origin``; the source's log-scales
        are then ``origin + u``. ``origin_value`` is ``R`` of the weights as given (may be ``inf``).
    """

    degree: np.ndarray
    blocks: list[CostBlock]
    names: Sequence[str] | None = None
    layers: list[np.ndarray] | None = None
    custom: CustomCosts | None = None
    origin: np.ndarray | None = None
    origin_value: float | None = None
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.degree = np.asarray(self.degree, dtype=np.float64).reshape(-1)
        if self.names is None:
            self.names = GeneratedNames(self.n, "unit{}".format)
        if len(self.names) != self.n:
            raise GraphFormatError(f"{len(self.names)} names for {self.n} units")
        if self.layers is not None:
            self.layers = [np.asarray(layer, dtype=np.int64) for layer in self.layers]
        for b in self.blocks:
            for idx in (b.dst, b.src):
                if idx.size and idx.max() >= self.n:
                    raise GraphFormatError(f"cost block refers to unit {idx.max()} of {self.n}")
        if self.signed:
            bad = np.flatnonzero(self.signed_units() & (self.degree != 1.0))
            if bad.size:
                raise GraphFormatError(f"unit {self.names[int(bad[0])]!r} has a row of sign -1 and degree "
                                       f"{self.degree[bad[0]]}; signed rows need degree 1")

    @property
    def signed(self) -> bool:
        """Whether some block has ``row_sign = −1`` (see :mod:`synbal._problem.signed`)."""
        return any(b.row_sign < 0 for b in self.blocks)

    def _layered(self) -> bool:
        """Whether the layered-net shortcuts hold: known layers, and every unit with a row of sign −1
        a leaf (never a column) — see :meth:`drifting_mask`."""
        if self.layers is None:
            return False
        if not self.signed:
            return True
        signed = np.append(self.signed_units(), False)
        return not any(signed[b.src].any() for b in self.blocks)

    def signed_units(self) -> np.ndarray:
        """Mask of the units that are the row of some block with ``row_sign = −1``."""
        mask = np.zeros(self.n + 1, dtype=bool)
        for b in self.blocks:
            if b.row_sign < 0:
                mask[b.dst] = True
        return mask[:-1]

    # ------------------------------------------------------------------ structure
    @property
    def n(self) -> int:
        """Number of scalable units (variables)."""
        return int(self.degree.size)

    @property
    def powers(self) -> tuple[float, ...]:
        """The distinct powers present, largest first."""
        return tuple(sorted({b.power for b in self.blocks}, reverse=True))

    def _ext(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``u`` and ``c`` with one trailing entry for the fixed unit (index -1)."""
        return np.append(np.asarray(u, dtype=np.float64), 0.0), np.append(self.degree, 1.0)

    def self_loop_costs(self) -> dict[float, np.ndarray]:
        """Per power, the cost at ``u = 0`` of each unit's weights onto itself (self-loops)."""
        cached = self._cache.get("self_loops")
        if cached is None:
            loops: dict[float, np.ndarray] = {p: np.zeros(self.n) for p in self.powers}
            for b in self.blocks:
                common, r_idx, c_idx = np.intersect1d(
                    b.dst[b.dst >= 0], b.src[b.src >= 0], return_indices=True
                )
                if common.size == 0:
                    continue
                rows = np.flatnonzero(b.dst >= 0)[r_idx]
                cols = np.flatnonzero(b.src >= 0)[c_idx]
                vals = np.asarray(b.matrix[rows, cols]).reshape(-1)
                np.add.at(loops[b.power], common, vals)
            self._cache["self_loops"] = loops
            cached = loops
        assert isinstance(cached, dict)
        return cached

    # ------------------------------------------------------------------ costs
    def block_products(self, u: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(A x, Aᵀ y)`` of every block at log-scales ``u`` (one read of each block).

        The products at ``u = 0`` (the row and column sums) are kept, so the first iteration of
        a solver and the dead-unit test share one read of the weights.
        """
        from synbal._compiled.powermatrix import as_products

        zero = not np.any(u)
        cached = self._cache.get("products_at_zero")
        if zero and isinstance(cached, list):
            return cached
        ue, ce = self._ext(u)
        products = [as_products(b.matrix, *b.factors(ue, ce)) for b in self.blocks]
        if zero:
            self._cache["products_at_zero"] = products
        return products

    def in_out_by_power(self, u: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """Per power ``p``: ``(IN, OUT)`` costs of every unit at log-scales ``u`` (self-loops in both)."""
        ue, ce = self._ext(u)
        out: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        for b, (row, col) in zip(self.blocks, self.block_products(u), strict=True):
            p = b.power
            x, y = b.factors(ue, ce)
            IN, OUT = out.setdefault(p, (np.zeros(self.n + 1), np.zeros(self.n + 1)))
            # indices >= 0 never repeat inside a block; repeats of the fixed slot (-1, the
            # last entry) are discarded, so plain fancy-index accumulation is exact here.
            (IN if b.row_sign > 0 else OUT)[b.dst] += y * row
            OUT[b.src] += x * col
        return {p: (IN[:-1], OUT[:-1]) for p, (IN, OUT) in out.items()}

    def in_out(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total ``(IN, OUT)`` regularizer cost of every unit (all powers summed)."""
        if self.custom is not None:
            IN, OUT, _, _ = self.custom.parts(np.asarray(u, dtype=np.float64), self.degree)
            return IN, OUT
        IN = np.zeros(self.n)
        OUT = np.zeros(self.n)
        for a, b in self.in_out_by_power(u).values():
            IN += a
            OUT += b
        return IN, OUT

    def value(self, u: np.ndarray) -> float:
        """The regularizer ``R`` of the whole network at log-scales ``u``."""
        if self.custom is not None:
            m = self.custom.scaled(np.asarray(u, dtype=np.float64), self.degree)
            return float(np.sum(self.custom.coef * self.custom.g(m)))
        ue, ce = self._ext(u)
        total = 0.0
        for b in self.blocks:
            x, y = b.factors(ue, ce)
            total += float(y @ (b.matrix @ x))
        return total

    def gradient_parts(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(∂R/∂u, scale)`` where ``scale_i = Σ_p p (IN_i + c_i OUT_i)`` (for relative measures).

        For a custom cost ``g`` the sums run over ``m·g'(m)`` of the current magnitudes instead.
        """
        if self.custom is not None:
            _, _, d_in, d_out = self.custom.parts(np.asarray(u, dtype=np.float64), self.degree)
            return d_in - self.degree * d_out, d_in + self.degree * d_out
        grad = np.zeros(self.n)
        scale = np.zeros(self.n)
        for p, (IN, OUT) in self.in_out_by_power(u).items():
            grad += p * (IN - self.degree * OUT)
            scale += p * (IN + self.degree * OUT)
        return grad, scale

    def gradient(self, u: np.ndarray) -> np.ndarray:
        """``∂R/∂u_i = Σ_p p (IN_i − c_i OUT_i)``."""
        return self.gradient_parts(u)[0]

    def relative_deficit(self, u: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """``|IN − c·OUT| / (IN + c·OUT)`` per unit (power-weighted for sums of powers).

        Units where both sides vanish get 0. ``mask`` (bool) zeroes excluded units.
        """
        grad, scale = self.gradient_parts(u)
        rel = np.divide(np.abs(grad), scale, out=np.zeros(self.n), where=scale > 0)
        if mask is not None:
            rel = np.where(mask, rel, 0.0)
        return rel

    def max_relative_deficit(self, u: np.ndarray, mask: np.ndarray | None = None) -> float:
        """The largest relative deficit over units (``mask`` defaults to :meth:`free_mask`)."""
        m = self.free_mask() if mask is None else mask
        rel = self.relative_deficit(u, m)
        return float(rel.max()) if rel.size else 0.0

    def hessian_diagonal(self, u: np.ndarray) -> np.ndarray:
        """Diagonal of the Hessian: ``Σ_p p² (IN + c² OUT)`` corrected for self-loops."""
        diag = np.zeros(self.n)
        loops = self.self_loop_costs()
        for p, (IN, OUT) in self.in_out_by_power(u).items():
            s = loops[p] * np.exp(p * (1.0 - self.degree) * u)
            diag += p * p * (IN + self.degree**2 * OUT - s * (1.0 + self.degree**2) + s * (1.0 - self.degree) ** 2)
        return diag

    # ------------------------------------------------------------------ topology
    def _nonzero_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Destination and source unit (``-1`` fixed) of every weight with non-zero cost."""
        r, c, _ = self.signed_edges()
        return r, c

    def signed_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Destination, source (``-1`` fixed) and row sign of every weight with non-zero cost."""
        if self.custom is not None:
            keep = self.custom.magnitude > 0
            return self.custom.dst[keep], self.custom.src[keep], np.ones(int(keep.sum()))
        rows: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        cols: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
        signs: list[np.ndarray] = [np.zeros(0)]
        for b in self.blocks:
            coo = sp.coo_array(b.explicit())
            keep = coo.data > 0
            rows.append(b.dst[coo.row[keep]])
            cols.append(b.src[coo.col[keep]])
            signs.append(np.full(int(keep.sum()), b.row_sign))
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(signs)

    def unit_adjacency(self) -> sp.csr_array:
        """Symmetric 0/1 adjacency of scalable units joined by a weight of non-zero cost."""
        cached = self._cache.get("adjacency")
        if cached is None:
            r, c = self._nonzero_edges()
            ok = (r >= 0) & (c >= 0) & (r != c)
            r, c = r[ok], c[ok]
            adj = sp.coo_array(
                (np.ones(2 * r.size), (np.concatenate([r, c]), np.concatenate([c, r]))),
                shape=(self.n, self.n),
            ).tocsr()
            adj.data[:] = 1.0
            adj.sum_duplicates()
            adj.data[:] = 1.0
            self._cache["adjacency"] = adj
            cached = adj
        assert isinstance(cached, sp.csr_array)
        return cached

    def dead_mask(self) -> np.ndarray:
        """Units whose incoming or outgoing cost (self-loops excluded) is zero.

        Their optimal scale is 0 or ∞ (Remark 5.5 of the paper): they are left alone.
        """
        cached = self._cache.get("dead")
        if cached is None and self.custom is not None:
            cc = self.custom
            live_edge = (cc.magnitude > 0) & (cc.dst != cc.src)
            has_in = np.bincount(cc.dst[live_edge & (cc.dst >= 0)], minlength=self.n) > 0
            has_out = np.bincount(cc.src[live_edge & (cc.src >= 0)], minlength=self.n) > 0
            cached = ~has_in | ~has_out
            self._cache["dead"] = cached
        if cached is None:
            zero = np.zeros(self.n)
            IN, OUT = self.in_out(zero)
            loops = sum(self.self_loop_costs().values(), np.zeros(self.n))
            cached = (IN - loops <= 0) | (OUT - loops <= 0)
            self._cache["dead"] = cached
        assert isinstance(cached, np.ndarray)
        return cached

    def grounding(self) -> tuple[np.ndarray, np.ndarray]:
        """``(floating, pinned)`` masks for components of live units not tied to any fixed unit.

        A connected group of scalable units with no weight to or from a fixed (visible,
        non-scalable or dead) unit and no bias can be scaled as a whole. If all its degrees are
        1 that moves no weight, so one unit (the lowest index) is *pinned* at scale 1 and the
        rest is solved; otherwise its cost has no minimiser and the whole component is reported
        as *floating* and left alone.
        """
        cached = self._cache.get("grounding")
        if cached is None and (self._layered() or self.n == 0):
            # A layered net is acyclic: following incoming weights back from any live unit
            # reaches a fixed or dead unit, so every live unit is grounded (and no units: none floats).
            cached = (np.zeros(self.n, dtype=bool), np.zeros(self.n, dtype=bool))
            self._cache["grounding"] = cached
        if cached is None:
            from scipy.sparse.csgraph import connected_components

            dead = self.dead_mask()
            live = ~dead
            grounded = np.zeros(self.n, dtype=bool)
            r, c = self._nonzero_edges()
            r_fixed = (r < 0) | np.where(r >= 0, dead[np.maximum(r, 0)], True)
            c_fixed = (c < 0) | np.where(c >= 0, dead[np.maximum(c, 0)], True)
            grounded[r[(r >= 0) & c_fixed]] = True
            grounded[c[(c >= 0) & r_fixed]] = True
            adj = self.unit_adjacency()
            live_idx = np.flatnonzero(live)
            sub = adj[live_idx][:, live_idx]
            ncomp, labels = connected_components(sub, directed=False)
            floating = np.zeros(self.n, dtype=bool)
            pinned = np.zeros(self.n, dtype=bool)
            signed = self.signed_units()  # a common shift moves their rows of sign -1: not a symmetry
            for comp in range(ncomp):
                members = live_idx[labels == comp]
                if grounded[members].any():
                    continue
                if np.all(self.degree[members] == 1.0) and not signed[members].any():
                    pinned[members.min()] = True
                else:
                    floating[members] = True
            cached = (floating, pinned)
            self._cache["grounding"] = cached
        assert isinstance(cached, tuple)
        return cached

    def fingerprint(self) -> str:
        """A SHA-256 of everything that sets a balancing run: degrees, powers, units, costs.

        >>> a = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]])])
        >>> b = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.5]])])
        >>> a.fingerprint() == a.fingerprint(), a.fingerprint() == b.fingerprint()
        (True, False)
        """
        import hashlib

        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.degree, dtype=np.float64).tobytes())
        for b in self.blocks:
            digest.update(np.float64(b.power).tobytes())
            if b.row_sign < 0:
                digest.update(b"row_sign=-1")
            digest.update(np.ascontiguousarray(b.dst, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(b.src, dtype=np.int64).tobytes())
            matrix = b.explicit()
            if sp.issparse(matrix):
                m = sp.csr_array(matrix)
                parts: tuple[np.ndarray, ...] = (m.data, m.indices, m.indptr)
            else:
                parts = (np.asarray(matrix, dtype=np.float64),)
            for part in parts:
                digest.update(np.ascontiguousarray(part).tobytes())
        return digest.hexdigest()

    def free_mask(self) -> np.ndarray:
        """Units the algorithms may move: live, grounded (or in a pinned component), not pinned,
        not drifting (see :meth:`drifting_mask`)."""
        floating, pinned = self.grounding()
        return ~self.dead_mask() & ~floating & ~pinned & ~self.drifting_mask()

    def drifting_mask(self) -> np.ndarray:
        """Units whose cost has no minimum over the scales: they would drift to scale 0 or ∞.

        ``R(u) = Σ_e A_e e^{p(u_i − u_j)}`` (``c = 1``) has a minimiser iff no direction ``d``
        lowers some term and raises none, i.e. ``d_i ≤ d_j`` on every edge ``j → i`` of non-zero
        cost, strictly on one (Gordan/Stiemke). Merge all fixed, dead, floating and pinned units
        into one *ground* node: a unit that ground cannot reach (or that cannot reach ground) is
        such a direction's support — scale it and everything that reaches it up (resp. it and
        everything it reaches down) and only the edges leaving (entering) that set change, all
        downwards. A cycle fed by the inputs with no path to an output is the typical case. Such
        units are left alone, like dead units (Remark 5.5 of the paper). With BiPUs inside a
        closure, ``d_i − c_j d_j`` may grow on inner edges, so reachability alone does not decide:
        each connected part of the closure with a BiPU is flagged when no strictly positive flow,
        conserved with the units' gains, covers its weights (:mod:`synbal._problem.drift`).
        (Gain cycles among units that both reach and are reached by ground are not examined.)

        A layered net cannot drift, also with rows of sign −1 on leaf units (query/key pairs, never
        a column): in a drift direction ``d`` a unit with ``d_i > 0`` has a live incoming weight
        from some ``j`` with ``c_j d_j ≥ d_i > 0``, and following these back through the DAG ends
        at a fixed unit, so ``d ≤ 0``; symmetrically a unit with ``d_i < 0`` passes ``d < 0`` forward
        along an outgoing weight, which must end at a fixed unit or at a leaf ``k``, where its Q
        row (``d_k ≤ c_i d_i < 0``) meets a K row (``−d_k ≤ c_j d_j ≤ 0``), or its K row
        (``d_k > 0``) meets a Q row (``d_k ≤ c_j d_j ≤ 0``): impossible, so ``d = 0``. Otherwise
        problems with signed rows are tested part by part with the signed flow
        (:func:`~synbal._problem.signed.signed_drifting`).
        """
        cached = self._cache.get("drifting")
        if cached is None and self.signed and not self._layered():
            from synbal._problem.signed import signed_drifting

            floating, pinned = self.grounding()
            parts = _components(self.unit_adjacency(), ~(self.dead_mask() | floating | pinned))
            cached = signed_drifting(parts, self.signed_edges(), self.degree)
            self._cache["drifting"] = cached
        if cached is None and self._layered():
            # layered: the scalable units form a DAG, so following the edges of a live unit
            # forwards (backwards) always ends at a fixed or dead unit — nothing drifts
            cached = np.zeros(self.n, dtype=bool)
        if cached is None:
            cached = self._drifting()
            self._cache["drifting"] = cached
        assert isinstance(cached, np.ndarray)
        return cached

    def _drifting(self) -> np.ndarray:
        from scipy.sparse.csgraph import breadth_first_order

        n = self.n
        floating, pinned = self.grounding()
        ground = self.dead_mask() | floating | pinned
        r, c = self._nonzero_edges()
        node = np.append(np.where(ground, n, np.arange(n)), n)  # unit -> graph node; fixed (-1) -> n
        a, b = node[c], node[r]  # edge a -> b
        keep = a != b
        graph = sp.csr_array((np.ones(int(keep.sum())), (a[keep], b[keep])), shape=(n + 1, n + 1))
        reached = np.zeros(n + 1, dtype=bool)
        reached[breadth_first_order(graph, n, directed=True, return_predecessors=False)] = True
        reaches = np.zeros(n + 1, dtype=bool)
        reaches[breadth_first_order(graph.T.tocsr(), n, directed=True, return_predecessors=False)] = True
        bipu = np.append(self.degree != 1.0, False)
        out = np.zeros(n, dtype=bool)
        # units ground reaches but that cannot reach it: their forward closure must be all BiLU;
        # units that reach ground but that it cannot reach: their backward closure must be
        for unreached, g in ((~reaches & reached, graph), (reaches & ~reached, graph.T.tocsr())):
            seeds = np.flatnonzero(unreached[:n] & ~ground)
            if seeds.size == 0:
                continue
            closure = _closure(g, seeds, n + 1)[:n] & ~ground
            for members in _components(self.unit_adjacency(), closure):
                # all BiLU: drifts; with BiPUs the gains may still balance it (see synbal._problem.drift)
                if not bipu[members].any() or not positive_flow_exists(members, r, c, self.degree):
                    out[members] = True
        return out

    def colouring(self) -> list[np.ndarray]:
        """Independent sets covering the free units: the layers when known, else a greedy colouring."""
        free = self.free_mask()
        if self.layers is not None:
            return [layer[free[layer]] for layer in self.layers if free[layer].any()]
        cached = self._cache.get("colouring")
        if cached is None:
            adj = self.unit_adjacency()
            degree = np.diff(adj.indptr)
            colour = np.full(self.n, -1, dtype=np.int64)
            for i in np.argsort(-degree, kind="stable"):
                taken = {int(colour[j]) for j in adj.indices[adj.indptr[i] : adj.indptr[i + 1]]}
                k = 0
                while k in taken:
                    k += 1
                colour[i] = k
            cached = colour
            self._cache["colouring"] = colour
        assert isinstance(cached, np.ndarray)
        colour = cached
        return [np.flatnonzero((colour == k) & free) for k in range(int(colour.max()) + 1 if self.n else 0)
                if ((colour == k) & free).any()]

    def subset_costs(
        self, u: np.ndarray, members: Sequence[int] | np.ndarray
    ) -> dict[float, tuple[float, float, float]]:
        """Per power, ``(IN, OUT, INSIDE)`` of a tied set: costs entering, leaving, and inside it."""
        from synbal._problem.signed import require_unsigned

        require_unsigned(self, "tied sets (one scale for several units)")
        members = np.asarray(members, dtype=np.int64)
        inside = np.zeros(self.n + 1, dtype=bool)
        inside[members] = True
        ue, ce = self._ext(u)
        out: dict[float, list[float]] = {}
        for b in self.blocks:
            p = b.power
            x, y = b.factors(ue, ce)
            rin = inside[b.dst]
            cin = inside[b.src]
            acc = out.setdefault(p, [0.0, 0.0, 0.0])
            if not (rin.any() or cin.any()):
                continue
            M = b.explicit()
            acc[0] += float(y[rin] @ (M[rin][:, ~cin] @ x[~cin])) if (~cin).any() and rin.any() else 0.0
            acc[1] += float(y[~rin] @ (M[~rin][:, cin] @ x[cin])) if (~rin).any() and cin.any() else 0.0
            acc[2] += float(y[rin] @ (M[rin][:, cin] @ x[cin])) if rin.any() and cin.any() else 0.0
        return {p: (a[0], a[1], a[2]) for p, a in out.items()}
