"""Per-feature multipliers as producers: normaliser affines and parameters multiplying a tensor.

* **LayerNorm / GroupNorm / RMSNorm**: the input is normalised (so its slots are fixed: a
  per-unit scale would change what is normalised), and the affine ``γ``/``β`` are the incoming
  weights of new per-feature slots — as for BatchNorm in eval mode. Without ``γ`` the output
  cannot be scaled (``β`` alone is a constant shift).
* **A parameter times a tensor** (ConvNeXt's layer scale ``γ ⊙ x``): a diagonal layer. Each
  entry of ``γ`` gets a new output slot ``t`` and scales by ``λ_t / λ_s`` against the slot ``s``
  of the entries it multiplies, so the layer before it (a Linear) can scale its rows against it.
* **torchvision's ``shifted_window_attention``** (Swin): the attention input is fixed, and the
  output projection's rows are new per-channel slots (what follows the projection only moves
  positions: reversing the windows, the shift and the crop).

>>> import torch, synbal
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
>>> synbal.inspect(model, torch.zeros(2, 3)).groups[0].incoming
['1.weight[0]', '1.bias[0]']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from synbal._adapters.torch.values import (
    Ids,
    ParamRef,
    like_result,
    main_output,
    per_channel,
    result_shape,
    zeros_like_shape,
)

if TYPE_CHECKING:
    from synbal._adapters.torch.walker import Walker

__all__ = ["AFFINE_FUNCTIONS", "module_norm", "scaled_by_parameter", "swin_attention"]

Rule = Callable[["Walker", fx.Node, Any], Any]
aten = torch.ops.aten


def normalised_affine(w: Walker, node: fx.Node, x: Ids, weight: str | None, bias: str | None, kind: str,
                      path: str, channel_axis: int | None, result: Any) -> Ids:
    """Fix the normalised input; ``γ``/``β`` feed new slots (trailing axes, or ``channel_axis``)."""
    w.table.fix(x.ids, f"normalised by {kind} {path!r} (a per-unit scale would change what it normalises)")
    shape = result_shape(result)
    if weight is None:
        return zeros_like_shape(shape)
    wshape = w.param_shape(weight)
    rows = w.table.new(path, wshape)
    zero = np.zeros((1,) * len(wshape), dtype=np.int64)
    w.use(weight, rows, zero, node)
    if bias is not None:
        w.use(bias, rows, zero, node, bias=True)
    if channel_axis is not None:
        return per_channel(rows.reshape(-1), shape, channel_axis)
    return Ids(rows.reshape((1,) * (len(shape) - len(wshape)) + wshape), shape)


def norm_fn(kind: str, weight_pos: int, bias_pos: int | None) -> Rule:
    """``F.layer_norm``/``F.group_norm``/``F.rms_norm`` and their ATen forms."""

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        x = w.tensor_input(node, 0)
        weight = w.param_arg(node, weight_pos, "weight")
        bias = w.param_arg(node, bias_pos, "bias") if bias_pos is not None else None
        path = w.prefix(weight) if weight else w.module_path(node)
        ids = normalised_affine(w, node, x, weight, bias, kind, path, 1 if kind == "GroupNorm" else None,
                                main_output(result))
        return like_result(ids, result)

    return rule


def module_norm(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    """``nn.LayerNorm``, ``nn.GroupNorm``, ``nn.RMSNorm`` (with or without affine parameters)."""
    x = w.tensor_input(node, 0)
    path = str(node.target)
    weight = f"{path}.weight" if getattr(mod, "weight", None) is not None else None
    bias = f"{path}.bias" if getattr(mod, "bias", None) is not None else None
    return normalised_affine(w, node, x, weight, bias, type(mod).__name__, path,
                             1 if isinstance(mod, nn.GroupNorm) else None, result)


def scaled_by_parameter(w: Walker, node: fx.Node, param: ParamRef, x: Ids, result: Any) -> Ids | None:
    """``γ ⊙ x`` as a diagonal layer, when every entry of ``γ`` multiplies entries of one slot of ``x``.

    ``None`` when it does not apply (``γ`` broadcasts ``x`` up, or meets several slots of ``x``):
    the caller then treats ``γ`` as a constant.
    """
    shape = result_shape(result)
    if not param.is_parameter or shape != x.shape or len(param.shape) > x.ndim:
        return None
    lead = x.ndim - len(param.shape)
    padded = (1,) * lead + param.shape
    cols = x.ids
    if any(p == 1 and s > 1 for p, s in zip(padded, x.ids.shape, strict=True)) or any(
            s > 1 for s in x.ids.shape[:lead]):
        # one γ entry meets several slots of x: a diagonal layer only when they all have scale 1
        # (QK-norm: γ of size head_dim times every head's normalised, hence fixed, query)
        if not w.table.fixed_so_far(x.ids):
            return None
        cols = np.zeros((1,) * x.ndim, dtype=np.int64)
    rows = w.table.new(param.name, param.shape)
    w.use(param.name, rows, cols.reshape(cols.shape[lead:]), node)
    return Ids(rows.reshape(padded), shape)


def swin_attention(w: Walker, node: fx.Node, result: Any) -> Any:
    """``torchvision.models.swin_transformer.shifted_window_attention``: see the module docstring."""
    proj_weight = w.param_arg(node, 2, "proj_weight")
    proj_bias = w.param_arg(node, 10, "proj_bias")
    reason = f"feeds shifted_window_attention at node {node.name!r} (softmax attention)"
    for pos, kw in ((0, "input"), (1, "qkv_weight"), (3, "relative_position_bias"), (9, "qkv_bias"),
                    (11, "logit_scale")):
        v = w.value(node, pos, kw)
        ids = w.as_ids(v, node)  # parameters read here keep their values
        if ids is not None:
            w.table.fix(ids.ids, reason)
    shape = result_shape(result)
    if proj_weight is None:
        return zeros_like_shape(shape)
    out_features = w.param_shape(proj_weight)[0]
    rows = w.table.new(w.prefix(proj_weight), (out_features,))
    w.use(proj_weight, rows[:, None], np.zeros((1, 1), dtype=np.int64), node)
    if proj_bias is not None:
        w.use(proj_bias, rows, np.zeros(1, dtype=np.int64), node, bias=True)
    return per_channel(rows, shape, len(shape) - 1)


AFFINE_FUNCTIONS: dict[Any, Rule] = {
    F.layer_norm: norm_fn("LayerNorm", 2, 3), aten.layer_norm.default: norm_fn("LayerNorm", 2, 3),
    aten.native_layer_norm.default: norm_fn("LayerNorm", 2, 3),
    F.group_norm: norm_fn("GroupNorm", 2, 3), aten.group_norm.default: norm_fn("GroupNorm", 2, 3),
    F.rms_norm: norm_fn("RMSNorm", 2, None), aten.rms_norm.default: norm_fn("RMSNorm", 2, None),
}
