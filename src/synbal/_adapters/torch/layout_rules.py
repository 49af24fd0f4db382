"""Exact rules for operations that only move entries around: the slots move with them.

Attribute access (``x.T``, ``x.mT``, ``x.data``), ``movedim``, ``flip``, ``narrow`` and ATen
``slice``/``select``, and the pixel/channel shuffles. Each computes the slots of its result by
applying the same rearrangement to the input's slots, so nothing is guessed: an attribute or a
form these rules do not know is reported as unsupported (a barrier with ``barriers=True``),
never passed through.

>>> import numpy as np
>>> from synbal._adapters.torch.values import Ids
>>> _shuffled(Ids(np.arange(4).reshape(1, 4, 1, 1), (2, 4, 3, 3)), "pixel_shuffle", 2, (2, 1, 6, 6)).ids[0, 0]
array([[0, 1, 0, 1, 0, 1],
       [2, 3, 2, 3, 2, 3],
       [0, 1, 0, 1, 0, 1],
       [2, 3, 2, 3, 2, 3],
       [0, 1, 0, 1, 0, 1],
       [2, 3, 2, 3, 2, 3]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import fx, nn

from synbal._adapters.torch.values import Ids, compress, result_shape

if TYPE_CHECKING:
    from synbal._adapters.torch.walker import Walker

__all__ = ["LAYOUT_FUNCTIONS", "LAYOUT_METHODS", "LAYOUT_MODULES", "attribute"]

Rule = Callable[["Walker", fx.Node, Any], Any]
aten = torch.ops.aten

_NON_TENSOR_ATTRIBUTES = {"shape", "dtype", "device", "ndim", "is_cuda", "layout", "requires_grad", "is_leaf",
                          "is_sparse", "is_quantized", "is_meta", "names", "itemsize", "nbytes"}


def attribute(w: Walker, node: fx.Node, result: Any) -> Any:
    """``getattr(x, name)``: ``T``/``H`` reverse the axes, ``mT``/``mH`` swap the last two, ``data``/``real``
    are the same values; non-tensor attributes (``shape``, ``dtype``, …) carry no scale."""
    name = str(node.args[1])
    if name in _NON_TENSOR_ATTRIBUTES or not isinstance(result, torch.Tensor):
        return w.no_tensor(node, result)
    x = w.tensor_input(node, 0)
    shape = result_shape(result)
    if name in ("data", "real") and not result.is_complex():
        return Ids(x.ids, shape)
    if name in ("T", "H"):
        return Ids(np.transpose(x.ids), shape)
    if name in ("mT", "mH") and x.ndim >= 2:
        return Ids(np.swapaxes(x.ids, -1, -2), shape)
    return w.unsupported(node, result, f"tensor attribute {name!r}")


def movedim(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    src = w.literal(node, 1, "source")
    dst = w.literal(node, 2, "destination")
    return Ids(np.moveaxis(x.ids, src, dst), result_shape(result))


def flip(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    dims = w.literal(node, 1, "dims")
    if node.op == "call_method" and len(node.args) > 2:
        dims = node.args[1:]
    dims = [dims] if isinstance(dims, int) else list(dims)
    return Ids(np.flip(x.ids, tuple(int(d) % x.ndim for d in dims)), result_shape(result))


def _sliced(x: Ids, dim: int, index: slice | int, shape: tuple[int, ...]) -> Ids:
    """Slots of ``x`` indexed along one axis (constant axes need no indexing)."""
    d = dim % x.ndim
    arr = x.ids
    if arr.shape[d] > 1:
        key: list[Any] = [slice(None)] * x.ndim
        key[d] = index
        arr = arr[tuple(key)]
    elif isinstance(index, int):
        arr = arr.squeeze(d)
    return Ids(compress(arr), shape)


def aten_slice(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    dim = int(w.literal(node, 1, "dim", 0))
    start, end = w.literal(node, 2, "start", None), w.literal(node, 3, "end", None)
    step = int(w.literal(node, 4, "step", 1))
    return _sliced(x, dim, slice(start, end, step), result_shape(result))


def narrow(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    dim = int(w.literal(node, 1, "dim"))
    start = int(w.literal(node, 2, "start"))
    length = int(w.literal(node, 3, "length"))
    start %= x.shape[dim % x.ndim]
    return _sliced(x, dim, slice(start, start + length), result_shape(result))


def select(w: Walker, node: fx.Node, result: Any) -> Any:
    x = w.tensor_input(node, 0)
    return _sliced(x, int(w.literal(node, 1, "dim")), int(w.literal(node, 2, "index")), result_shape(result))


def _shuffle_array(a: np.ndarray, op: str, r: int) -> np.ndarray:
    """``F.pixel_shuffle``/``pixel_unshuffle``/``channel_shuffle`` of an array ``(…, C, H, W)`` in numpy."""
    *lead, c, h, w = a.shape
    if op == "pixel_shuffle":
        out = a.reshape(*lead, c // (r * r), r, r, h, w)
        return np.moveaxis(out, (-4, -3), (-3, -1)).reshape(*lead, c // (r * r), h * r, w * r)
    if op == "pixel_unshuffle":
        out = a.reshape(*lead, c, h // r, r, w // r, r)
        return np.moveaxis(out, (-3, -1), (-4, -3)).reshape(*lead, c * r * r, h // r, w // r)
    out = a.reshape(*lead, r, c // r, h, w)  # channel_shuffle with r groups
    return np.swapaxes(out, -4, -3).reshape(a.shape)


def _shuffled(x: Ids, op: str, arg: int, shape: tuple[int, ...]) -> Ids:
    """Apply the shuffle to the slots themselves (as one image: batch axes of size 1)."""
    lead = x.ndim - 3
    image = (1,) * lead + x.shape[lead:]
    return Ids(compress(_shuffle_array(np.broadcast_to(x.ids, image), op, arg)), shape)


def shuffle(op: str) -> Rule:
    """``pixel_shuffle``/``pixel_unshuffle``/``channel_shuffle``: the same permutation of the slots."""

    def rule(w: Walker, node: fx.Node, result: Any) -> Any:
        x = w.tensor_input(node, 0)
        if node.op == "call_module":
            mod = w.gm.get_submodule(str(node.target))
            arg = int(getattr(mod, {"pixel_shuffle": "upscale_factor", "pixel_unshuffle": "downscale_factor",
                                    "channel_shuffle": "groups"}[op]))
        else:
            arg = int(w.literal(node, 1, None))
        return _shuffled(x, op, arg, result_shape(result))

    return rule


LAYOUT_FUNCTIONS: dict[Any, Rule] = {
    getattr: attribute,
    torch.movedim: movedim, torch.moveaxis: movedim, aten.movedim.int: movedim,
    torch.flip: flip, aten.flip.default: flip,
    torch.narrow: narrow, aten.narrow.default: narrow,
    aten.slice.Tensor: aten_slice, torch.select: select, aten.select.int: select,
    F.pixel_shuffle: shuffle("pixel_shuffle"), torch.pixel_shuffle: shuffle("pixel_shuffle"),
    aten.pixel_shuffle.default: shuffle("pixel_shuffle"),
    F.pixel_unshuffle: shuffle("pixel_unshuffle"), torch.pixel_unshuffle: shuffle("pixel_unshuffle"),
    aten.pixel_unshuffle.default: shuffle("pixel_unshuffle"),
    F.channel_shuffle: shuffle("channel_shuffle"), aten.channel_shuffle.default: shuffle("channel_shuffle"),
}
LAYOUT_METHODS: dict[str, Rule] = {"movedim": movedim, "moveaxis": movedim, "flip": flip, "narrow": narrow,
                                   "select": select}
LAYOUT_MODULES: dict[type[nn.Module], Rule] = {
    nn.PixelShuffle: shuffle("pixel_shuffle"), nn.PixelUnshuffle: shuffle("pixel_unshuffle"),
    nn.ChannelShuffle: shuffle("channel_shuffle"),
}
