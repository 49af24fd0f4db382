"""What discovery knows about each value of a traced model: which slot scales which entry.

An :class:`Ids` holds, for a tensor of shape ``shape``, an integer array of slots broadcastable to
it (same number of dimensions, each dimension either ``1`` or full): entry ``x[idx]`` is scaled
by the scale of slot ``ids[idx]``. A conv output ``(N, C, H, W)`` has ids of shape
``(1, C, 1, 1)``; a flattened one ``(1, C·H·W)``. Slot ``0`` means "scale 1".

>>> import numpy as np
>>> v = Ids(np.arange(3).reshape(1, 3, 1, 1), (2, 3, 2, 2))
>>> reshape_ids(v, (2, 12)).ids.tolist()
[[0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]]
>>> compress(np.array([[5, 5], [6, 6]])).tolist()
[[5], [6]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from synbal.errors import ModelError

__all__ = ["Ids", "ParamRef", "compress", "full", "like_result", "main_output", "per_channel", "reshape_ids",
           "result_shape", "zeros_like_shape"]


@dataclass
class Ids:
    """Slots scaling a tensor value (see the module docstring)."""

    ids: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.ids = np.asarray(self.ids, dtype=np.int64)
        if self.ids.ndim != len(self.shape):
            self.ids = self.ids.reshape((1,) * (len(self.shape) - self.ids.ndim) + self.ids.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def all_fixed(self) -> bool:
        """True when every entry has scale 1 (slot 0)."""
        return bool(np.all(self.ids == 0))


@dataclass
class ParamRef:
    """A parameter, buffer or computed weight read by the graph (canonical name and shape)."""

    name: str
    shape: tuple[int, ...]
    is_parameter: bool
    originals: tuple[str, ...] = ()  # for a computed weight (parametrization): the parameters behind it


def zeros_like_shape(shape: tuple[int, ...]) -> Ids:
    """A value of scale 1 everywhere."""
    return Ids(np.zeros((1,) * len(shape), dtype=np.int64), shape)


def full(v: Ids) -> np.ndarray:
    """The ids broadcast to the value's full shape (a read-only view)."""
    return np.broadcast_to(v.ids, v.shape)


def compress(a: np.ndarray) -> np.ndarray:
    """Shrink every dimension along which ``a`` is constant to size 1."""
    out = np.asarray(a)
    for ax in range(out.ndim):
        if out.shape[ax] > 1:
            first = np.take(out, [0], axis=ax)
            if np.array_equal(np.broadcast_to(first, out.shape), out):
                out = first
    return np.ascontiguousarray(out)


def reshape_ids(v: Ids, shape: tuple[int, ...]) -> Ids:
    """The ids of ``value.reshape(shape)`` (view, flatten, squeeze, unsqueeze, unflatten)."""
    shape = tuple(int(s) for s in shape)
    if all(s == 1 for s in v.ids.shape):
        return Ids(v.ids.reshape((1,) * len(shape)), shape)
    return Ids(compress(full(v).reshape(shape)), shape)


def result_shape(result: Any) -> tuple[int, ...]:
    """The shape of a node's tensor result (a :class:`~synbal.errors.ModelError` if it is not a tensor)."""
    if not isinstance(result, torch.Tensor):
        raise ModelError(f"expected a tensor result, got {type(result).__name__}")
    return tuple(int(s) for s in result.shape)


def per_channel(slots: np.ndarray, shape: tuple[int, ...], axis: int) -> Ids:
    """A value of ``shape`` whose entries along ``axis`` carry ``slots`` (constant along the other axes)."""
    view = [1] * len(shape)
    view[axis] = slots.size
    return Ids(compress(slots.reshape(view)), shape)


def main_output(result: Any) -> Any:
    """The main output of an op that may also return extras (indices, saved statistics)."""
    return result[0] if isinstance(result, tuple) else result


def like_result(ids: Ids, result: Any) -> Any:
    """``ids`` for the main output; extras (indices, statistics) carry no slots."""
    return (ids, *[None] * (len(result) - 1)) if isinstance(result, tuple) else ids
