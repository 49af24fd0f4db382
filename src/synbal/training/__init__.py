"""Balance in training: regularized training, balancing hooks, balance monitors.

* :func:`train` with :class:`TrainConfig` (loss, ``β·R`` in the loss or as decoupled decay)
  and :class:`BalanceSchedule` (balance at start, every k epochs/steps, any method);
* :class:`ModelBalance` — measure (overall deficit, max relative deficit, R, ‖W‖_F) and
  balance a model in place, transforming the optimizer's state;
* :func:`regularizer_penalty` — ``R`` as a differentiable torch scalar;
* :func:`rescale_optimizer_state` — how SGD/Adam/RMSprop/Adagrad state follows ``w' = s⊙w``;
* :class:`TrainingHistory` — records, written as JSON or CSV.
"""

from __future__ import annotations

from synbal.training._history import TrainingHistory
from synbal.training._loop import BalanceSchedule, TrainConfig, evaluate, sum_of_squares, train
from synbal.training._model_balance import BalanceStep, ModelBalance
from synbal.training._optimizer_state import rescale_optimizer_state
from synbal.training._penalty import apply_decoupled_decay, regularized_parameters, regularizer_penalty

__all__ = [
    "BalanceSchedule",
    "BalanceStep",
    "ModelBalance",
    "TrainConfig",
    "TrainingHistory",
    "apply_decoupled_decay",
    "evaluate",
    "regularized_parameters",
    "regularizer_penalty",
    "rescale_optimizer_state",
    "sum_of_squares",
    "train",
]
