"""The model zoo of the PyTorch issue: every architecture the paper covers and what people build.

Each :class:`ZooModel` carries a float64 model in eval mode (seeded), example inputs, and the
exact discovery expected: the number of scalable groups, a few groups' exact members, and the
excluded unit ranges with (part of) their reasons. Widths are small except where the issue fixes
the shape (the MNIST autoencoder 784-200-100-50-100-200-784).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from synbal._adapters.torch.locally_connected import LocallyConnected2d

__all__ = ["ZOO", "ZooModel", "build", "outputs", "same_state"]


@dataclass
class ZooModel:
    name: str
    make: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    n_groups: int
    members: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # key -> substring of the reason


def _randomise_bn(model: nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))


def autoencoder() -> nn.Module:
    widths = [784, 200, 100, 50, 100, 200, 784]
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers.append(nn.Linear(widths[k], widths[k + 1]))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    )


def depthwise_separable() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 6, 1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU(),  # depthwise
        nn.Conv2d(6, 8, 1, groups=2), nn.ReLU(),  # grouped pointwise
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn plus an identity or projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.block1 = BasicBlock(4, 4)
        self.block2 = BasicBlock(4, 8, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.block2(self.block1(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_block() -> nn.Module:
    model = SmallResNet()
    _randomise_bn(model)
    return model


def locally_connected() -> nn.Module:
    """The paper's CIFAR net shape (3 locally connected + 3 dense layers, leaky ReLU), scaled down."""
    act = nn.LeakyReLU(0.1)
    return nn.Sequential(
        LocallyConnected2d(3, 4, (8, 8), 3), act,  # 4x6x6 = 144
        LocallyConnected2d(4, 4, (6, 6), 3), act,  # 4x4x4 = 64
        LocallyConnected2d(4, 2, (4, 4), 1), act,  # 2x4x4 = 32
        nn.Flatten(), nn.Linear(32, 16), act, nn.Linear(16, 8), act, nn.Linear(8, 10),
    )


class RNNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(3, 5, num_layers=2, nonlinearity="relu", batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def rnn() -> nn.Module:
    return RNNNet()


def mixed() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 6), nn.PReLU(6), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 6), nn.LeakyReLU(0.2),
        nn.Dropout(0.5), nn.Linear(6, 3),
    )


class SharedNet(nn.Module):
    """One hidden layer applied twice (weight sharing across depth)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 5)
        self.shared = nn.Linear(5, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        h = torch.relu(self.shared(h))
        h = torch.relu(self.shared(h))
        return self.out(h)


def shared() -> nn.Module:
    return SharedNet()


def gelu_block() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))


class CatNet(nn.Module):
    """Two branches concatenated, then a residual ``+`` over the concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(4, 2)
        self.mix = nn.Linear(5, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], dim=1)
        h = torch.relu(self.mix(h)) + h
        return self.out(h)


def cat_net() -> nn.Module:
    return CatNet()


def transposed() -> nn.Module:
    return nn.Sequential(
        nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Unflatten(2, (1, 4)), nn.ConvTranspose2d(3, 4, 2, groups=1),
        nn.ReLU(), nn.ConvTranspose2d(4, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 2, 1),
    )


class Conv3dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv3d(2, 3, 2)
        self.c2 = nn.Conv3d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x))).mean(dim=(2, 3, 4))


def conv3d() -> nn.Module:
    return Conv3dNet()


class FunctionalNet(nn.Module):
    """Functional ops between layers: avg_pool2d, mean, a Linear along the last axis, permute, reshape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc_t = nn.Linear(4, 4)
        self.fc = nn.Linear(3 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(F.relu(self.conv(x)), (1, 1)).mean(dim=2)  # (N, 3, 4): one slot per channel
        h = F.relu(self.fc_t(h))  # mixes along the last axis: the 3 conv channels must share one scale
        return self.fc(h.permute(0, 2, 1).reshape(h.size(0), -1))


def functional() -> nn.Module:
    return FunctionalNet()


class BiRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(3, 4, nonlinearity="relu", batch_first=True, bidirectional=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def birnn() -> nn.Module:
    return BiRNN()


class LayoutNet(nn.Module):
    """Every shape-moving op between two Linears: each must move the slots exactly (none is a constant)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 6)
        self.c = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = h.T.T.mT.mT.data.detach()  # the audit's h.T.T, h.mT.mT, h.data
        n = h.size(0)
        h = h.view(n, 2, 3).transpose(1, 2).permute(0, 2, 1).reshape(n, 6)
        h = h.unflatten(1, (2, 3)).flatten(1).unsqueeze(1).expand(n, 2, 6).sum(1) * 0.5
        h = torch.relu(self.b(h)).movedim(1, 0).flip(0).swapaxes(0, 1)
        return self.c(h[:, 1:])


