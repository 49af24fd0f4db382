"""Balancing a model replicated by ``DistributedDataParallel``: solved once, applied everywhere.

Every rank of a DDP job holds the same parameters, so the balance problem is the same on every
rank; it is solved on rank 0 only, and rank 0's log-scales and history are broadcast (float64
tensors, nothing pickled). Every rank then applies the *same* log-scales to its replica — an
elementwise float64 computation rounded once per weight — and rescales its optimizer state with
the same factors, so all ranks stay bit-identical whatever the solver's floating-point
nondeterminism. If the solver fails on rank 0 (bad input, non-finite weights) the other ranks
raise :class:`~synbal.errors.DistributedError` instead of waiting; a rank that never arrives
makes the others raise it after the deadline of :class:`~synbal._adapters.torch.collective.Collective`.

``synbal.balance(ddp_model, ..., inplace=True)`` uses this adapter for any
``DistributedDataParallel`` model; the wrapped ``.module`` is what is balanced (plain MLPs
through the fast path, other models traced with ``example_inputs`` as usual).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synbal._adapters.torch.adapter import TorchAdapter
from synbal._adapters.torch.collective import Collective
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._solvers import solve
from synbal._solvers.base import HistoryEntry, SolveOptions, SolveResult
from synbal.errors import DistributedError

__all__ = ["ReplicatedAdapter", "is_replicated"]

_OK, _FAILED = 0, 1


def is_replicated(model: object) -> bool:
    """Whether ``model`` is a ``DistributedDataParallel`` wrapper."""
    return isinstance(model, DistributedDataParallel)


class ReplicatedAdapter:
    """The adapter of a ``DistributedDataParallel`` model (see the module docstring).

    ``timeout``: seconds each collective may wait (default
    :meth:`~synbal._adapters.torch.collective.Collective.default_timeout`); other options go to the
    :class:`~synbal._adapters.torch.adapter.TorchAdapter` of ``model.module``.
    """

    def __init__(self, model: nn.Module, *, timeout: float | None = None, **options: Any) -> None:
        assert isinstance(model, DistributedDataParallel)
        self.given = model
        self.inner = TorchAdapter(model.module, **options)
        self.collective = Collective(model.process_group, timeout)

    def problem(self, reg: Regularizer) -> BalanceProblem:
        return self.inner.problem(reg)

    def notes(self) -> list[str]:
        return self.inner.notes()

    def excluded(self) -> dict[str, str]:
        return self.inner.excluded()

    def solve(self, problem: BalanceProblem, reg: Regularizer, method: str, options: SolveOptions) -> SolveResult:
        """Rank 0 solves; every rank returns rank 0's result."""
        result, failure = None, None
        if self.collective.rank == 0:
            try:
                result = solve(problem, reg, method, options)
            except Exception as exc:  # told to the other ranks first, then raised here
                failure = exc
        header = torch.zeros(4, dtype=torch.int64)
        if result is not None:
            header[:] = torch.tensor([_OK, len(result.history), int(result.converged), result.steps])
        elif failure is not None:
            header[0] = _FAILED
        self.collective.broadcast(header, "broadcasting the balancing outcome")
        if failure is not None:
            raise failure
        if int(header[0]) != _OK:
            raise DistributedError("balancing failed on rank 0 (its own error says why); no scales to apply")
        k = int(header[1])
        payload = torch.zeros(problem.n + 3 * k, dtype=torch.float64)
        if result is not None:
            rows = [(e.sweep, e.regularizer, e.max_relative_deficit) for e in result.history]
            payload[: problem.n] = torch.from_numpy(np.asarray(result.u, dtype=np.float64))
            payload[problem.n :] = torch.tensor(rows, dtype=torch.float64).reshape(-1)
        self.collective.broadcast(payload, "broadcasting rank 0's log-scales")
        values = payload.numpy()
        history = [HistoryEntry(int(s), float(r), float(d)) for s, r, d in values[problem.n :].reshape(k, 3)]
        return SolveResult(values[: problem.n].copy(), bool(header[2]), history, steps=int(header[3]))

    def apply(self, u: np.ndarray, *, inplace: bool) -> Any:
        balanced = self.inner.apply(u, inplace=inplace)
        return self.given if inplace else balanced

    def parameter_factors(self, u: np.ndarray) -> dict[str, torch.Tensor]:
        """The inner adapter's factors, named as the wrapper names its parameters (``module.…``)."""
        return {f"module.{name}": f for name, f in self.inner.parameter_factors(u).items()}
