"""Single-unit balancing steps on dense layered chains (the stochastic and cyclic schedules).

A unit ``i`` of hidden layer ``h`` needs ``IN_i = e^{p u_i}(k_i + Σ_j |W_h[i, j]|^p e^{−p c u_j})``
and ``OUT_i = e^{−p c u_i}(l_i + Σ_r |W_{h+1}[r, i]|^p e^{p u_r})``, with ``k``/``l`` the costs
to and from fixed units (input, output, biases; see :mod:`synbal._compiled.chain`). Row ``i`` of
``W_h`` is contiguous; column ``i`` of ``W_{h+1}`` is not. So every unit's incoming row and
outgoing column are copied next to each other into one buffer (twice the interior weights, in
their own dtype; one large allocation, so it sits on huge pages). A step then reads one
contiguous stretch with SIMD dot products, instead of gathering ``2·width`` neighbours through
index arrays as the general :class:`~synbal._compiled.unit_graph.UnitGraph` kernel does.

:func:`step_kernel` picks this kernel for chains with a single power and the general one
otherwise; both offer ``run_steps`` and ``many_stochastic`` with the same meaning.

>>> import numpy as np
>>> from synbal._adapters.dense import DenseNet, DenseNetAdapter
>>> from synbal._problem.regularizers import parse_regularizer
>>> net = DenseNet([np.array([[4.0]]), np.array([[1.0]]), np.array([[0.25]])])
>>> kernel = step_kernel(DenseNetAdapter(net).problem(parse_regularizer("l2")))
>>> type(kernel).__name__
'ChainSteps'
>>> u = np.zeros(2)
>>> kernel.run_steps(u, np.array([0, 1, 0, 1] * 30), theta=1.0)
>>> np.round(np.exp(u), 6).tolist()  # every weight becomes 1: 4·0.25, 1·0.25/0.25, 0.25/0.25
[0.25, 0.25]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synbal._compiled.chain import Chain, chain_of
from synbal._compiled.lowlevel import PREFETCH_BYTES
from synbal._compiled.many_runs import many_stochastic
from synbal._compiled.unit_graph import UnitGraph
from synbal._compiled.unit_steps import CHAIN, NO_GRAPH, ChainArrays, chain_factors, chain_max_rel, run_steps
from synbal._problem.problem import BalanceProblem

__all__ = ["ChainSteps", "step_kernel"]


def step_kernel(problem: BalanceProblem) -> ChainSteps | UnitGraph:
    """The fastest single-unit step kernel for ``problem``: :class:`ChainSteps` or a ``UnitGraph``."""
    chain = chain_of(problem)
    if chain is not None:
        return ChainSteps.from_chain(chain)
    return UnitGraph.build(problem)


@dataclass
class ChainSteps:
    """Each hidden unit's two weight rows, side by side in one buffer, and everything a step needs.

    Unit ``k`` of hidden layer ``h`` owns the stretch ``rows[o + k·(n_in + n_out) : …]`` with
    ``(o, n_in, n_out) = layer_geom[h]``: first its incoming row (row ``k`` of the interior matrix
    into layer ``h``, ``n_in = 0`` if there is none), then its outgoing row (column ``k`` of the
    matrix out of layer ``h``). A step thus reads one contiguous stretch of memory, which on nets
    larger than the caches is ~1.6× faster than two separate rows.
    """

    chain: Chain
    unit_layer: np.ndarray  # hidden layer of each unit
    rows: np.ndarray  # flat buffer of the units' stretches, layer after layer
    layer_geom: np.ndarray  # per hidden layer: (offset in ``rows``, incoming row length, outgoing row length)
    layer_power: np.ndarray  # per hidden layer: (power, coefficient) of the incoming and of the outgoing matrix
    prefetch: bool = False  # touch the next unit's rows ahead of time (weights larger than the caches)

    @classmethod
    def from_chain(cls, chain: Chain) -> ChainSteps:
        H = chain.layer_lo.size
        geom = np.zeros((H, 3), dtype=np.int64)
        power = np.zeros((H, 4))
        into = {int(d): b for b, d in enumerate(chain.mat_dst)}
        offset = 0
        for h in range(H):
            n_in = chain.mats[into[h]].shape[1] if h in into else 0
            n_out = chain.mats[into[h + 1]].shape[0] if h + 1 in into else 0
            geom[h] = (offset, n_in, n_out)
            offset += (chain.layer_hi[h] - chain.layer_lo[h]) * (n_in + n_out)
            if h in into:
                power[h, 0:2] = (chain.mat_power[into[h]], chain.mat_coef[into[h]])
            if h + 1 in into:
                power[h, 2:4] = (chain.mat_power[into[h + 1]], chain.mat_coef[into[h + 1]])
        # one buffer in the weights' dtype (twice the interior weights): a flat array needs no
        # typed list in the kernels, and one large allocation gets huge pages
        dtype = chain.mats[0].dtype if chain.mats else np.float64
        buffer = np.empty(offset, dtype=dtype)
        for h in range(H):
            o, n_in, n_out = geom[h]
            stretches = buffer[o:o + (chain.layer_hi[h] - chain.layer_lo[h]) * (n_in + n_out)]
            stretches = stretches.reshape(-1, n_in + n_out) if n_in + n_out else stretches.reshape(0, 0)
            if n_in:
                stretches[:, :n_in] = chain.mats[into[h]]
            if n_out:
                stretches[:, n_in:] = chain.mats[into[h + 1]].T
        unit_layer = np.empty(chain.c_unit.size, dtype=np.int64)
        for h in range(H):
            unit_layer[chain.layer_lo[h]:chain.layer_hi[h]] = h
        return cls(chain, unit_layer, buffer, geom, power, prefetch=buffer.nbytes > PREFETCH_BYTES)

    @property
    def arrays(self) -> ChainArrays:
        """The arrays the compiled steps read, as one tuple (see :data:`ChainArrays`)."""
        c = self.chain
        return (c.power, c.layer_lo, c.layer_hi, self.unit_layer, c.c_unit, c.const_in, c.const_out, self.rows,
                self.layer_geom, self.layer_power)

    def run_steps(self, u: np.ndarray, order: np.ndarray, theta: float) -> None:
        """Balance the units in ``order`` one after the other, updating ``u`` in place."""
        X, Y = chain_factors(u, self.arrays)
        run_steps(CHAIN, np.ascontiguousarray(order, dtype=np.int64), u, X, Y, theta, self.prefetch, NO_GRAPH,
                  self.arrays)

    def max_relative_deficit(self, u: np.ndarray, free: np.ndarray) -> float:
        """``max |IN − c·OUT| / (IN + c·OUT)`` over the units in ``free``."""
        X, Y = chain_factors(u, self.arrays)
        return float(chain_max_rel(np.ascontiguousarray(free, dtype=np.int64), X[0], Y[0], self.arrays))

    def many_stochastic(self, u0: np.ndarray, free: np.ndarray, runs: int, seed: int, tol: float,
                        max_sweeps: int, theta: float, record_every: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``runs`` independent stochastic runs from ``u0`` in parallel threads
        (:func:`synbal._compiled.many_runs.many_stochastic`)."""
        return many_stochastic(CHAIN, NO_GRAPH, self.arrays, self.prefetch, u0, free, runs, seed, tol,
                               max_sweeps, theta, record_every)


