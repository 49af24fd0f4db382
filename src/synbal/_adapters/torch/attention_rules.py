"""Rules for the operations of transformer blocks as ``torch.export`` writes them.

* **Casts** ``aten.to.dtype`` / ``to.dtype_layout`` / ``to.device``: a floating result keeps the
  scales, an integer or boolean one rounds (fixed).
* **``aten.addmm(b, x, W)``** with a stored ``W`` of shape ``(in, out)`` (GPT-2's ``Conv1D``): a
  Linear with a transposed weight, ``y = b + x W``; one new slot per output feature.
* **A matrix product with one side of scale 1**, ``P @ V`` (eager attention: the softmax output
  ``P`` is fixed): ``out[…, s, d] = Σ_t P[…, s, t] V[…, t, d]`` scales by ``λ_d`` exactly when
  every ``V[…, t, d]`` does, so ``V``'s slots are tied along the contracted axis and kept along the
  others. The mirrored case ``X @ C`` ties ``X`` along its last axis. Both sides scaled (eager
  attention scores ``q @ kᵀ``): the contracted dimensions pair inversely
  (:mod:`synbal._adapters.torch.qk_rules`), and the product has scale 1.
* **``aten.scaled_dot_product_attention(q, k, v, mask, …)``**: the output is ``softmax(q kᵀ/√d +
  mask) v``, linear in ``v`` per (head, dimension). Each dimension of a KV head keeps its slot
  (tied across positions); under grouped-query attention (``enable_gqa``, query heads ``Hq =
  g·Hkv``) query head ``h`` reads KV head ``h // g``, so the output of every query head of a group
  carries the same slot — the tie across the heads that share it. The mask is fixed; each query
  dimension pairs inversely with the key dimension it meets (:mod:`synbal._adapters.torch.qk_rules`).

>>> import torch, synbal
>>> from torch import nn
>>> class Attn(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.q, self.k, self.v, self.o = (nn.Linear(8, 8) for _ in range(4))
...     def forward(self, x):
...         q, k, v = (m(x).view(1, -1, 2, 4).transpose(1, 2) for m in (self.q, self.k, self.v))
...         a = torch.nn.functional.scaled_dot_product_attention(q, k, v)
...         return self.o(a.transpose(1, 2).reshape(1, -1, 8))
>>> groups = [g for g in synbal.inspect(Attn(), torch.zeros(1, 3, 8)).groups if g.name.startswith("v[")]
>>> len(groups), groups[0].incoming[:2], groups[0].outgoing[:1]
(8, ['v.weight[0, :]', 'v.bias[0]'], ['o.weight[:, 0]'])
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from synbal._adapters.torch.qk_rules import QK_KIND, pair_queries_and_keys
from synbal._adapters.torch.values import Ids, ParamRef, compress, per_channel, result_shape, zeros_like_shape
from synbal.errors import ModelError

if TYPE_CHECKING:
    from synbal._adapters.torch.walker import Walker

__all__ = ["ATTENTION_FUNCTIONS", "VALUE_KIND", "addmm", "matmul", "multihead_attention", "sdpa", "to_cast"]

Rule = Callable[["Walker", fx.Node, Any], Any]
aten = torch.ops.aten
VALUE_KIND = "V/O dims"


def to_cast(w: Walker, node: fx.Node, result: Any) -> Any:
    """``aten.to.*``: a floating result keeps the input's slots, an integer or bool one is fixed."""
    x = w.tensor_input(node, 0)
    if not isinstance(result, torch.Tensor) or not result.is_floating_point():
        w.table.fix(x.ids, f"cast to {getattr(result, 'dtype', type(result).__name__)} at node {node.name!r} "
                           "(rounds; not positively homogeneous)")
        return w.fixed_like(result)
    return Ids(x.ids, result_shape(result))


def addmm(w: Walker, node: fx.Node, result: Any) -> Any:
    """``aten.addmm(bias, x, W)`` with ``W`` a stored ``(in, out)`` weight and ``x`` of shape ``(N, in)``."""
    bias, x, weight = w.value(node, 0, "self"), w.value(node, 1, "mat1"), w.value(node, 2, "mat2")
    beta, alpha = w.literal(node, 3, "beta", 1), w.literal(node, 4, "alpha", 1)
    plain_bias = bias is None or (isinstance(bias, ParamRef) and bias.is_parameter)
    if not (isinstance(weight, ParamRef) and weight.is_parameter and isinstance(x, Ids) and plain_bias
            and beta == 1 and alpha == 1):
        w.fix_inputs(node, f"feeds addmm at node {node.name!r} (a computed matrix, a constant bias or "
                           "beta/alpha ≠ 1)")
        return w.fixed_like(result)
    in_features, out_features = weight.shape
    cols = np.broadcast_to(w.keep_axes(x, [x.ndim - 1], node).reshape(-1), (in_features,))
    rows = w.table.new(w.prefix(weight.name), (out_features,))
    w.use(weight.name, rows[None, :], cols.copy()[:, None], node)  # entry [j, o] scales by λ_o / λ_j
    if isinstance(bias, ParamRef):
        if bias.shape != (out_features,):
            raise ModelError(f"node {node.name!r}: addmm bias {bias.name!r} has shape {bias.shape}, "
                             f"expected ({out_features},)")
        w.use(bias.name, rows, np.zeros(1, dtype=np.int64), node, bias=True)
    return per_channel(rows, result_shape(result), len(result_shape(result)) - 1)


