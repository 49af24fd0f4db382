"""Equalization arms of the ``quant`` experiment: none, the three peers, synbal.

Peers are benchmark dependencies (extra ``bench``): ``torch.ao.quantization._equalize.equalize``
(with the hand-listed layer pairs of :mod:`synbal.experiments._quant_models`), Brevitas
``EqualizeGraph`` (defaults: 10 iterations, threshold 0.05, bias merged into the ranges) and
AIMET's cross-layer equalization (``equalize_model``). An arm whose package is missing is
skipped with the reason (see :func:`peer_status`). Every arm gets the same float model with
BatchNorm folded into the convolutions. synbal arms call :func:`synbal.balance` (function
verified); models with clipped units (ReLU6) are converted explicitly by
:func:`synbal.clip.make_clips_balanceable` first and folded back with
:func:`synbal.clip.restore_clips`.

>>> arm_names([2, 4])
['none', 'torch-equalize', 'brevitas', 'aimet', 'synbal-linf', 'synbal-l2', 'synbal-l4']
"""

from __future__ import annotations

import copy
import importlib.metadata
from functools import cache
from typing import Any

import numpy as np
import torch
from torch import nn

import synbal
from synbal._adapters.protocol import adapter_for
from synbal.clip import make_clips_balanceable, restore_clips
from synbal.experiments._quant_models import ModelSpec

__all__ = ["PEERS", "apply_arm", "arm_names", "fold", "peer_status", "rescale"]

PEERS = ("torch-equalize", "brevitas", "aimet")


def arm_names(powers: list[float]) -> list[str]:
    """``none``, the peers, ``synbal-linf`` and ``synbal-l<p>`` for each ``p``."""
    return ["none", *PEERS, "synbal-linf", *[f"synbal-l{p:g}" for p in powers]]


def _import_aimet() -> Any:
    """Import AIMET's CLE. AIMET imports torchvision; where torchvision's compiled extension does
    not match torch (the CPU build pinned here), that import fails and the arm is skipped with the
    reason. ``scripts/synbal_tolerant_torchvision.py`` runs the command line with torchvision
    imported leniently first, outside the package."""
    from aimet_torch.cross_layer_equalization import equalize_model

    return equalize_model


_LOADERS = {"brevitas": ("brevitas", lambda: importlib.import_module("brevitas.graph.equalize")),
            "aimet": ("aimet-torch", _import_aimet)}


@cache
def _peer_reason(arm: str) -> str | None:
    if arm not in _LOADERS:
        return None
    dist, loader = _LOADERS[arm]
    try:
        importlib.metadata.version(dist)
        loader()
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} is not installed (pip install 'synbal[bench]')"
    except Exception as exc:  # a broken install: say what failed
        return f"{dist} failed to import: {type(exc).__name__}: {exc}"
    return None


def peer_status(arms: tuple[str, ...] = PEERS) -> dict[str, str | None]:
    """Per peer among ``arms``: ``None`` when usable, else why it is skipped (imports only those)."""
    return {arm: _peer_reason(arm) for arm in PEERS if arm in arms}


def fold(model: nn.Module) -> nn.Module:
    """A copy with every BatchNorm folded into the preceding convolution (eval mode)."""
    from synbal._adapters.torch.fold import fold_batchnorm

    out = copy.deepcopy(model).eval()
    fold_batchnorm(out)
    return out


def _synbal(model: nn.Module, reg: str, example: torch.Tensor, clipped: bool) -> nn.Module:
    if clipped:
        split = make_clips_balanceable(model, (example,))
        return restore_clips(synbal.balance(split, reg, example_inputs=(example,)).net)
    return synbal.balance(model, reg, example_inputs=(example,)).net


def apply_arm(arm: str, model: nn.Module, spec: ModelSpec, example: torch.Tensor) -> nn.Module:
    """The equalized copy of a (BatchNorm-folded, eval-mode) ``model`` for ``arm``."""
    m = copy.deepcopy(model)
    if arm == "none":
        return m
    if arm == "torch-equalize":
        from torch.ao.quantization._equalize import equalize

        equalize(m, [list(p) for p in spec.pairs], 1e-4, inplace=True)
        return m
    if arm == "brevitas":
        from brevitas.graph.equalize import EqualizeGraph

        out: nn.Module = EqualizeGraph().apply(torch.fx.symbolic_trace(m))
        return out
    if arm == "aimet":
        _import_aimet()(m, input_shapes=(1, *example.shape[1:]))
        return m
    if arm.startswith("synbal-"):
        return _synbal(m, arm.removeprefix("synbal-"), example, spec.clipped)
    raise ValueError(f"unknown arm {arm!r}")


def rescale(model: nn.Module, spec: ModelSpec, example: torch.Tensor, rng: np.random.Generator) -> nn.Module:
    """A copy computing the same function with every scalable channel scaled by ``e^U(−3, 3)``
    (clipped units: their thresholds move with the scale)."""
    source = make_clips_balanceable(model, (example,)) if spec.clipped else model
    adapter = adapter_for(source, example_inputs=(example,))
    n = int(adapter.discovery.n)  # type: ignore[attr-defined]
    u = np.asarray(rng.uniform(-3.0, 3.0, size=n), dtype=np.float64)
    out = adapter.apply(u, inplace=False)
    return restore_clips(out) if spec.clipped else out
