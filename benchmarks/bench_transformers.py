"""Hugging Face transformers (issue 12): discovery and balance time, and peak memory, per model.

Run: ``PYTHONPATH=src python benchmarks/bench_transformers.py [--hidden 256] [--layers 4]``.

Each model (GPT-2, BERT, OPT, Llama with GQA, T5, Qwen3; random weights from a config of the
given hidden size and depth, MLP width 2× hidden, vocabulary 1000, float32, two sequences of 32
tokens) runs in a fresh subprocess: a tiny model of the same kind is balanced first (compiled
kernels and torch.export machinery loaded), the peak RSS is reset (``/proc/self/clear_refs``),
then ``discover`` is timed, then ``synbal.balance(model, "l2", example_inputs=...)`` end to end
(tracing again, extraction, the exact solve to 1e-10, a balanced copy, verification), and the
peak RSS growth is read (``VmHWM``) and divided by the weights' bytes (the copy alone is 1×).
The groups column counts every scalable group; ``Q/K`` the query/key pairs among them (QK-norm gain
pairs for Qwen3), from ``synbal.inspect`` after the measurements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_torch import _status

import synbal

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synbal.torch import discover
from transformers_compat import MODELS, example, transformers_module

VOCAB = 1000


def one(name: str, hidden: int, layers: int) -> dict[str, float]:
    """Run in a fresh process: the measurements of one model (see the module docstring)."""
    from transformers_compat import tiny

    synbal.balance(tiny(name), "l2", example_inputs=example(name, 0))
    model = tiny(name, hidden=hidden, layers=layers, vocab=VOCAB)
    x = example(name, 0, length=32, vocab=VOCAB)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    t0 = time.perf_counter()
    d = discover(model, x)
    t1 = time.perf_counter()
    res = synbal.balance(model, "l2", example_inputs=x)
    t2 = time.perf_counter()
    growth = _status("VmHWM") - base
    blocks = synbal.inspect(model, x).blocks.values()
    qk = sum(c["Q/K pairs"] + c["QK-norm pairs"] for c in blocks)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "groups": d.n, "qk": qk,
            "discovery_s": t1 - t0, "balance_s": t2 - t1, "iterations": res.sweeps,
            "deficit": res.max_relative_deficit, "growth_mb": growth / 2**20, "ratio": growth / weight_bytes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.hidden, args.layers)))
        return
    if transformers_module() is None:
        print("transformers is not installed (pip install -c constraints.txt -e .[hf])")
        return
    print(f"torch {torch.__version__}, hidden {args.hidden}, {args.layers} layers, vocab {VOCAB}, float32, 2×32 tokens")
    print(f"{'model':7s} {'params':>8s} {'groups':>7s} {'Q/K':>5s} {'discovery':>10s} {'balance':>9s} {'iters':>5s} "
          f"{'deficit':>9s} {'peak growth':>16s}")
    for name in MODELS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--hidden", str(args.hidden), "--layers",
                              str(args.layers)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:7s} {r['params_m']:7.2f}M {r['groups']:7d} {r['qk']:5d} {r['discovery_s']:9.2f}s "
              f"{r['balance_s']:8.2f}s {r['iterations']:5d} {r['deficit']:9.1e} {r['growth_mb']:7.0f} MB "
              f"{r['ratio']:5.2f}x")


if __name__ == "__main__":
    main()
