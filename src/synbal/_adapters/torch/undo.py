"""Undo an in-place rescaling exactly, keeping 4 bits per weight instead of a copy.

An in-place balance with verification must leave the model as it was when the check fails.
Copying every scaled parameter first costs as much memory as the weights. Instead, for a
weight ``w`` scaled to ``s = fl(w·f)``, the unscaled value ``r = fl(s/f)`` lies within a few
units in the last place of ``w`` (two roundings of at most half a unit each), so ``w`` is
recovered exactly from ``s``, ``f`` and the small integer ``bits(w) − bits(r)``. That offset is
stored as a signed 4-bit code (two per byte: 1/8 of float32 weights, 1/16 of float64).

Only CPU, contiguous float32/float64 parameters whose factor splits into a row and a column
factor (Linear, conv, bias, …) take this route, the same ones :func:`~synbal._compiled.powermatrix.scale_rows_cols`
scales in one pass; any other parameter, or one whose offsets do not fit in 4 bits, is copied.

>>> import numpy as np
>>> w = np.array([[0.1, -3.7], [2.5e-8, 0.0]], dtype=np.float32)
>>> undo = ScaledMatrixUndo.scale(w, np.array([1.7, 0.3]), np.array([2.9, 1 / 3]))
>>> undo.restore(w)
>>> w.tolist() == np.array([[0.1, -3.7], [2.5e-8, 0.0]], dtype=np.float32).tolist()
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from synbal._compiled.powermatrix import scale_rows_cols

__all__ = ["ScaledMatrixUndo"]

_INT_OF = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


# _codes and _restore share their loop header (a scratch float viewed as integers, then rows and
# columns): each is one pass over W, and sharing the loop would need the body passed as a compiled
# function (numba then no longer caches the kernel on disk) or a branch per entry.
@numba.njit(cache=True)
def _codes(W: np.ndarray, row: np.ndarray, col: np.ndarray, bits: np.ndarray, out: np.ndarray) -> bool:
    """Pack ``bits(w) − bits(fl(fl(w·row·col)/(row·col)))`` + 8 as nibbles into ``out``; ``False`` if
    an offset falls outside [−8, 7]. ``bits`` is ``W`` viewed as integers. Reads ``W`` only."""
    n, m = W.shape
    tmp = np.empty(1, W.dtype)
    tmp_bits = tmp.view(bits.dtype)
    for i in range(n):
        ri = row[i]
        for j in range(m):
            f = ri * col[j]
            tmp[0] = np.float64(W[i, j]) * ri * col[j]  # exactly the arithmetic of scale_rows_cols
            tmp[0] = np.float64(tmp[0]) / f
            d = bits[i, j] - tmp_bits[0]
            if d < -8 or d > 7:
                return False
            k = i * m + j
            code = np.uint8(d + 8)
            if k % 2 == 0:
                out[k // 2] = code
            else:
                out[k // 2] |= code << np.uint8(4)
    return True


@numba.njit(cache=True)
def _restore(W: np.ndarray, row: np.ndarray, col: np.ndarray, bits: np.ndarray, codes: np.ndarray) -> None:
    """Invert :func:`_codes` after the scaling: ``W[i, j] = bits⁻¹(bits(fl(W[i, j]/f)) + offset)``."""
    n, m = W.shape
    tmp = np.empty(1, W.dtype)
    tmp_bits = tmp.view(bits.dtype)
    for i in range(n):
        ri = row[i]
        for j in range(m):
            tmp[0] = np.float64(W[i, j]) / (ri * col[j])
            k = i * m + j
            code = (codes[k // 2] >> np.uint8(4 * (k % 2))) & np.uint8(15)
            bits[i, j] = tmp_bits[0] + (np.int64(code) - 8)


@dataclass
class ScaledMatrixUndo:
    """The row/column factors and 4-bit offsets that restore a matrix scaled by :meth:`scale`."""

    row: np.ndarray
    col: np.ndarray
    codes: np.ndarray

    @classmethod
    def scale(cls, W: np.ndarray, row: np.ndarray, col: np.ndarray) -> ScaledMatrixUndo | None:
        """Scale ``W[i, j] *= row[i]·col[j]`` in place (as ``scale_rows_cols``) and return its undo;
        ``None``, with ``W`` untouched, if ``W`` is not a C-contiguous float32/float64 matrix or an
        offset does not fit in 4 bits (the caller then keeps a copy)."""
        if W.ndim != 2 or W.dtype not in _INT_OF or not W.flags.c_contiguous:
            return None
        row = np.ascontiguousarray(row, dtype=np.float64)
        col = np.ascontiguousarray(col, dtype=np.float64)
        codes = np.zeros((W.size + 1) // 2, dtype=np.uint8)
        if not _codes(W, row, col, W.view(_INT_OF[W.dtype]), codes):
            return None
        scale_rows_cols(W, row, col)
        return cls(row, col, codes)

    def restore(self, W: np.ndarray) -> None:
        """Put back, bit for bit, the values ``W`` held before :meth:`scale`."""
        _restore(W, self.row, self.col, W.view(_INT_OF[W.dtype]), self.codes)
