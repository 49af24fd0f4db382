"""The walker that discovery drives over a traced graph: slot table, parameter uses, node values.

Every rescaling rule (:mod:`synbal._adapters.torch.rules`, :mod:`~synbal._adapters.torch.layout_rules`,
:mod:`~synbal._adapters.torch.affine_rules`) receives the :class:`Walker` and records through it
which slots a node's values carry and how each parameter scales (:class:`ParamUse`).
:mod:`synbal._adapters.torch.discovery` builds the walker with the rule tables and runs it.

>>> import numpy as np
>>> use = ParamUse("0.weight", np.arange(3).reshape(3, 1), np.full((1, 2), 5))
>>> use.row.shape, use.col.shape, use.bias
((3, 1), (1, 2), False)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx, nn
from torch.nn.utils import parametrize

from synbal._adapters.torch.reparam import weight_source
from synbal._adapters.torch.slots import SlotTable
from synbal._adapters.torch.values import Ids, ParamRef, zeros_like_shape
from synbal.errors import ModelError, UnsupportedOperationError

__all__ = ["ModuleRuleLookup", "ParamUse", "RuleLookup", "Walker"]

#: ``rule_for(node)``: the rule for a function or method node (``None``: no rule).
RuleLookup = Callable[[fx.Node], "Callable[[Walker, fx.Node, Any], Any] | None"]
#: ``module_rule(module)``: the rule for a module call (``None``: no rule).
ModuleRuleLookup = Callable[[nn.Module], "Callable[[Walker, fx.Node, nn.Module, Any], Any] | None"]


@dataclass
class ParamUse:
    """How one parameter scales: entry ``[idx]`` is multiplied by ``λ[row[idx]] / λ[col[idx]]``.

    ``row`` and ``col`` hold slots and broadcast to the parameter's shape (same number of
    dimensions). ``bias`` marks a bias (its column is the constant unit).
    """

    name: str
    row: np.ndarray
    col: np.ndarray
    bias: bool = False
    nodes: list[str] = field(default_factory=list)


def _canonical_names(model: nn.Module) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Map every parameter alias to the first name of its tensor; the tensors by canonical name."""
    canon: dict[str, str] = {}
    by_id: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        first = by_id.setdefault(id(p), name)
        canon[name] = first
        tensors.setdefault(first, p)
    return canon, tensors


def _has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_has_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tensor(v) for v in value.values())
    return False


def _op_name(node: fx.Node, gm: fx.GraphModule | None = None) -> str:
    if node.op == "call_module" and gm is not None:
        return f"nn.{type(gm.get_submodule(str(node.target))).__name__}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch"):
        return f"{mod.replace('torch.nn.functional', 'F')}.{name}"
    return name


