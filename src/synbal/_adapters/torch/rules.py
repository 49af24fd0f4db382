"""How positive rescaling passes through each supported layer and operation.

Every rule receives the :class:`~synbal._adapters.torch.walker.Walker` (slot table, parameter uses,
values seen so far), the graph node, and the node's real result (for shapes), and returns the
:class:`~synbal._adapters.torch.values.Ids` of its output. *Producers* (Linear, Conv, ConvTranspose,
BatchNorm's affine, LocallyConnected2d, RNN, Embedding) allocate new slots for their output
neurons and record, for each parameter, which slot scales each entry's row (``× λ``) and which
its column (``÷ λ``). *Transparent* operations (ReLU family, pooling, reshapes, ``cat``, ``+``)
move slots around and tie them. *Blocking* operations (tanh, GELU, LayerNorm, softmax, attention,
products of two scaled tensors) fix the slots that reach them.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from synbal._adapters.torch.affine_rules import AFFINE_FUNCTIONS, module_norm, scaled_by_parameter, swin_attention
from synbal._adapters.torch.attention_rules import ATTENTION_FUNCTIONS, multihead_attention
from synbal._adapters.torch.layout_rules import LAYOUT_FUNCTIONS, LAYOUT_METHODS, LAYOUT_MODULES
from synbal._adapters.torch.locally_connected import LocallyConnected2d
from synbal._adapters.torch.values import Ids, ParamRef, compress, full, reshape_ids, zeros_like_shape
from synbal._adapters.torch.values import like_result as _like_result
from synbal._adapters.torch.values import main_output as _first
from synbal._adapters.torch.values import per_channel as _out_ids
from synbal._adapters.torch.values import result_shape as _shape
from synbal.errors import ModelError

if TYPE_CHECKING:
    from synbal._adapters.torch.walker import Walker

__all__ = ["FUNCTION_RULES", "METHOD_RULES", "NAMED_RULES", "module_rule", "rule_for"]

Rule = Callable[["Walker", fx.Node, Any], Any]
ModuleRule = Callable[["Walker", fx.Node, nn.Module, Any], Any]

aten = torch.ops.aten


# ---------------------------------------------------------------------------- helpers
def _channel_ids(w: Walker, node: fx.Node, x: Ids, channel_axis: int) -> np.ndarray:
    """Per-channel slots of ``x`` (length C): positions of one channel are tied together."""
    kept = w.keep_axes(x, [channel_axis], node)
    return np.broadcast_to(kept.reshape(-1), (x.shape[channel_axis],)).copy()


# ---------------------------------------------------------------------------- producers
def linear_core(w: Walker, node: fx.Node, x: Ids, weight: str, bias: str | None, prefix: str,
                result: Any) -> Ids:
    """``y = x Wᵀ + b``: one new slot per output feature; columns scale with the input features."""
    out_features, in_features = w.param_shape(weight)
    cols = _channel_ids(w, node, x, x.ndim - 1)
    if cols.size != in_features:
        raise ModelError(f"node {node.name!r}: linear input has {cols.size} features, weight expects {in_features}")
    rows = w.table.new(prefix, (out_features,))
    w.use(weight, rows[:, None], cols[None, :], node)
    if bias is not None:
        w.use(bias, rows, np.zeros(1, dtype=np.int64), node, bias=True)
    shape = _shape(result)
    return _out_ids(rows, shape, len(shape) - 1)


def conv_core(w: Walker, node: fx.Node, x: Ids, weight: str, bias: str | None, groups: int,
              transposed: bool, prefix: str, result: Any) -> Ids:
    """Convolutions: one slot per output channel, tied across positions (weight sharing).

    ``Conv``: weight ``(O, C/g, *k)``; ``ConvTranspose``: weight ``(C, O/g, *k)``.
    """
    wshape = w.param_shape(weight)
    nk = len(wshape) - 2
    channel_axis = x.ndim - nk - 1
    cin = _channel_ids(w, node, x, channel_axis)
    c_in = cin.size
    ksuffix = (1,) * nk
    if transposed:
        out_channels = wshape[1] * groups
        rows_out = w.table.new(prefix, (out_channels,))
        per_group_in = c_in // groups
        i = np.arange(wshape[0])[:, None]
        j = np.arange(wshape[1])[None, :]
        row = rows_out[(i // per_group_in) * wshape[1] + j].reshape(wshape[0], wshape[1], *ksuffix)
        col = cin.reshape(c_in, 1, *ksuffix)
    else:
        out_channels = wshape[0]
        rows_out = w.table.new(prefix, (out_channels,))
        per_group_out = out_channels // groups
        o = np.arange(out_channels)[:, None]
        i = np.arange(wshape[1])[None, :]
        col = cin[(o // per_group_out) * wshape[1] + i].reshape(out_channels, wshape[1], *ksuffix)
        row = rows_out.reshape(out_channels, 1, *ksuffix)
    w.use(weight, row, col, node)
    if bias is not None:
        w.use(bias, rows_out, np.zeros(1, dtype=np.int64), node, bias=True)
    shape = _shape(result)
    return _out_ids(rows_out, shape, len(shape) - nk - 1)


def batch_norm_core(w: Walker, node: fx.Node, x: Ids, weight: str | None, bias: str | None,
                    training: bool, has_stats: bool, path: str, result: Any) -> Ids:
    """Eval-mode BatchNorm: the input's scale is normalised away (so its slots are fixed), and
    the affine ``γ, β`` are the incoming weights of new per-channel slots."""
    if training or not has_stats:
        why = "is in training mode" if training else "has no running statistics (track_running_stats=False)"
        raise ModelError(
            f"BatchNorm {path!r} (node {node.name!r}) {why}: it normalises with batch statistics, "
            "so rescaling is not a symmetry of the model; call model.eval() first"
        )
    cin = _channel_ids(w, node, x, 1 if x.ndim > 1 else 0)
    reason = (f"normalised by BatchNorm {path!r}: in eval mode it subtracts its fixed running mean and divides by "
              "its fixed running standard deviation, which would have to be rescaled with the channel "
              "(synbal changes parameters, not buffers); fold_batchnorm=True makes these units scalable")
    w.table.note_normalised(cin, reason)
    w.table.fix(cin, reason)
    shape = _shape(result)
    if weight is None and bias is None:
        return zeros_like_shape(shape)
    rows = w.table.new(path, (cin.size,))
    zero = np.zeros(1, dtype=np.int64)
    if weight is not None:
        w.use(weight, rows, zero, node)
    if bias is not None:
        w.use(bias, rows, zero, node, bias=True)
    return _out_ids(rows, shape, 1 if len(shape) > 1 else 0)


def locally_connected(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Ids:
    """:class:`synbal._adapters.torch.locally_connected.LocallyConnected2d`: one slot per output (channel, position)."""
    assert isinstance(mod, LocallyConnected2d)
    x = w.tensor_input(node, 0)
    path = str(node.target)
    c, (h, wd) = mod.in_channels, mod.in_size
    # per-input-neuron slots (C, H, W), ties along the batch axis only
    kept = w.keep_axes(x, [x.ndim - 3, x.ndim - 2, x.ndim - 1], node)
    in_ids = np.broadcast_to(kept.reshape(kept.shape[-3:]), (c, h, wd))
    oh, ow = mod.out_size
    col_ids = _unfold_ids(in_ids, mod.kernel_size, mod.stride, mod.padding, (oh, ow))  # (K, L)
    rows = w.table.new(path, (mod.out_channels, oh, ow))
    row = rows.reshape(mod.out_channels, oh * ow).T[:, :, None]  # (L, O, 1)
    w.use(f"{path}.weight", row, col_ids.T[:, None, :], node)
    if mod.bias is not None:
        w.use(f"{path}.bias", rows, np.zeros((1, 1, 1), dtype=np.int64), node, bias=True)
    shape = _shape(result)
    return Ids(rows.reshape(1, mod.out_channels, oh, ow), shape)


def _unfold_ids(ids: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                out_size: tuple[int, int]) -> np.ndarray:
    """The slot each column of ``F.unfold`` reads, shape ``(C·kh·kw, OH·OW)`` (padding reads slot 0)."""
    c, h, wd = ids.shape
    kh, kw = kernel
    oh, ow = out_size
    padded = np.zeros((c, h + 2 * padding[0], wd + 2 * padding[1]), dtype=np.int64)
    padded[:, padding[0] : padding[0] + h, padding[1] : padding[1] + wd] = ids
    rows = (np.arange(oh) * stride[0])[None, :, None] + np.arange(kh)[:, None, None]  # (kh, oh, 1)
    cols = (np.arange(ow) * stride[1])[None, None, :] + np.arange(kw)[:, None, None]  # (kw, 1, ow)
    # patch[c, i, j, y, x] = padded[c, rows[i, y], cols[j, x]]
    patch = padded[:, rows[:, None, :, :], cols[None, :, :, :]]  # (C, kh, kw, oh, ow)
    return patch.reshape(c * kh * kw, oh * ow)


def rnn(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    """``nn.RNN``: each hidden unit of each layer and direction is one slot.

    With ReLU, scaling hidden unit ``i`` by ``λ_i`` multiplies row ``i`` of ``W_ih``, ``b_ih``,
    ``b_hh`` and transforms ``W_hh → D W_hh D⁻¹`` (``D = diag(λ)``); the initial state scales too.
    With tanh nothing is scalable.
    """
    assert isinstance(mod, nn.RNN)
    path = str(node.target)
    if mod.nonlinearity != "relu":
        return blocking(w, node, result, f"nn.RNN({mod.nonlinearity!r})")
    x = w.tensor_input(node, 0)
    h0 = w.input_ids(node, 1, "hx")
    directions = 2 if mod.bidirectional else 1
    hidden = mod.hidden_size
    prev = _channel_ids(w, node, x, x.ndim - 1)
    all_layers: list[np.ndarray] = []
    zero = np.zeros(1, dtype=np.int64)
    for layer in range(mod.num_layers):
        outs = []
        for d in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            slots = w.table.new(f"{path}.l{layer}" + ("_reverse" if d else ""), (hidden,))
            w.use(f"{path}.weight_ih{sfx}", slots[:, None], prev[None, :], node)
            w.use(f"{path}.weight_hh{sfx}", slots[:, None], slots[None, :], node)
            if mod.bias:
                w.use(f"{path}.bias_ih{sfx}", slots, zero, node, bias=True)
                w.use(f"{path}.bias_hh{sfx}", slots, zero, node, bias=True)
            outs.append(slots)
            all_layers.append(slots)
        prev = np.concatenate(outs)
    state = np.stack(all_layers)  # (layers·directions, H)
    if h0 is not None:  # the initial state scales with the hidden units
        if h0.all_fixed():  # the same as a tie to the constant slot, with the reason said
            w.table.fix(state, f"the initial state of {path!r} is a constant (scale 1), which the hidden units "
                               "would have to scale")
        else:
            kept = w.keep_axes(h0, [0, h0.ndim - 1], node)
            w.table.tie(kept.reshape(kept.shape[0], kept.shape[-1]), state)
    out, h_n = result
    out_ids = _out_ids(prev, _shape(out), out.dim() - 1)
    hn_shape = _shape(h_n)
    hn = state.reshape(state.shape[0], 1, hidden) if len(hn_shape) == 3 else state
    return (out_ids, Ids(hn, hn_shape))


def embedding_core(w: Walker, node: fx.Node, weight: str, prefix: str, result: Any) -> Ids:
    """``Embedding``: one slot per embedding dimension; the weight is incoming from the one-hot input."""
    _, dim = w.param_shape(weight)
    rows = w.table.new(prefix, (dim,))
    w.use(weight, rows[None, :], np.zeros((1, 1), dtype=np.int64), node)
    shape = _shape(result)
    return _out_ids(rows, shape, len(shape) - 1)


# ---------------------------------------------------------------------------- transparent ops
def identity(w: Walker, node: fx.Node, result: Any) -> Any:
    """Positively homogeneous elementwise maps (ReLU family, PReLU, Dropout, casts, copies)."""
    x = w.input_ids(node, 0)
    if x is None:
        return w.no_tensor(node, result)
    return Ids(x.ids, _shape(result)) if isinstance(result, torch.Tensor) else x


def cast(w: Walker, node: fx.Node, result: Any) -> Any:
    """``to``/``type``/``type_as``/``float``…: a float result keeps the scales, an integer or bool one rounds."""
    if not isinstance(result, torch.Tensor):  # x.type() without arguments: the type's name
        return w.no_tensor(node, result)
    if not result.is_floating_point():
        return blocking(w, node, result, f"{w.op_name(node)} to {result.dtype}")
    return identity(w, node, result)


def channelwise(spatial_dims: int | None) -> Rule:
    """Pooling/upsampling/zero-padding: mixes positions within a channel (ties them), keeps channels."""

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        x = w.tensor_input(node, 0)
        nsp = spatial_dims if spatial_dims is not None else max(x.ndim - 2, 1)
        kept = w.keep_axes(x, list(range(x.ndim - nsp)), node)
        shape = _shape(_first(result))
        ids = Ids(kept.reshape(kept.shape[: x.ndim - nsp] + (1,) * (len(shape) - x.ndim + nsp)), shape)
        return _like_result(ids, result)

    return rule


def channelwise_last(w: Walker, node: fx.Node, result: Any) -> Any:
    """Channels-last position moves (padding, cropping of ``(N, H, W, C)``): positions tied, channels kept."""
    x = w.tensor_input(node, 0)
    kept = w.keep_axes(x, [x.ndim - 1], node)
    return Ids(kept, _shape(result))


def reshape(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    if any(isinstance(a, torch.dtype) for a in (*node.args, *node.kwargs.values())):  # x.view(torch.int32)
        return w.unsupported(node, result, "a view as another dtype reinterprets the bits")
    return reshape_ids(x, _shape(result))


def permute(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    if node.op == "call_method":
        dims: Any = node.args[1:]
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = dims[0]
    else:
        dims = w.literal(node, 1, "dims")
    axes = [int(d) % x.ndim for d in dims]
    return Ids(np.transpose(x.ids, axes), _shape(result))


def transpose(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    if x.ndim < 2:
        return Ids(x.ids, _shape(result))
    d0 = int(w.literal(node, 1, "dim0", 0)) % x.ndim
    d1 = int(w.literal(node, 2, "dim1", 1)) % x.ndim
    return Ids(np.swapaxes(x.ids, d0, d1), _shape(result))


def expand(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    shape = _shape(result)
    return Ids(x.ids.reshape((1,) * (len(shape) - x.ndim) + x.ids.shape), shape)


def reduce_dims(w: Walker, node: fx.Node, result: Any) -> Any:
    """``mean``/``sum``/``amax`` over dims: the reduced positions are tied."""
    x = w.tensor_input(node, 0)
    dims = w.literal(node, 1, "dim", None)
    keepdim = bool(w.literal(node, 2, "keepdim", False))
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        dims = list(range(x.ndim))
    if isinstance(dims, int):
        dims = [dims]
    red = sorted({int(d) % x.ndim for d in dims})
    kept = w.keep_axes(x, [a for a in range(x.ndim) if a not in red], node)
    shape = _shape(result)
    if not keepdim:
        kept = kept.reshape([kept.shape[a] for a in range(x.ndim) if a not in red])
    return Ids(kept, shape)


def add(w: Walker, node: fx.Node, result: Any) -> Any:
    """``a + b``: the two streams must share one scale per entry (residual connections)."""
    a = w.value(node, 0, "input")
    b = w.value(node, 1, "other")
    ia, ib = w.as_ids(a, node), w.as_ids(b, node)
    shape = _shape(result)
    if ia is None and ib is None:
        return zeros_like_shape(shape)
    if ia is None or ib is None:
        tensor = ia if ia is not None else ib
        scalar = b if ia is not None else a
        if tensor is None:
            return zeros_like_shape(shape)
        if scalar not in (0, 0.0, None):
            w.table.fix(tensor.ids, f"a constant is added at node {node.name!r}")
        return Ids(tensor.ids, shape)
    for v, other in ((ia, ib), (ib, ia)):
        if other.all_fixed() and not v.all_fixed():  # the same as a tie to the constant slot, with the reason
            w.table.fix(v.ids, f"a tensor of scale 1 (model input or constant) is added at node {node.name!r}")
            return Ids(v.ids, shape)
    w.table.tie(ia.ids, ib.ids)
    return Ids(compress(np.broadcast_to(ia.ids, np.broadcast_shapes(ia.ids.shape, ib.ids.shape))), shape)


def mul(divide: bool) -> Rule:
    """``a * b`` (``a / b``): transparent when one side is a number or has scale 1, else both fixed."""

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        a = w.value(node, 0, "input")
        b = w.value(node, 1, "other")
        if not divide:  # a parameter times a tensor (layer scale): a diagonal layer
            for p, x in ((a, b), (b, a)):
                if isinstance(p, ParamRef) and isinstance(x, Ids):
                    ids = scaled_by_parameter(w, node, p, x, result)
                    if ids is not None:
                        return ids
        ia, ib = w.as_ids(a, node), w.as_ids(b, node)
        shape = _shape(result)
        if ia is None and ib is None:
            return zeros_like_shape(shape)
        if ia is not None and (ib is None or ib.all_fixed()):
            return Ids(ia.ids, shape)
        if not divide and ib is not None and (ia is None or ia.all_fixed()):
            return Ids(ib.ids, shape)
        # both sides scaled, or a scaled denominator: not a per-entry rescaling
        op = "divided" if divide else "multiplied"
        reason = f"{op} elementwise by a scaled tensor at node {node.name!r}"
        for v in (ia, ib):
            if v is not None:
                w.table.fix(v.ids, reason)
        return zeros_like_shape(shape)

    return rule


def cat(w: Walker, node: fx.Node, result: Any) -> Any:
    """``torch.cat``: slots concatenate (offsets along the dimension)."""
    parts = w.value(node, 0, "tensors")
    dim = int(w.literal(node, 1, "dim", 0))
    shape = _shape(result)
    d = dim % len(shape)
    ids = [w.as_ids(p, node) for p in parts]
    arrays = []
    for v in ids:
        if v is None:
            raise ModelError(f"node {node.name!r}: cannot concatenate a non-tensor")
        arrays.append(v)
    others = np.broadcast_shapes(*[tuple(1 if a == d else s for a, s in enumerate(v.ids.shape)) for v in arrays])
    pieces = [np.broadcast_to(v.ids, tuple(v.shape[d] if a == d else others[a] for a in range(len(shape))))
              for v in arrays]
    return Ids(compress(np.concatenate(pieces, axis=d)), shape)


def stack(w: Walker, node: fx.Node, result: Any) -> Any:
    parts = w.value(node, 0, "tensors")
    dim = int(w.literal(node, 1, "dim", 0))
    shape = _shape(result)
    arrays = [w.as_ids(p, node) for p in parts]
    full_parts = [full(v) for v in arrays if v is not None]
    if len(full_parts) != len(arrays):
        raise ModelError(f"node {node.name!r}: cannot stack a non-tensor")
    return Ids(compress(np.stack(full_parts, axis=dim % len(shape))), shape)


def split(w: Walker, node: fx.Node, result: Any) -> Any:
    """``split``/``chunk``/``unbind``: slices of the slots along the dimension."""
    x = w.tensor_input(node, 0)
    name = getattr(node.target, "__name__", str(node.target))
    default_dim = 0
    dim_pos = 1 if "unbind" in name else 2
    d = int(w.literal(node, dim_pos, "dim", default_dim)) % x.ndim
    out = []
    offset = 0
    squeeze = "unbind" in name
    for r in result:
        n = 1 if squeeze else int(r.shape[d])
        piece = np.take(full(x), np.arange(offset, offset + n), axis=d)
        if squeeze:
            piece = piece.squeeze(d)
        out.append(Ids(compress(piece), _shape(r)))
        offset += n
    return tuple(out)


def getitem(w: Walker, node: fx.Node, result: Any) -> Any:
    container = w.value(node, 0, "input")
    index = node.args[1]
    if isinstance(container, (tuple, list, dict)):
        return container[index]  # type: ignore[index]
    x = w.as_ids(container, node)
    if x is None:  # a container discovery does not track: a tensor taken from it is not known to be unscaled
        untracked = isinstance(result, torch.Tensor)
        return w.unsupported(node, result, "indexing an untracked container") if untracked else None
    if not isinstance(result, torch.Tensor):
        return None
    if isinstance(index, fx.Node) or (isinstance(index, tuple) and any(isinstance(i, fx.Node) for i in index)):
        return w.unsupported(node, result, "indexing with a tensor")
    return Ids(compress(full(x)[index]), _shape(result))  # type: ignore[index]


def output_shape_only(w: Walker, node: fx.Node, result: Any) -> Any:
    """Shape queries and assertions: results do not depend on scales."""
    return w.no_tensor(node, result)


def blocking(w: Walker, node: fx.Node, result: Any, what: str | None = None) -> Any:
    """Operations that are not positively homogeneous: inputs fixed, outputs have scale 1."""
    name = what or w.op_name(node)
    w.fix_inputs(node, f"feeds {name} at node {node.name!r} (not positively homogeneous)")
    return w.fixed_like(result)


# ---------------------------------------------------------------------------- functional producers
def _param(w: Walker, node: fx.Node, pos: int, kw: str) -> str | None:
    return w.param_arg(node, pos, kw)


def linear_fn(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.input_ids(node, 0)
    weight = _param(w, node, 1, "weight")
    if x is None or weight is None:
        return w.fixed_like(result)
    return linear_core(w, node, x, weight, _param(w, node, 2, "bias"), w.prefix(weight), result)


def conv_fn(transposed: bool, groups_pos: int) -> Rule:
    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        x = w.input_ids(node, 0)
        weight = _param(w, node, 1, "weight")
        if x is None or weight is None:
            return w.fixed_like(result)
        groups = int(w.literal(node, groups_pos, "groups", 1))
        return conv_core(w, node, x, weight, _param(w, node, 2, "bias"), groups, transposed,
                         w.prefix(weight), result)

    return rule


def convolution_fn(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.input_ids(node, 0)
    weight = _param(w, node, 1, "weight")
    if x is None or weight is None:
        return w.fixed_like(result)
    transposed = bool(w.literal(node, 6, "transposed", False))
    groups = int(w.literal(node, 8, "groups", 1))
    return conv_core(w, node, x, weight, _param(w, node, 2, "bias"), groups, transposed, w.prefix(weight), result)


def batch_norm_fn(layout: str) -> Rule:
    """``F.batch_norm`` (``layout="F"``), ``aten.batch_norm`` (``"aten"``), no-training legit (``"legit"``)."""
    pos = {
        "F": {"mean": 1, "var": 2, "weight": 3, "bias": 4, "training": 5},
        "aten": {"weight": 1, "bias": 2, "mean": 3, "var": 4, "training": 5},
        "legit": {"weight": 1, "bias": 2, "mean": 3, "var": 4, "training": -1},
    }[layout]

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        x = w.tensor_input(node, 0)
        weight = _param(w, node, pos["weight"], "weight")
        bias = _param(w, node, pos["bias"], "bias")
        training = bool(w.literal(node, pos["training"], "training", False)) if pos["training"] >= 0 else False
        has_stats = w.value(node, pos["mean"], "running_mean") is not None
        path = w.prefix(weight) if weight else w.module_path(node)
        ids = batch_norm_core(w, node, x, weight, bias, training, has_stats, path, _first(result))
        return _like_result(ids, result)

    return rule


def prelu_fn(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    return Ids(x.ids, _shape(result))


def embedding_fn(weight_pos: int) -> Rule:
    """``F.embedding(input, weight, padding_idx, max_norm)`` and ``aten.embedding(weight, indices)``."""

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        if weight_pos == 1 and w.literal(node, 3, "max_norm") is not None:
            return blocking(w, node, result, "F.embedding(max_norm=...)")  # renormalises the rows it reads
        weight = _param(w, node, weight_pos, "weight")
        if weight is None:
            return w.fixed_like(result)
        return embedding_core(w, node, weight, w.prefix(weight), result)

    return rule


def training_batch_norm(w: Walker, node: fx.Node, result: Any) -> Any:
    raise ModelError(
        f"node {node.name!r} ({w.op_name(node)}) at {w.module_path(node)!r} runs BatchNorm in training "
        "mode: rescaling is not a symmetry of the model; export or call the model in eval mode"
    )


# ---------------------------------------------------------------------------- tables
_IDENTITY_FNS: list[Any] = [
    torch.relu, F.relu, torch.relu_, F.relu_, F.leaky_relu, F.leaky_relu_, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.feature_alpha_dropout, torch.dropout, torch.abs, operator.neg, torch.neg,
    torch.clone, aten.relu.default, aten.relu_.default, aten.leaky_relu.default, aten.leaky_relu_.default,
    aten.dropout.default, aten.clone.default, aten.abs.default, aten.neg.default, aten.alias.default,
    aten.detach.default, aten.contiguous.default, aten.feature_dropout.default,
    aten.native_dropout.default, operator.pos, torch.detach,
]
_NON_HOMOGENEOUS_FNS: list[Any] = [
    torch.tanh, F.tanh, torch.sigmoid, F.sigmoid, F.gelu, F.silu, F.elu, F.selu, F.celu, F.relu6,
    F.hardtanh, F.softmax, torch.softmax, F.log_softmax, torch.log_softmax,
    F.instance_norm, F.local_response_norm, torch.exp, torch.log, F.softplus, F.hardswish, F.hardsigmoid,
    F.mish, F.softsign, F.logsigmoid, torch.matmul, torch.bmm, torch.mm, torch.einsum,
    F.scaled_dot_product_attention, torch.sqrt, torch.pow, operator.pow, torch.sin, torch.cos,
    torch.clamp, torch.erf, F.normalize, torch.cumsum, torch.norm, F.multi_head_attention_forward,
    aten.tanh.default, aten.sigmoid.default, aten.gelu.default, aten.silu.default, aten.elu.default,
    aten.hardtanh.default, aten.relu6.default, aten.softmax.int, aten._softmax.default,
    aten.log_softmax.int, aten._log_softmax.default, aten.exp.default, aten.log.default,
    aten.matmul.default, aten.bmm.default, aten.mm.default, aten.sqrt.default, aten.pow.Tensor_Scalar,
    aten.softplus.default, aten.hardswish.default, aten.clamp.default, aten.erf.default,
    aten.scaled_dot_product_attention.default, aten.einsum.default, aten.rsqrt.default,
]
# results that depend on shapes only, never on values (assertions, sizes, new tensors of the same shape)
_SHAPE_ONLY_FNS: list[Any] = [torch._assert, aten.sym_size.int, aten._assert_tensor_metadata.default,
                              aten._assert_scalar.default, torch.zeros_like, torch.ones_like, torch.empty_like,
                              torch.full_like, torch.rand_like, torch.randn_like, torch.randint_like,
                              aten.zeros_like.default, aten.ones_like.default, aten.empty_like.default,
                              aten.full_like.default]

def _rule_table(*groups: tuple[Any, Rule]) -> dict[Any, Rule]:
    """One rule for every key of each ``(keys, rule)`` group."""
    return {key: rule for keys, rule in groups for key in keys}


FUNCTION_RULES: dict[Any, Rule] = _rule_table(
    (_IDENTITY_FNS, identity), (_NON_HOMOGENEOUS_FNS, blocking), (_SHAPE_ONLY_FNS, output_shape_only))
FUNCTION_RULES.update({
    operator.add: add, operator.iadd: add, torch.add: add, operator.sub: add, operator.isub: add,
    torch.sub: add, aten.add.Tensor: add, aten.add_.Tensor: add, aten.sub.Tensor: add,
    operator.mul: mul(False), operator.imul: mul(False), torch.mul: mul(False), aten.mul.Tensor: mul(False),
    aten.mul.Scalar: mul(False), operator.truediv: mul(True), torch.div: mul(True),
    aten.div.Tensor: mul(True), aten.div.Scalar: mul(True),
    torch.cat: cat, torch.concat: cat, aten.cat.default: cat, torch.stack: stack, aten.stack.default: stack,
    torch.flatten: reshape, torch.reshape: reshape, torch.squeeze: reshape, torch.unsqueeze: reshape,
    aten.view.default: reshape, aten.reshape.default: reshape, aten.flatten.using_ints: reshape,
    aten._unsafe_view.default: reshape, aten.squeeze.dim: reshape, aten.squeeze.dims: reshape,
    aten.squeeze.default: reshape, aten.unsqueeze.default: reshape, aten.unflatten.int: reshape,
    torch.permute: permute, aten.permute.default: permute, torch.transpose: transpose,
    torch.swapaxes: transpose, torch.swapdims: transpose, torch.unflatten: reshape, aten._to_copy.default: cast,
    aten.transpose.int: transpose, aten.t.default: transpose, torch.t: transpose,
    aten.expand.default: expand,
    torch.mean: reduce_dims, torch.sum: reduce_dims, torch.amax: reduce_dims, aten.mean.dim: reduce_dims,
    aten.sum.dim_IntList: reduce_dims, aten.amax.default: reduce_dims,
    torch.split: split, torch.chunk: split, torch.unbind: split, aten.split.Tensor: split,
    aten.split_with_sizes.default: split, aten.chunk.default: split, aten.unbind.int: split,
    operator.getitem: getitem,
    F.linear: linear_fn, aten.linear.default: linear_fn,
    F.conv1d: conv_fn(False, 6), F.conv2d: conv_fn(False, 6), F.conv3d: conv_fn(False, 6),
    aten.conv1d.default: conv_fn(False, 6), aten.conv2d.default: conv_fn(False, 6),
    aten.conv3d.default: conv_fn(False, 6),
    F.conv_transpose1d: conv_fn(True, 6), F.conv_transpose2d: conv_fn(True, 6),
    F.conv_transpose3d: conv_fn(True, 6), aten.conv_transpose1d.default: conv_fn(True, 6),
    aten.conv_transpose2d.input: conv_fn(True, 6), aten.conv_transpose3d.input: conv_fn(True, 6),
    aten.convolution.default: convolution_fn,
    F.batch_norm: batch_norm_fn("F"), aten.batch_norm.default: batch_norm_fn("aten"),
    aten._native_batch_norm_legit_no_training.default: batch_norm_fn("legit"),
    aten._native_batch_norm_legit_functional.default: training_batch_norm,
    aten._native_batch_norm_legit.default: training_batch_norm,
    F.prelu: prelu_fn, aten.prelu.default: prelu_fn, aten._prelu_kernel.default: prelu_fn,
    F.embedding: embedding_fn(1), aten.embedding.default: embedding_fn(0),
    F.max_pool1d: channelwise(1), F.max_pool2d: channelwise(2), F.max_pool3d: channelwise(3),
    F.avg_pool1d: channelwise(1), F.avg_pool2d: channelwise(2), F.avg_pool3d: channelwise(3),
    F.adaptive_avg_pool1d: channelwise(1), F.adaptive_avg_pool2d: channelwise(2),
    F.adaptive_avg_pool3d: channelwise(3), F.adaptive_max_pool2d: channelwise(2),
    aten.max_pool1d.default: channelwise(1), aten.max_pool2d.default: channelwise(2),
    aten.max_pool3d.default: channelwise(3), aten.avg_pool1d.default: channelwise(1),
    aten.avg_pool2d.default: channelwise(2), aten.avg_pool3d.default: channelwise(3),
    aten.adaptive_avg_pool1d.default: channelwise(1), aten.adaptive_avg_pool2d.default: channelwise(2),
    aten._adaptive_avg_pool2d.default: channelwise(2), aten.adaptive_avg_pool3d.default: channelwise(3),
    aten.max_pool2d_with_indices.default: channelwise(2), F.interpolate: channelwise(None),
    aten.upsample_nearest2d.vec: channelwise(2), aten.upsample_bilinear2d.vec: channelwise(2),
})
FUNCTION_RULES.update(LAYOUT_FUNCTIONS)
FUNCTION_RULES.update(AFFINE_FUNCTIONS)
FUNCTION_RULES.update(ATTENTION_FUNCTIONS)

_METHOD_IDENTITY = {"relu", "relu_", "abs", "neg", "clone", "contiguous", "detach", "cpu", "cuda"}
_METHOD_CAST = {"float", "double", "half", "bfloat16", "to", "type", "type_as", "long", "int", "short", "bool",
                "byte", "char"}
_METHOD_RESHAPE = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "unflatten", "view_as", "reshape_as"}
_METHOD_NON_HOMOGENEOUS = {"tanh", "sigmoid", "softmax", "log_softmax", "exp", "log", "pow", "sqrt",
                           "matmul", "bmm", "mm", "clamp", "clamp_", "item", "tolist", "norm", "cumsum",
                           "sin", "cos", "erf", "rsqrt"}
_METHOD_SHAPE = {"size", "dim", "numel", "nelement", "get_device", "is_contiguous", "new_zeros", "new_ones",
                 "new_empty", "new_full", "new_tensor"}

METHOD_RULES: dict[str, Rule] = _rule_table(
    (_METHOD_IDENTITY, identity), (_METHOD_RESHAPE, reshape), (_METHOD_NON_HOMOGENEOUS, blocking),
    (_METHOD_SHAPE, output_shape_only), (_METHOD_CAST, cast))
METHOD_RULES.update({
    "add": add, "add_": add, "sub": add, "sub_": add, "mul": mul(False), "mul_": mul(False),
    "div": mul(True), "div_": mul(True), "permute": permute, "transpose": transpose, "t": transpose,
    "expand": expand, "expand_as": expand, "mean": reduce_dims, "sum": reduce_dims, "amax": reduce_dims,
    "split": split, "chunk": split, "unbind": split, "swapaxes": transpose, "swapdims": transpose,
})
METHOD_RULES.update(LAYOUT_METHODS)

# functions of other libraries that torch.fx keeps as calls (``torch.fx.wrap``), by qualified name
NAMED_RULES: dict[str, Rule] = {
    # multiplies whole rows by 0 or 1/(1-p) (a constant per sample), and is the identity in eval mode
    "torchvision.ops.stochastic_depth.stochastic_depth": identity,
    "torchvision.models.swin_transformer.shifted_window_attention": swin_attention,
    # zero-pads H and W of a channels-last tensor to even sizes: positions move, channels stay
    "torchvision.models.swin_transformer._patch_merging_pad": channelwise_last,
}


def rule_for(node: fx.Node) -> Rule | None:
    """The rule of a ``call_function``/``call_method`` node, or ``None`` when synbal has none."""
    if node.op == "call_method":
        return METHOD_RULES.get(str(node.target))
    target = node.target
    rule = FUNCTION_RULES.get(target)
    if rule is None:
        rule = NAMED_RULES.get(f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}")
    return rule


# ---------------------------------------------------------------------------- modules
def _module_linear(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    assert isinstance(mod, nn.Linear)  # guaranteed by module_rule
    path = str(node.target)
    return linear_core(w, node, x, f"{path}.weight", f"{path}.bias" if mod.bias is not None else None,
                       path, result)


def _module_conv(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    assert isinstance(mod, nn.modules.conv._ConvNd)  # guaranteed by module_rule
    path = str(node.target)
    return conv_core(w, node, x, f"{path}.weight", f"{path}.bias" if mod.bias is not None else None,
                     mod.groups, mod.transposed, path, result)


def _module_batch_norm(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    assert isinstance(mod, nn.modules.batchnorm._BatchNorm)  # guaranteed by module_rule
    path = str(node.target)
    return batch_norm_core(w, node, x, f"{path}.weight" if mod.weight is not None else None,
                           f"{path}.bias" if mod.bias is not None else None,
                           mod.training, mod.running_mean is not None, path, result)


def _module_embedding(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    assert isinstance(mod, nn.Embedding)
    if mod.max_norm is not None:
        return blocking(w, node, result, "nn.Embedding(max_norm=...)")
    return embedding_core(w, node, f"{node.target}.weight", str(node.target), result)


def _module_as_function(rule: Rule) -> ModuleRule:
    def call(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
        return rule(w, node, result)

    return call


def _module_flatten(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    return reshape(w, node, result)


def _module_blocking(w: Walker, node: fx.Node, mod: nn.Module, result: Any) -> Any:
    return blocking(w, node, result, f"nn.{type(mod).__name__}")


_POOLS: dict[type[nn.Module], int | None] = {
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3, nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3, nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3, nn.LPPool1d: 1, nn.LPPool2d: 2,
    nn.Upsample: None, nn.UpsamplingNearest2d: 2, nn.UpsamplingBilinear2d: 2, nn.ZeroPad2d: 2,
}
_IDENTITY_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.FeatureAlphaDropout,
)
_BLOCKING_MODULES: tuple[type[nn.Module], ...] = (
    nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ReLU6, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus,
    nn.Softmax, nn.LogSoftmax, nn.Softmax2d, nn.InstanceNorm1d,
    nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm, nn.MultiheadAttention, nn.LSTM, nn.GRU,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid,
    nn.Softshrink, nn.Hardshrink, nn.Transformer, nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer, nn.AlphaDropout, nn.GLU, nn.Bilinear,
)


def module_rule(mod: nn.Module) -> ModuleRule | None:
    """The rule for a leaf module, or ``None`` when synbal does not know it."""
    if isinstance(mod, nn.Linear):
        return _module_linear
    if isinstance(mod, nn.modules.conv._ConvNd):
        return _module_conv
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        return _module_batch_norm
    if isinstance(mod, LocallyConnected2d):
        return locally_connected
    if isinstance(mod, nn.RNN):
        return rnn
    if isinstance(mod, nn.Embedding):
        return _module_embedding
    if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
        return module_norm
    if isinstance(mod, _IDENTITY_MODULES):
        return _module_as_function(identity)
    for cls, layout in LAYOUT_MODULES.items():
        if isinstance(mod, cls):
            return _module_as_function(layout)
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return _module_flatten
    for cls, dims in _POOLS.items():
        if isinstance(mod, cls):
            return _module_as_function(channelwise(dims))
    if isinstance(mod, nn.MultiheadAttention):
        return multihead_attention
    if isinstance(mod, _BLOCKING_MODULES):
        return _module_blocking
    return None
