"""Balancing a model sharded with FSDP2: partial IN/OUT sums, one all-reduce per step, local scaling.

Each rank extracts the costs of its own shards (:mod:`synbal._adapters.torch.shards`; float64 sums
whatever the parameter dtype): complete IN sums of the units whose rows it holds, and its part
of every unit's OUT sum. :class:`ShardedProblem` is a :class:`~synbal._problem.problem.BalanceProblem`
over those local blocks whose IN/OUT sums and ``R`` are summed over the ranks in **one**
all-reduce per log-scale vector ``u`` (remembered, so the deficit and ``R`` after a sweep and
the next step's costs share it). The ``layer`` and ``alternating`` schedules read costs only
through it, so they run unchanged, in lockstep on every rank, and take one all-reduce per
balancing step (one per set of units; a layer sweep of an MLP with ``L`` hidden layers is ``L``
steps); ``exact`` is Newton's method with one all-reduce per Hessian product
(:mod:`synbal._adapters.torch.sharded_exact`). Every rank ends with the same log-scales and
multiplies only its local shards (and its shards of the optimizer state) by them. No parameter
is ever gathered: the model is not run (the function check of the unsharded route would need
every weight), and nothing larger than a shard, or a fixed-size chunk of one, is allocated.
Models other than plain MLPs (convolutions, BatchNorm in eval mode, ...) are discovered on a
shape-only copy (:mod:`synbal._adapters.torch.shards`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from synbal._adapters.torch.apply import factor_arrays, row_col_factors, scale_parameter
from synbal._adapters.torch.collective import Collective
from synbal._adapters.torch.extract import build_problem
from synbal._adapters.torch.sharded_exact import solve_sharded_exact
from synbal._adapters.torch.shards import local_discovery
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._solvers import solve
from synbal._solvers.base import SolveOptions, SolveResult
from synbal._solvers.steps import SetCosts
from synbal.errors import RegularizerError, SynbalError

__all__ = ["SHARDED_METHODS", "ShardedAdapter", "ShardedProblem"]

#: The methods that read costs only through sums over the weights: IN/OUT sums (``layer``,
#: ``alternating``) and Hessian products (``exact``, :mod:`synbal._adapters.torch.sharded_exact`).
SHARDED_METHODS = ("layer", "alternating", "exact")


@dataclass
class ShardedProblem(BalanceProblem):
    """A balance problem over this rank's blocks whose IN/OUT sums and ``R`` are summed over ranks.

    Topology (layers, dead units) comes from the reduced sums; everything else that reads whole
    blocks (Hessians, tied sets, fingerprints) would see only this rank's part and is not used.
    """

    collective: Collective | None = None
    reduced_powers: tuple[float, ...] = ()

    @property
    def powers(self) -> tuple[float, ...]:
        """The regularizer's powers, largest first (the same on every rank, whatever its shards)."""
        return self.reduced_powers or super().powers

    def _reduced(self, u: np.ndarray) -> tuple[dict[float, tuple[np.ndarray, np.ndarray]], float]:
        key = np.asarray(u, dtype=np.float64).tobytes()
        memo = self._cache.get("reduced")
        if isinstance(memo, tuple) and memo[0] == key:
            return memo[1], memo[2]
        assert self.collective is not None
        local = super().in_out_by_power(u)
        powers = self.powers
        zero = (np.zeros(self.n), np.zeros(self.n))
        parts = [np.array([super().value(u)])] + [a for p in powers for a in local.get(p, zero)]
        total = self.collective.all_reduce_sum(torch.from_numpy(np.concatenate(parts)),
                                               "summing IN/OUT costs over ranks").numpy()
        n = self.n
        sums = {p: (total[1 + 2 * k * n : 1 + (2 * k + 1) * n], total[1 + (2 * k + 1) * n : 1 + (2 * k + 2) * n])
                for k, p in enumerate(powers)}
        self._cache["reduced"] = (key, sums, float(total[0]))
        return sums, float(total[0])

    def in_out_by_power(self, u: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray]]:
        """Per power, the ranks' summed ``(IN, OUT)`` (fresh arrays; one all-reduce per new ``u``)."""
        return {p: (a.copy(), b.copy()) for p, (a, b) in self._reduced(u)[0].items()}

    def value(self, u: np.ndarray) -> float:
        """``R`` of the whole model (summed over ranks, with the IN/OUT sums of ``u``)."""
        return self._reduced(u)[1]

    def set_evaluator(self) -> SetCosts:
        return _ReducedSetEvaluator(self)


