"""Per-block counts of the kinds of scalable groups a transformer (or any model) has.

A group is counted in the block of the module that produced its first unit (the module path up
to its first component ending in a number: ``model.layers.0``, ``encoder.block.1``,
``encoder.layers.encoder_layer_0``; ``<top>`` for the rest). Its kind:

* ``V/O dims`` — an attention value dimension (a row of the V projection, with its bias) against
  the output projection's column; the attention rules mark these units;
* ``norm dims`` — the gain (and bias) of a LayerNorm/RMSNorm dimension against the input columns
  of every layer that reads it (a per-channel gain owned by a module whose class name contains ``Norm``);
* ``layer scale`` — any other per-channel gain (ConvNeXt, CaiT), or the rows of the layer before it
  that scale against it;
* ``MLP units`` — the output units of a Linear or convolution (a ReLU MLP's hidden units, a
  gated MLP's ``up`` rows against the ``down`` columns);
* ``Q/K pairs`` — a query dimension (rows of the Q projection) against the key dimension it meets
  (rows of the K projection, scaled inversely), tied across the query heads of a KV head and
  across the two dimensions RoPE rotates together;
* ``QK-norm pairs`` — the same with QK-norm (Qwen3, OLMo-2): a ``q_norm`` gain dimension against
  the ``k_norm`` gain dimension (the projections' rows are normalised away).

>>> import torch, synbal
>>> from torch import nn
>>> block = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
>>> print(synbal.inspect(nn.Sequential(block), torch.zeros(2, 4)).blocks)
{'0': {'MLP units': 8, 'V/O dims': 0, 'Q/K pairs': 0, 'QK-norm pairs': 0, 'norm dims': 4, 'layer scale': 0}}
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from synbal._adapters.torch.discovery import Discovery

__all__ = ["KINDS", "block_of", "group_kinds"]

KINDS = ("MLP units", "V/O dims", "Q/K pairs", "QK-norm pairs", "norm dims", "layer scale")
_BLOCK = re.compile(r"^(.*?(?:^|\.)[A-Za-z_]*\d+)(?=\.|#|$)")


def block_of(prefix: str) -> str:
    """The block a module path belongs to.

    >>> block_of("model.layers.3.mlp.up_proj"), block_of("encoder.layers.encoder_layer_1.ln_1"), block_of("lm_head")
    ('model.layers.3', 'encoder.layers.encoder_layer_1', '<top>')
    """
    m = _BLOCK.match(prefix)
    return m.group(1) if m else "<top>"


def _is_gain(p: torch.Tensor, row: np.ndarray) -> bool:
    """A per-channel vector (``(C,)``, or ConvNeXt's ``(C, 1, 1)``) whose entries are distinct units."""
    long = [a for a, s in enumerate(p.shape) if int(s) > 1]
    return len(long) == 1 and row.shape[long[0]] == p.shape[long[0]]


def _owner_kind(model: nn.Module, param: str) -> str:
    """``norm dims`` when the module owning the 1-D gain ``param`` is a norm, else ``layer scale``."""
    owner = param.rpartition(".")[0]
    try:
        cls = type(model.get_submodule(owner)).__name__ if owner else type(model).__name__
    except AttributeError:
        cls = ""
    return "norm dims" if "norm" in cls.lower() else "layer scale"


def group_kinds(d: Discovery, model: nn.Module) -> dict[str, dict[str, int]]:
    """``{block: {kind: count}}`` over the groups of ``d`` (see the module docstring)."""
    gains: dict[int, str] = {}
    for use in d.uses.values():
        if not use.bias and _is_gain(d.params[use.name], use.row):
            kind = _owner_kind(model, use.name)
            for g in np.unique(d.group_of_slot[use.row]).tolist():
                if g >= 0:
                    gains.setdefault(g, kind)
            for g in np.unique(d.group_of_slot[use.col]).tolist():  # the rows a layer scale multiplies
                if g >= 0 and kind == "layer scale":
                    gains.setdefault(g, kind)
    out: dict[str, dict[str, int]] = {}
    for g, slots in enumerate(d.groups):
        kinds = {k for k in (d.table.kinds.get(int(s)) for s in slots) if k is not None}
        kind = gains.get(g, "MLP units")
        if "Q/K pairs" in kinds:  # a pair of norm gains is a QK-norm pair
            kind = "QK-norm pairs" if kind == "norm dims" else "Q/K pairs"
        elif kinds:
            kind = kinds.pop()
        block = block_of(d.table.range_of(int(slots[0]))[0])
        counts = out.setdefault(block, dict.fromkeys(KINDS, 0))
        counts[kind] += 1
    return out
