"""Two LLVM-level helpers for the compiled kernels: arrays viewed from raw addresses, and prefetch.

* :func:`matrix_at` views a C-contiguous matrix from its data address, shape and dtype, so a
  kernel can take any number of weight matrices as plain integer arrays — without copying them
  into one buffer and without a numba typed list (whose construction and per-item reference
  counting cost more than a small net's whole solve), and without a tuple of arrays (a new
  compilation for every depth).
* :func:`prefetch` asks for a cache line ahead of use (non-blocking; a hint the CPU may drop).

Who keeps the memory alive: the addresses are only ever made by :class:`MatrixTable`, which
holds the matrices themselves next to their addresses. Its one user is the exact-chain solver
(:func:`synbal._compiled.chain.solve_chain`), which keeps its table in a local variable for as
long as the compiled iteration (``_evaluate``/``_iterate``) reads it and passes the addresses to
nothing else; the matrices are the source's weight arrays (or float64 cost matrices), which the
problem also references. A view from :func:`matrix_at` never leaves the compiled call.

>>> import numba, numpy as np
>>> @numba.njit
... def total(addresses, shapes, like):
...     s = 0.0
...     for k in range(addresses.size):
...         s += matrix_at(addresses, shapes, like, k).sum()
...     return s
>>> mats = [np.ones((2, 3), dtype=np.float32), np.full((1, 4), 2.0, dtype=np.float32)]
>>> table = MatrixTable(mats)
>>> float(total(*table.arrays))
14.0
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["PREFETCH_AHEAD", "PREFETCH_BYTES", "SCREEN_STRIDE", "MatrixTable", "matrix_at", "prefetch"]

#: Above this many bytes of weights, rows come from main memory: the step kernels prefetch the
#: rows of the units they will balance next.
PREFETCH_BYTES = 8 << 20
#: How many steps ahead those rows are requested.
PREFETCH_AHEAD = 2
#: The many-runs drivers test every ``SCREEN_STRIDE``-th unit's deficit before all of them
#: (exact: the full test runs whenever the sample passes; it costs a full sweep of reads).
SCREEN_STRIDE = 16


class MatrixTable:
    """C-contiguous 2-D matrices of one dtype and ``(addresses, shapes, like)`` for :func:`matrix_at`.

    The table holds the matrices, so they live as long as it does: keep the table (not just its
    :attr:`arrays`) for as long as compiled code reads them.
    """

    def __init__(self, mats: Sequence[np.ndarray]) -> None:
        dtype = mats[0].dtype if len(mats) else np.dtype(np.float64)
        for m in mats:
            if m.ndim != 2 or m.dtype != dtype or not m.flags.c_contiguous:
                raise ValueError("MatrixTable needs C-contiguous 2-D matrices of one dtype")
        self.mats = tuple(mats)
        addresses = np.array([m.ctypes.data for m in mats], dtype=np.int64)
        shapes = np.array([m.shape for m in mats], dtype=np.int64).reshape(-1, 2)
        self.arrays = (addresses, shapes, np.empty(0, dtype=dtype))


@intrinsic
def _pointer_like(typingctx: Any, address: Any, like: Any) -> Any:
    """``address`` (int64) as a pointer to ``like``'s dtype."""
    if not isinstance(like, types.Array):
        return None
    pointer = types.CPointer(like.dtype)
    sig = pointer(address, like)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return sig, codegen


@numba.njit(inline="always")
def matrix_at(addresses, shapes, like, k):  # type: ignore[no-untyped-def]
    """Matrix ``k`` of a :class:`MatrixTable`'s arrays, as a C-contiguous array view (valid while the table lives)."""
    return numba.carray(_pointer_like(addresses[k], like), (shapes[k, 0], shapes[k, 1]))  # type: ignore[call-arg]


@intrinsic
def prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """LLVM's non-blocking prefetch of ``array[index]``'s cache line (for reading, keep in cache)."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None
    sig = types.void(array, index)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 1), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