def layout() -> nn.Module:
    return LayoutNet()


def weight_normed() -> nn.Module:
    """Weight normalisation, new (parametrizations) and old (hooks): W = g·v/‖v‖ scales through g."""
    from torch.nn.utils import parametrizations, weight_norm

    with warnings.catch_warnings():  # the hook-based weight_norm is deprecated, and still in use
        warnings.simplefilter("ignore", FutureWarning)
        old = weight_norm(nn.Conv1d(4, 3, 1), dim=None)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), parametrizations.weight_norm(nn.Linear(5, 4)), nn.ReLU(),
                         nn.Unflatten(1, (4, 1)), old, nn.ReLU(),
                         nn.Conv1d(3, 2, 1), nn.Flatten())


def pixel_shuffle() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2), nn.Conv2d(2, 4, 3),
                         nn.ReLU(), nn.PixelUnshuffle(2), nn.Conv2d(16, 2, 1))


class LayerScaleBlock(nn.Module):
    """A ConvNeXt block: depthwise conv, LayerNorm, Linear-GELU-Linear, layer scale, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 1)
        self.stem_norm = nn.GroupNorm(2, 4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.norm = nn.LayerNorm(4)
        self.fc1 = nn.Linear(4, 8)
        self.fc2 = nn.Linear(8, 4)
        self.gamma = nn.Parameter(torch.rand(4, 1, 1) + 0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_norm(self.stem(x))
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.fc2(F.gelu(self.fc1(h))).permute(0, 3, 1, 2)
        x = x + self.gamma * h
        return self.head(F.relu(x).mean(dim=(2, 3)))


def layer_scale() -> nn.Module:
    return LayerScaleBlock()


def tanh_mlp() -> nn.Module:
    """No scalable unit: the hidden units feed tanh, the last layer is the output."""
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


class Recurrent(nn.Module):
    """A recurrent layer (``kind``: LSTM, GRU, tanh or ReLU RNN) and a head; ``zero_state`` passes h0 = 0."""

    def __init__(self, kind: str, zero_state: bool = False) -> None:
        super().__init__()
        make = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind)
        self.rnn = make(3, 4, batch_first=True) if make else nn.RNN(3, 4, nonlinearity=kind, batch_first=True)
        self.zero_state = zero_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.zero_state:
            out, _ = self.rnn(x, torch.zeros(1, x.size(0), 4, dtype=x.dtype))
        else:
            out, _ = self.rnn(x)
        return out


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output on ``x``, without gradients."""
    with torch.no_grad():
        return model(x)


