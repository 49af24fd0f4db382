"""The PyTorch adapter against the engine: the speed and memory goals of issue 11, side by side.

Run: ``PYTHONPATH=src python benchmarks/bench_torch.py [--repeats 3] [--skip-vgg]``.

Goals, each printed with PASS/FAIL (times are the best of ``--repeats`` runs, the runs of the
paths interleaved so that they share the machine's load):

1. ``exact`` on a 1024-[2048×6]-1024 float32 ReLU MLP (25.2 M weights), tolerance 1e-10, end to end
   (discovery, extraction, solve, apply to a copy, verification on the example inputs) within 2×
   the engine's time on the same weights (``synbal.balance`` of a ``DenseNet``, which also
   copies), plus the fixed cost of tracing. Two module forms: the ``nn.Sequential`` (the adapter's
   MLP fast path: no tracing) and the same layers in a custom ``nn.Module`` (traced; its trace
   cost is the discovery time, reported separately).
2. Peak memory growth of one ``balance`` call, beyond the balanced copy, over the weights' bytes:
   ≤ 0.3 for ``exact``, ≤ 2.5 for ``stochastic`` (3 sweeps), ≤ 0.3 in all for ``inplace=True``.
   Each case runs in a fresh subprocess: it builds the model, balances a small model of the same
   kind (compiled kernels and torch machinery loaded), resets the peak RSS
   (``/proc/self/clear_refs``), then balances and reads ``VmHWM``. An in-place balance with
   verification keeps what rolls a failed check back exactly (issue 11, item 6): 4 bits per
   float32/float64 weight (``synbal._adapters.torch.undo``), a copy of any other parameter. ``inplace=True``
   is measured with and without ``verify``.
3. ``vgg11_bn`` (torchvision, 133 M parameters, float32, one 224×224 input): ``exact`` with
   verification in under 5 s. float64 ``vgg11_bn`` and ``alexnet`` are timed too (no threshold).

Also reported: the stages of the traced MLP and of vgg11_bn, a ResNet-18-shaped model's stages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import synbal
from synbal._adapters.dense import DenseNet
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal.torch import TorchAdapter, discover

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from model_zoo import BasicBlock
from torchvision_compat import torchvision_models

WIDTHS = [1024] + [2048] * 6 + [1024]
TOL = 1e-10
L2 = parse_regularizer("l2")


def linears(widths: list[int], seed: int = 0) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(widths[k], widths[k + 1]) for k in range(len(widths) - 1)]


def sequential(layers: list[nn.Linear]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for k, lin in enumerate(layers):
        mods += [lin] if k == len(layers) - 1 else [lin, nn.ReLU()]
    return nn.Sequential(*mods).eval()


class TracedMLP(nn.Module):
    """The same layers behind a custom ``forward``: not the fast path, so the adapter traces it."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.layers[:-1]:
            x = torch.relu(lin(x))
        return self.layers[-1](x)


def dense(layers: list[nn.Linear]) -> DenseNet:
    return DenseNet([lin.weight.detach().numpy().copy() for lin in layers],
                    [lin.bias.detach().numpy().copy() for lin in layers])


