"""PyTorch modules that synbal's papers use but PyTorch lacks.

:class:`LocallyConnected2d` is a convolution *without* weight sharing: every output position has
its own filter, so every (channel, position) output is a separate neuron with its own incoming
weights — the locally connected layers of the paper's CIFAR-10 network. synbal balances each such
neuron with its own scale.

>>> import torch
>>> layer = LocallyConnected2d(3, 4, in_size=(8, 8), kernel_size=3)
>>> layer.out_size, tuple(layer.weight.shape), tuple(layer.bias.shape)
((6, 6), (36, 4, 27), (4, 6, 6))
>>> layer(torch.zeros(2, 3, 8, 8)).shape
torch.Size([2, 4, 6, 6])
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["LocallyConnected2d"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _PositionwiseProduct(torch.autograd.Function):
    """``out[n, o, l] = Σ_k patches[l, n, k] · weight[l, o, k]``: one small product per position.

    Written out so that every ``torch.bmm`` (forward and both gradients) gets contiguous operands:
    with the strided gradient that autograd would otherwise pass, ``bmm`` falls back to copying
    each position's matrices separately, which made a training step of the CIFAR-10 net ~2.7×
    slower (batch 5).
    """

    @staticmethod
    def forward(ctx: Any, patches: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(patches, weight)
        return torch.bmm(patches, weight.transpose(1, 2)).permute(1, 2, 0)  # (N, O, L)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        patches, weight = ctx.saved_tensors
        by_position = grad.permute(2, 0, 1).contiguous()  # (L, N, O)
        grad_patches = torch.bmm(by_position, weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.bmm(by_position.transpose(1, 2), patches) if ctx.needs_input_grad[1] else None
        return grad_patches, grad_weight


class LocallyConnected2d(nn.Module):
    """A 2-D locally connected layer: a convolution with an unshared filter per output position.

    ``weight`` has shape ``(OH·OW, out_channels, in_channels·kh·kw)``: row ``l`` holds the filters
    of output position ``l = oh·OW + ow``, and the last axis runs over the input patch in
    :func:`torch.nn.functional.unfold` order (channel, then kernel row, then kernel column).
    ``bias`` (optional) has shape ``(out_channels, OH, OW)``: one bias per output neuron.

    Parameters
    ----------
    in_channels, out_channels:
        Channels of the input and of the output.
    in_size:
        Spatial size ``(H, W)`` of the input (needed to size the unshared weights).
    kernel_size, stride, padding:
        As for :class:`torch.nn.Conv2d` (zero padding).
    bias:
        Whether each output neuron has a bias.

    >>> import synbal
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(LocallyConnected2d(1, 2, in_size=4, kernel_size=3), nn.ReLU(),
    ...                       nn.Flatten(), nn.Linear(8, 1)).double()
    >>> x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    >>> res = synbal.balance(model, "l2", example_inputs=(x,))
    >>> res.problem.n, res.max_relative_deficit < 1e-9  # a unit per channel and position: 2 × 2 × 2
    (8, True)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: int | tuple[int, int],
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.in_size = _pair(in_size)
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        oh, ow = (
            (self.in_size[d] + 2 * self.padding[d] - self.kernel_size[d]) // self.stride[d] + 1 for d in (0, 1)
        )
        if oh < 1 or ow < 1:
            raise ValueError(
                f"LocallyConnected2d: kernel {self.kernel_size} does not fit input {self.in_size} "
                f"with padding {self.padding}"
            )
        self.out_size = (oh, ow)
        patch = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        self.weight = nn.Parameter(torch.empty(oh * ow, self.out_channels, patch, device=device, dtype=dtype))
        self.bias: nn.Parameter | None
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, oh, ow, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``±1/√fan_in`` initialisation, as :class:`torch.nn.Conv2d` does."""
        bound = 1.0 / math.sqrt(self.weight.shape[-1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.in_size):
            raise ValueError(
                f"LocallyConnected2d expects input of shape (N, {self.in_channels}, "
                f"{self.in_size[0]}, {self.in_size[1]}), got {tuple(x.shape)}"
            )
        if self.padding != (0, 0):
            x = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], self.padding[0]))
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        windows = x.unfold(2, kh, sh).unfold(3, kw, sw)  # (N, C, OH, OW, kh, kw), a view
        # the patches position-major, (L, N, K) with K in unfold order: one gathering copy
        patches = windows.permute(2, 3, 0, 1, 4, 5).reshape(self.weight.shape[0], x.shape[0], -1)
        out = _PositionwiseProduct.apply(patches, self.weight)
        out = out.reshape(x.shape[0], self.out_channels, *self.out_size)
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, in_size={self.in_size}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"bias={self.bias is not None}"
        )
