"""DenseNet: matrix-free extraction, apply in the weights' dtype, in-place reports."""

from __future__ import annotations

import numpy as np
import pytest

import synbal
from synbal._compiled.powermatrix import PowerMatrix
from synbal.errors import GraphFormatError, InvalidWeightError


def make(rng, widths, dtype=np.float64):
    Ws = [rng.normal(size=(widths[k + 1], widths[k])).astype(dtype) for k in range(len(widths) - 1)]
    bs = [rng.normal(size=widths[k + 1]).astype(dtype) for k in range(len(widths) - 1)]
    return synbal.DenseNet(Ws, bs)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0, 3.0, 1.7])
def test_power_matrix_products_match_dense(p):
    rng = np.random.default_rng(0)
    W = rng.normal(size=(7, 5)).astype(np.float32)
    A = np.abs(W.astype(np.float64)) ** p * 0.3
    M = PowerMatrix(W, p, 0.3)
    x, y = rng.random(5), rng.random(7)
    np.testing.assert_allclose(M @ x, A @ x, rtol=1e-13)
    np.testing.assert_allclose(M.T @ y, A.T @ y, rtol=1e-13)
    np.testing.assert_allclose(np.asarray(M[2:4]), A[2:4], rtol=1e-13)
    assert M.sum() == pytest.approx(A.sum(), rel=1e-13)


@pytest.mark.parametrize("inplace", [False, True])
def test_balance_keeps_function_and_reports_correctly_in_place(inplace):
    rng = np.random.default_rng(1)
    net = make(rng, [6, 9, 7, 8, 3])
    x = rng.normal(size=(10, 6))
    before = net.forward(x)
    original = [w.copy() for w in net.weights]
    res = synbal.balance(net, "l2", inplace=inplace)
    assert (res.net is net) == inplace
    assert all(np.array_equal(a, b) for a, b in zip(original, net.weights, strict=True)) != inplace
    np.testing.assert_allclose(res.net.forward(x), before, rtol=1e-10, atol=1e-12)
    check = synbal.deficit(res.net, "l2")
    assert check.max_relative_deficit <= 1e-10
    assert check.regularizer_value == pytest.approx(res.regularizer_after, rel=1e-12)
    assert res.regularizer_after < res.regularizer_before


def test_float32_weights_stay_float32_and_balance_to_rounding():
    rng = np.random.default_rng(2)
    net = make(rng, [5, 6, 4], dtype=np.float32)
    res = synbal.balance(net, "l1")
    assert all(w.dtype == np.float32 for w in res.net.weights)
    assert synbal.deficit(res.net, "l1").max_relative_deficit <= 1e-6


def test_bad_dense_nets_raise():
    with pytest.raises(GraphFormatError, match="does not follow"):
        synbal.DenseNet([np.ones((3, 2)), np.ones((2, 4))])
    with pytest.raises(GraphFormatError, match="not homogeneous"):
        synbal.DenseNet([np.ones((3, 2))], activation="tanh")
    with pytest.raises(InvalidWeightError, match="layer 0"):
        synbal.balance(synbal.DenseNet([np.array([[np.nan]]), np.ones((1, 1))]))
