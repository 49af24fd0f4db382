"""DenseNet weights far from 1 balance as graphs do: conditioned costs, or a typed error (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

import synbal
from synbal import Graph
from synbal._adapters.dense import DenseNet, DenseNetAdapter
from synbal._adapters.dense_range import log_extremes, scaling_is_safe
from synbal.errors import NumericRangeError

REGS = ["l2", "l3", "l0.5", "1*l2+0.01*l1", "l2+l0.5"]


def extreme_net() -> DenseNet:
    """A 1-3-2-1 net spanning 1e±150, with a bias of 1e100."""
    rng = np.random.default_rng(3)
    w = [rng.uniform(0.5, 2.0, (3, 1)) * 1e150, rng.uniform(0.5, 2.0, (2, 3)) * 1e-140,
         rng.uniform(0.5, 2.0, (1, 2)) * 1e-150]
    return DenseNet(w, [np.array([1e100, -2.0, 0.5]), None, None])


@pytest.mark.parametrize("reg", REGS)
def test_extreme_dense_weights_balance_like_the_same_graph(reg: str) -> None:
    net = extreme_net()
    res = synbal.balance(net, reg)
    assert res.converged and res.max_relative_deficit <= 1e-10
    assert np.isfinite(res.regularizer_after) and all(0 < s < np.inf for s in res.scales.values())
    as_graph = synbal.balance(Graph.from_layers(net.weights, net.biases), reg)
    assert np.allclose(res.log_scales, as_graph.log_scales, rtol=1e-10, atol=1e-8)
    assert res.regularizer_after == pytest.approx(as_graph.regularizer_after, rel=1e-10)
    x = np.random.default_rng(0).standard_normal((16, 1))
    before, after = net.forward(x), res.net.forward(x)
    assert np.max(np.abs(after - before)) <= 1e-12 * np.max(np.abs(before))


def test_ordinary_weights_keep_the_matrix_free_costs() -> None:
    net = DenseNet([np.full((2, 1), 3.0), np.full((1, 2), 0.5)])
    from synbal._compiled.powermatrix import PowerMatrix
    from synbal._problem.regularizers import parse_regularizer

    problem = DenseNetAdapter(net).problem(parse_regularizer("l2"))
    assert problem.origin is None and isinstance(problem.blocks[0].matrix, PowerMatrix)


def test_a_cost_beyond_float64_at_any_origin_is_a_typed_error() -> None:
    # input -> output directly: nothing can be rescaled, and (1e200)^2 overflows
    with pytest.raises(NumericRangeError, match="overflows float64 even after rescaling"):
        synbal.balance(DenseNet([np.array([[1e200, 1.0]])]), "l2")


def test_a_balanced_weight_outside_float32_is_refused_and_the_net_untouched() -> None:
    # balanced, h is scaled by 1e-15: its input weight 1e-32 would become 1e-47, which is 0 in float32
    w1 = np.array([[1e30, 1e-32]], dtype=np.float32)
    w2 = np.array([[1.0]], dtype=np.float32)
    net = DenseNet([w1, w2])
    originals = [w.copy() for w in net.weights]
    with pytest.raises(NumericRangeError, match="underflows to 0 in float32"):
        synbal.balance(net, "l2", inplace=True)
    assert all(np.array_equal(a, b) for a, b in zip(net.weights, originals, strict=True))


def test_log_extremes_and_safety_bound() -> None:
    a = np.array([[0.0, -1e-150], [1e150, 2.0]], dtype=np.float64)
    assert np.allclose(np.exp(log_extremes(a) / 150.0), [0.1, 10.0])
    assert log_extremes(np.zeros((2, 2))).size == 0
    assert scaling_is_safe(np.log(np.array([1e-3, 1e3])), np.dtype(np.float32), 10.0)
    assert not scaling_is_safe(np.log(np.array([1e-3, 1e3])), np.dtype(np.float32), 90.0)
