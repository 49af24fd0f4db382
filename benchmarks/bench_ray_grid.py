"""Speed-up of a reproduction grid on Ray: 2 local workers against 1, measured side by side.

Run:  python benchmarks/bench_ray_grid.py [--train-size N] [--epochs E] [--out results.json]

Runs the same reduced ``speed`` grid (MNIST embedded subset, nets 784-256-10 and 784-256-128-10,
3 regularizers × 4 balancing arms, 1 seed, the full-set and the 1 % variant: 48 independent
training runs) three times in this process, each into a fresh output folder: in process, as Ray
tasks on a local Ray instance limited to 1 CPU, and limited to 2 CPUs. Reports the wall time of
each (Ray's own start-up included) and the ratio 1 worker / 2 workers, and checks that all three
run records hold exactly the same numbers. On a shared machine the ratio depends on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from synbal.experiments import ExperimentContext, run_experiment
from synbal.experiments.backend import RayBackend


def _grid(args: argparse.Namespace) -> dict[str, object]:
    return {"seeds": 1, "epochs": args.epochs, "epochs_1pct": 5 * args.epochs, "train_size": args.train_size,
            "nets": ["784-256-10", "784-256-128-10"], "datasets": ["MNIST"]}


def _timed(out: Path, extra: dict[str, object], backend: RayBackend | None) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    run_experiment("speed", ExperimentContext(out_dir=out, quick=True, progress=False, extra=extra, backend=backend))
    seconds = time.perf_counter() - start
    record = {json.loads(line)["key"]: json.loads(line)["value"]
              for line in (out / "speed-runs.jsonl").read_text().splitlines()}
    return seconds, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the measurements as JSON")
    args = ap.parse_args()
    extra = _grid(args)
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, backend in (("in-process", None), ("ray, 1 worker", RayBackend(num_cpus=1)),
                               ("ray, 2 workers", RayBackend(num_cpus=2))):
            seconds, record = _timed(Path(tmp, label.replace(", ", "-").replace(" ", "")), extra, backend)
            results[label] = (seconds, record)
            print(f"{label:>15}: {len(record)} runs in {seconds:.1f} s", flush=True)
    reference = results["in-process"][1]
    identical = all(record == reference for _, record in results.values())
    ratio = results["ray, 1 worker"][0] / results["ray, 2 workers"][0]
    print(f"speed-up of 2 workers over 1: {ratio:.2f}x; run records identical: {identical}; "
          f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if args.out is not None:
        args.out.write_text(json.dumps({"grid": extra, "seconds": {k: v[0] for k, v in results.items()},
                                        "speedup_2_vs_1": ratio, "identical": identical}, indent=2))


if __name__ == "__main__":
    main()
