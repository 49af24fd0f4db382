"""The networks of the reproductions (shared by fig7, fig8, fig9, their ``-lc`` variants, speed).

* :func:`mnist_autoencoder` — 784-200-100-50-100-200-784, ReLU in every layer (the output too),
  as in the paper's MNIST experiments (trained with the sum-of-squares loss).
* :func:`lc_cifar_net` — the paper's locally connected CIFAR-10 net with layer sizes
  3072-5000-2592-1296-300-100-10, leaky ReLU hidden units, logits for a softmax/cross-entropy.
  The paper gives only the sizes; the kernels here are chosen to produce exactly them
  (stride 1, no padding, unshared weights, :class:`synbal._adapters.torch.locally_connected.LocallyConnected2d`):

  ======  ===================  ============  ==========================
  layer   input                kernel        output (= units)
  ======  ===================  ============  ==========================
  LC1     3 × 32 × 32 = 3072   8 × 8         8 × 25 × 25 = 5000
  LC2     8 × 25 × 25          8 × 8         8 × 18 × 18 = 2592
  LC3     8 × 18 × 18          10 × 10       16 × 9 × 9 = 1296
  FC      1296 → 300 → 100 → 10
  ======  ===================  ============  ==========================

* :func:`fc_classifier` — the fully connected ReLU nets of ``speed`` (:data:`SPEED_ARCHITECTURES`).

>>> net = mnist_autoencoder(seed=0)
>>> [m.out_features for m in net if hasattr(m, "out_features")]
[200, 100, 50, 100, 200, 784]
>>> lc_hidden_sizes(lc_cifar_net(seed=0))
[5000, 2592, 1296, 300, 100]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from synbal._adapters.torch.locally_connected import LocallyConnected2d

__all__ = [
    "AUTOENCODER_WIDTHS",
    "DEFAULT_INIT",
    "LC_INIT",
    "LC_WIDTHS",
    "SPEED_ARCHITECTURES",
    "fc_classifier",
    "lc_cifar_net",
    "lc_hidden_sizes",
    "mnist_autoencoder",
]

AUTOENCODER_WIDTHS = [784, 200, 100, 50, 100, 200, 784]
LC_WIDTHS = [3072, 5000, 2592, 1296, 300, 100, 10]
#: The fully connected nets of the ``speed`` experiment (AAAI 2025 paper's sizes).
SPEED_ARCHITECTURES: dict[str, list[int]] = {
    "784-256-10": [784, 256, 10],
    "784-256-128-10": [784, 256, 128, 10],
    "784-512-256-128-64-10": [784, 512, 256, 128, 64, 10],
}
#: (in_channels, out_channels, kernel) of the three locally connected layers (stride 1).
LC_LAYERS = [(3, 8, 8), (8, 8, 8), (8, 16, 10)]
LC_LEAKY_SLOPE = 0.01
#: How each factory initialises its parameters (recorded in every output that uses it).
DEFAULT_INIT = ("PyTorch default initialisation (nn.Linear: weights Kaiming-uniform with a = √5, i.e. "
                "U(±1/√fan_in); biases U(±1/√fan_in))")
LC_INIT = (f"He (Kaiming) uniform for leaky ReLU (slope {LC_LEAKY_SLOPE:g}): weights "
           f"U(±√(6/((1 + {LC_LEAKY_SLOPE:g}²)·fan_in))), biases 0")


def _seeded(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)


def fc_classifier(widths: list[int], *, seed: int | None = None, output_relu: bool = False) -> nn.Sequential:
    """``Linear`` layers of the given widths with ReLU between them (PyTorch's default init)."""
    _seeded(seed)
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers.append(nn.Linear(widths[k], widths[k + 1]))
        if k < len(widths) - 2 or output_relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def mnist_autoencoder(*, seed: int | None = None) -> nn.Sequential:
    """The 784-200-100-50-100-200-784 ReLU autoencoder (ReLU on the output layer too)."""
    return fc_classifier(AUTOENCODER_WIDTHS, seed=seed, output_relu=True)


def _he_uniform_(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int, negative_slope: float) -> None:
    bound = math.sqrt(2.0 / (1.0 + negative_slope**2)) * math.sqrt(3.0 / fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.zero_()


def lc_cifar_net(*, seed: int | None = None, negative_slope: float = LC_LEAKY_SLOPE) -> nn.Sequential:
    """The locally connected 3072-5000-2592-1296-300-100-10 net; input ``(N, 3, 32, 32)``.

    Weights use He (Kaiming) uniform initialisation for leaky ReLU, biases start at 0 (the paper
    does not say; with PyTorch's default ``±1/√fan_in`` the signal shrinks ~0.4× per layer and
    this 6-layer net barely trains in the budgets used here).
    """
    _seeded(seed)
    layers: list[nn.Module] = []
    size = 32
    for c_in, c_out, k in LC_LAYERS:
        lc = LocallyConnected2d(c_in, c_out, in_size=size, kernel_size=k)
        layers += [lc, nn.LeakyReLU(negative_slope)]
        size = lc.out_size[0]
    layers.append(nn.Flatten())
    fc = [LC_WIDTHS[3], *LC_WIDTHS[4:]]
    for k in range(len(fc) - 1):
        layers.append(nn.Linear(fc[k], fc[k + 1]))
        if k < len(fc) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    for m in layers:
        if isinstance(m, LocallyConnected2d):
            _he_uniform_(m.weight, m.bias, m.weight.shape[-1], negative_slope)
        elif isinstance(m, nn.Linear):
            _he_uniform_(m.weight, m.bias, m.in_features, negative_slope)
    return nn.Sequential(*layers)


def lc_hidden_sizes(net: nn.Sequential) -> list[int]:
    """Number of hidden units after each weight layer (all but the output)."""
    sizes = []
    for m in net:
        if isinstance(m, LocallyConnected2d):
            sizes.append(m.out_channels * m.out_size[0] * m.out_size[1])
        elif isinstance(m, nn.Linear):
            sizes.append(m.out_features)
    return sizes[:-1]