class Walker:
    """Walks an fx graph in order, applying a rule to every node.

    ``rule_for(node)`` and ``module_rule(module)`` look the rules up (discovery passes those of
    :mod:`synbal._adapters.torch.rules`; the rules receive this walker, so this module does not
    import them).
    """

    def __init__(self, gm: fx.GraphModule, root: nn.Module, *, barriers: bool, rule_for: RuleLookup,
                 module_rule: ModuleRuleLookup) -> None:
        self.gm = gm
        self.rule_for, self.module_rule = rule_for, module_rule
        self.barriers = barriers
        self.table = SlotTable()
        self.uses: dict[str, ParamUse] = {}
        self.env: dict[fx.Node, Any] = {}
        self.data_used: dict[str, str] = {}
        self.root = root
        self.canon, self.params = _canonical_names(root)
        self.shared: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ for rules
    def param_shape(self, name: str) -> tuple[int, ...]:
        """Shape of a parameter — or of a computed weight or buffer a layer uses as its weight."""
        if name in self.canon:
            return tuple(int(s) for s in self.params[self.canon[name]].shape)
        owner, _, attr = name.rpartition(".")
        try:
            tensor = getattr(self.root.get_submodule(owner) if owner else self.root, attr, None)
        except AttributeError:
            tensor = None
        if not isinstance(tensor, torch.Tensor):
            raise ModelError(f"{name!r} is not a parameter of the model")
        return tuple(int(s) for s in tensor.shape)

    def prefix(self, param_name: str) -> str:
        name = self.canon.get(param_name, param_name)
        return name.rsplit(".", 1)[0] if "." in name else name

    def use(self, name: str, row: np.ndarray, col: np.ndarray, node: fx.Node, *, bias: bool = False) -> None:
        """Record that parameter ``name`` scales by ``λ[row] / λ[col]`` (ties a shared parameter's uses)."""
        if name not in self.canon:
            self._use_computed(name, row, col, node, bias)
            return
        canonical = self.canon[name]
        shape = self.param_shape(name)
        row = np.asarray(row, dtype=np.int64)
        col = np.asarray(col, dtype=np.int64)
        for arr in (row, col):
            if arr.ndim != len(shape) or any(a not in (1, s) for a, s in zip(arr.shape, shape, strict=True)):
                raise ModelError(f"internal: slots of shape {arr.shape} do not fit parameter {name} {shape}")
        previous = self.uses.get(canonical)
        if previous is None:
            self.uses[canonical] = ParamUse(canonical, row, col, bias, [node.name])
            return
        # a shared parameter: both places must scale it the same way, so their units are tied
        self.table.tie(previous.row, row)
        self.table.tie(previous.col, col)
        previous.nodes.append(node.name)
        self.shared[canonical] = previous.nodes

    def _use_computed(self, name: str, row: np.ndarray, col: np.ndarray, node: fx.Node, bias: bool) -> None:
        """A layer's weight that is not a parameter: weight-normalised, otherwise computed, or a buffer."""
        src = weight_source(self.root, name)
        if src is None:
            raise ModelError(f"node {node.name!r}: {name!r} is not a parameter of the model")
        if src.kind == "weight_norm":  # W = g·v/‖v‖: scale W through g, constant along the norm's axes
            row, col = np.asarray(row), np.asarray(col)
            shape = src.shape if src.shape else (1,) * row.ndim  # a scalar g (dim=None) scales all of W
            axes = [a for a, size in enumerate(shape) if size == 1]
            row, col = self.collapse(row, axes), self.collapse(col, axes)
            if not src.shape:
                row, col = row.reshape(()), col.reshape(())
            self.use(src.scaled_by, row, col, node, bias=bias)
            return
        for original in src.originals:
            self.data_used.setdefault(original, node.name)
        if src.kind == "unscalable":
            self.unsupported(node, None, src.reason)  # raises unless barriers=True
        reason = src.reason if src.kind == "buffer" else f"barrier: {src.reason}"
        self.table.fix(np.asarray(row), reason)
        self.table.fix(np.asarray(col), reason)

    def collapse(self, arr: np.ndarray, axes: list[int]) -> np.ndarray:
        """Tie ``arr``'s slots along each of ``axes``; return them with those axes of size 1."""
        for ax in axes:
            if arr.shape[ax] == 1:
                continue
            first = np.take(arr, [0], axis=ax)
            self.table.tie(arr, first)
            arr = first
        return arr

    def keep_axes(self, x: Ids, axes: list[int], node: fx.Node) -> np.ndarray:
        """Tie ``x``'s slots along every axis not in ``axes``; return them with those axes of size 1."""
        keep = {a % x.ndim for a in axes} if x.ndim else set()
        return self.collapse(x.ids, [ax for ax in range(x.ndim) if ax not in keep])

    def value(self, node: fx.Node, pos: int, kw: str | None = None, default: Any = None) -> Any:
        """What discovery knows about argument ``pos`` (or keyword ``kw``) of ``node``."""
        if pos >= 0 and len(node.args) > pos:
            arg = node.args[pos]
        elif kw is not None and kw in node.kwargs:
            arg = node.kwargs[kw]
        else:
            return default
        return fx.node.map_aggregate(arg, lambda a: self.env.get(a) if isinstance(a, fx.Node) else a)

    def literal(self, node: fx.Node, pos: int, kw: str | None = None, default: Any = None) -> Any:
        return self.value(node, pos, kw, default)

    def as_ids(self, value: Any, node: fx.Node) -> Ids | None:
        """The slots of a tensor value; a parameter read as data must keep its values (scale 1)."""
        if isinstance(value, Ids):
            return value
        if isinstance(value, ParamRef):
            self._read_as_data(value, node)
            return zeros_like_shape(value.shape)
        return None

    def _read_as_data(self, ref: ParamRef, node: fx.Node) -> None:
        """A parameter (or the parameters behind a computed weight) read as data keeps its values."""
        for name in (ref.name,) if ref.is_parameter else ref.originals:
            self.data_used.setdefault(name, node.name)

    def param_arg(self, node: fx.Node, pos: int, kw: str) -> str | None:
        """The name of the stored weight passed as argument ``pos``/``kw`` (``None`` if absent).

        A weight computed in the graph is not supported (a barrier with ``barriers=True``).
        """
        value = self.value(node, pos, kw)
        if value is None:
            return None
        if isinstance(value, ParamRef):
            return value.name
        self.unsupported(node, None, f"its {kw!r} argument is computed, not a stored parameter")
        return None

    def input_ids(self, node: fx.Node, pos: int, kw: str | None = None) -> Ids | None:
        return self.as_ids(self.value(node, pos, kw), node)

    def tensor_input(self, node: fx.Node, pos: int, kw: str | None = None) -> Ids:
        """Like :meth:`input_ids`, for arguments that must be tensors."""
        x = self.input_ids(node, pos, kw)
        if x is None:
            raise ModelError(f"node {node.name!r} ({self.op_name(node)}): argument {pos} is not a tensor "
                             "(PackedSequence and other containers are not supported)")
        return x

    def fixed_like(self, result: Any) -> Any:
        """Scale-1 values mirroring ``result``'s structure."""
        if isinstance(result, torch.Tensor):
            return zeros_like_shape(tuple(int(s) for s in result.shape))
        if isinstance(result, (tuple, list)):
            return tuple(self.fixed_like(r) for r in result)
        return None

    def no_tensor(self, node: fx.Node, result: Any) -> Any:
        return self.fixed_like(result)

    def fix_inputs(self, node: fx.Node, reason: str) -> None:
        def visit(a: fx.Node) -> fx.Node:
            v = self.env.get(a)
            fx.node.map_aggregate(v, lambda x: self._fix_value(x, reason, node))
            return a

        fx.node.map_arg((node.args, node.kwargs), visit)

    def _fix_value(self, v: Any, reason: str, node: fx.Node) -> Any:
        if isinstance(v, Ids):
            self.table.fix(v.ids, reason)
        elif isinstance(v, ParamRef):
            self._read_as_data(v, node)
        return v

    def op_name(self, node: fx.Node) -> str:
        return _op_name(node, self.gm)

    def module_path(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack")
        if stack:
            path = list(stack.values())[-1][0]
            return str(path) or "<root>"
        return "<root>"

    def unsupported(self, node: fx.Node, result: Any, detail: str) -> Any:
        op = self.op_name(node)
        where = self.module_path(node)
        if self.barriers:
            self.fix_inputs(node, f"barrier: unsupported {op} at node {node.name!r} ({detail})")
            return self.fixed_like(result)
        raise UnsupportedOperationError(
            f"node {node.name!r}: operation {op} in module {where!r} is not supported ({detail}); "
            "synbal does not know how positive rescaling passes through it. Pass barriers=True to "
            "treat such nodes as barriers (units touching them are not scaled)"
        )

    # ------------------------------------------------------------------ the walk
    def visit(self, node: fx.Node, result: Any) -> Any:
        if node.op == "placeholder":
            return self.fixed_like(result)
        if node.op == "get_attr":
            target = str(node.target)
            if isinstance(result, torch.Tensor) and target in self.canon:
                return ParamRef(self.canon[target], tuple(int(s) for s in result.shape), True)
            if isinstance(result, torch.Tensor):
                return ParamRef(target, tuple(int(s) for s in result.shape), False)
            return None
        if node.op == "output":
            self.fix_inputs(node, "model output")
            return None
        if node.op == "call_module":
            return self._visit_module(node, result)
        if not self._has_tensor_input(node):  # built from constants and shapes only (torch.zeros, arange, …)
            return self.fixed_like(result)
        rule = self.rule_for(node)
        if rule is not None:
            return rule(self, node, result)
        if self._constant_inputs(node):  # an unknown op on constants (e.g. a bias table): a constant
            self.fix_inputs(node, "constant")
            return self.fixed_like(result)
        return self.unsupported(node, result, "no rescaling rule for this operation")

    def _visit_module(self, node: fx.Node, result: Any) -> Any:
        mod = self.gm.get_submodule(str(node.target))
        if isinstance(mod, parametrize.ParametrizationList):  # a parametrized weight, read as a tensor
            owner = str(node.target).split(".parametrizations.")
            name = f"{owner[0]}.{owner[1]}" if len(owner) == 2 else str(node.target)
            originals = tuple(f"{node.target}.{n}" for n, _ in mod.named_parameters())
            return ParamRef(name, tuple(int(s) for s in result.shape), False, originals)
        mrule = self.module_rule(mod)
        if mrule is not None:
            return mrule(self, node, mod, result)
        if not _has_tensor(result) and not any(True for _ in mod.parameters()):
            return None
        return self.unsupported(node, result, f"unknown module type {type(mod).__name__}")

    def _input_values(self, node: fx.Node) -> list[Any]:
        values: list[Any] = []

        def keep(v: Any) -> Any:
            values.append(v)
            return v

        def collect(a: fx.Node) -> fx.Node:
            fx.node.map_aggregate(self.env.get(a), keep)
            return a

        fx.node.map_arg((node.args, node.kwargs), collect)
        return values

    def _has_tensor_input(self, node: fx.Node) -> bool:
        return any(isinstance(v, (Ids, ParamRef)) for v in self._input_values(node))

    def _constant_inputs(self, node: fx.Node) -> bool:
        """No input carries a scale: parameters, buffers, and values fixed at scale 1 for good."""
        return all(not isinstance(v, Ids) or v.all_fixed() for v in self._input_values(node))
