"""Fake quantization helpers: grids, granularity, activation calibration, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synbal.quantize import (
    ActivationQuantizer,
    QuantizationError,
    fake_quantize,
    quantize_activations,
    quantize_weights,
)


@pytest.mark.parametrize("bits", [4, 6, 8])
def test_per_tensor_grid_is_symmetric_with_the_right_number_of_levels(bits):
    t = torch.randn(64, 32, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    q = fake_quantize(t, bits)
    step = t.abs().max() / (2 ** (bits - 1) - 1)
    k = q / step
    assert torch.allclose(k, k.round(), atol=1e-9)
    assert float(k.abs().max()) == pytest.approx(2 ** (bits - 1) - 1, abs=1e-9)
    assert (q - t).abs().max() <= step / 2 + 1e-12


def test_per_channel_uses_one_scale_per_output_channel():
    w = torch.tensor([[2.0, -1.0, 0.5], [0.02, 0.01, -0.004], [0.0, 0.0, 0.0]], dtype=torch.float64)
    q = fake_quantize(w, 4, "per-channel")
    assert torch.equal(q[2], torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(q[1], torch.tensor([0.02, 0.02 * 4 / 7, -0.02 * 1 / 7], dtype=torch.float64))
    assert torch.equal(fake_quantize(w, 4, "per-tensor")[1], torch.zeros(3, dtype=torch.float64))
    conv = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    per_ch = fake_quantize(conv, 6, "per-channel")
    for c in range(5):
        assert torch.allclose(per_ch[c], fake_quantize(conv[c], 6, "per-tensor"))


def test_quantize_weights_copies_and_leaves_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    before = [p.clone() for p in model.parameters()]
    q = quantize_weights(model, 4, "per-channel")
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)
    assert torch.equal(q[0].bias, model[0].bias) and torch.equal(q[3].bias, model[3].bias)
    assert not torch.equal(q[0].weight, model[0].weight)
    assert torch.equal(q[3].weight, fake_quantize(model[3].weight, 4, "per-channel"))


def test_activation_quantizer_calibrates_then_rounds():
    aq = ActivationQuantizer(8)
    aq(torch.tensor([0.0, 2.55]))
    aq(torch.tensor([1.0, 0.5]))
    aq.calibrating = False
    x = torch.tensor([0.0, 0.004, 1.0, 3.0])
    assert torch.allclose(aq(x), torch.tensor([0.0, 0.0, 1.0, 2.55]))  # step 0.01, clipped at 2.55


def test_quantize_activations_wraps_every_activation_and_stays_close_at_8_bits():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU6(), nn.Linear(20, 3)).eval()
    batches = [torch.randn(32, 10) for _ in range(3)]
    q = quantize_activations(model, batches)
    assert sum(isinstance(m, ActivationQuantizer) for m in q.modules()) == 2
    assert not any(isinstance(m, ActivationQuantizer) for m in model.modules())
    x = batches[0]
    gap = (q(x) - model(x)).abs().max() / model(x).abs().max()
    assert 0 < gap < 0.02


def test_bad_settings_are_refused():
    with pytest.raises(QuantizationError, match="bits"):
        fake_quantize(torch.ones(3), 1)
    with pytest.raises(QuantizationError, match="granularity"):
        fake_quantize(torch.ones(3), 8, "per-row")
    with pytest.raises(QuantizationError, match="no Linear or Conv"):
        quantize_weights(nn.ReLU(), 8)
    with pytest.raises(QuantizationError, match="at least one batch"):
        quantize_activations(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), [])
