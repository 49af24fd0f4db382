"""Speed of the PyTorch adapter: discovery + extraction + apply on a ResNet-18-shaped model, and
``exact`` balancing of the MNIST autoencoder 784-200-100-50-100-200-784 including discovery.

Run: ``PYTHONPATH=src python benchmarks/bench_torch.py [--repeats 3] [--size 224]``. Prints the
best of ``--repeats`` runs for each stage (seconds); nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import synbal
from synbal.regularizers import parse_regularizer
from synbal.torch import TorchAdapter
from synbal.torch.discovery import discover
from synbal.torch.extract import build_problem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_zoo import BasicBlock, autoencoder


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (11.7 M parameters), built locally."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []
        cin = 64
        for k, cout in enumerate((64, 128, 256, 512)):
            layers.append(nn.Sequential(BasicBlock(cin, cout, 1 if k == 0 else 2), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=224, help="input resolution of the ResNet-18")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    model = ResNet18().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_var, 0.5, 1.5)
            nn.init.normal_(m.weight)
    x = (torch.randn(1, 3, args.size, args.size),)
    reg = parse_regularizer("l2")
    n_params = sum(p.numel() for p in model.parameters())
    t_disc, d = best(lambda: discover(model, x), args.repeats)
    t_ext, prob = best(lambda: build_problem(d, reg), args.repeats)
    res = synbal.algorithms.solve(prob, reg, "exact", synbal.algorithms.SolveOptions())
    adapter = TorchAdapter(model, example_inputs=x, verify=False)
    t_apply, _ = best(lambda: adapter.apply(res.u, inplace=False), args.repeats)

    def pipeline() -> None:
        adapter = TorchAdapter(model, example_inputs=x, verify=False)  # discovery
        adapter.problem(reg)  # extraction
        adapter.apply(res.u, inplace=False)  # apply to a copy

    t_pipeline, _ = best(pipeline, args.repeats)
    checked = TorchAdapter(model, example_inputs=x, verify=True)
    t_apply_v, _ = best(lambda: checked.apply(res.u, inplace=False), args.repeats)
    t_total, res_all = best(lambda: synbal.balance(model, "l2", "exact", example_inputs=x, verify=False),
                            args.repeats)
    print(f"ResNet-18 ({n_params / 1e6:.1f} M parameters, input {args.size}x{args.size}): "
          f"{d.n} groups, {len(d.excluded)} excluded ranges")
    print(f"  discovery            {t_disc:8.3f} s")
    print(f"  extraction (l2)      {t_ext:8.3f} s")
    print(f"  apply (copy)         {t_apply:8.3f} s")
    print(f"  discovery+extraction+apply, one timed run {t_pipeline:8.3f} s "
          f"(sum of the stage minima {t_disc + t_ext + t_apply:.3f} s)")
    print(f"  apply + verify       {t_apply_v:8.3f} s")
    print(f"  balance(exact) end to end, no verify {t_total:8.3f} s  ({res_all.sweeps} iterations, "
          f"max rel deficit {res_all.max_relative_deficit:.1e})")

    ae = autoencoder().eval()
    xa = (torch.randn(8, 784),)
    t_ae, r = best(lambda: synbal.balance(ae, "l2", "exact", example_inputs=xa), args.repeats)
    print(f"MNIST autoencoder 784-200-100-50-100-200-784: exact incl. discovery and verify {t_ae:.3f} s, "
          f"{r.sweeps} iterations, converged={r.converged}, max rel deficit {r.max_relative_deficit:.1e}")


if __name__ == "__main__":
    main()
