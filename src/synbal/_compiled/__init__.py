"""Compiled (numba) code: the exact solver's chain iteration, unit-step kernels, matrix-free blocks.

Private: reached through :func:`synbal.balance` and the solvers in :mod:`synbal._solvers`.
"""
