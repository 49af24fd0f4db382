"""Equalization for quantization: synbal vs cross-layer equalization (``synbal reproduce quant``).

Claim tested (issue 13): balancing weight *ranges* with synbal's canonical max-norm state
(``"linf"``) or Lp balancing helps post-training weight quantization at least as much as the
cross-layer equalization users have today (PyTorch ``_equalize``, Brevitas ``EqualizeGraph``,
AIMET CLE), beats it at 4 bits, and — being canonical — does not care whether the network was
randomly rescaled beforehand.

Design: MobileNet-style CNN (depthwise-separable convs, BatchNorm, ReLU; and a ReLU6 variant), a
small residual CNN and an MLP, trained with Adam (batch 128, one-cycle learning rate with peak
3e-3) on MNIST (``--data``, else the embedded subset) and Fashion-MNIST (Debian package
``dataset-fashion-mnist``; skipped with a note when absent). BatchNorm is folded into the
convolutions, then each arm equalizes the float model: ``none``, ``torch-equalize`` (hand-listed
pairs), ``brevitas``, ``aimet``, ``synbal-linf`` and ``synbal-l<p>``; every arm also runs on a
copy whose scalable channels were first multiplied by ``e^U(−3,3)`` (same function). Weights are
then fake-quantized (:mod:`synbal.quantize`, symmetric, per-tensor and per-channel, 8/6/4 bits;
biases in float; activations in float unless ``act_bits`` is set) and test accuracy is measured. A
peer whose package is missing is skipped and the outputs say why. ReLU6 models reach the synbal
arms through the explicit clip conversion of :mod:`synbal.clip` (per-channel thresholds after
balancing); the peers get them as they are.

Outputs: ``quant.json`` (``rows``: one per model, dataset, seed, bits, granularity, arm,
rescaled; ``float_rows``: float accuracy and output change per arm), ``quant.md`` with the
verdict computed by :mod:`synbal.experiments._quant_verdict`, and plots of accuracy against bits
(mean ± std over seeds, float accuracy for reference). Every finished (model, dataset, seed) is
recorded in ``OUT/quant-runs.jsonl``; a rerun into the same ``--out`` skips it.

Full run: 5 seeds, 3 epochs on the full training set (one-cycle schedule, so the nets end near
convergence rather than mid-descent), the full 10,000 test images, p ∈ {2, 4}. Evaluating the 98
equalized and quantized variants of a CNN costs about as much as four training epochs (twelve for
the ReLU6 MobileNet, whose rescaled and synbal copies run per-channel clips); on this machine,
shared with a dozen other jobs, a CNN took 8–22 min per seed and dataset. Runs go seed by seed, so
a run stopped early covers every model and dataset with fewer seeds; a second process given
``--set first_seed=K`` takes the seeds from ``K`` on into the same record; ``--set
assemble_only=true`` then writes the outputs from the record alone (listing what is missing).
With ``--backend ray`` the (model, dataset, seed) runs are Ray tasks (same numbers, same record);
the peer arms must import on the workers too (checked by one probe task before anything runs: the
AIMET arm, importable here only through ``scripts/synbal_tolerant_torchvision.py``, is refused).
``--quick``: embedded MNIST, 1 seed, 2 epochs (same schedule) on 6,000 images, 1,000 test images,
p = 2, MLP and MobileNet.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synbal._io import atomic_write_json
from synbal.data import ImageDataset
from synbal.errors import SynbalError
from synbal.experiments import _quant_arms
from synbal.experiments._arms import torch_threads
from synbal.experiments._quant_arms import PEERS, apply_arm, arm_names, fold, peer_status, rescale
from synbal.experiments._quant_models import MODELS, build_model, train_model
from synbal.experiments._quant_report import figures, markdown
from synbal.experiments._quant_verdict import verdict
from synbal.experiments._report import ExperimentContext, write_outputs
from synbal.experiments._tasks import DATASETS, image_datasets
from synbal.experiments.backend import Backend, RunSpec, run_grid
from synbal.experiments.cache import RunCache
from synbal.quantize import GRANULARITIES, quantize_activations, quantize_weights

__all__ = ["check_workers", "quant_run", "run"]

NAME = "quant"
EPOCHS = 3
PEAK_LR = 3e-3
OPTIMIZER = f"Adam, batch 128, one-cycle learning rate (peak {PEAK_LR:g}, cosine annealing)"
OPTIONS = {"datasets": 'JSON list, e.g. ["MNIST"] (default both)', "models": "JSON list of model names",
           "seeds": "number of seeds", "epochs": "training epochs", "train_size": "training images (subset)",
           "test_size": "test images (first N)", "bits": "JSON list of weight bit widths",
           "powers": "JSON list of p for the synbal-l<p> arms", "arms": "JSON list of arms (default all)",
           "act_bits": "also quantize activations to this many bits (calibrated on 4 batches)",
           "threads": "torch threads (default 1)", "fashion": "directory of the Fashion-MNIST IDX files",
           "assemble_only": "true: build the outputs from the run record alone, listing runs not yet done",
           "first_seed": "run seeds from this one on, earlier ones from the record only (a second process "
                         "sharing the record can take the later seeds)"}


def _settings(ctx: ExperimentContext) -> dict[str, Any]:
    q = ctx.quick
    powers = [float(p) for p in ctx.extra.get("powers", [2] if q else [2, 4])]
    s: dict[str, Any] = {"datasets": list(ctx.extra.get("datasets", ["MNIST"] if q else DATASETS)),
         "models": list(ctx.extra.get("models", ["mlp", "mobilenet"] if q else MODELS)),
         "seeds": int(ctx.extra.get("seeds", ctx.n_seeds(full=5, quick=1))),
         "epochs": int(ctx.extra.get("epochs", 2 if q else EPOCHS)),
         "train_size": ctx.extra.get("train_size", 6000 if q else None),
         "test_size": ctx.extra.get("test_size", 1000 if q else None),
         "bits": [int(b) for b in ctx.extra.get("bits", [8, 6, 4])],
         "arms": list(ctx.extra.get("arms", arm_names(powers))),
         "act_bits": ctx.extra.get("act_bits"), "optimizer": OPTIMIZER,
         "rescale": "per scalable channel e^U(-3,3), seed + 1000"}
    bad = sorted(set(s["models"]) - set(MODELS)) + sorted(set(s["datasets"]) - set(DATASETS))
    if bad:
        raise SynbalError(f"quant: unknown model(s)/dataset(s) {bad}; models {list(MODELS)}, datasets {list(DATASETS)}")
    return s


def _images(data: ImageDataset, split: str, size: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.tensors(split, flatten=False)  # type: ignore[arg-type]
    x = x.reshape(x.shape[0], 1, 28, 28)
    return (x, y) if size is None else (x[: int(size)], y[: int(size)])


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        hits = sum(int((model(x[i : i + 1000]).argmax(1) == y[i : i + 1000]).sum()) for i in range(0, len(x), 1000))
    return 100.0 * hits / len(x)


def _quantized(model: torch.nn.Module, bits: int, gran: str, calib: list[torch.Tensor], act_bits: Any) -> Any:
    q = quantize_weights(model, bits, gran)
    return quantize_activations(q, calib, int(act_bits)) if act_bits else q


def _one_run(model_name: str, ds_name: str, data: ImageDataset, seed: int, s: dict[str, Any],
             usable: list[str]) -> dict[str, Any]:
    """Train one model, equalize it with every arm (original and rescaled copy), quantize, test."""
    spec = MODELS[model_name]
    x, y = _images(data, "train", None)
    if s["train_size"]:
        x, y = _images(data.subset(int(s["train_size"]), seed=0), "train", None)
    xt, yt = _images(data, "test", s["test_size"])
    start = time.perf_counter()
    trained = train_model(build_model(model_name, seed), x, y, epochs=s["epochs"], seed=seed, lr=PEAK_LR,
                          one_cycle=True)
    folded = fold(trained)
    example, check, calib = xt[:2], xt[:512], [x[i : i + 256] for i in range(0, 1024, 256)]
    with torch.no_grad():
        ref = folded(check)
    copies = {False: folded, True: rescale(folded, spec, example, np.random.default_rng(seed + 1000))}
    base = {"model": model_name, "dataset": ds_name, "seed": seed}
    out: dict[str, Any] = {"rows": [], "float_rows": [], "failures": [], "train_seconds": time.perf_counter() - start}
    for rescaled, source in copies.items():
        for arm in (a for a in s["arms"] if a in usable):
            try:
                eq = apply_arm(arm, source, spec, example)
            except Exception as exc:  # a peer may refuse a model: record why, keep going
                out["failures"].append({**base, "arm": arm, "rescaled": rescaled,
                                        "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                continue
            with torch.no_grad():
                change = float((eq(check) - ref).abs().max() / ref.abs().max())
            out["float_rows"].append({**base, "arm": arm, "rescaled": rescaled, "accuracy": _accuracy(eq, xt, yt),
                                      "max_rel_output_change": change})
            for bits in s["bits"]:
                for gran in GRANULARITIES:
                    acc = _accuracy(_quantized(eq, bits, gran, calib, s["act_bits"]), xt, yt)
                    out["rows"].append({**base, "bits": bits, "granularity": gran, "arm": arm,
                                        "rescaled": rescaled, "accuracy": acc})
    out["seconds"] = time.perf_counter() - start
    return out


def quant_run(model_name: str, ds_name: str, data: ImageDataset, seed: int, s: dict[str, Any],
              usable: list[str], threads: int) -> dict[str, Any]:
    """One run of the grid (a pure, module-level function, run by any backend): :func:`_one_run`
    with ``threads`` torch threads."""
    with torch_threads(threads):
        return _one_run(model_name, ds_name, data, seed, s, usable)


def check_workers(backend: Backend | None, usable: list[str]) -> None:
    """Refuse a peer arm that imports here but not on every one of ``backend``'s worker machines
    (one probe task pinned to each).

    Workers run the plain package: AIMET needs torchvision, which the leniency of
    ``scripts/synbal_tolerant_torchvision.py`` makes importable on this side only; such an arm
    would fail on every worker, so it is refused before anything runs, never dropped silently.
    A cluster whose machines differ is refused the same way, naming how many lack the arm.
    """
    peers = tuple(a for a in usable if a in PEERS)
    if backend is None or not peers:
        return
    per_node = backend.on_each_node(_quant_arms.peer_status, peers)
    missing: dict[str, list[str]] = {}
    for status in per_node.values():
        if isinstance(status, BaseException):  # the probe itself failed there: no peer is usable
            status = {arm: f"the probe failed: {type(status).__name__}: {status}" for arm in peers}
        for arm, why in status.items():
            if why:
                missing.setdefault(arm, []).append(why)
    if missing:
        nodes = len(per_node)
        listed = "; ".join(f"{arm}: {whys[0]}" + ("" if len(whys) == nodes else f" (on {len(whys)} of {nodes} "
                                                                              "worker machines)")
                           for arm, whys in missing.items())
        keep = [a for a in usable if a not in missing]
        raise SynbalError(f"quant: arm(s) {', '.join(missing)} run here but not on the {backend.name} workers "
                          f"({listed}); install them there, use the in-process backend, or leave them out: "
                          f"--set 'arms={json.dumps(keep)}'")


def _specs(ctx: ExperimentContext, s: dict[str, Any], datasets: list[tuple[str, ImageDataset]], usable: list[str],
           cache: RunCache, notes: list[str]) -> list[list[RunSpec]]:
    """Per seed, the runs to do or to read (seeds left to another process: noted, not listed)."""
    assemble_only = bool(ctx.extra.get("assemble_only", False))
    first_seed, threads = int(ctx.extra.get("first_seed", 0)), int(ctx.extra.get("threads", 1))
    grid: list[list[RunSpec]] = []
    for seed in range(s["seeds"]):  # seed-major: a run stopped early still covers every cell
        grid.append([])
        for ds_name, data in datasets:
            for model_name in s["models"]:
                key = {**{k: v for k, v in s.items() if k != "seeds"}, "data": data.source,
                       "model": model_name, "dataset": ds_name, "seed": seed, "usable": usable}
                if cache.get(key) is None and (assemble_only or seed < first_seed):
                    notes.append(f"not run yet (left out): {model_name}, {ds_name}, seed {seed}")
                    continue
                grid[-1].append(RunSpec(key, (model_name, ds_name, data, seed, s, usable, threads)))
    return grid


def _run_specs(ctx: ExperimentContext, grid: list[list[RunSpec]], cache: RunCache) -> list[dict[str, Any]]:
    """Every run's value: in process seed by seed, rereading the record before each seed (another
    process may share it); on another backend all at once."""
    groups = grid if ctx.backend is None else [[spec for seed in grid for spec in seed]]
    done: list[dict[str, Any]] = []
    for specs in groups:
        cache.reload()
        done += run_grid(quant_run, specs, cache, ctx.backend, progress=ctx.progress, desc=NAME)
    return done


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """Every (model, dataset, seed): train, equalize with every arm, quantize, test; then the verdict."""
    s = _settings(ctx)
    status = peer_status(tuple(s["arms"]))
    usable = [a for a in s["arms"] if status.get(a) is None]
    check_workers(ctx.backend, usable)
    datasets, notes = image_datasets(dataclasses.replace(ctx, extra={**ctx.extra, "datasets": s["datasets"]}), NAME)
    notes += [f"{arm} skipped: {why}" for arm, why in status.items() if why and arm in s["arms"]]
    cache = RunCache(ctx.out_dir / f"{NAME}-runs.jsonl")
    collected: dict[str, list[Any]] = {"rows": [], "float_rows": [], "failures": []}
    for done in _run_specs(ctx, _specs(ctx, s, datasets, usable, cache, notes), cache):
        for part in collected:
            collected[part] += done[part]
    goals = verdict(collected["rows"], collected["float_rows"], [p for p in PEERS if p in usable])
    settings = {**s, "peers": {p: status[p] or "used" for p in status}, "notes": notes,
                "data": {name: d.source for name, d in datasets}}
    md = markdown(collected["rows"], collected["float_rows"], collected["failures"], goals, settings)
    write_outputs(ctx, NAME, results={"goals": goals, **collected}, settings=settings, summary_md=md,
                  figures=figures(collected["rows"], collected["float_rows"]))
    _hoist_rows(ctx.out_dir / f"{NAME}.json")
    return {"goals": goals, **collected}


def _hoist_rows(path: Path) -> None:
    """Put ``rows`` at the top level of ``quant.json`` (the issue's format), next to the settings."""
    payload = json.loads(path.read_text(encoding="utf-8"))
    payload["rows"] = payload["results"].pop("rows")
    atomic_write_json(path, payload)
