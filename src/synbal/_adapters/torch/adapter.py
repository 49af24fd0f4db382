"""The PyTorch adapter: ``synbal.balance(model, ...)`` and ``synbal.deficit(model, ...)`` for ``nn.Module``.

>>> import torch, synbal
>>> from torch import nn
>>> torch.manual_seed(0) and None
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
>>> x = torch.randn(5, 4, dtype=torch.float64)
>>> res = synbal.balance(model, "l2", example_inputs=(x,))
>>> res.converged, res.regularizer_after <= res.regularizer_before
(True, True)
>>> bool(torch.allclose(res.net(x), model(x)))
True
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from synbal._adapters.torch.apply import (
    Rollback,
    factor_arrays,
    run_model,
    scale_parameters,
    scale_parameters_undoably,
    scaled_copy,
    verify_outputs,
)
from synbal._adapters.torch.discovery import Discovery, discover, unwrap_compiled
from synbal._adapters.torch.extract import build_problem
from synbal._adapters.torch.fold import fold_batchnorm as fold_batchnorm_inplace
from synbal._adapters.torch.reparam import detach_hooked_weights
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal._problem.rounding import pow2_exponents
from synbal.errors import ModelError

__all__ = ["TorchAdapter"]


def _as_inputs(example_inputs: Any) -> tuple[Any, ...]:
    if example_inputs is None:
        raise ModelError(
            "balancing a PyTorch model needs example inputs: pass example_inputs=(x,) "
            "with tensors of the shapes the model is called with"
        )
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _copy(model: nn.Module) -> nn.Module:
    detach_hooked_weights(model)  # else deepcopy refuses a hook-based weight_norm's computed weight
    with warnings.catch_warnings():  # torch.export modules warn about their own pytree specs when copied
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(model)


class TorchAdapter:
    """Extract/apply for ``nn.Module`` (see :class:`synbal._adapters.protocol.Adapter`).

    Parameters
    ----------
    model:
        The model (not modified unless ``apply(..., inplace=True)``). BatchNorm layers must be
        in eval mode. A ``torch.compile``d model is balanced through the module it wraps (a
        balanced copy is that module, not compiled).
    example_inputs:
        A tensor or tuple of tensors the model is called with (used to trace shapes and verify).
        Optional for plain MLPs (:func:`synbal._adapters.torch.plain_mlp.mlp_discovery`), which need no
        tracing; without inputs they are verified on :func:`synbal._adapters.torch.plain_mlp.mlp_probe`.
    verify:
        After applying, run the model before/after and raise
        :class:`~synbal.errors.VerificationError` if the outputs differ beyond a dtype-aware tolerance
        (at all, for power-of-two scales). An in-place apply that fails it is rolled back first.
    barriers:
        Treat unsupported operations as barriers (units touching them are not scaled) instead of
        raising :class:`~synbal.errors.UnsupportedOperationError`.
    fold_batchnorm:
        Fold eval-mode BatchNorm layers into the preceding Linear/Conv first (the balanced model
        then has ``nn.Identity`` in their place, and the conv channels become scalable units).

    >>> import numpy as np, torch, synbal
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    >>> x = torch.randn(1, 1, 4, 4)
    >>> adapter = TorchAdapter(model, example_inputs=(x,))
    >>> adapter.problem(synbal.parse_regularizer("l2")).n, adapter.excluded()  # one unit per channel
    (2, {'3[0]': 'model output'})
    >>> scaled = adapter.apply(np.log([2.0, 0.5]), inplace=False)  # channel 0 ×2, channel 1 ×0.5
    >>> (scaled[0].weight / model[0].weight)[:, 0, 0, 0].tolist(), torch.allclose(scaled(x), model(x))
    ([2.0, 0.5], True)
    """

    def __init__(self, model: nn.Module, *, example_inputs: Any = None, verify: bool = True,
                 barriers: bool = False, fold_batchnorm: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
        from synbal._adapters.torch.plain_mlp import mlp_discovery, mlp_fits, mlp_probe  # plain MLPs: no tracing

        self.given = model
        self.model = model = unwrap_compiled(model)
        self.verify = verify
        self.fold = fold_batchnorm
        self._work = model
        self.folded: list[str] = []
        plain = None if fold_batchnorm else mlp_discovery(model)
        if plain is not None and example_inputs is not None and not mlp_fits(model, _as_inputs(example_inputs)):
            plain = None  # traced instead, to say what does not fit
        if plain is not None:
            self.inputs = (mlp_probe(model),) if example_inputs is None else _as_inputs(example_inputs)
            self.discovery: Discovery = plain
            return
        self.inputs = _as_inputs(example_inputs)
        if fold_batchnorm:
            self._work = _copy(model)
            self.folded = fold_batchnorm_inplace(self._work, self.inputs)
        self.discovery = discover(self._work, self.inputs, barriers=barriers)

    def notes(self) -> list[str]:
        """What a result should say about this model (which model ``R`` refers to)."""
        if not self.fold:
            return []
        which = ", ".join(self.folded) if self.folded else "none could be folded"
        return [f"R before and after are those of the model with its BatchNorm layers folded into the preceding "
                f"Linear/Conv layers (folded: {which}), not of the model as given"]

    def problem(self, reg: Regularizer) -> BalanceProblem:
        return build_problem(self.discovery, reg)

    def apply(self, u: np.ndarray, *, inplace: bool) -> nn.Module:
        before = run_model(self.model, self.inputs) if self.verify else None
        undo = None
        if inplace:
            target = self.model
            if self.fold:
                if before is not None:  # folding replaces modules: saved whole so a failed check undoes it
                    undo = Rollback(target, [n for n, _ in target.named_parameters()], structure=True)
                fold_batchnorm_inplace(target, self.inputs)
            if before is not None and undo is None:  # 4 bits per weight restore it exactly if the check fails
                undo = scale_parameters_undoably(target, self.discovery, u)
            else:
                scale_parameters(target, self.discovery, u)
        else:
            detach_hooked_weights(self._work)  # else deepcopy refuses a hook-based weight_norm's computed weight
            target = scaled_copy(self._work, self.discovery, u)
        if before is not None:
            try:
                verify_outputs(before, run_model(target, self.inputs),
                               f"{type(self.model).__name__}" + (" (rolled back)" if inplace else ""),
                               exact=pow2_exponents(u) is not None)
            except Exception:
                if undo is not None:
                    undo.restore()
                raise
        return self.given if inplace else target

    def excluded(self) -> dict[str, str]:
        return dict(self.discovery.excluded)

    def parameter_factors(self, u: np.ndarray) -> dict[str, torch.Tensor]:
        """The elementwise float64 multiplier :meth:`apply` uses for every named parameter (1 if untouched).

        Training code uses it to rescale optimizer state: gradients transform as ``g/f``, so momentum
        and Adam's first moment scale by ``1/f`` and Adam's second moment by ``1/f²``.
        """
        factors = factor_arrays(self.discovery, u)
        out: dict[str, torch.Tensor] = {}
        for name, p in self._work.named_parameters():
            f = factors.get(name)
            shape = tuple(p.shape)
            out[name] = (torch.from_numpy(np.broadcast_to(f, shape).copy()) if f is not None
                         else torch.ones(shape, dtype=torch.float64))
        return out
