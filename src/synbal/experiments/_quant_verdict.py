"""The ``quant`` verdict, computed from the result rows against the issue's goals (fixed here).

Accuracies are in percent; "points" are differences of mean accuracy over seeds.

* ``8bit``: at 8 bits per-tensor every synbal arm is within ``GOAL_8BIT_POINTS`` of the best peer.
* ``4bit``: at 4 bits per-tensor synbal's best arm beats the best peer by ``GOAL_4BIT_POINTS``
  on at least ``GOAL_4BIT_MODELS`` of the three main models (every dataset). Each model also
  reports its *headroom*: float accuracy minus the best peer's 4-bit accuracy. A model whose
  headroom is under ``GOAL_4BIT_POINTS`` can be won only by a quantized model that beats the
  float one; ``reachable_per_dataset`` counts the others.
* ``rescaled``: every synbal arm's mean accuracy on the randomly rescaled copies equals the one
  on the originals within ``RESCALED_POINTS`` (every model, dataset, bits, granularity).
* ``fp32``: every synbal arm changes the float outputs by at most ``FP32_RTOL`` (relative).

>>> rows = [dict(model=m, dataset="D", seed=0, bits=b, granularity="per-tensor", arm=a, rescaled=False,
...              accuracy=acc) for m in MAIN_MODELS for b, a, acc in
...         [(8, "brevitas", 98.0), (8, "synbal-linf", 97.95), (4, "brevitas", 80.0), (4, "synbal-linf", 85.0)]]
>>> goals = verdict(rows, [], ["brevitas"])
>>> goals["8bit"]["met"], goals["4bit"]["met"], goals["rescaled"]["met"], goals["fp32"]["met"]
(True, True, None, None)
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

__all__ = ["FP32_RTOL", "GOAL_4BIT_MODELS", "GOAL_4BIT_POINTS", "GOAL_8BIT_POINTS", "MAIN_MODELS",
           "RESCALED_POINTS", "means", "verdict"]

GOAL_8BIT_POINTS = 0.1
GOAL_4BIT_POINTS = 1.0
GOAL_4BIT_MODELS = 2
RESCALED_POINTS = 0.1
FP32_RTOL = 1e-5
MAIN_MODELS = ("mobilenet", "resnet", "mlp")


def means(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[float, float, int]]:
    """``(dataset, model, granularity, bits, arm, rescaled) → (mean, std, seeds)`` of accuracy."""
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for r in rows:
        key = (r["dataset"], r["model"], r["granularity"], r["bits"], r["arm"], bool(r["rescaled"]))
        groups[key].append(float(r["accuracy"]))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


def _best(table: dict[tuple[Any, ...], tuple[float, float, int]], ds: str, model: str, bits: int,
          arms: list[str]) -> tuple[str, float] | None:
    found = [(a, table[(ds, model, "per-tensor", bits, a, False)][0]) for a in arms
             if (ds, model, "per-tensor", bits, a, False) in table]
    return max(found, key=lambda t: t[1]) if found else None


def _goal_8bit(table: dict, cells: list[tuple[str, str]], peers: list[str], ours: list[str]) -> dict[str, Any]:
    details, ok = [], []
    for ds, model in cells:
        best = _best(table, ds, model, 8, peers)
        if best is None:
            continue
        for arm in ours:
            key = (ds, model, "per-tensor", 8, arm, False)
            if key in table:
                gap = table[key][0] - best[1]
                ok.append(gap >= -GOAL_8BIT_POINTS)
                details.append({"dataset": ds, "model": model, "arm": arm, "best_peer": best[0],
                                "points_vs_best_peer": gap})
    return {"met": all(ok) if ok else None, "details": details}


def _goal_4bit(table: dict, floats: dict, cells: list[tuple[str, str]], peers: list[str],
               ours: list[str]) -> dict[str, Any]:
    wins: dict[str, int] = defaultdict(int)
    judged: dict[str, int] = defaultdict(int)
    reachable: dict[str, int] = defaultdict(int)
    details = []
    for ds, model in cells:
        best_peer, best_ours = _best(table, ds, model, 4, peers), _best(table, ds, model, 4, ours)
        if model not in MAIN_MODELS or best_peer is None or best_ours is None:
            continue
        margin = best_ours[1] - best_peer[1]
        judged[ds] += 1
        wins[ds] += margin >= GOAL_4BIT_POINTS
        flt = floats.get((ds, model))
        headroom = None if flt is None else flt - best_peer[1]
        reachable[ds] += headroom is None or headroom >= GOAL_4BIT_POINTS
        details.append({"dataset": ds, "model": model, "best_synbal": best_ours[0], "best_peer": best_peer[0],
                        "margin_points": margin, "headroom_points": headroom})
    enough = [ds for ds in judged if judged[ds] >= GOAL_4BIT_MODELS]
    met = all(wins[ds] >= GOAL_4BIT_MODELS for ds in enough) if enough else None
    return {"met": met, "wins_per_dataset": dict(wins), "models_per_dataset": dict(judged),
            "reachable_per_dataset": {ds: reachable[ds] for ds in judged}, "details": details}


def _float_accuracy(float_rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """``(dataset, model) → mean float accuracy`` of the unequalized originals."""
    originals = [{**r, "granularity": "float", "bits": 32} for r in float_rows
                 if r["arm"] == "none" and not r.get("rescaled", False)]
    return {(ds, model): mean for (ds, model, *_), (mean, _, _) in means(originals).items()}


def _goal_rescaled(table: dict, ours: list[str], everyone: list[str]) -> dict[str, Any]:
    worst: dict[str, float] = {}
    for (ds, model, gran, bits, arm, rescaled), (mean, _, _) in table.items():
        other = table.get((ds, model, gran, bits, arm, True))
        if rescaled or other is None or arm not in everyone:
            continue
        worst[arm] = max(worst.get(arm, 0.0), abs(other[0] - mean))
    gaps = [worst[a] for a in ours if a in worst]
    return {"met": all(g <= RESCALED_POINTS for g in gaps) if gaps else None,
            "max_abs_points_by_arm": worst}


def verdict(rows: list[dict[str, Any]], float_rows: list[dict[str, Any]], peers: list[str]) -> dict[str, Any]:
    """Each goal: ``met`` (``True``/``False``, ``None`` when it could not be judged) and the numbers."""
    table = means(rows)
    arms = sorted({r["arm"] for r in rows})
    ours = [a for a in arms if a.startswith("synbal-")]
    peers = [p for p in peers if p in arms]
    cells = sorted({(r["dataset"], r["model"]) for r in rows})
    changes = [float(r["max_rel_output_change"]) for r in float_rows if r["arm"].startswith("synbal-")]
    return {
        "8bit": _goal_8bit(table, cells, peers, ours),
        "4bit": _goal_4bit(table, _float_accuracy(float_rows), cells, peers, ours),
        "rescaled": _goal_rescaled(table, ours, arms),
        "fp32": {"met": max(changes) <= FP32_RTOL if changes else None,
                 "max_rel_output_change": max(changes) if changes else None},
    }
