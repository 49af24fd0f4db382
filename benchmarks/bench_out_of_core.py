"""Out-of-core balancing (issue 12): a ~3 GB Llama-shaped checkpoint in ~500 MB shards, peak RSS < 1 GB.

Run: ``PYTHONPATH=src python benchmarks/bench_out_of_core.py [--layers 14] [--shard-mb 500] [--workdir DIR]``.

1. Writes a Llama-shaped checkpoint (hidden 2048, MLP 5632, 16 query heads over 4 KV heads of 128
   (GQA, RoPE), vocabulary 32000, untied head, float32, random weights) into ``DIR/model``, one shard
   at a time (``config.json``, ``model.safetensors.index.json``, ``model-0000k-of-0000n.safetensors``).
2. Runs ``synbal balance DIR/model -o DIR/out --report ...`` in a child process, which writes its own
   peak RSS (``VmHWM`` of ``/proc/self/status``) when it exits; the child imports torch and
   transformers, whose own footprint is measured by a second child that only imports them.
   (``ru_maxrss`` is not used: Linux keeps the parent's high-water mark across ``fork``/``exec``, so
   a child's ``ru_maxrss`` is at least the parent's RSS when it was started.)
3. Loads the same checkpoint in memory (one model copy), balances it with ``synbal.balance(...,
   method="exact", inplace=True)`` and compares every tensor of the out-of-core output with it, one
   tensor at a time (max relative difference, per tensor, over the tensor's max).
4. Deletes ``DIR/model`` and ``DIR/out`` (unless ``--keep``).

It prints discovery and balance time, the peak RSS, and the checkpoint reads (bytes read / size).
``--json PATH`` also writes the numbers as JSON (the slow test reads them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from transformers_compat import transformers_module  # noqa: E402 (after the path to tests/)

#: the child's command line: torchvision is imported leniently first (see tests/torchvision_compat.py); at
#: exit the child writes its peak RSS in bytes to {rss!r}
_CHILD = ("import atexit, sys; atexit.register(lambda: open({rss!r}, 'w').write(str(1024 * int(next("
          "line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')))))); "
          "sys.path.insert(0, {tests!r}); from transformers_compat import transformers_module; "
          "transformers_module(); {body}")


def config(layers: int) -> object:
    T = transformers_module()
    return T.LlamaConfig(hidden_size=2048, intermediate_size=5632, num_attention_heads=16, num_key_value_heads=4,
                         head_dim=128, num_hidden_layers=layers, vocab_size=32000, max_position_embeddings=512,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"])


def _random(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if len(shape) == 1:  # norm gains: random around 1, so no group is balanced by accident
        return 1 + 0.5 * torch.randn(shape, generator=gen)
    return 0.02 * torch.randn(shape, generator=gen) * (1 + torch.rand(shape[0], 1, generator=gen))


def write_checkpoint(path: Path, layers: int, shard_mb: float, seed: int = 0) -> int:
    """Write the checkpoint one shard at a time; returns its size in bytes."""
    from safetensors.torch import save_file

    T = transformers_module()
    cfg = config(layers)
    with torch.device("meta"):
        shapes = [(n, tuple(p.shape)) for n, p in T.LlamaForCausalLM(cfg).named_parameters()]
    path.mkdir(parents=True)
    cfg.save_pretrained(path)
    gen = torch.Generator().manual_seed(seed)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 4 * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > shard_mb * 2**20:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        file = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: _random(name, shape, gen) for name, shape in group}
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        total += sum(t.numel() * 4 for t in tensors.values())
        weight_map.update({name: file for name in tensors})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def _child(body: str, rss: Path) -> tuple[float, int]:
    """Run ``body`` in a child Python; its wall time and peak RSS in bytes."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    t0 = time.perf_counter()
    code = _CHILD.format(tests=str(ROOT / "tests"), rss=str(rss), body=body)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    return time.perf_counter() - t0, int(rss.read_text())