def _product_side(w: Walker, node: fx.Node, x: Ids, keep_axis: int, out_shape: tuple[int, ...]) -> Ids:
    """Slots of ``x`` kept along ``keep_axis`` (−1 or −2) and its batch axes, tied along the other matrix axis."""
    kept = w.keep_axes(x, [*range(x.ndim - 2), x.ndim + keep_axis], node)
    kept = kept.reshape((1,) * (len(out_shape) - x.ndim) + kept.shape)  # batch axes broadcast up
    return Ids(compress(kept), out_shape)


def matmul(w: Walker, node: fx.Node, result: Any) -> Any:
    """``A @ B`` (``matmul``/``bmm``): transparent for the side that is scaled when the other has scale 1."""
    a, b = (w.as_ids(w.value(node, i, k), node) for i, k in ((0, "input"), (1, "other")))
    shape = result_shape(result)
    if a is not None and b is not None and min(a.ndim, b.ndim) >= 2 and len(shape) >= max(a.ndim, b.ndim):
        if a.all_fixed() and not b.all_fixed():  # P @ V: V's columns keep their slots
            out = _product_side(w, node, b, -1, shape)
            w.table.note_kind(out.ids, VALUE_KIND)
            return out
        if b.all_fixed() and not a.all_fixed():  # X @ C: X's rows keep their slots
            return _product_side(w, node, a, -2, shape)
        if a.all_fixed() and b.all_fixed():
            return zeros_like_shape(shape)
        pair_queries_and_keys(w, node, a, b, key_axis=-2)  # a @ b = Σ_d a[…, s, d] b[…, d, t]
        return zeros_like_shape(shape)
    reason = f"feeds a product of two scaled tensors at node {node.name!r}"
    for v in (a, b):
        if v is not None:
            w.table.fix(v.ids, reason)
    return zeros_like_shape(shape)


