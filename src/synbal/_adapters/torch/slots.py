"""Slots: the neurons (or tied neuron sets) of a traced model, their ties and their fixes.

Discovery gives every output neuron of a layer a *slot* (an integer). A conv channel is one slot
(its positions share one scale by weight sharing); a locally connected neuron is one slot per
(channel, position). Slot ``0`` stands for everything whose scale is 1: model inputs, constants,
the unit a bias hangs from. Rules then record

* **ties** — two slots must share one scale (residual ``+``, a shared parameter, pooling windows);
* **fixes** — a slot must keep scale 1, with the reason (model output, feeds GELU, …);
* **normalisers** — a slot whose scale a BatchNorm removes (reported if it has no other use);
* **inverse pairs** — two slots whose scales must multiply to 1 (a query and a key dimension).

:meth:`SlotTable.resolve` merges ties into components (scipy connected components, so millions
of ties cost one sparse pass) and marks a component fixed when any member is fixed; inverse pairs
then join components into one group whose key side has sign −1 (see
:mod:`synbal._adapters.torch.inverse_pairs`).

>>> import numpy as np
>>> t = SlotTable()
>>> a = t.new("fc1", (3,)); b = t.new("fc2", (3,))
>>> t.tie(a, b); t.fix(b[2:], "model output")
>>> r = t.resolve()
>>> r.n_components, [t.label(int(s)) for s in a], r.reason_of(int(a[2]))
(4, ['fc1[0]', 'fc1[1]', 'fc1[2]'], 'model output')
>>> bool(r.fixed[r.component[a[0]]]), bool(r.fixed[r.component[a[2]]])
(False, True)
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["FIXED_SLOT", "Resolution", "SlotTable", "label_pairs"]

FIXED_SLOT = 0


@dataclass
class _Range:
    start: int
    shape: tuple[int, ...]
    prefix: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Resolution:
    """Components of the tie graph: ``component[slot]``, and per component fixed flag and reason."""

    component: np.ndarray
    fixed: np.ndarray
    reasons: dict[int, str]
    sign: np.ndarray | None = None  # per slot: −1 where it scales by 1/λ of its component (None: all +1)

    @property
    def n_components(self) -> int:
        return int(self.fixed.size)

    def reason_of(self, slot: int) -> str | None:
        """Why ``slot``'s component is fixed (``None`` when it is free)."""
        comp = int(self.component[slot])
        return self.reasons.get(comp) if self.fixed[comp] else None