def best_of(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """The best time of each function, the functions run in turn ``repeats`` times."""
    best: dict[str, tuple[float, Any]] = {k: (np.inf, None) for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            if dt < best[name][0]:
                best[name] = (dt, out)
    return best


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ---------------------------------------------------------------------------- goal 1
def speed_goal(repeats: int) -> None:
    layers = linears(WIDTHS)
    seq, traced, net = sequential(layers), TracedMLP(layers).eval(), dense(layers)
    x = (torch.randn(4, WIDTHS[0]),)
    weights = sum(lin.weight.numel() for lin in layers)
    small = linears([64, 128, 128, 64])
    for warm in (dense(small), sequential(small), TracedMLP(small).eval()):  # compiled kernels, fx machinery
        kw = {} if isinstance(warm, DenseNet) else {"example_inputs": (torch.randn(2, 64),)}
        synbal.balance(warm, "l2", "exact", tol=TOL, **kw)
    runs = best_of({
        "engine": lambda: synbal.balance(net, "l2", "exact", tol=TOL),
        "sequential": lambda: synbal.balance(seq, "l2", "exact", tol=TOL, example_inputs=x),
        "traced": lambda: synbal.balance(traced, "l2", "exact", tol=TOL, example_inputs=x),
        "trace": lambda: discover(traced, x),
    }, repeats)
    t_engine, engine = runs["engine"]
    t_seq, res_seq = runs["sequential"]
    t_traced, res_traced = runs["traced"]
    t_trace = runs["trace"][0]
    agree = max(float(np.abs(r.log_scales - engine.log_scales).max()) for r in (res_seq, res_traced))
    print(f"1. exact, {len(WIDTHS) - 2}x{WIDTHS[1]} MLP ({weights / 1e6:.1f} M float32 weights), tol {TOL:g}, "
          f"best of {repeats}:")
    print(f"   engine (DenseNet)                 {t_engine:7.3f} s  ({engine.sweeps} iterations)")
    print(f"   nn.Sequential (MLP fast path)     {t_seq:7.3f} s  ({res_seq.sweeps} iterations) "
          f"= {t_seq / t_engine:.2f}x engine")
    print(f"   custom nn.Module (traced)         {t_traced:7.3f} s  ({res_traced.sweeps} iterations); "
          f"trace cost (discovery) {t_trace:.3f} s; without it {(t_traced - t_trace) / t_engine:.2f}x engine")
    print(f"   max |u_module - u_engine| = {agree:.1e}")
    print(f"   [{verdict(t_seq <= 2 * t_engine)}] Sequential within 2x engine")
    print(f"   [{verdict(t_traced <= 2 * t_engine + t_trace)}] traced module within 2x engine + trace cost")
    _stages(traced, x)


def _stages(model: nn.Module, x: tuple[Any, ...]) -> None:
    t0 = time.perf_counter()
    adapter = TorchAdapter(model, example_inputs=x)
    t1 = time.perf_counter()
    problem = adapter.problem(L2)
    t2 = time.perf_counter()
    res = solve(problem, L2, "exact", SolveOptions(tol=TOL))
    t3 = time.perf_counter()
    adapter.apply(res.u, inplace=False)
    t4 = time.perf_counter()
    print(f"   stages ({type(model).__name__}, one run): discovery {t1 - t0:.3f} s, extraction {t2 - t1:.3f} s, "
          f"solve {t3 - t2:.3f} s ({res.sweeps} iterations), copy + apply + verification {t4 - t3:.3f} s")


# ---------------------------------------------------------------------------- goal 2
def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def memory_case(case: str) -> dict[str, float]:
    """Run in a fresh process: peak RSS growth of one balance call (see the module docstring)."""
    method, form, inplace, *rest = case.split("-")
    make = sequential if form == "sequential" else (lambda ls: TracedMLP(ls).eval())
    opts: dict[str, Any] = {"tol": TOL, "inplace": inplace == "inplace", "seed": 0, "verify": rest != ["noverify"]}
    if method == "stochastic":
        opts["max_sweeps"] = 3
    small = make(linears([64, 128, 128, 64], seed=1))
    synbal.balance(small, "l2", method, example_inputs=(torch.randn(2, 64),), **opts)
    model = make(linears(WIDTHS))
    x = (torch.randn(4, WIDTHS[0]),)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    synbal.balance(model, "l2", method, example_inputs=x, **opts)
    growth = _status("VmHWM") - base
    copy_bytes = 0 if opts["inplace"] else weight_bytes
    return {"weights_mb": weight_bytes / 2**20, "growth_mb": growth / 2**20,
            "ratio": (growth - copy_bytes) / weight_bytes}


def memory_goal() -> None:
    print("2. peak memory growth of one balance call beyond the balanced copy, over the weights (own process):")
    cases = [("exact-sequential-copy", 0.3), ("exact-traced-copy", 0.3), ("stochastic-sequential-copy", 2.5),
             ("exact-sequential-inplace", 0.3), ("exact-traced-inplace", 0.3),
             ("exact-sequential-inplace-noverify", 0.3)]
    for case, limit in cases:
        out = subprocess.run([sys.executable, __file__, "--memory-case", case], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"   [{verdict(r['ratio'] <= limit)}] {case:34s} {r['ratio']:5.2f}x (limit {limit}x; growth "
              f"{r['growth_mb']:.0f} MB, weights {r['weights_mb']:.0f} MB)")


# ---------------------------------------------------------------------------- goal 3
def vgg_goal(repeats: int) -> None:
    tvm = torchvision_models()
    if tvm is None:
        print("   [skip] torchvision is not installed (pip install -e .[dev])")
        return
    cases = [("vgg11_bn", torch.float32, 5.0), ("vgg11_bn", torch.float64, None), ("alexnet", torch.float64, None)]
    for name, dtype, limit in cases:
        torch.manual_seed(0)
        model = getattr(tvm, name)().eval().to(dtype)
        x = (torch.randn(1, 3, 224, 224, dtype=dtype),)
        n = sum(p.numel() for p in model.parameters())
        t, cpu, res = min((_timed(lambda m=model, x=x: synbal.balance(m, "l2", "exact", tol=TOL, example_inputs=x))
                           for _ in range(repeats if limit else 1)), key=lambda r: r[0])
        head = f"[{verdict(t < limit)}]" if limit else "[info]"
        print(f"   {head} {name} {str(dtype).replace('torch.', '')} ({n / 1e6:.0f} M parameters): exact with "
              f"verification {t:.2f} s (process CPU time {cpu:.2f} s; {res.sweeps} iterations, "
              f"converged={res.converged})" + (f", limit {limit:.0f} s" if limit else ""))
        if limit:
            _stages(model, x)
        del model


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall time, CPU time of this process (all its threads) and the result of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


# ---------------------------------------------------------------------------- also reported
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


def resnet18_stages() -> None:
    torch.manual_seed(0)
    model = ResNet18().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.running_var, 0.5, 1.5)
            nn.init.normal_(m.weight)
    print("also: ResNet-18 shape (11.7 M parameters, 224x224 input):")
    _stages(model, (torch.randn(1, 3, 224, 224),))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-vgg", action="store_true", help="skip goal 3 (torchvision models)")
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case)))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    speed_goal(args.repeats)
    memory_goal()
    if not args.skip_vgg:
        print("3. torchvision models, one 224x224 input:")
        vgg_goal(args.repeats)
    resnet18_stages()


if __name__ == "__main__":
    main()
