r"""Weight-balancing flows: descend the loss while the regularizer stays minimal over rescalings.

Setting (Saul 2023, second contribution; only the abstract is available, the derivation is
ours). The training loss is ``L(W) = E(W) + β R(W)``: ``E`` (the data term) is invariant under
the rescalings ``W ↦ S_u W`` of homogeneous hidden units, ``R`` (the regularizer) is not. The
*balanced set* is where ``R`` is minimal along every rescaling orbit: ``∂R(S_u W)/∂u |_{u=0} = 0``
(for ``Lp`` this is ``IN = c·OUT`` at every unit; for ℓ_{p,q} the weighted condition of
:mod:`synbal._solvers.multiplicative`).

The flow. Let ``T_i(W) = ∂(S_u W)/∂u_i`` be the orbit direction of unit ``i`` and
``g_i(W) = ⟨∇R, T_i⟩`` the balance residual. A weight-balancing flow is

    dW/dt = −∇L(W) + Σ_i ν_i(t) T_i(W),      with ν chosen so that  d g(W)/dt = 0,

i.e. ``H ν = J_g ∇L`` with ``H = J_g T`` the Hessian of ``R`` along the orbit (the grounded
Laplacian of :func:`~synbal._solvers.exact.hessian`), positive definite on the
free units, so ``ν`` is unique. Because ``E`` is invariant, moving along ``T`` never changes
``E``: the flow descends ``L`` at least as fast as gradient flow does, and ``R`` stays the
minimum over its orbit. We integrate it by *splitting*: one optimizer step on ``L``, then the
exact motion along the orbit back to the balanced set (``method="exact"`` for ``Lp``,
``"multiplicative"`` for ℓ_{p,q}). Per step of size ``η`` the residual created by the gradient
step is ``O(η)``, and so is the orbit correction — the first-order term ``η ν`` of the flow.

``L2`` is special. Under gradient flow on ``E`` the L2 deficit ``IN_i − c·OUT_i`` of every
unit is conserved (the conservation law of homogeneous nets), and under ``−β∇(Σ w²)`` every
weight decays as ``e^{−2βt}``, so every deficit is multiplied by ``e^{−4βt}``: a balanced net
*stays* balanced under plain gradient flow on ``E + β L2`` — ``ν = 0``, and the weight-balancing
flow **is** ordinary gradient flow. With finite steps the deficit grows by ``O(η²)`` per step,
so the two discrete trajectories differ by ``O(η)`` over a fixed time. For ``L1`` or ℓ_{p,q}
there is no such conservation law: gradient flow leaves the balanced set immediately and
``ν ≠ 0``; plain gradient descent on ``E + βR`` only becomes balanced as it converges.

>>> import torch
>>> torch.manual_seed(0) and None
>>> mlp = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2)).double()
>>> flow = WeightBalancingFlow(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), "l1", strength=1e-3)
>>> x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
>>> loss = ((mlp(x) - y) ** 2).mean() + flow.penalty()
>>> loss.backward()
>>> flow.step().converged, flow.stationarity() < 1e-9
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from synbal._adapters.protocol import adapter_for
from synbal._adapters.torch.plain_mlp import mlp_discovery
from synbal._problem.lpq import LpqRegularizer
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer, RegularizerSpec, parse_regularizer
from synbal._solvers import SolveOptions, SolveResult, solve
from synbal.errors import ModelError, RegularizerError
from synbal.training._model_balance import ModelBalance
from synbal.training._optimizer_state import Policy, rescale_optimizer_state
from synbal.training._penalty import regularizer_penalty

__all__ = [
    "WeightBalancingFlow",
    "aggregation_regularizer",
    "balance_stationarity",
    "lpq_penalty",
    "mlp_linears",
]

_TINY = 1e-30


def aggregation_regularizer(reg: Regularizer) -> Regularizer:
    """What an adapter aggregates for ``reg``: ``|w|^p`` for ℓ_{p,q}, else ``reg`` itself."""
    costs = reg.aggregated()
    if costs is None:
        raise RegularizerError(f"the regularizer {reg} is not additive: it has no flow (balance with it instead)")
    return costs


def mlp_linears(model: nn.Module) -> list[nn.Linear]:
    """The ``Linear`` layers of a plain MLP (the fast-path models), in order.

    Raises :class:`~synbal.errors.ModelError` for other models.
    """
    if mlp_discovery(model) is None:
        raise ModelError(
            f"{type(model).__name__}: the ℓ_{{p,q}} penalty needs a plain MLP (nn.Sequential of "
            "Linear layers with one homogeneous activation)"
        )
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def lpq_penalty(model: nn.Module, reg: RegularizerSpec) -> torch.Tensor:
    """``‖W‖_{p,q}`` of a plain MLP as a differentiable scalar (every Linear row is one unit).

    >>> lin = nn.Sequential(nn.Linear(2, 2, bias=False))
    >>> with torch.no_grad():
    ...     _ = lin[0].weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 12.0]]))
    >>> [float(lpq_penalty(lin, r).detach()) for r in ("l2,1", "l2,inf", "l1,1")]
    [17.0, 12.0, 19.0]
    """
    spec = parse_regularizer(reg)
    lpq = None if spec.additive else LpqRegularizer.of(spec)
    if lpq is None:
        raise RegularizerError(f"lpq_penalty needs an ℓ_{{p,q}} regularizer such as 'l2,1', got {reg}")
    rows = []
    for lin in mlp_linears(model):
        s = lin.weight.abs().pow(lpq.p).sum(dim=1)
        if lpq.include_bias and lin.bias is not None:
            s = s + lin.bias.abs().pow(lpq.p)
        rows.append(s)
    s_all = torch.cat(rows)
    if lpq.is_max_norm:
        return s_all.max().clamp_min(_TINY).pow(1.0 / lpq.p)
    top = s_all.detach().max().clamp_min(_TINY)
    total = (s_all.clamp_min(_TINY) / top).pow(lpq.q / lpq.p).sum()
    return top.pow(1.0 / lpq.p) * total.pow(1.0 / lpq.q)


def balance_stationarity(problem: BalanceProblem, reg: Regularizer, u: np.ndarray | None = None) -> float:
    """Largest relative balance residual of ``reg`` at log-scales ``u`` (0: balanced).

    ``|IN − c·OUT| / (IN + c·OUT)`` for ``Lp`` (as the core's deficits), the weighted form
    of :mod:`synbal._solvers.multiplicative` for ℓ_{p,q}.
    """
    return reg.stationarity(problem, np.zeros(problem.n) if u is None else u)


class WeightBalancingFlow:
    """An optimizer wrapper integrating the weight-balancing flow of a regularizer.

    Use it like the optimizer: ``loss = E + flow.penalty()``, ``loss.backward()``,
    ``flow.step()``. Each :meth:`step` takes the wrapped optimizer's step on the loss and then
    moves the weights along the rescaling orbit back to the minimum of ``R`` (in place; the
    function, hence ``E``, is unchanged; the optimizer's state is transformed to follow).

    Parameters
    ----------
    model, optimizer:
        The network (a plain MLP takes the zero-copy fast path; other models need
        ``example_inputs`` for the PyTorch adapter) and the optimizer over its parameters.
    reg:
        The regularizer the flow keeps minimal: ``"l2"``, ``"l1"``, ``"l2,1"``, ``"l1,inf"``...
    strength:
        ``β`` in :meth:`penalty` (``β·R``; 0 gives the flow of ``E`` alone).
    method, tol, max_sweeps:
        The balancing solver for the orbit motion (default: ``exact`` for ``Lp``,
        ``multiplicative`` for ℓ_{p,q}) and its stopping rule.
    balance_at_start:
        Move the initial weights to the balanced set right away (the flow lives there).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        reg: RegularizerSpec = "l2",
        *,
        strength: float = 0.0,
        method: str | None = None,
        tol: float = 1e-10,
        max_sweeps: int = 10_000,
        example_inputs: Any = None,
        optimizer_state: Policy = "rescale",
        balance_at_start: bool = True,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.reg: Regularizer = parse_regularizer(reg)
        aggregation_regularizer(self.reg)  # refuses one without additive costs (the max-norm)
        if self.reg.additive and self.reg.sum_of_powers is None:  # custom costs g
            raise RegularizerError("the weight-balancing flow needs a power or ℓ_{p,q} regularizer")
        if not (math.isfinite(strength) and strength >= 0):
            raise RegularizerError(f"flow strength β must be a finite number >= 0, got {strength}")
        self.strength = float(strength)
        self.method = method or self.reg.default_method
        self.options = SolveOptions(tol=tol, max_sweeps=max_sweeps)
        self.example_inputs = example_inputs
        self.optimizer_state: Policy = optimizer_state
        self._monitor = ModelBalance(model, example_inputs)
        self.last: SolveResult | None = None
        if balance_at_start:
            self.rebalance()

    # ------------------------------------------------------------------ the two halves
    def penalty(self) -> torch.Tensor:
        """``β·R(W)`` as a differentiable scalar (add it to the data loss)."""
        value = regularizer_penalty(self.model, self.reg) if self.reg.additive else lpq_penalty(self.model, self.reg)
        return self.strength * value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> SolveResult:
        """One optimizer step on the loss, then the orbit motion back to minimal ``R``."""
        self.optimizer.step(closure)
        return self.rebalance()

    def _problem(self) -> tuple[Any, BalanceProblem]:
        if mlp_discovery(self.model) is not None:  # the adapter's fast path: no tracing, no inputs
            adapter = adapter_for(self.model)
        elif self.example_inputs is not None:
            adapter = adapter_for(self.model, example_inputs=self.example_inputs)
        else:
            raise ModelError(f"{type(self.model).__name__} is not a plain MLP; pass example_inputs")
        return adapter, adapter.problem(aggregation_regularizer(self.reg))

    def rebalance(self) -> SolveResult:
        """Move the weights along the rescaling orbit to the minimum of ``R`` (in place)."""
        adapter, problem = self._problem()
        result = solve(problem, self.reg, self.method, self.options)
        with torch.no_grad():
            adapter.apply(result.u, inplace=True)
        if self.optimizer.state:
            rescale_optimizer_state(self.optimizer, self._monitor.parameter_factors(result.u),
                                    policy=self.optimizer_state)
        self.last = result
        return result

    def stationarity(self) -> float:
        """The model's current largest relative balance residual for the flow's regularizer."""
        with torch.no_grad():
            _, problem = self._problem()
        return balance_stationarity(problem, self.reg)
