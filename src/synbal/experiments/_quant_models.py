"""Models of the ``quant`` experiment: a MobileNet-style CNN (ReLU or ReLU6), a small residual
CNN and an MLP for 28×28 grey images, their training, and the layer pairs a user would list by
hand for ``torch.ao.quantization._equalize.equalize``.

>>> import torch
>>> [tuple(build_model(name, seed=0)(torch.zeros(2, 1, 28, 28)).shape) for name in MODELS]
[(2, 10), (2, 10), (2, 10), (2, 10)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MODELS", "ModelSpec", "ResidualCNN", "build_model", "train_model"]


def _cba(cin: int, cout: int, k: int, stride: int, act: Callable[[], nn.Module], groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act()]


def mobilenet(act: Callable[[], nn.Module]) -> nn.Sequential:
    """Stem 3×3 conv, then three depthwise-separable blocks (depthwise 3×3 + pointwise 1×1), BN
    after every conv; global average pooling and a linear classifier."""
    layers = (_cba(1, 16, 3, 2, act) + _cba(16, 16, 3, 1, act, 16) + _cba(16, 32, 1, 1, act)
              + _cba(32, 32, 3, 2, act, 32) + _cba(32, 64, 1, 1, act)
              + _cba(64, 64, 3, 1, act, 64) + _cba(64, 64, 1, 1, act))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class ResidualCNN(nn.Module):
    """Stem (1→16, stride 2), a residual block, a strided 16→32 conv, a residual block, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cba(1, 16, 3, 2, nn.ReLU))
        self.block1 = _Block(16)
        self.down = nn.Sequential(*_cba(16, 32, 3, 2, nn.ReLU))
        self.block2 = _Block(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.down(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(h), 1))


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model, which layer pairs a user lists for torch's ``equalize``, and whether
    its activations are clipped (ReLU6)."""

    build: Callable[[], nn.Module]
    pairs: tuple[tuple[str, str], ...]
    clipped: bool = False


_MOBILE_PAIRS = (("3", "6"), ("9", "12"), ("15", "18"), ("18", "23"))  # depthwise → pointwise, last → fc
MODELS: dict[str, ModelSpec] = {
    "mobilenet": ModelSpec(lambda: mobilenet(nn.ReLU), _MOBILE_PAIRS),
    "mobilenet-relu6": ModelSpec(lambda: mobilenet(nn.ReLU6), _MOBILE_PAIRS, clipped=True),
    "resnet": ModelSpec(ResidualCNN, (("block1.conv1", "block1.conv2"), ("block2.conv1", "block2.conv2"))),
    "mlp": ModelSpec(mlp, (("1", "3"), ("3", "5"))),
}


def build_model(name: str, seed: int) -> nn.Module:
    """A freshly initialised model (``torch.manual_seed(seed)``)."""
    torch.manual_seed(seed)
    return MODELS[name].build()


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int,
                batch: int = 128, lr: float = 1e-3, one_cycle: bool = False) -> nn.Module:
    """Adam on cross-entropy; returns the model in eval mode.

    ``one_cycle``: the learning rate follows PyTorch's ``OneCycleLR`` (warm-up to ``lr`` over the
    first 30 % of the steps, then cosine annealing to ``lr``/25e4), which brings these small nets
    close to convergence in a few epochs; otherwise ``lr`` is constant.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-x.shape[0] // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps) if one_cycle and steps else None
    model.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for start in range(0, x.shape[0], batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    return model.eval()
