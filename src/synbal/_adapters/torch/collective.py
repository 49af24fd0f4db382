"""Collectives of distributed balancing, each waited for with a deadline and failing with a typed error.

Balancing under ``torch.distributed`` needs two collectives: a sum of float64 partial IN/OUT
costs over ranks (sharded models) and a broadcast of rank 0's log-scales (replicated models).
A rank that fails mid-balance never joins them; without a deadline the others would wait for
the process group's own timeout (30 minutes by default) or forever. :class:`Collective` waits
at most ``timeout`` seconds and then raises :class:`~synbal.errors.DistributedError` naming
the step, the rank and the group size. (The process group is unusable afterwards, as after any
failed collective: the caller should end the job.)

>>> Collective.default_timeout()
300.0
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from synbal.errors import DistributedError

__all__ = ["TIMEOUT_ENV", "Collective"]

#: Environment variable overriding the default deadline (seconds) of every collective.
TIMEOUT_ENV = "SYNBAL_COLLECTIVE_TIMEOUT"


@dataclass(frozen=True)
class Collective:
    """A process group (``None``: the default one) and the deadline of each collective on it."""

    group: Any = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise DistributedError("distributed balancing needs an initialised torch.distributed process group")
        if self.timeout is not None and not self.timeout > 0:
            raise DistributedError(f"the collective timeout must be > 0 seconds, got {self.timeout}")

    @staticmethod
    def default_timeout() -> float:
        """``$SYNBAL_COLLECTIVE_TIMEOUT`` seconds, else 300."""
        raw = os.environ.get(TIMEOUT_ENV, "300")
        try:
            value = float(raw)
        except ValueError:
            raise DistributedError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
        if not value > 0:
            raise DistributedError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
        return value

    @property
    def seconds(self) -> float:
        return self.default_timeout() if self.timeout is None else float(self.timeout)

    @property
    def rank(self) -> int:
        return int(dist.get_rank(self.group))

    @property
    def size(self) -> int:
        return int(dist.get_world_size(self.group))

    def _wait(self, work: Any, what: str) -> None:
        try:
            work.wait(timeout=datetime.timedelta(seconds=self.seconds))
        except RuntimeError as exc:  # gloo/nccl report a timeout or a lost peer as RuntimeError
            raise DistributedError(
                f"{what}: rank {self.rank} of {self.size} gave up after waiting up to {self.seconds:g} s "
                f"({exc}); another rank failed or stopped before joining — the process group cannot "
                "be used any more"
            ) from exc

    def all_reduce_sum(self, values: torch.Tensor, what: str) -> torch.Tensor:
        """Sum ``values`` (float64, CPU) over the ranks in place and return it."""
        self._wait(dist.all_reduce(values, op=dist.ReduceOp.SUM, group=self.group, async_op=True), what)
        return values

    def broadcast(self, values: torch.Tensor, what: str, src: int = 0) -> torch.Tensor:
        """Overwrite ``values`` with group rank ``src``'s in place and return it."""
        root = src if self.group is None else dist.get_global_rank(self.group, src)
        self._wait(dist.broadcast(values, src=root, group=self.group, async_op=True), what)
        return values