def same_state(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models hold exactly the same state (parameters and buffers)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def build(entry: ZooModel) -> tuple[nn.Module, torch.Tensor]:
    """A fresh float64 eval-mode model (seeded) and its example input."""
    torch.manual_seed(0)
    model = entry.make().double().eval()
    x = torch.randn(*entry.input_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a hook-based weight_norm recomputes its weight (in float64, without history)
        model(x)
    return model, x


ZOO: list[ZooModel] = [
    ZooModel("mlp", mlp, (4, 5), 13, {"0[3]": ["0[3]"], "2[5]": ["2[5]"]},
             {"4[0]..4[2] (3 units)": "model output"}),
    ZooModel("autoencoder", autoencoder, (2, 784), 650, {"4[49]": ["4[49]"]},
             {"10[0]..10[783] (784 units)": "model output"}),
    ZooModel("cnn", cnn, (1, 3, 8, 8), 10, {"0[2]": ["0[2]"], "3[5]": ["3[5]"]},
             {"6[0]..6[4] (5 units)": "model output"}),
    ZooModel("depthwise", depthwise_separable, (1, 3, 5, 5), 20, {"2[5]": ["2[5]"], "4[7]": ["4[7]"]},
             {"8[0]..8[3] (4 units)": "model output"}),
    ZooModel("resnet_block", resnet_block, (2, 3, 6, 6), 24,
             {"bn1[1]": ["bn1[1]", "block1.bn2[1]"], "block1.bn1[3]": ["block1.bn1[3]"],
              "block2.bn2[7]": ["block2.bn2[7]", "block2.downsample.1[7]"]},
             {"conv1[0]..conv1[3] (4 units)": "normalised by BatchNorm 'bn1'",
              "block2.downsample.0[0]..block2.downsample.0[7] (8 units)": "BatchNorm 'block2.downsample.1'",
              "fc[0]..fc[2] (3 units)": "model output"}),
    ZooModel("locally_connected", locally_connected, (2, 3, 8, 8), 264,
             {"0[3,5,5]": ["0[3,5,5]"], "4[1,3,0]": ["4[1,3,0]"]},
             {"11[0]..11[9] (10 units)": "model output"}),
    ZooModel("rnn", rnn, (2, 4, 3), 10, {"rnn.l1[4]": ["rnn.l1[4]"]}, {"fc[0]..fc[1] (2 units)": "model output"}),
    ZooModel("mixed", mixed, (3, 4), 12, {"0[5]": ["0[5]"], "4[0]": ["4[0]"]},
             {"2[0]..2[4] (5 units)": "feeds nn.Tanh", "7[0]..7[2] (3 units)": "model output"}),
    ZooModel("shared", shared, (3, 3), 5, {"inp[2]": ["inp[2]", "shared[2]", "shared#2[2]"]},
             {"out[0]..out[1] (2 units)": "model output"}),
    ZooModel("gelu_block", gelu_block, (3, 4), 6, {"2[0]": ["2[0]"]},
             {"0[0]..0[5] (6 units)": "feeds nn.GELU", "4[0]..4[2] (3 units)": "model output"}),
    ZooModel("cat", cat_net, (3, 4), 5, {"a[0]": ["a[0]", "mix[0]"], "b[1]": ["b[1]", "mix[4]"]},
             {"out[0]..out[1] (2 units)": "model output"}),
    ZooModel("transposed", transposed, (2, 2, 6), 11, {"3[1]": ["3[1]"], "5[3]": ["5[3]"]},
             {"7[0]..7[1] (2 units)": "model output"}),
    ZooModel("functional", functional, (2, 2, 4, 4), 5, {"conv[0]": ["conv[0]", "conv[1]", "conv[2]"],
             "fc_t[3]": ["fc_t[3]"]}, {"fc[0]..fc[1] (2 units)": "model output"}),
    ZooModel("birnn", birnn, (2, 5, 3), 8, {"rnn.l0_reverse[2]": ["rnn.l0_reverse[2]"]},
             {"fc[0]..fc[1] (2 units)": "model output"}),
    ZooModel("conv3d", conv3d, (1, 2, 3, 3, 3), 3, {"c1[2]": ["c1[2]"]},
             {"c2[0]..c2[1] (2 units)": "model output"}),
    # the held-out audit's defects (issue 11): each model fails the zoo's invariants without its fix
    ZooModel("layout", layout, (3, 4), 11, {"a[0]": ["a[0]"], "b[4]": ["b[4]"]},
             {"b[5]": "no outgoing weights", "c[0]..c[1] (2 units)": "model output"}),
    ZooModel("weight_norm", weight_normed, (2, 3), 3,
             {"0[0]": [f"0[{i}]" for i in range(5)], "2[0]": [f"2[{i}]" for i in range(4)],
              "5[0]": ["5[0]", "5[1]", "5[2]"]}, {"7[0]..7[1] (2 units)": "model output"}),
    ZooModel("pixel_shuffle", pixel_shuffle, (1, 2, 5, 5), 6,
             {"0[0]": ["0[0]", "0[1]", "0[2]", "0[3]"], "3[2]": ["3[2]"]}, {"6[0]..6[1] (2 units)": "model output"}),
    ZooModel("layer_scale", layer_scale, (2, 2, 4, 4), 12,
             {"stem_norm[1]": ["stem_norm[1]", "gamma[1,0,0]"], "fc2[3]": ["fc2[3]"]},
             {"stem[0]..stem[3] (4 units)": "normalised by GroupNorm 'stem_norm'",
              "dw[0]..dw[3] (4 units)": "normalised by LayerNorm 'norm'", "fc1[0]..fc1[7] (8 units)": "gelu",
              "head[0]..head[2] (3 units)": "model output"}),
]
