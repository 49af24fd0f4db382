"""torchvision architectures (random weights, small inputs) balance without barriers (issue 11, item 9).

StochasticDepth, ConvNeXt's layer scale and LayerNorm2d, Swin's windowed attention and patch
merging, EfficientNet's squeeze-excitation: the quick tests use the same building blocks at a
few channels; the named models at 32×32 are ``slow``. Skipped when torchvision is not installed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import synbal
from synbal.torch import discover
from torchvision_compat import needs_torchvision, torchvision_models

pytestmark = needs_torchvision


def _small(name: str) -> nn.Module:
    tv = torchvision_models()
    assert tv is not None
    if name == "convnext":
        from torchvision.models.convnext import CNBlockConfig, ConvNeXt

        return ConvNeXt([CNBlockConfig(8, 16, 2), CNBlockConfig(16, None, 1)], stochastic_depth_prob=0.1,
                        num_classes=5)
    if name == "vit":
        from torchvision.models.vision_transformer import VisionTransformer

        return _live_head(VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8,
                                            mlp_dim=16, num_classes=5))
    if name == "swin":
        from torchvision.models.swin_transformer import SwinTransformer

        return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[2, 1], num_heads=[2, 2], window_size=[2, 2],
                               stochastic_depth_prob=0.1, num_classes=5)
    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    return EfficientNet([MBConvConfig(1, 3, 1, 8, 8, 1), MBConvConfig(4, 3, 2, 8, 16, 2)], dropout=0.1,
                        stochastic_depth_prob=0.2, num_classes=5)


def _live_head(vit: nn.Module) -> nn.Module:
    """torchvision initialises a ViT's head to zero: its outputs would then be 0 whatever balancing does
    to the encoder, and a function check on them could not fail."""
    with torch.no_grad():
        vit.heads.head.weight.normal_(std=0.5)
    return vit


def _check(model: nn.Module, x: torch.Tensor, rtol: float, barriers: bool = False) -> synbal.BalanceResult:
    model.eval()
    res = synbal.balance(model, "l2", example_inputs=(x,), barriers=barriers)
    assert res.converged and res.problem.n > 0
    assert res.regularizer_after < res.regularizer_before
    with torch.no_grad():
        before, after = model(x).double(), res.net(x).double()
    assert float((after - before).abs().max()) <= rtol * float(before.abs().max())
    return res


@pytest.mark.parametrize("name", ["convnext", "swin", "efficientnet", "vit"])
def test_small_torchvision_architectures_balance_without_barriers(name: str) -> None:
    torch.manual_seed(0)
    model = _small(name)  # float32: float64 depthwise convolutions are very slow on CPU
    x = torch.randn(1, 3, 16, 16)
    res = _check(model, x, 1e-5)
    assert not any("barrier" in reason for reason in res.excluded.values())
    _check(model, x, 1e-5, barriers=True)  # crashed with an IndexError before (convnext, swin)


@pytest.mark.parametrize("name", ["convnext", "swin", "vit"])
def test_small_transformer_like_architectures_keep_their_function_in_float64(name: str) -> None:
    """Issue 12's bound for float64: outputs change by at most 1e-10 relative, on an input other
    than the example input; every group ends balanced and ``R`` does not increase."""
    torch.manual_seed(0)
    model = _small(name).double().eval()
    example, other = torch.randn(1, 3, 16, 16, dtype=torch.float64), torch.randn(2, 3, 16, 16, dtype=torch.float64)
    res = synbal.balance(model, "l2", example_inputs=(example,))
    assert res.converged and res.max_relative_deficit <= 1e-8 and res.regularizer_after <= res.regularizer_before
    with torch.no_grad():
        before, after = model(other), res.net(other)
    assert float((after - before).abs().max()) <= 1e-10 * float(before.abs().max())


def test_layer_scale_and_stochastic_depth_units() -> None:
    torch.manual_seed(0)
    model = _small("convnext").double().eval()
    d = discover(model, (torch.randn(1, 3, 16, 16, dtype=torch.float64),))
    block = "features.1.0"
    # the layer scale γ is a diagonal layer: the block's second Linear scales its rows against it
    assert f"{block}.block.5[3]" in d.names
    assert f"{block}.layer_scale" in d.uses
    # the residual stream (LayerNorm2d affine, every block's layer scale) ends in the next LayerNorm
    assert "normalised by LayerNorm 'features.2.0'" in d.excluded[
        f"{block}.layer_scale[0,0,0]..{block}.layer_scale[7,0,0] (8 units)"]


def test_stochastic_depth_is_the_identity_for_scales() -> None:
    from torchvision.ops import StochasticDepth

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), StochasticDepth(0.5, "row"), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert discover(model, (x,)).names == [f"0[{i}]" for i in range(4)]
    _check(model, x, 1e-10)


def test_vit_attention_values_and_norm_gains_scale() -> None:
    info = synbal.inspect(_small("vit").eval(), torch.randn(1, 3, 16, 16))
    layer = info.blocks["encoder.layers.encoder_layer_0"]
    # ln_1's gains (read by the packed in-projection), 8 value features, ln_2's gains; GELU MLP: no units
    assert (layer["norm dims"], layer["V/O dims"], layer["Q/K pairs"], layer["MLP units"]) == (16, 8, 8, 0)
    q = next(g for g in info.groups if g.name == "encoder.layers.encoder_layer_0.self_attention.q[0]")
    assert q.incoming == ["encoder.layers.encoder_layer_0.self_attention.in_proj_weight[0, :]",
                          "encoder.layers.encoder_layer_0.self_attention.in_proj_bias[0]"]
    assert q.outgoing == ["encoder.layers.encoder_layer_0.self_attention.in_proj_weight[8, :]",  # its key row
                          "encoder.layers.encoder_layer_0.self_attention.in_proj_bias[8]"]
    v = next(g for g in info.groups if g.name == "encoder.layers.encoder_layer_0.self_attention.v[0]")
    assert v.incoming == ["encoder.layers.encoder_layer_0.self_attention.in_proj_weight[16, :]",
                          "encoder.layers.encoder_layer_0.self_attention.in_proj_bias[16]"]
    assert v.outgoing == ["encoder.layers.encoder_layer_0.self_attention.out_proj.weight[:, 0]"]
    convnext = synbal.inspect(_small("convnext").eval(), torch.randn(1, 3, 16, 16))
    # the second Linear of each of the stage's two blocks scales its 8 rows against the layer scale
    assert convnext.blocks["features.1"]["layer scale"] == 16


@pytest.mark.slow
def test_vit_b_16_balances() -> None:
    tv = torchvision_models()
    assert tv is not None
    torch.manual_seed(0)
    res = _check(_live_head(tv.vit_b_16(weights=None)), torch.randn(1, 3, 224, 224), 1e-5)
    assert not any("barrier" in reason for reason in res.excluded.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "swin_t"])
@pytest.mark.parametrize("barriers", [False, True])
def test_torchvision_models_balance_without_barriers(name: str, barriers: bool) -> None:
    tv = torchvision_models()
    assert tv is not None
    torch.manual_seed(0)
    model = getattr(tv, name)(weights=None)
    res = _check(model, torch.randn(1, 3, 32, 32), 1e-5, barriers=barriers)
    assert barriers or not any("barrier" in reason for reason in res.excluded.values())