def run_out_of_core(model: Path, out: Path, report: Path) -> dict[str, float]:
    """The CLI in a child process; its report and peak RSS (the imports' own peak measured first)."""
    _, imports_rss = _child("import synbal._adapters.torch.out_of_core, synbal._cli.main", out.parent / "rss0")
    body = (f"from synbal._cli.main import main; sys.exit(main(['balance', {str(model)!r}, '-o', {str(out)!r}, "
            f"'--report', {str(report)!r}, '--progress']))")
    wall, peak = _child(body, out.parent / "rss1")
    return {"imports_rss_bytes": imports_rss, "peak_rss_bytes": peak, "wall_s": wall}


def compare_in_memory(model_dir: Path, out: Path) -> dict[str, float]:
    """Balance the checkpoint in memory (in place, one copy) and compare with the out-of-core output."""
    from safetensors import safe_open

    import synbal

    T = transformers_module()
    model = T.LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, 32000, (1, 16), generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    res = synbal.balance(model, "l2", example_inputs=(ids,), method="exact", inplace=True)
    seconds = time.perf_counter() - t0
    state = model.state_dict()
    worst, where, moved = 0.0, "", 0.0
    for shard in sorted(out.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                t, ref = f.get_tensor(key), state[key]
                rel = float((t - ref).abs().max()) / max(float(ref.abs().max()), 1e-300)
                with safe_open(str(model_dir / shard.name), framework="pt") as g:  # how far balancing moved it
                    moved = max(moved, float((t - g.get_tensor(key)).abs().max()) / float(ref.abs().max()))
                if rel > worst:
                    worst, where = rel, key
    return {"max_rel_diff_vs_in_memory": worst, "worst_tensor": where, "max_rel_change_vs_input": moved,
            "in_memory_balance_s": seconds,
            "in_memory_regularizer_after": res.regularizer_after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=14, help="decoder blocks (14: about 3.05 GB in float32)")
    ap.add_argument("--shard-mb", type=float, default=500.0)
    ap.add_argument("--workdir", type=Path, default=None, help="where to write (default: a new temporary folder)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint and the output")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        t0 = time.perf_counter()
        size = write_checkpoint(work / "model", args.layers, args.shard_mb)
        print(f"wrote {size / 1e9:.3f} GB in {len(list((work / 'model').glob('*.safetensors')))} shards "
              f"in {time.perf_counter() - t0:.1f} s")
        child = run_out_of_core(work / "model", work / "out", work / "report.json")
        report = json.loads((work / "report.json").read_text())
        result = {**report, **child, "shards": len(list((work / "model").glob("*.safetensors")))}
        print(f"out of core: discovery {report['discovery_seconds']:.2f} s, balance {report['balance_seconds']:.1f} s "
              f"(child wall {child['wall_s']:.1f} s); {report['groups']} groups in {report['components']} components, "
              f"largest {report['largest_component_bytes'] / 2**20:.0f} MiB")
        print(f"peak RSS {child['peak_rss_bytes'] / 2**20:.0f} MiB (imports alone "
              f"{child['imports_rss_bytes'] / 2**20:.0f} MiB); checkpoint reads {report['checkpoint_reads']:.3f} "
              f"({report['bytes_read']} of {report['checkpoint_bytes']} bytes, {report['reads']} reads)")
        print(f"R {report['regularizer_before']:.6g} -> {report['regularizer_after']:.6g}, max relative deficit "
              f"{report['max_relative_deficit']:.2e}")
        result.update(compare_in_memory(work / "model", work / "out"))
        print(f"in memory (one copy, in place): {result['in_memory_balance_s']:.1f} s; max relative difference per "
              f"tensor {result['max_rel_diff_vs_in_memory']:.2e} ({result['worst_tensor'] or 'none differs'}); "
              f"largest change from the input {result['max_rel_change_vs_input']:.2f}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work)


if __name__ == "__main__":
    main()