class SlotTable:
    """Allocates slots, records ties and fixes, and names slots for reports."""

    def __init__(self) -> None:
        self._ranges: list[_Range] = [_Range(0, (1,), "<fixed>")]
        self._starts: list[int] = [0]
        self._next = 1
        self._tie_a: list[np.ndarray] = []
        self._tie_b: list[np.ndarray] = []
        self._fixes: list[tuple[np.ndarray, str]] = []
        self._inverse: list[tuple[np.ndarray, np.ndarray, str]] = []
        self.soft_reasons: dict[int, str] = {}
        self.kinds: dict[int, str] = {}
        self._prefix_uses: dict[str, int] = {}

    @property
    def n_slots(self) -> int:
        return self._next

    def new(self, prefix: str, shape: tuple[int, ...]) -> np.ndarray:
        """Allocate ``prod(shape)`` fresh slots named ``prefix[i, j, …]``; returns them with ``shape``."""
        size = int(np.prod(shape, dtype=np.int64))
        uses = self._prefix_uses.get(prefix, 0) + 1
        self._prefix_uses[prefix] = uses
        if uses > 1:  # a layer called again (shared weights): its new neurons get a distinct name
            prefix = f"{prefix}#{uses}"
        start = self._next
        self._ranges.append(_Range(start, tuple(int(s) for s in shape), prefix))
        self._starts.append(start)
        self._next += size
        return np.arange(start, start + size, dtype=np.int64).reshape(shape)

    def range_of(self, slot: int) -> tuple[str, int, tuple[int, ...]]:
        """``(prefix, start, shape)`` of the allocation holding ``slot``."""
        r = self._ranges[bisect.bisect_right(self._starts, slot) - 1]
        return r.prefix, r.start, r.shape

    def ranges(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """Every allocation after the fixed slot, in allocation (graph) order."""
        return [(r.prefix, r.start, r.shape) for r in self._ranges[1:]]

    def label(self, slot: int) -> str:
        """Readable name of a slot: ``conv1[3]`` (channel 3) or ``lc1[3,0,5]`` (channel, row, col)."""
        if slot == FIXED_SLOT:
            return "<input/constant>"
        prefix, start, shape = self.range_of(slot)
        if len(shape) == 1:
            return f"{prefix}[{slot - start}]"
        rest, idx = slot - start, []
        for size in reversed(shape):  # np.unravel_index, without its per-call cost
            rest, i = divmod(rest, size)
            idx.append(i)
        return f"{prefix}[{','.join(str(int(i)) for i in reversed(idx))}]"

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        """Slots ``a`` and ``b`` (broadcast together) must share one scale, elementwise."""
        a2, b2 = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        diff = a2 != b2
        if diff.any():
            self._tie_a.append(a2[diff].ravel())
            self._tie_b.append(b2[diff].ravel())

    def fix(self, slots: np.ndarray, reason: str) -> None:
        """``slots`` keep scale 1 because of ``reason`` (the first reason recorded for a component wins)."""
        s = np.unique(np.asarray(slots, dtype=np.int64))
        s = s[s != FIXED_SLOT]
        if s.size:
            self._fixes.append((s, reason))

    def inverse(self, a: np.ndarray, b: np.ndarray, where: str) -> None:
        """Slots ``a`` and ``b`` (broadcast together) must scale inversely, ``λ_a λ_b = 1``, elementwise
        (``where`` names the operation, for the reason given when the pair can only keep scale 1)."""
        a2, b2 = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        self._inverse.append((a2.ravel().copy(), b2.ravel().copy(), where))

    def fixed_so_far(self, slots: np.ndarray) -> bool:
        """Whether every slot is the constant slot or was fixed directly by a rule already (ties not followed)."""
        s = np.unique(np.asarray(slots, dtype=np.int64))
        s = s[s != FIXED_SLOT]
        if s.size == 0:
            return True
        fixed = np.concatenate([f for f, _ in self._fixes]) if self._fixes else np.zeros(0, dtype=np.int64)
        return bool(np.isin(s, fixed).all())

    def note_normalised(self, slots: np.ndarray, reason: str) -> None:
        """``slots`` feed a normaliser (BatchNorm): the reason given if they turn out to have no other use."""
        for s in np.unique(np.asarray(slots, dtype=np.int64)).tolist():
            self.soft_reasons.setdefault(int(s), reason)

    def note_kind(self, slots: np.ndarray, kind: str) -> None:
        """Say what ``slots`` are (e.g. "V/O dims": attention values), for per-block summaries."""
        for s in np.unique(np.asarray(slots, dtype=np.int64)).tolist():
            if s != FIXED_SLOT:
                self.kinds.setdefault(int(s), kind)

    def resolve(self) -> Resolution:
        """Merge ties into components; a component is fixed if any member is fixed (or is slot 0)."""
        n = self._next
        if self._tie_a:
            a = np.concatenate(self._tie_a)
            b = np.concatenate(self._tie_b)
        else:
            a = b = np.zeros(0, dtype=np.int64)
        comp = _components(a, b, n)
        sign = None
        if self._inverse:
            from synbal._adapters.torch.inverse_pairs import merge_inverse

            ia, ib = (np.concatenate([pair[k] for pair in self._inverse]) for k in (0, 1))
            (ta, tb), negative, bad = merge_inverse(comp, ia, ib)
            if bad.size:
                self.fix(bad, f"a query and a key dimension that must scale inversely are tied ({self._inverse[0][2]})")
            comp = _components(np.concatenate([a, ta]), np.concatenate([b, tb]), n)
            sign = np.ones(n, dtype=np.int8)
            sign[negative] = -1
            sign[FIXED_SLOT] = 1
        # renumber components by their smallest slot, so that component order follows graph order
        first = np.full(int(comp.max()) + 1, n, dtype=np.int64)
        np.minimum.at(first, comp, np.arange(n, dtype=np.int64))
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        comp = rank[comp]
        fixed = np.zeros(order.size, dtype=bool)
        fixed[comp[FIXED_SLOT]] = True
        reasons: dict[int, str] = {int(comp[FIXED_SLOT]): "model input or constant"}
        for slots, reason in self._fixes:
            for c in np.unique(comp[slots]).tolist():
                if not fixed[c] or c not in reasons:
                    reasons[c] = reason
                fixed[c] = True
        return Resolution(comp, fixed, reasons, sign)


def _components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Connected components of ``n`` slots joined by the ties ``a[k] — b[k]``."""
    graph = sp.coo_array((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
    _, comp = connected_components(graph, directed=False)
    return np.asarray(comp, dtype=np.int64)


def label_pairs(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """The (row, column) label pairs of a parameter's entries, without expanding a product.

    ``rows`` and ``cols`` broadcast to the parameter's shape. Returns ``(r, c, product)``: when
    the labels vary along disjoint axes (a Linear or conv weight, a bias) every row label meets
    every column label, and ``r``, ``c`` are the distinct labels of each side (``product`` true);
    otherwise ``r[k], c[k]`` are the pairs entry by entry.

    >>> r, c, product = label_pairs(np.array([[1], [2]]), np.array([[5, 5, 6]]))
    >>> r.tolist(), c.tolist(), product
    ([1, 2], [5, 6], True)
    """
    from synbal._adapters.torch.values import compress

    rc, cc = compress(rows), compress(cols)
    if not {a for a, s in enumerate(rc.shape) if s > 1} & {a for a, s in enumerate(cc.shape) if s > 1}:
        return np.unique(rc), np.unique(cc), True
    r, c = np.broadcast_arrays(rc, cc)
    return r.ravel(), c.ravel(), False