def sdpa(w: Walker, node: fx.Node, result: Any) -> Any:
    """``scaled_dot_product_attention``: see the module docstring."""
    q, k, v = (w.tensor_input(node, i, kw) for i, kw in ((0, "query"), (1, "key"), (2, "value")))
    mask = w.input_ids(node, 3, "attn_mask")
    if mask is not None:
        w.table.fix(mask.ids, f"attention mask at node {node.name!r} (added to the softmax input)")
    pair_queries_and_keys(w, node, q, k, key_axis=-1)
    shape = result_shape(result)
    if v.ndim < 3:
        raise ModelError(f"node {node.name!r}: attention value of shape {v.shape} has no sequence axis")
    kept = w.keep_axes(v, [a for a in range(v.ndim) if a != v.ndim - 2], node)  # tied along the keys
    w.table.note_kind(kept, VALUE_KIND)
    heads_q, heads_kv = shape[-3] if len(shape) >= 3 else 1, v.shape[-3]
    if kept.shape[-3] > 1 and heads_q != heads_kv:  # grouped-query attention: head h reads KV head h // g
        if heads_q % heads_kv:
            raise ModelError(f"node {node.name!r}: {heads_q} query heads cannot share {heads_kv} KV heads")
        kept = np.repeat(kept, heads_q // heads_kv, axis=-3)
    kept = kept.reshape((1,) * (len(shape) - kept.ndim) + kept.shape)
    if any(s not in (1, t) for s, t in zip(kept.shape, shape, strict=True)):
        raise ModelError(f"node {node.name!r}: attention value slots {kept.shape} do not fit the output {shape}")
    return Ids(compress(kept), shape)


def where(w: Walker, node: fx.Node, result: Any) -> Any:
    """``where(cond, a, b)``: each entry is one of ``a`` or ``b``, so their slots are tied entrywise;
    a number other than 0 on one side cannot scale, so the other side's slots are fixed."""
    cond = w.input_ids(node, 0, "condition")
    if cond is not None:
        w.table.fix(cond.ids, f"condition of where at node {node.name!r}")
    shape = result_shape(result)
    sides = [w.value(node, i, kw) for i, kw in ((1, "self"), (2, "other"))]
    ids = [w.as_ids(v, node) for v in sides]
    tensors = [v for v in ids if v is not None]
    if len(tensors) == 2:
        a, b = tensors
        w.table.tie(a.ids, b.ids)
        return Ids(compress(np.broadcast_to(a.ids, np.broadcast_shapes(a.ids.shape, b.ids.shape))), shape)
    if not tensors:
        return zeros_like_shape(shape)
    number = sides[1] if ids[0] is not None else sides[0]
    if number not in (0, 0.0, False):
        w.table.fix(tensors[0].ids, f"a constant {number!r} is selected by where at node {node.name!r}")
    return Ids(tensors[0].ids, shape)


def _features(w: Walker, node: fx.Node, pos: int, kw: str, size: int) -> np.ndarray:
    """Per-feature slots (last axis, tied across positions) of input ``pos``/``kw``, length ``size``."""
    x = w.tensor_input(node, pos, kw)
    return np.broadcast_to(w.keep_axes(x, [x.ndim - 1], node).reshape(-1), (size,)).copy()


def multihead_attention(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    """``nn.MultiheadAttention``: each value feature (a head's dimension) against the out-projection
    column, and each query feature against the key feature it meets, inversely.

    Query feature ``i`` (head ``i // head_dim``, dimension ``i % head_dim``) meets key feature ``i``
    in the scores ``q kᵀ`` (:mod:`~synbal._adapters.torch.qk_rules`): their rows (and biases) of the
    input projection scale by ``λ`` and ``1/λ``. The value rows (and bias) get one slot per feature,
    which the output projection's columns read; its rows are new output slots. ``bias_k``/``bias_v``
    and ``add_zero_attn`` are not understood (the module is then a barrier).
    """
    assert isinstance(mod, nn.MultiheadAttention)
    if mod.bias_k is not None or mod.bias_v is not None or mod.add_zero_attn:
        w.fix_inputs(node, f"feeds nn.MultiheadAttention {node.target!r} with bias_k/bias_v/add_zero_attn")
        return w.fixed_like(result)
    path, e = str(node.target), mod.embed_dim
    reason = f"feeds the attention scores q·kᵀ in {path!r} (softmax input)"
    for pos, kw in ((3, "key_padding_mask"), (5, "attn_mask")):
        mask = w.input_ids(node, pos, kw)
        if mask is not None:
            w.table.fix(mask.ids, reason)
    q, k = w.table.new(f"{path}.q", (e,)), w.table.new(f"{path}.k", (e,))
    w.table.inverse(q, k, f"attention scores in {path!r}")
    w.table.note_kind(q, QK_KIND)
    w.table.note_kind(k, QK_KIND)
    qk = np.concatenate([q, k])
    v = w.table.new(f"{path}.v", (e,))
    w.table.note_kind(v, VALUE_KIND)
    zero = np.zeros(1, dtype=np.int64)
    inputs = ((0, "query", e), (1, "key", mod.kdim), (2, "value", mod.vdim))
    cols = [_features(w, node, i, kw, d) for i, kw, d in inputs]
    if mod._qkv_same_embed_dim:
        same = all(np.array_equal(c, cols[0]) for c in cols)
        col = cols[0][None, :] if same else np.concatenate([np.broadcast_to(c[None, :], (e, e)) for c in cols])
        w.use(f"{path}.in_proj_weight", np.concatenate([qk, v])[:, None], col, node)
    else:
        for name, rows, c in (("q", qk[:e], cols[0]), ("k", qk[e:], cols[1]), ("v", v, cols[2])):
            w.use(f"{path}.{name}_proj_weight", rows[:, None], c[None, :], node)
    if mod.in_proj_bias is not None:
        w.use(f"{path}.in_proj_bias", np.concatenate([qk, v]), zero, node, bias=True)
    out = w.table.new(f"{path}.out_proj", (e,))
    w.use(f"{path}.out_proj.weight", out[:, None], v[None, :], node)
    if mod.out_proj.bias is not None:
        w.use(f"{path}.out_proj.bias", out, zero, node, bias=True)
    attn, weights = result
    return (per_channel(out, result_shape(attn), attn.dim() - 1), w.fixed_like(weights))


ATTENTION_FUNCTIONS: dict[Any, Rule] = {
    aten.to.dtype: to_cast, aten.to.dtype_layout: to_cast, aten.to.device: to_cast, aten.to.other: to_cast,
    aten.type_as.default: to_cast,
    aten.addmm.default: addmm, torch.addmm: addmm, operator.matmul: matmul,
    aten.matmul.default: matmul, aten.bmm.default: matmul, torch.matmul: matmul, torch.bmm: matmul,
    aten.scaled_dot_product_attention.default: sdpa, torch.where: where, aten.where.self: where,
    aten.where.ScalarOther: where, aten.where.ScalarSelf: where, aten.where.Scalar: where,
    torch.nn.functional.scaled_dot_product_attention: sdpa,
}