class _ReducedSetEvaluator(SetCosts):
    """A set's costs from the reduced IN/OUT sums (self-loops removed as in
    :class:`~synbal._solvers.steps.SetCosts`)."""

    def costs(self, u: np.ndarray, members: np.ndarray) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        prob = self.problem
        loops = prob.self_loop_costs()
        c = prob.degree[members]
        out = {}
        for p, (IN, OUT) in prob.in_out_by_power(u).items():
            s = loops[p][members] * np.exp(p * (1.0 - c) * u[members])
            out[p] = (np.maximum(IN[members] - s, 0.0), np.maximum(OUT[members] - s, 0.0), s)
        return out


class ShardedAdapter:
    """The adapter of a model sharded with ``fully_shard`` (see the module docstring).

    ``timeout``: seconds each all-reduce may wait. ``example_inputs``: needed (shapes only) for a
    model that is not a plain MLP, which is traced on a ``meta`` copy. ``verify`` is accepted for
    the common adapter options but not used: checking the function would gather the model.
    """

    def __init__(self, model: nn.Module, *, timeout: float | None = None, example_inputs: Any = None,
                 verify: bool = True) -> None:
        self.given = model
        self.shards = local_discovery(model, example_inputs)
        self.collective = Collective(self.shards.mesh.get_group(), timeout)  # type: ignore[attr-defined]

    def problem(self, reg: Regularizer) -> ShardedProblem:
        terms = reg.sum_of_powers
        if terms is None:
            raise RegularizerError(f"a sharded model is balanced for sums of powers (l2, l1, 1*l2+0.1*l1, ...), "
                                   f"not {reg}")
        base = build_problem(self.shards.local, reg)
        powers = tuple(sorted({t.power for t in terms}, reverse=True))
        return ShardedProblem(base.degree, base.blocks, names=base.names, layers=base.layers,
                              collective=self.collective, reduced_powers=powers)

    def solve(self, problem: BalanceProblem, reg: Regularizer, method: str, options: SolveOptions) -> SolveResult:
        if method not in SHARDED_METHODS:
            raise SynbalError(f"method {method!r} needs whole cost blocks; a sharded model is balanced with "
                              f"{', '.join(SHARDED_METHODS)} ('layer' and 'alternating' reach the balanced state of "
                              "'exact' when run to convergence)")
        if method == "exact":
            return solve_sharded_exact(problem, self.collective, options)
        return solve(problem, reg, method, options)

    def notes(self) -> list[str]:
        return [f"sharded over {self.collective.size} ranks: costs summed by all-reduce, scales applied to the "
                "local shards; the function check was skipped (it would gather every parameter)"]

    def excluded(self) -> dict[str, str]:
        return dict(self.shards.full.excluded)

    def apply(self, u: np.ndarray, *, inplace: bool) -> nn.Module:
        if not inplace:
            raise SynbalError("a sharded model is balanced in place only (inplace=True); a balanced copy "
                              "would need every rank's shards")
        for name, (rf, cf) in row_col_factors(self.shards.local, u).items():
            scale_parameter(self.shards.tensors[name], rf, cf)
        return self.given

    def parameter_factors(self, u: np.ndarray) -> dict[str, torch.Tensor]:
        """Every scaled parameter's float64 multiplier, in the shape of this rank's shard."""
        return {name: torch.from_numpy(np.broadcast_to(f, tuple(self.shards.tensors[name].shape)).copy())
                for name, f in factor_arrays(self.shards.local, u).items()}
