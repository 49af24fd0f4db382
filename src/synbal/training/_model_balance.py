"""Measure and balance a PyTorch model during training (the monitor and the balancing hooks).

:class:`ModelBalance` goes through the PyTorch adapter (:func:`synbal.deficit` /
:func:`synbal.balance`). Plain MLPs take its fast path (:mod:`synbal._adapters.torch.plain_mlp`: no tracing,
no example inputs, matrix-free Linear blocks — cheap enough for every epoch); other models are
traced with ``example_inputs``.

>>> import torch, synbal
>>> torch.manual_seed(0) and None
>>> mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> mb = ModelBalance(mlp)
>>> before = mb.measure("l2")
>>> out = mb.balance("l2", "exact")
>>> after = mb.measure("l2")
>>> after["regularizer"] < before["regularizer"], after["max_relative_deficit"] < 1e-6  # float32 weights
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from synbal._adapters.torch.distributed import unwrapped_mlp_route
from synbal._adapters.torch.plain_mlp import mlp_discovery
from synbal._front import BalanceResult, balance, deficit
from synbal._problem.regularizers import RegularizerSpec, parse_regularizer
from synbal.errors import ModelError
from synbal.training._optimizer_state import Policy, rescale_optimizer_state

__all__ = ["BalanceStep", "ModelBalance"]


@dataclass(frozen=True)
class BalanceStep:
    """What one balancing call did (kept in the training history).

    >>> torch.manual_seed(0) and None
    >>> step = ModelBalance(torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(),
    ...                                         torch.nn.Linear(5, 2))).balance("l1", "exact")
    >>> step.method, step.regularizer, step.converged, step.regularizer_after < step.regularizer_before
    ('exact', 'l1', True, True)
    >>> sorted(step.as_dict())[:3]
    ['converged', 'max_relative_deficit', 'method']
    """

    method: str
    regularizer: str
    regularizer_before: float
    regularizer_after: float
    max_relative_deficit: float
    sweeps: int
    converged: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModelBalance:
    """Balance diagnostics and in-place balancing of one model (the route is chosen once).

    ``example_inputs`` is needed for models that are not plain MLPs (the PyTorch adapter
    traces them).

    >>> torch.manual_seed(0) and None
    >>> mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> opt = torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9)
    >>> mlp(torch.randn(5, 4)).pow(2).sum().backward(); opt.step()
    >>> mb = ModelBalance(mlp)  # a plain MLP: no example inputs, no tracing
    >>> mb.fast, mb.measure("l2")["max_relative_deficit"] > 0.01
    (True, True)
    >>> step = mb.balance("l2", "exact", optimizer=opt)  # the momentum follows the weights
    >>> mb.measure("l2")["max_relative_deficit"] < 1e-6
    True
    >>> conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    >>> ModelBalance(conv, torch.zeros(1, 1, 4, 4)).fast
    False
    """

    def __init__(self, model: nn.Module, example_inputs: Any = None) -> None:
        self.model = model
        self.example_inputs = example_inputs
        if not self.fast and example_inputs is None:
            raise ModelError(
                f"{type(model).__name__} is not a plain MLP (Sequential of Linear layers and "
                "homogeneous activations); pass example_inputs so the PyTorch adapter can trace it"
            )

    @property
    def fast(self) -> bool:
        """Whether the model takes the adapter's MLP fast path (no tracing)."""
        return mlp_discovery(self.model) is not None or unwrapped_mlp_route(self.model)

    def _source(self) -> tuple[Any, dict[str, Any]]:
        # Decided on every call: the model may have been changed since.
        if self.fast:
            return self.model, {}
        if self.example_inputs is None:
            raise ModelError("the model is no longer a plain MLP; pass example_inputs")
        return self.model, {"example_inputs": self.example_inputs}

    def measure(self, reg: RegularizerSpec = "l2") -> dict[str, float]:
        """The paper's overall L2 deficit; ``reg``'s overall deficit, max relative deficit and value; ‖W‖_F."""
        source, options = self._source()
        with torch.no_grad():
            l2 = deficit(source, "l2", **options)
            rep = l2 if str(parse_regularizer(reg)) == "l2" else deficit(source, reg, **options)
        return {
            "overall_deficit": l2.overall_deficit,
            "reg_overall_deficit": rep.overall_deficit,
            "max_relative_deficit": rep.max_relative_deficit,
            "regularizer": rep.regularizer_value,
            "frobenius_norm": float(l2.frobenius_norm or 0.0),
        }

    def parameter_factors(self, u: np.ndarray) -> dict[torch.Tensor, torch.Tensor]:
        """Each parameter's elementwise multiplier for log-scales ``u`` (keyed by the tensor)."""
        from synbal._adapters.protocol import adapter_for

        params = dict(self.model.named_parameters())
        source, options = self._source()
        adapter: Any = adapter_for(source, **options)  # a TorchAdapter
        named = adapter.parameter_factors(u)
        return {params[name]: factor for name, factor in named.items() if name in params}

    def balance(
        self,
        reg: RegularizerSpec = "l2",
        method: str = "exact",
        *,
        optimizer: torch.optim.Optimizer | None = None,
        optimizer_state: Policy = "rescale",
        tol: float = 1e-10,
        max_sweeps: int = 10_000,
        seed: int | None = None,
    ) -> BalanceStep:
        """Balance the model in place; transform ``optimizer``'s state to match (see
        :mod:`synbal.training._optimizer_state`)."""
        source, options = self._source()
        with torch.no_grad():
            result: BalanceResult = balance(
                source, reg, method, tol=tol, max_sweeps=max_sweeps, seed=seed, inplace=True, **options
            )
        if optimizer is not None and optimizer.state:
            rescale_optimizer_state(optimizer, self.parameter_factors(result.log_scales),
                                    policy=optimizer_state)
        return BalanceStep(
            method=method,
            regularizer=result.regularizer,
            regularizer_before=result.regularizer_before,
            regularizer_after=result.regularizer_after,
            max_relative_deficit=result.max_relative_deficit,
            sweeps=result.sweeps,
            converged=result.converged,
            seconds=result.seconds,
        )
