"""Only a model that computes what its types say skips tracing (issue 11 leftover).

``mlp_discovery`` lets an exact ``nn.Sequential`` of ``Linear`` layers and homogeneous
activations skip tracing. A ``forward`` replaced on an instance, a forward hook or pre-hook, or a
``Sequential`` subclass with its own ``forward`` changes what the model computes: such models take
the traced path, where the same changes make a layer non-leaf (its real computation is traced) and
a replaced root ``forward`` is refused. Each case is balanced in place with ``verify=False`` and
must still compute the same function (or be refused with a typed error).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import synbal
from synbal._adapters.torch.plain_mlp import mlp_discovery
from synbal._adapters.torch.tracing import runs_class_forward
from synbal.errors import ModelError


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).double()


def _child_forward_square(m: nn.Sequential) -> None:
    m[1].forward = lambda t: t * t  # degree 2, not a ReLU any more


def _child_forward_shift(m: nn.Sequential) -> None:
    m[3].forward = lambda t: torch.relu(t) + 1.0  # not homogeneous


def _linear_forward_hook(m: nn.Sequential) -> None:
    m[2].register_forward_hook(lambda mod, args, out: out + 1.0)


def _activation_pre_hook(m: nn.Sequential) -> None:
    m[3].register_forward_pre_hook(lambda mod, args: (args[0].abs() + 0.5,))


def _root_pre_hook(m: nn.Sequential) -> None:
    m.register_forward_pre_hook(lambda mod, args: (args[0] * 2.0,))


CHANGES: dict[str, Callable[[nn.Sequential], None]] = {
    "child forward x*x": _child_forward_square,
    "child forward relu+1": _child_forward_shift,
    "Linear forward hook": _linear_forward_hook,
    "activation forward pre-hook": _activation_pre_hook,
    "root forward pre-hook": _root_pre_hook,
}


class _SquaringSequential(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[4](self[3](self[2](self[0](x) ** 2)))


def _assert_same_function_in_place(model: nn.Module, x: torch.Tensor) -> synbal.BalanceResult:
    with torch.no_grad():
        before = model(x)
    res = synbal.balance(model, "l2", example_inputs=(x,), verify=False, inplace=True)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(after, before, rtol=1e-12, atol=1e-12), float((after - before).abs().max())
    return res


def test_a_plain_mlp_still_skips_tracing() -> None:
    model = _mlp()
    assert mlp_discovery(model) is not None
    handle = model[2].register_forward_hook(lambda mod, args, out: out)
    assert mlp_discovery(model) is None
    handle.remove()
    assert mlp_discovery(model) is not None


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changed_models_are_traced_and_stay_sound(change: str) -> None:
    model = _mlp()
    CHANGES[change](model)
    assert mlp_discovery(model) is None
    x = torch.randn(6, 3, dtype=torch.float64)
    res = _assert_same_function_in_place(model, x)
    assert res.problem.n < 8 or change == "root forward pre-hook"  # the changed layer's units stay fixed


def test_a_sequential_subclass_with_its_own_forward_is_traced() -> None:
    model = _SquaringSequential(*_mlp())
    assert mlp_discovery(model) is None
    res = _assert_same_function_in_place(model, torch.randn(6, 3, dtype=torch.float64))
    assert res.problem.n == 4  # the squared units are not scalable; the ReLU ones are


def test_a_model_whose_forward_is_replaced_on_the_instance_is_refused() -> None:
    model = _mlp()
    model.forward = lambda t: model[4](model[3](model[2](torch.tanh(model[0](t)))))  # type: ignore[method-assign]
    assert mlp_discovery(model) is None
    with pytest.raises(ModelError, match="forward was replaced on the instance"):
        synbal.balance(model, "l2", example_inputs=(torch.randn(2, 3, dtype=torch.float64),))


def test_global_forward_hooks_disable_the_fast_path() -> None:
    model = _mlp()
    handle = nn.modules.module.register_module_forward_hook(lambda mod, args, out: out)
    try:
        assert mlp_discovery(model) is None
        assert not runs_class_forward(model[0])
    finally:
        handle.remove()
    assert mlp_discovery(model) is not None


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_hook_based_weight_norm_stays_a_leaf_for_its_rule() -> None:
    layer = nn.utils.weight_norm(nn.Linear(3, 4).double())  # a WeightNorm forward pre-hook
    assert runs_class_forward(layer, reparametrizations=True)
    assert not runs_class_forward(layer)
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(4, 2)).double()
    res = _assert_same_function_in_place(model, torch.randn(6, 3, dtype=torch.float64))
    assert res.problem.n == 4  # scaled through g
