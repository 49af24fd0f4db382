"""The PyTorch adapter's fast paths: product cost blocks, one-pass apply, the traceless MLP route.

Each fast path is checked against the general one it replaces: product blocks against label
blocks (``build_problem(..., fast=False)``), the MLP route against tracing, the one-pass apply
against ``p · exp(u_row − u_col)`` computed in float64.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import synbal
from model_zoo import ZOO, build
from synbal._adapters.torch.apply import factor_arrays, scale_parameter
from synbal._adapters.torch.extract import build_problem
from synbal._adapters.torch.plain_mlp import mlp_discovery
from synbal._compiled.chain import chain_of
from synbal._compiled.powermatrix import PowerMatrix
from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import parse_regularizer
from synbal.errors import InvalidWeightError
from synbal.torch import TorchAdapter, discover


class _Flat(nn.Module):
    """Conv → BatchNorm → ReLU → flatten → Linear (the VGG classifier's entry)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 3 * 3, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(h, 1))))


class _ChannelsLast(nn.Module):
    """A flatten whose columns interleave channels (positions outermost): no runs of one group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).permute(0, 2, 3, 1).flatten(1))


def _models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    flat = _Flat().eval()
    with torch.no_grad():
        flat.bn.running_var.uniform_(0.5, 1.5)
        flat.bn.weight.normal_()
    made = {
        "linear": (nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False)), torch.randn(2, 5)),
        "conv_bias": (nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 3, bias=True)),
                      torch.randn(1, 2, 7, 7)),
        "grouped": (nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.ReLU(), nn.Conv2d(6, 6, 3, groups=6),
                                  nn.ReLU(), nn.Conv2d(6, 2, 1)), torch.randn(1, 4, 7, 7)),
        "transposed": (nn.Sequential(nn.ConvTranspose2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)),
                       torch.randn(1, 2, 5, 5)),
        "flatten_bn": (flat, torch.randn(2, 3, 5, 5)),
        "channels_last": (_ChannelsLast(), torch.randn(1, 2, 2, 2)),
        "embedding": (nn.Sequential(nn.Embedding(6, 4), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)),
                      torch.tensor([[1, 4]])),
    }
    for entry in ZOO:
        made[f"zoo_{entry.name}"] = build(entry)
    return made


MODELS = _models()


def _blocks_by_key(problem: BalanceProblem) -> dict[tuple[float, tuple[int, ...], tuple[int, ...]], np.ndarray]:
    out = {}
    for b in problem.blocks:
        fixed = b.fixed_ids if b.fixed_ids is not None else b.dst
        key = (b.power, tuple(fixed.tolist()), tuple(b.src.tolist()))
        dense = b.explicit()
        out[key] = out.get(key, 0) + (dense.toarray() if hasattr(dense, "toarray") else np.asarray(dense))
    return out


CASES = ([(name, "1*l2+0.1*l1", torch.float64) for name in sorted(MODELS)]
         + [(name, "l2", torch.float32) for name in sorted(MODELS)]
         + [(name, "l2", torch.bfloat16) for name in ("transposed", "channels_last", "flatten_bn")])


@pytest.mark.parametrize(("name", "reg", "dtype"), CASES)
def test_product_blocks_match_label_blocks(name: str, reg: str, dtype: torch.dtype) -> None:
    model, x = MODELS[name]
    model = copy.deepcopy(model).to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    d = discover(model, (x,))
    fast = build_problem(d, parse_regularizer(reg))
    slow = build_problem(d, parse_regularizer(reg), fast=False)
    a, b = _blocks_by_key(fast), _blocks_by_key(slow)
    assert a.keys() == b.keys()
    for key, matrix in b.items():
        np.testing.assert_allclose(a[key], matrix, rtol=1e-13, atol=0, err_msg=str(key))
    u = np.random.default_rng(0).uniform(-1, 1, d.n)
    for fa, fb in zip(fast.in_out(u), slow.in_out(u), strict=True):
        np.testing.assert_allclose(fa, fb, rtol=1e-13)
    assert fast.value(u) == pytest.approx(slow.value(u), rel=1e-13)


def test_linear_blocks_are_views_of_the_weights_and_solve_on_the_chain() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 8), nn.ReLU(), nn.Linear(8, 3))
    problem = TorchAdapter(model, example_inputs=torch.randn(2, 6)).problem(parse_regularizer("l2"))
    views = [b.matrix for b in problem.blocks if isinstance(b.matrix, PowerMatrix)]
    assert len(views) == 2  # the interior and the output Linear; the input's columns are summed
    for matrix, layer in zip(views, (model[2], model[4]), strict=True):
        assert np.shares_memory(matrix.W, layer.weight.detach().numpy())
    assert chain_of(problem) is not None
    with torch.no_grad():
        model[2].weight[1, 2] = float("nan")
    with pytest.raises(InvalidWeightError, match=r"2\.weight"):
        TorchAdapter(model, example_inputs=torch.randn(2, 6)).problem(parse_regularizer("l2"))


@pytest.mark.parametrize("make", [
    lambda: nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)),
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.LeakyReLU(0.2), nn.Identity(), nn.Linear(4, 4),
                          nn.Linear(4, 2, bias=False), nn.ReLU()),
    lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Sigmoid()),
])
def test_mlp_route_equals_tracing(make: object) -> None:
    torch.manual_seed(0)
    model = make()  # type: ignore[operator]
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    fast = mlp_discovery(model)
    traced = discover(model, (torch.randn(2, first.in_features),))
    assert fast is not None
    assert fast.names == traced.names and fast.excluded.keys() == traced.excluded.keys()
    assert all(np.array_equal(a, b) for a, b in zip(fast.groups, traced.groups, strict=True))
    assert fast.layers is not None and traced.layers is not None
    assert all(np.array_equal(a, b) for a, b in zip(fast.layers, traced.layers, strict=True))
    assert fast.uses.keys() == traced.uses.keys()
    for name, use in fast.uses.items():
        assert np.array_equal(use.row, traced.uses[name].row) and np.array_equal(use.col, traced.uses[name].col)


class _Doubled(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(2 * x)


class _QuantisedLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, torch.round(self.weight * 8) / 8, self.bias)


def test_mlp_route_refuses_what_could_compute_otherwise() -> None:
    shared = nn.Linear(3, 3)
    hooked = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    hooked[0].register_forward_hook(lambda m, i, o: o * 2)
    normed = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 2))
    for model in (
        _Doubled(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
        nn.Sequential(_QuantisedLinear(3, 4), nn.ReLU(), nn.Linear(4, 2)),
        nn.Sequential(shared, nn.ReLU(), shared),
        hooked, normed,
        nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 2)),
        nn.Sequential(nn.ReLU(), nn.Linear(3, 2)),
    ):
        assert mlp_discovery(model) is None, model


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["zoo_cnn", "grouped", "transposed", "embedding", "zoo_locally_connected",
                                  "zoo_rnn"])
def test_one_pass_apply_equals_the_factor_rule(name: str, dtype: torch.dtype) -> None:
    """Every parameter becomes ``p·exp(u_row − u_col)``, computed in float64 and rounded once."""
    model, x = MODELS[name]
    model = copy.deepcopy(model).to(dtype)
    x = x.to(dtype) if x.is_floating_point() else x
    adapter = TorchAdapter(model, example_inputs=(x,), verify=False)
    u = np.random.default_rng(1).uniform(-1, 1, adapter.discovery.n)
    scaled = dict(adapter.apply(u, inplace=False).named_parameters())
    original = dict(model.named_parameters())
    for pname, factor in factor_arrays(adapter.discovery, u).items():
        expected = (original[pname].detach().double() * torch.from_numpy(factor)).to(dtype)
        got = scaled[pname].detach()
        eps = torch.finfo(dtype).eps
        assert torch.allclose(got.double(), expected.double(), rtol=2 * eps, atol=0), pname


def test_scale_parameter_non_contiguous_and_scalar() -> None:
    w = torch.arange(1.0, 7.0, dtype=torch.float32).reshape(2, 3).t()  # (3, 2), not contiguous
    scale_parameter(w, np.array([[1.0], [2.0], [4.0]]), np.array([[0.5, 0.25]]))
    assert w.tolist() == [[0.5, 1.0], [2.0, 2.5], [6.0, 6.0]]
    s = torch.tensor(3.0, dtype=torch.float64)
    scale_parameter(s, np.array(2.0), np.array(0.5))
    assert float(s) == 3.0


def test_inplace_balance_of_a_float32_mlp_matches_the_copy() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(3, 8)
    copied = synbal.balance(model, "l2", example_inputs=(x,))
    inplace = synbal.balance(model, "l2", example_inputs=(x,), inplace=True)
    assert inplace.net is model and copied.converged and inplace.converged
    for a, b in zip(copied.net.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
