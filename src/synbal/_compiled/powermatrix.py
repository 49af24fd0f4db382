"""Matrix-free cost blocks: ``coef·|W|^p`` computed on the fly from the weights.

A dense layer's cost matrix has as many entries as the layer has weights; materialising it in
float64 costs a write of twice the weights' size and then every product reads it again. A
:class:`PowerMatrix` keeps a reference to the weight matrix instead and computes products with
compiled kernels that read each float32/float64 weight once, raise it to the power in float64
and accumulate in float64 — both ``A x`` and ``Aᵀ y`` in the same read when asked.

>>> import numpy as np
>>> W = np.array([[1.0, -2.0], [3.0, 0.5]], dtype=np.float32)
>>> A = PowerMatrix(W, 2.0)
>>> A @ np.ones(2), A.T @ np.ones(2)
(array([5.  , 9.25]), array([10.  ,  4.25]))
>>> float(A.sum()), np.asarray(A)[0].tolist()
(14.25, [1.0, 4.0])
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["PowerMatrix", "as_products", "scale_rows_cols"]


@numba.njit(inline="always")
def _pw(a: float, p: float) -> float:
    a = abs(a)
    if p == 2.0:
        return a * a
    if p == 1.0:
        return a
    if p == 0.5:
        return np.sqrt(a)
    if p == 3.0:
        return a * a * a
    return a**p


@numba.njit(fastmath=True, cache=True)
def _fused(W: np.ndarray, p: float, x: np.ndarray, y: np.ndarray, r: np.ndarray,
           parts: np.ndarray, want_cols: bool) -> None:
    n, m = W.shape
    threads = parts.shape[0]
    chunk = (n + threads - 1) // threads
    for t in range(threads):
        s = parts[t]
        for j in range(m):
            s[j] = 0.0
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            acc = 0.0
            yi = y[i]
            if want_cols:
                for j in range(m):
                    a = _pw(np.float64(W[i, j]), p)
                    acc += a * x[j]
                    s[j] += a * yi
            else:
                for j in range(m):
                    acc += _pw(np.float64(W[i, j]), p) * x[j]
            r[i] = acc


@numba.njit(cache=True)
def _scale(W: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
    n, m = W.shape
    for i in range(n):
        ri = row[i]
        for j in range(m):
            W[i, j] = np.float64(W[i, j]) * ri * col[j]


def scale_rows_cols(W: np.ndarray, row: np.ndarray, col: np.ndarray) -> None:
    """``W[i, j] *= row[i]·col[j]`` in place, computed in float64, written in ``W``'s dtype."""
    if W.dtype in (np.float32, np.float64) and W.flags.c_contiguous:
        _scale(W, np.ascontiguousarray(row, dtype=np.float64), np.ascontiguousarray(col, dtype=np.float64))
    else:
        W[...] = (W.astype(np.float64) * row[:, None] * col[None, :]).astype(W.dtype)


class PowerMatrix:
    """``coef·|W|^p`` for a 2-D float32/float64 weight matrix ``W``, never materialised unless asked."""

    __array_priority__ = 100.0

    def __init__(self, W: np.ndarray, p: float, coef: float = 1.0) -> None:
        if W.ndim != 2 or W.dtype not in (np.float32, np.float64):
            raise TypeError("PowerMatrix needs a 2-D float32 or float64 array")
        self.W = np.ascontiguousarray(W)
        self.p = float(p)
        self.coef = float(coef)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.W.shape[0]), int(self.W.shape[1]))

    @property
    def size(self) -> int:
        return int(self.W.size)

    def products(self, x: np.ndarray, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(A x, Aᵀ y)`` from a single read of ``W`` (``Aᵀ y`` skipped when ``y`` is None)."""
        n, m = self.shape
        r = np.empty(n)
        threads = 1  # single-threaded: robust on 2 shared cores (see benchmarks)
        parts = np.empty((threads, m))
        want = y is not None
        _fused(self.W, self.p, np.ascontiguousarray(x, dtype=np.float64),
               np.ascontiguousarray(y if want else np.zeros(n), dtype=np.float64), r, parts, want)
        r *= self.coef
        if not want:
            return r, None
        return r, parts.sum(axis=0) * self.coef

    def __matmul__(self, x: np.ndarray) -> np.ndarray:
        return self.products(x)[0]

    @property
    def T(self) -> _Transposed:  # noqa: N802 (mirrors numpy)
        return _Transposed(self)

    def sum(self) -> float:
        return float(self.products(np.ones(self.shape[1]))[0].sum())

    def __getitem__(self, index: Any) -> Any:
        picked = self.W[index]
        if picked.ndim == 2:
            return PowerMatrix(picked, self.p, self.coef)
        return np.abs(picked.astype(np.float64)) ** self.p * self.coef

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        A = np.abs(self.W.astype(np.float64)) ** self.p * self.coef
        return A if dtype is None else A.astype(dtype)


class _Transposed:
    def __init__(self, base: PowerMatrix) -> None:
        self.base = base

    def __matmul__(self, y: np.ndarray) -> np.ndarray:
        out = self.base.products(np.zeros(self.base.shape[1]), y)[1]
        assert out is not None
        return out


def as_products(matrix: Any, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A x, Aᵀ y)`` for a dense array, a sparse matrix or a :class:`PowerMatrix`."""
    if isinstance(matrix, PowerMatrix):
        r, s = matrix.products(x, y)
        assert s is not None
        return r, s
    return matrix @ x, matrix.T @ y
