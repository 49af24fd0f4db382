"""Discovery: trace an ``nn.Module`` and find every rescaling symmetry in it.

**Tracing choice.** synbal traces with :mod:`torch.fx` (``symbolic_trace`` with a tracer that
keeps ``torch.nn`` layers and :class:`~synbal.torch.LocallyConnected2d` as leaves; a model fx cannot
follow is exported with ``torch.export``, see :mod:`synbal._adapters.torch.tracing`) and runs the traced
graph once on the example inputs (an :class:`torch.fx.Interpreter`) to learn every tensor's
shape — on fake tensors (``FakeTensorMode``: shapes only, no arithmetic), falling back to the
real inputs for operations fake tensors cannot run. Models that already are ``fx.GraphModule`` s —
in particular ``torch.export`` programs'
``.module()`` — are walked as they are, so ATen-level graphs (``aten.conv2d``,
``aten.batch_norm``, …) are understood too. fx was chosen over ``torch.export`` for ordinary
modules because it keeps module paths and parameter names exactly, needs no compilation, and
is fast (a ResNet-18 traces in milliseconds).

**Soundness.** An operation passes scales only through an exact rule (:mod:`synbal._adapters.torch.rules`,
:mod:`~synbal._adapters.torch.layout_rules`, :mod:`~synbal._adapters.torch.affine_rules`); an operation without one
is a barrier or an error unless none of its inputs carries a scale. Weights computed by
parametrizations are handled by :mod:`synbal._adapters.torch.reparam`; quantization-aware-training modules
are refused up front; a ``torch.compile`` wrapper is looked through.

**Limits.** Python control flow that depends on tensor values cannot be traced (neither by fx nor
by torch.export); modules called with ``PackedSequence`` are
not supported; every operation synbal does not know raises
:class:`~synbal.errors.UnsupportedOperationError` naming the node, the op and the module path
— or, with ``barriers=True``, fixes every unit that reaches it. Pooling over positions that have
different scales (after a locally connected layer) ties those positions for the whole channel,
which is a valid but coarser symmetry than per-window ties.

**Result.** Slots (see :mod:`synbal._adapters.torch.slots`) are merged along ties into *groups*: each
group has one scale ``λ``; a parameter entry whose row slot is in group ``g`` and column slot
in group ``h`` is multiplied by ``λ_g / λ_h``. Groups fixed by the model (inputs, outputs,
non-homogeneous consumers, BatchNorm normalisation, barriers) are *excluded*, each with its
reason.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> d = discover(model, (torch.zeros(1, 3),))
>>> len(d.groups), d.names[:2], d.excluded
(4, ['0[0]', '0[1]'], {'2[0]..2[1] (2 units)': 'model output'})
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from synbal._adapters.torch import rules
from synbal._adapters.torch.reparam import refuse_quantized
from synbal._adapters.torch.slots import SlotTable, label_pairs
from synbal._adapters.torch.tracing import trace
from synbal._adapters.torch.walker import ParamUse, Walker
from synbal._problem.problem import GeneratedNames
from synbal.errors import InvalidWeightError, ModelError, SynbalError

__all__ = ["Discovery", "ParamUse", "Walker", "build_discovery", "check_finite", "discover", "eval_mode", "trace",
           "unwrap_compiled"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        try:
            model.eval()
        except NotImplementedError:  # torch.export modules refuse eval(); their graph is fixed anyway
            for m, _ in modes:
                m.training = False
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


def _walker(gm: fx.GraphModule, model: nn.Module, barriers: bool) -> Walker:
    """A walker over ``gm`` that applies the rules of :mod:`synbal._adapters.torch.rules`."""
    return Walker(gm, model, barriers=barriers, rule_for=rules.rule_for, module_rule=rules.module_rule)


class _NodeFailedError(Exception):
    """The model's own computation failed at a node (not synbal's analysis of it)."""

    def __init__(self, node: fx.Node, where: str, exc: BaseException) -> None:
        super().__init__(f"{type(exc).__name__}: {exc}")
        self.node, self.where, self.exc = node, where, exc


class _Runner(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, walker: Walker) -> None:
        super().__init__(gm)
        self.walker = walker
        self.extra_traceback = False  # no "While executing … Original traceback … tlparse" in messages

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n) if n.op != "output" else None
        except SynbalError:
            raise
        except Exception as exc:
            where = f"{self.walker.op_name(n)} in module {self.walker.module_path(n)!r}"
            raise _NodeFailedError(n, where, exc) from exc
        try:
            self.walker.env[n] = self.walker.visit(n, result)
        except SynbalError:
            raise
        except Exception as exc:  # a defect of synbal's rules: say so rather than blame the model
            raise ModelError(
                f"internal error while analysing node {n.name!r} ({self.walker.op_name(n)} in module "
                f"{self.walker.module_path(n)!r}): {type(exc).__name__}: {exc}; please report it"
            ) from exc
        if n.op == "output":
            return super().run_node(n)
        return result


@dataclass
class Discovery:
    """The scalable groups of a model and how each parameter scales with them.

    ``groups[k]`` lists the slots of group ``k`` (its tied neurons), ``names[k]`` its name (the
    first slot's label). ``group_of_slot[s]`` is the group of slot ``s`` (``-1`` fixed).
    ``uses`` maps each canonical parameter name to its :class:`ParamUse`; ``unused`` lists
    parameters no rule scaled (counted in ``R`` as fixed costs, never changed). ``excluded``
    maps unit ranges to the reason they are not scaled. ``layers`` are independent sets of groups
    in graph order (``None`` when some producer's groups are joined by a weight, e.g. RNNs).

    >>> model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> d = discover(model, (torch.zeros(1, 3),))
    >>> d.n, [layer.tolist() for layer in d.layers], d.group_of_slot.tolist()  # slot 0: the constant unit
    (4, [[0, 1], [2, 3]], [-1, 0, 1, 2, 3, -1])
    """

    table: SlotTable
    uses: dict[str, ParamUse]
    group_of_slot: np.ndarray
    groups: list[np.ndarray]
    names: Sequence[str]
    excluded: dict[str, str]
    layers: list[np.ndarray] | None
    unused: list[str]
    shared: dict[str, list[str]]
    params: dict[str, torch.Tensor]
    sign_of_slot: np.ndarray | None = None  # −1 where a slot scales by 1/λ of its group (a key); None: all +1

    @property
    def n(self) -> int:
        return len(self.groups)

    def signs(self) -> np.ndarray:
        """Per slot, +1 or −1: a parameter entry scales by ``λ_row^{sign} / λ_col`` (keys against queries)."""
        if self.sign_of_slot is None:
            return np.ones(self.group_of_slot.size, dtype=np.int8)
        return self.sign_of_slot


def check_finite(name: str, p: torch.Tensor) -> None:
    """Raise :class:`~synbal.errors.InvalidWeightError` if parameter ``p`` has NaN or Inf entries."""
    if p.is_floating_point() and not bool(torch.isfinite(p).all()):
        bad = int((~torch.isfinite(p)).sum())
        raise InvalidWeightError(f"parameter {name!r} has {bad} NaN or infinite entries")


def _check_batchnorm(model: nn.Module) -> None:
    for path, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            why = "is in training mode" if m.training else "has no running statistics"
            raise ModelError(
                f"BatchNorm {path!r} {why}: it normalises with batch statistics, so rescaling is not "
                "a symmetry of the model; call model.eval() before balancing"
            )


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module behind a ``torch.compile`` wrapper (``_orig_mod``); any other model as it is."""
    inner = getattr(model, "_orig_mod", None)
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        return unwrap_compiled(inner)
    return model


def discover(model: nn.Module, example_inputs: tuple[Any, ...], *, barriers: bool = False) -> Discovery:
    """Trace ``model``, run it once on ``example_inputs``, and return its scalable groups.

    >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 1))
    >>> d = discover(model, (torch.zeros(1, 1, 4, 4),))
    >>> d.n, list(d.names), sorted(d.uses), d.excluded
    (2, ['0[0]', '0[1]'], ['0.bias', '0.weight', '3.bias', '3.weight'], {'3[0]': 'model output'})
    """
    if not isinstance(example_inputs, tuple):
        example_inputs = (example_inputs,)
    model = unwrap_compiled(model)
    refuse_quantized(model)
    _check_batchnorm(model)
    with torch.no_grad(), eval_mode(model):
        gm = trace(model, example_inputs)
        with eval_mode(gm):
            try:
                walker = _walk_fake(gm, model, example_inputs, barriers)
            except SynbalError:
                raise
            except Exception:  # an op fake tensors cannot run: walk again on the real inputs
                walker = _walker(gm, model, barriers)
                try:
                    _Runner(gm, walker).run(*example_inputs)
                except _NodeFailedError as failed:
                    raise ModelError(
                        f"running {type(model).__name__} on the example inputs failed at node "
                        f"{failed.node.name!r} ({failed.where}): {failed}"
                    ) from failed.exc
                except SynbalError:
                    raise
                except Exception as exc:
                    raise ModelError(f"running {type(model).__name__} on the example inputs failed "
                                     f"({type(exc).__name__}: {exc})") from exc
    return _finish(walker)


def _walk_fake(gm: fx.GraphModule, model: nn.Module, example_inputs: tuple[Any, ...], barriers: bool) -> Walker:
    """Walk the graph on fake tensors: only shapes are computed (no FLOPs, no memory)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    walker = _walker(gm, model, barriers)
    quiet = logging.getLogger("torch._subclasses.fake_tensor")  # a failure here is retried on real tensors
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            fake = [mode.from_tensor(x) if isinstance(x, torch.Tensor) else x for x in example_inputs]
            _Runner(gm, walker).run(*fake)
    finally:
        quiet.setLevel(level)
    return walker


def _finish(w: Walker) -> Discovery:
    return build_discovery(w.table, w.uses, w.params, data_used=w.data_used, shared=w.shared)


def build_discovery(table: SlotTable, uses: dict[str, ParamUse], params: dict[str, torch.Tensor], *,
                    data_used: dict[str, str] | None = None,
                    shared: dict[str, list[str]] | None = None) -> Discovery:
    """Resolve the ties and fixes recorded in ``table`` into groups (also used without tracing, by
    :func:`synbal._adapters.torch.plain_mlp.mlp_discovery`). ``params`` are all parameters by canonical name."""
    for name in data_used or {}:
        use = uses.get(name)
        if use is not None:  # read as data elsewhere: its values must not change
            table.tie(use.row, use.col)
    res = table.resolve()
    if res.sign is not None:
        from synbal._adapters.torch.qk_discovery import check_signed_uses

        check_signed_uses(res, uses)
    comp = res.component
    ncomp = res.n_components
    has_out = np.zeros(ncomp, dtype=bool)
    if res.sign is not None:  # a query/key group's key rows are the weights it scales down
        has_out[comp[res.sign < 0]] = True
    for use in uses.values():
        rc, cc, product = label_pairs(comp[use.row], comp[use.col])
        if product and rc.size:  # every row meets every column
            has_out[cc if rc.size > 1 else cc[cc != rc[0]]] = True
        elif not product:
            has_out[cc[rc != cc]] = True
    reasons = dict(res.reasons)
    keep = ~res.fixed & has_out
    for k in np.flatnonzero(~res.fixed & ~has_out).tolist():
        members = np.flatnonzero(comp == k)
        soft = next((table.soft_reasons[int(s)] for s in members if int(s) in table.soft_reasons), None)
        reasons[k] = soft or "no outgoing weights: its scale changes no later parameter"
    group_of_comp = np.full(ncomp, -1, dtype=np.int64)
    group_of_comp[keep] = np.arange(int(keep.sum()))
    group_of_slot = group_of_comp[comp]
    group_of_slot[0] = -1
    order = np.argsort(group_of_slot, kind="stable")
    counts = np.bincount(group_of_slot[group_of_slot >= 0], minlength=int(keep.sum()))
    start = int((group_of_slot < 0).sum())  # the stable sort keeps every group's slots increasing
    bounds = (start + np.concatenate([[0], np.cumsum(counts)])).tolist()
    groups = [order[a:b] for a, b in pairwise(bounds)]
    names = GeneratedNames(len(groups), lambda k: table.label(int(groups[k][0])))
    excluded = _excluded(table, comp, group_of_slot, reasons)
    layers = _layers(table, groups, group_of_slot, uses)
    unused = [n for n, p in params.items() if n not in uses and p.is_floating_point()]
    return Discovery(table, uses, group_of_slot, groups, names, excluded, layers, unused,
                     dict(shared or {}), params, res.sign)


def _excluded(table: SlotTable, comp: np.ndarray, group_of_slot: np.ndarray,
              reasons: dict[int, str]) -> dict[str, str]:
    """Fixed producer outputs, as runs of consecutive units with the same reason."""
    out: dict[str, str] = {}
    for _prefix, start, shape in table.ranges():
        size = int(np.prod(shape))
        slots = np.arange(start, start + size)
        fixed = group_of_slot[slots] < 0
        if not fixed.any():
            continue
        why = [reasons.get(int(comp[s]), "fixed") if f else None for s, f in zip(slots, fixed, strict=True)]
        k = 0
        while k < size:
            if why[k] is None:
                k += 1
                continue
            j = k
            while j + 1 < size and why[j + 1] == why[k]:
                j += 1
            key = table.label(int(slots[k])) if j == k else (
                f"{table.label(int(slots[k]))}..{table.label(int(slots[j]))} ({j - k + 1} units)")
            out[key] = str(why[k])
            k = j + 1
    return out


def _layers(table: SlotTable, groups: list[np.ndarray], group_of_slot: np.ndarray,
            uses: dict[str, ParamUse]) -> list[np.ndarray] | None:
    """Groups bucketed by the producer of their first slot, when every bucket is an independent set."""
    if not groups:
        return None
    starts = np.array([start for _, start, _ in table.ranges()], dtype=np.int64)
    bucket = np.searchsorted(starts, np.array([g[0] for g in groups]), side="right") - 1
    for use in uses.values():
        r, c, product = label_pairs(group_of_slot[use.row], group_of_slot[use.col])
        if product:
            r, c = r[r >= 0], c[c >= 0]
            for b in np.intersect1d(bucket[r], bucket[c]).tolist():  # r × c joins two groups of bucket b
                rb, cb = r[bucket[r] == b], c[bucket[c] == b]
                if rb.size > 1 or cb.size > 1 or rb[0] != cb[0]:
                    return None
            continue
        m = (r >= 0) & (c >= 0) & (r != c)
        if np.any(bucket[r[m]] == bucket[c[m]]):
            return None
    return [np.flatnonzero(bucket == b) for b in np.unique(bucket)]
