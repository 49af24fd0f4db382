"""Queries against keys: the inverse pairs of an attention score ``q kᵀ``.

``scores[…, s, t] = Σ_d q[…, s, d] k[…, t, d]``: multiplying query dimension ``d`` by ``λ_d`` and key
dimension ``d`` by ``1/λ_d`` leaves every score unchanged, whatever the softmax scaling, mask, ALiBi or
relative-position bias added to the scores afterwards (they do not depend on ``q`` or ``k``). So:

* each query slot is tied along the positions (one scale per head and dimension), each key slot too;
* query head ``h`` meets KV head ``h // g`` under grouped-query attention (``Hq = g·Hkv``), so the
  scale of a KV head's dimension is tied across the ``g`` query heads that read it;
* the pair is recorded as *inverse* (:meth:`~synbal._adapters.torch.slots.SlotTable.inverse`).

Rotary embeddings need nothing here: ``q' = q ⊙ cos + rotate_half(q) ⊙ sin`` adds dimension ``d`` and
its partner (HF's ``rotate_half`` pairs ``i`` with ``i + D/2``), and that ``+`` already ties the two
slots. This is also exactly the condition: RoPE applies a 2×2 rotation ``R(θ)`` to each pair, and
``R(θ) diag(a, b) = diag(a, b) R(θ)`` for every ``θ`` only when ``a = b`` — a common scale per pair.
With QK-norm (Qwen3, OLMo-2) the projections' rows feed an RMSNorm over each head and are fixed; the
query and key slots at the score are then the norm gains', so ``q_norm.weight[d]`` pairs with
``k_norm.weight[d]`` (one scale per RoPE pair, shared by all heads since the gains are).

>>> import torch, synbal
>>> from torch import nn
>>> class Eager(nn.Module):  # scores q @ kᵀ by hand: two query heads read one key head of 2 dimensions
...     def __init__(self):
...         super().__init__()
...         self.q, self.k = nn.Linear(6, 4), nn.Linear(6, 2)
...     def forward(self, x):
...         q = self.q(x).view(1, -1, 2, 2).transpose(1, 2)
...         k = self.k(x).view(1, -1, 1, 2).transpose(1, 2)
...         return torch.softmax(q @ k.transpose(-1, -2), dim=-1)
>>> pair = synbal.inspect(Eager(), torch.zeros(1, 3, 6)).groups[0]
>>> pair.name, pair.incoming, pair.outgoing  # in: scaled up by λ; out: scaled down
('q[0]', ['q.weight[[0, 2], :]', 'q.bias[[0, 2]]'], ['k.weight[0, :]', 'k.bias[0]'])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from torch import fx

from synbal._adapters.torch.values import Ids
from synbal.errors import ModelError

if TYPE_CHECKING:
    from synbal._adapters.torch.walker import Walker

__all__ = ["QK_KIND", "pair_queries_and_keys"]

QK_KIND = "Q/K pairs"


def pair_queries_and_keys(w: Walker, node: fx.Node, q: Ids, k: Ids, key_axis: int) -> None:
    """Record ``q`` (``…, heads, s, d``) against ``k`` (``…, heads, d`` on ``key_axis``, positions on the
    other of the last two axes) as inverse pairs, tied along positions (see the module docstring)."""
    if q.all_fixed() or k.all_fixed():  # one side has scale 1: the other must keep it too
        for x in (q, k):
            w.table.fix(x.ids, f"feeds the attention scores q·kᵀ at node {node.name!r} (softmax input) "
                               "against a side of scale 1")
        return
    if q.ndim < 2 or k.ndim < 2:
        raise ModelError(f"node {node.name!r}: attention scores of a {q.ndim}-d query and a {k.ndim}-d key")
    pos_axis = k.ndim - 1 if key_axis % k.ndim == k.ndim - 2 else k.ndim - 2
    qs = w.keep_axes(q, [a for a in range(q.ndim) if a != q.ndim - 2], node)
    ks = w.keep_axes(k, [a for a in range(k.ndim) if a != pos_axis], node)
    if pos_axis == k.ndim - 1:
        ks = np.swapaxes(ks, -1, -2)  # (…, d, t) → (…, t, d), the layout of q
    heads_q = q.shape[-3] if q.ndim >= 3 else 1
    heads_k = k.shape[-3] if k.ndim >= 3 else 1
    if ks.ndim >= 3 and ks.shape[-3] > 1 and heads_q != heads_k:  # grouped-query attention
        if heads_q % heads_k:
            raise ModelError(f"node {node.name!r}: {heads_q} query heads cannot share {heads_k} KV heads")
        ks = np.repeat(ks, heads_q // heads_k, axis=-3)
    lead = max(qs.ndim, ks.ndim)
    qs = qs.reshape((1,) * (lead - qs.ndim) + qs.shape)
    ks = ks.reshape((1,) * (lead - ks.ndim) + ks.shape)
    w.table.inverse(qs, ks, f"attention scores at node {node.name!r}")
    w.table.note_kind(qs, QK_KIND)
    w.table.note_kind(ks, QK_KIND)
