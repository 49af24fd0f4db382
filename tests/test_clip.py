"""Clipped ReLUs: fixed by default, an explicit function-preserving conversion otherwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synbal
from synbal.clip import ClippedReLU, SplitClip, make_clips_balanceable, restore_clips
from synbal.errors import ModelError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU6(), nn.Linear(4, 3)).double().eval()


def test_relu6_units_are_left_fixed_and_reported_without_conversion():
    model = _mlp()
    x = 3 * torch.randn(7, 5, dtype=torch.float64)
    res = synbal.balance(model, "l2", example_inputs=(x,))
    assert any("ReLU6" in why for why in res.excluded.values())
    assert not torch.equal(res.net[0].weight, model[0].weight)  # the ReLU layer moved
    assert torch.equal(res.net[4].weight, model[4].weight)  # nothing behind the ReLU6 did
    assert any(isinstance(m, nn.ReLU6) for m in res.net.modules())  # never swapped


class _MobileBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU6()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(4)
        self.act2 = nn.Hardtanh(0.0, 3.0)
        self.pw = nn.Conv2d(4, 5, 1)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = self.act2(self.bn2(self.dw(self.act(self.bn(self.conv(x))))))
        return self.head(torch.relu(self.pw(h)).mean(dim=(2, 3)))


@pytest.mark.parametrize("reg", ["linf", "l2"])
def test_converted_clips_balance_with_moving_thresholds_and_unchanged_function(reg):
    torch.manual_seed(1)
    model = _MobileBlock()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.2, 3.0)
    model = model.double().eval()
    x = 5 * torch.randn(3, 1, 6, 6, dtype=torch.float64)
    split = make_clips_balanceable(model, (x,))
    assert sum(isinstance(m, SplitClip) for m in split.modules()) == 2
    res = synbal.balance(split, reg, example_inputs=(x,), fold_batchnorm=True)
    assert res.converged
    assert torch.allclose(res.net(x), model(x), rtol=1e-9, atol=1e-10)
    back = restore_clips(res.net)
    clips = [m for m in back.modules() if isinstance(m, ClippedReLU)]
    assert len(clips) == 2
    assert not torch.allclose(clips[0].threshold, torch.full((4,), 6.0, dtype=torch.float64))
    assert torch.allclose(back(x), model(x), rtol=1e-9, atol=1e-10)
    traced = torch.fx.symbolic_trace(back)  # restored clips can be traced (peers such as Brevitas do)
    assert torch.allclose(traced(x), model(x), rtol=1e-9, atol=1e-10)
    # the clips did clip something, so a wrong threshold would have shown
    h = model.bn(model.conv(x))
    assert bool((h > 6).any())


def test_only_clipped_relus_are_converted():
    model = nn.Sequential(nn.Linear(2, 3), nn.Hardtanh(-1.0, 1.0), nn.Linear(3, 1))
    with pytest.raises(ModelError, match="no ReLU6"):
        make_clips_balanceable(model, (torch.randn(2, 2),))
    with pytest.raises(ModelError, match=">= 0"):
        ClippedReLU(torch.tensor([1.0, -0.5]))
