"""The many-runs driver: independent stochastic runs from one start, in parallel threads.

Behind ``fig9`` (the distribution of stochastic balancing runs). One compiled driver serves both
step-kernel layouts of :mod:`synbal._compiled.unit_steps` — the CSR unit graph and the dense
chain: it takes both layouts' array tuples and a ``kind`` saying which one is real (the other is
an empty stand-in of the same types). numba could also take the step functions as arguments,
but such a driver is compiled afresh in every process (its types name the functions'
addresses, so the disk cache never hits). The kernels' classes call it
(``UnitGraph.many_stochastic``, ``ChainSteps.many_stochastic``).

Each run seeds numba's generator with ``seed + run``, balances one uniformly random free unit
per step and, after every sweep (``len(free)`` steps), tests a sample of every
``SCREEN_STRIDE``-th unit before the full max relative deficit (exact: the full test decides).
A sweep's units are drawn before its steps (the same units in the same order as drawing each
before its step), so that the step loop can prefetch the rows of the units ``PREFETCH_AHEAD``
steps ahead.

>>> import numpy as np
>>> from synbal._adapters.dense import DenseNet, DenseNetAdapter
>>> from synbal._compiled.chain_steps import step_kernel
>>> from synbal._problem.regularizers import parse_regularizer
>>> net = DenseNet([np.array([[4.0]]), np.array([[1.0]]), np.array([[0.25]])])
>>> kernel = step_kernel(DenseNetAdapter(net).problem(parse_regularizer("l2")))
>>> U, sweeps, _ = kernel.many_stochastic(np.zeros(2), np.arange(2), 3, 0, 1e-12, 1000, 1.0)
>>> np.round(np.exp(U), 6).tolist(), bool((sweeps > 0).all())
([[0.25, 0.25], [0.25, 0.25], [0.25, 0.25]], True)
"""

from __future__ import annotations

import numba
import numpy as np

from synbal._compiled.lowlevel import SCREEN_STRIDE
from synbal._compiled.unit_steps import (
    GRAPH,
    ChainArrays,
    GraphArrays,
    chain_factors,
    graph_factors,
    max_rel,
    run_steps,
)

__all__ = ["many_stochastic"]


def many_stochastic(kind: int, graph: GraphArrays, chain: ChainArrays, ahead: bool, u0: np.ndarray,
                    free: np.ndarray, runs: int, seed: int, tol: float, max_sweeps: int, theta: float,
                    record_every: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``runs`` independent stochastic runs from ``u0`` on the ``kind`` layout (``ahead``: prefetch
    the next units' rows).

    Returns ``(U, sweeps, snapshots)``: final log-scales ``(runs, n)``, sweeps used per run
    (negative if ``tol`` was not met), and, if ``record_every > 0``, log-scales every
    ``record_every`` sweeps ``(runs, max_sweeps // record_every + 1, n)`` (the last state
    repeated after stopping).
    """
    n = u0.size
    n_rec = max_sweeps // record_every + 1 if record_every > 0 else 0
    U = np.tile(u0, (runs, 1))
    snaps = np.zeros((runs, n_rec, n))
    sweeps = np.zeros(runs, dtype=np.int64)
    run = (np.ascontiguousarray(free, dtype=np.int64), np.int64(seed), float(tol), int(max_sweeps), float(theta),
           int(record_every))
    _many_runs(U, snaps, sweeps, run, kind, ahead, graph, chain)
    return U, sweeps, snaps


@numba.njit(cache=True)
def _factors(kind, u, graph, chain):  # type: ignore[no-untyped-def]
    """The cached factors: ``(powers, n + 1)`` on the unit graph, ``(1, n)`` on a chain."""
    if kind == GRAPH:
        return graph_factors(u, graph)
    return chain_factors(u, chain)


@numba.njit(parallel=True, cache=True)
def _many_runs(U, snaps, sweeps, run, kind, ahead, graph, chain):  # type: ignore[no-untyped-def]
    free, seed, tol, max_sweeps, theta, record_every = run
    for r in numba.prange(U.shape[0]):
        np.random.seed(seed + r)  # noqa: NPY002 (numba supports only the legacy API)
        order = np.empty(free.size, dtype=np.int64)
        u = U[r]
        X, Y = _factors(kind, u, graph, chain)
        rec = 0
        if record_every > 0:
            snaps[r, 0, :] = u
            rec = 1
        done = -1
        for sweep in range(1, max_sweeps + 1):
            for q in range(free.size):  # a sweep's units, drawn one by one from the run's stream
                order[q] = free[np.random.randint(0, free.size)]  # noqa: NPY002
            run_steps(kind, order, u, X, Y, theta, ahead, graph, chain)
            if record_every > 0 and sweep % record_every == 0:
                snaps[r, rec, :] = u
                rec += 1
            # a sample of the units first: if one of them is above tol, so is the maximum
            if max_rel(kind, free[::SCREEN_STRIDE], X, Y, graph, chain) <= tol and \
                    max_rel(kind, free, X, Y, graph, chain) <= tol:
                done = sweep
                break
        while record_every > 0 and rec < snaps.shape[1]:
            snaps[r, rec, :] = u
            rec += 1
        sweeps[r] = done if done > 0 else -max_sweeps
