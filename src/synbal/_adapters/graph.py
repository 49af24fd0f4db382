"""Explicit networks: units, weighted directed edges, biases — JSON I/O, simulation, balancing.

A :class:`Graph` is any directed network: layered or not, acyclic or recurrent (cycles and
self-loops), with biases and a mix of activations. Hidden units with a positively homogeneous
activation (BiLU, BiPU) are *scalable*; inputs, outputs (identity units) and hidden units with
any other activation are never scaled. The JSON form (``"format": "synbal.graph/1"``)::

    {"format": "synbal.graph/1",
     "units": [{"name": "x0", "role": "input"},
               {"name": "h0", "role": "hidden", "activation": "relu"},
               {"name": "h1", "role": "hidden", "activation": {"type": "bipu", "c": 2.0, "C": 1.0, "D": 0.0}},
               {"name": "y0", "role": "output"}],
     "edges": [["x0", "h0", 0.5], ["h0", "h0", -0.2], ["h0", "y0", 1.5]],
     "biases": {"h0": 0.1},
     "cost_coefficients": [["h0", "y0", 0.5]],
     "bias_cost_coefficients": {"h0": 0.0}}

``edges`` are ``[source, destination, weight]``. The two optional ``*cost_coefficients`` fields
give per-weight regularizer coefficients (default 1; ``0`` exempts a weight from the cost, e.g.
no decay on some layer): the balancing cost of edge ``j → i`` becomes
``coef_ij · g(|w_ij|)`` and that of the bias of ``i`` becomes ``coef_i · g(|b_i|)``. Unknown
extra fields, at the top level or on a unit, are kept and written back unchanged.

Importing this module registers :class:`GraphAdapter`, so :func:`synbal.balance` and
:func:`synbal.deficit` accept a :class:`Graph`.

>>> g = Graph.from_dict({"format": "synbal.graph/1",
...     "units": [{"name": "x", "role": "input"}, {"name": "h", "role": "hidden", "activation": "relu"},
...               {"name": "y", "role": "output"}],
...     "edges": [["x", "h", 2.0], ["h", "y", -3.0]], "biases": {"h": 0.5}})
>>> g.simulate([[1.0], [-1.0]]).tolist()
[[-7.5], [0.0]]
>>> g2 = GraphAdapter(g).apply(np.log([2.0]), inplace=False)   # scale h by 2
>>> g2.edges, g2.biases
([('x', 'h', 4.0), ('h', 'y', -1.5)], {'h': 1.0})
>>> g2.simulate([[1.0], [-1.0]]).tolist()
[[-7.5], [0.0]]
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import scipy.sparse as sp

from synbal._adapters.graph_arrays import edge_arrays
from synbal._adapters.protocol import register_adapter
from synbal._compiled.depths import longest_path_depths
from synbal._io import atomic_write_text
from synbal._jsonsafe import check_json_value, read_json
from synbal._problem.activations import MAX_DEGREE, MIN_DEGREE, Activation, parse_activation
from synbal._problem.conditioning import LOG_MAX, condition, needs_conditioning, scale_weights
from synbal._problem.costs import CostFunction, PowerTerm
from synbal._problem.problem import BalanceProblem, CostBlock, CustomCosts
from synbal._problem.regularizers import Regularizer
from synbal.errors import (
    ActivationError,
    GraphFormatError,
    InvalidWeightError,
    NumericRangeError,
    SynbalError,
    VerificationError,
)

__all__ = ["FORMAT", "Graph", "GraphAdapter", "Unit", "function_gap", "verify_same_function"]

FORMAT = "synbal.graph/1"
ROLES = ("input", "hidden", "output")
_KNOWN_KEYS = ("format", "units", "edges", "biases", "cost_coefficients", "bias_cost_coefficients")
_IDENTITY = parse_activation("linear")

Edge = tuple[str, str, float]
#: Above this many unit groups (hidden layers + 1) a graph's costs go into one all-units block.
MAX_GROUPS = 256
#: :func:`function_gap` skips outputs whose float64 value is off by more than this (relative).
UNRELIABLE = 1e-6


# ---------------------------------------------------------------------------------------- units
def _is_identity(act: Activation) -> bool:
    """``f(x) = x`` (``linear``, ``identity``, a BiLU with ``a = b = 1``)."""
    probe = np.array([-2.5, -1.0, 0.0, 0.75, 3.0])
    return act.degree == 1.0 and bool(np.array_equal(act(probe), probe))



@dataclass(frozen=True)
class Unit:
    """One unit: its name, role (``input``, ``hidden``, ``output``) and activation.

    Hidden units need an activation (a name such as ``"relu"``, or an object such as
    ``{"type": "bipu", "c": 2.0}``, or an :class:`~synbal._problem.activations.Activation`); input and
    output units are identity units and may only say ``"linear"``/``"identity"``. ``extra``
    holds unknown JSON fields, written back unchanged.
    (An identity activation written on an input or output unit, e.g. ``"linear"``, is kept.)

    >>> Unit("h", "hidden", "leaky_relu").scalable, Unit("t", "hidden", "tanh").scalable
    (True, False)
    """

    name: str
    role: str
    activation: Activation | str | dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise GraphFormatError(f"unit name must be a non-empty string, got {self.name!r}")
        if self.role not in ROLES:
            raise GraphFormatError(
                f"unit {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}"
            )
        act = self.activation
        if act is None:
            if self.role == "hidden":
                raise GraphFormatError(f"unit {self.name!r}: hidden unit has no 'activation'")
            return
        if not isinstance(act, Activation):
            act = parse_activation(act, where=f"unit {self.name!r}")
            object.__setattr__(self, "activation", act)
        if act.degree is not None and not MIN_DEGREE <= act.degree <= MAX_DEGREE:
            raise ActivationError(
                f"unit {self.name!r}: degree c must be between {MIN_DEGREE:g} and {MAX_DEGREE:g}, got {act.degree:g}"
            )
        if self.role != "hidden" and not _is_identity(act):
            raise GraphFormatError(
                f"unit {self.name!r}: {self.role} units are identity units; activation {act.to_json()!r} "
                "is not allowed (add a hidden unit instead)"
            )

    @property
    def act(self) -> Activation:
        """The activation to evaluate (identity for input and output units)."""
        return self.activation if isinstance(self.activation, Activation) else _IDENTITY

    @property
    def scalable(self) -> bool:
        """A hidden unit with a positively homogeneous activation."""
        return self.role == "hidden" and self.act.scalable

    @property
    def activation_name(self) -> str:
        """A short name of the activation (``relu``, ``bipu``, …)."""
        spec = self.act.to_json()
        return str(spec.get("type", spec)) if isinstance(spec, dict) else spec

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "role": self.role}
        if isinstance(self.activation, Activation):
            out["activation"] = self.activation.to_json()
        out.update(copy.deepcopy(self.extra))
        return out

    @classmethod
    def from_dict(cls, obj: object, position: int) -> Unit:
        if not isinstance(obj, Mapping):
            raise GraphFormatError(f"unit #{position} must be an object with 'name' and 'role', got {obj!r}")
        for key in ("name", "role"):
            if key not in obj:
                raise GraphFormatError(f"unit #{position} ({obj.get('name', '?')!r}) is missing {key!r}")
        extra = {k: v for k, v in obj.items() if k not in ("name", "role", "activation")}
        _check_extra(extra, f"unit #{position} ({obj['name']!r})")
        return cls(obj["name"], obj["role"], obj.get("activation"), copy.deepcopy(extra))


# ---------------------------------------------------------------------------------------- parsing
def _number(value: object, what: str, error: type[SynbalError] = InvalidWeightError) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise GraphFormatError(f"{what} must be a number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:  # an int beyond the float64 range
        x = math.inf if value > 0 else -math.inf
    if not math.isfinite(x):
        raise error(f"{what} is {x} (weights and biases must be finite)")
    return x


def _edge_list(obj: object, what: str, error: type[SynbalError] = InvalidWeightError) -> list[Edge]:
    if not isinstance(obj, list):
        raise GraphFormatError(
            f"{what!r} must be a list of [source, destination, number], got {type(obj).__name__}"
        )
    out = []
    for k, item in enumerate(obj):
        if not (isinstance(item, (list, tuple)) and len(item) == 3
                and isinstance(item[0], str) and isinstance(item[1], str)):
            raise GraphFormatError(f"{what} entry #{k} must be [source, destination, number], got {item!r}")
        out.append((item[0], item[1], _number(item[2], f"{what} entry #{k} {item[0]} -> {item[1]}", error)))
    return out


def _name_map(obj: object, what: str, error: type[SynbalError] = InvalidWeightError) -> dict[str, float]:
    if not isinstance(obj, Mapping):
        raise GraphFormatError(f"{what!r} must be an object mapping unit names to numbers, got {obj!r}")
    return {str(k): _number(v, f"{what} of unit {k!r}", error) for k, v in obj.items()}


def _check_extra(extra: Mapping[str, Any], where: str) -> None:
    """Unknown fields are written back: they must be finite, plain, not absurdly deep JSON."""
    for key, value in extra.items():
        check_json_value(value, f"{where}: field {key!r}", GraphFormatError)


def _json_lines(obj: dict[str, Any]) -> str:
    """JSON with one unit / edge per line (readable diffs), NaN/Inf refused."""
    parts = []
    for key, value in obj.items():
        head = f"  {json.dumps(key)}: "
        if isinstance(value, list) and value:
            items = ",\n".join("    " + json.dumps(v, allow_nan=False) for v in value)
            parts.append(head + "[\n" + items + "\n  ]")
        else:
            parts.append(head + json.dumps(value, allow_nan=False))
    return "{\n" + ",\n".join(parts) + "\n}\n"


# ---------------------------------------------------------------------------------------- graph
class Graph:
    """An explicit network of units and weighted directed edges ``(src, dst, weight)``.

    ``edges`` (a list, file order) and ``biases`` (unit name → bias) are plain attributes; call
    :meth:`validate` after editing them by hand. ``edge_costs`` / ``bias_costs`` hold per-weight
    regularizer coefficients (missing = 1); ``extra`` unknown top-level JSON fields.

    >>> import synbal
    >>> g = Graph([Unit("x", "input"), Unit("h", "hidden", "relu"), Unit("y", "output")],
    ...           [("x", "h", 8.0), ("h", "h", 0.5), ("h", "y", 2.0)])  # a self-loop: recurrent
    >>> g.is_recurrent, g.inputs, g.outputs
    (True, ['x'], ['y'])
    >>> balanced = synbal.balance(g, "l2").net  # the self-loop is unchanged, 8 and 2 meet at 4
    >>> [(a, b, round(w, 9)) for a, b, w in balanced.edges]
    [('x', 'h', 4.0), ('h', 'h', 0.5), ('h', 'y', 4.0)]
    >>> Graph.from_dict(balanced.to_dict()) == balanced
    True
    """

    def __init__(
        self,
        units: Iterable[Unit],
        edges: Iterable[Sequence[Any]],
        biases: Mapping[str, float] | None = None,
        *,
        edge_costs: Mapping[tuple[str, str], float] | None = None,
        bias_costs: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.units: list[Unit] = list(units)
        self.edges: list[Edge] = [
            (str(e[0]), str(e[1]), _number(e[2], f"edge {e[0]} -> {e[1]}: weight")) for e in edges
        ]
        self.biases: dict[str, float] = {
            str(k): _number(v, f"bias of unit {k!r}") for k, v in (biases or {}).items()
        }
        self.edge_costs: dict[tuple[str, str], float] = dict(edge_costs or {})
        self.bias_costs: dict[str, float] = dict(bias_costs or {})
        _check_extra(dict(extra or {}), "graph")
        self.extra: dict[str, Any] = copy.deepcopy(dict(extra or {}))
        self.validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, obj: object) -> Graph:
        """Read the JSON form (see the module docstring); bad input raises a typed error."""
        if not isinstance(obj, Mapping):
            raise GraphFormatError(f"a graph must be a JSON object, got {type(obj).__name__}")
        if obj.get("format") != FORMAT:
            raise GraphFormatError(f"'format' must be {FORMAT!r}, got {obj.get('format')!r}")
        for key in ("units", "edges"):
            if key not in obj:
                raise GraphFormatError(f"graph is missing the {key!r} field")
        if not isinstance(obj["units"], list):
            raise GraphFormatError("'units' must be a list of unit objects")
        units = [Unit.from_dict(u, k) for k, u in enumerate(obj["units"])]
        edge_costs = _edge_list(obj.get("cost_coefficients", []), "cost_coefficients", GraphFormatError)
        costs: dict[tuple[str, str], float] = {}
        for s, d, c in edge_costs:
            if (s, d) in costs:
                raise GraphFormatError(f"cost_coefficients: duplicate entry for edge {s} -> {d}")
            costs[(s, d)] = c
        return cls(
            units,
            _edge_list(obj["edges"], "edges"),
            _name_map(obj.get("biases", {}), "biases"),
            edge_costs=costs,
            bias_costs=_name_map(
                obj.get("bias_cost_coefficients", {}), "bias_cost_coefficients", GraphFormatError
            ),
            extra={k: v for k, v in obj.items() if k not in _KNOWN_KEYS},
        )

    @classmethod
    def from_layers(
        cls,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray | None] | None = None,
        activation: str | dict[str, Any] = "relu",
    ) -> Graph:
        """A dense layered net: ``weights[l]`` has shape ``(n_{l+1}, n_l)``.

        Units are named ``x{k}`` (inputs), ``h{l}_{k}`` (hidden layer ``l``, from 1) and
        ``y{k}`` (outputs); zero weights are kept as edges.

        >>> g = Graph.from_layers([np.ones((2, 3)), np.ones((1, 2))], activation="relu")
        >>> [u.name for u in g.units], len(g.edges)
        (['x0', 'x1', 'x2', 'h1_0', 'h1_1', 'y0'], 8)
        """
        mats = [np.asarray(w, dtype=np.float64) for w in weights]
        if not mats or any(m.ndim != 2 for m in mats):
            raise GraphFormatError("from_layers needs a non-empty list of 2-D weight matrices")
        for k in range(1, len(mats)):
            if mats[k].shape[1] != mats[k - 1].shape[0]:
                raise GraphFormatError(
                    f"layer {k} weight shape {mats[k].shape} does not follow {mats[k - 1].shape}"
                )
        depth = len(mats)
        names: list[list[str]] = [[f"x{k}" for k in range(mats[0].shape[1])]]
        for layer in range(1, depth):
            names.append([f"h{layer}_{k}" for k in range(mats[layer - 1].shape[0])])
        names.append([f"y{k}" for k in range(mats[-1].shape[0])])
        units = [Unit(n, "input") for n in names[0]]
        for layer_names in names[1:-1]:
            units += [Unit(n, "hidden", activation) for n in layer_names]
        units += [Unit(n, "output") for n in names[-1]]
        edges = [
            (names[layer][j], names[layer + 1][i], float(m[i, j]))
            for layer, m in enumerate(mats)
            for i in range(m.shape[0])
            for j in range(m.shape[1])
        ]
        bias_map: dict[str, float] = {}
        for layer, b in enumerate(biases or []):
            if b is not None:
                vec = np.asarray(b, dtype=np.float64).reshape(-1)
                if vec.size != len(names[layer + 1]):
                    raise GraphFormatError(
                        f"bias {layer} has {vec.size} entries for {len(names[layer + 1])} units"
                    )
                bias_map.update({n: float(v) for n, v in zip(names[layer + 1], vec, strict=True)})
        return cls(units, edges, bias_map)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Graph:
        """Read a graph from a JSON file; errors name the file (and line/column for bad JSON)."""
        obj = read_json(path, GraphFormatError)
        try:
            return cls.from_dict(obj)
        except SynbalError as exc:
            raise type(exc)(f"{os.fspath(path)}: {exc}") from None

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a fresh dict; ``from_dict(g.to_dict())`` reproduces ``g``)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "units": [u.to_dict() for u in self.units],
            "edges": [[s, d, w] for s, d, w in self.edges],
        }
        if self.biases:
            out["biases"] = dict(self.biases)
        if self.edge_costs:
            out["cost_coefficients"] = [[s, d, c] for (s, d), c in self.edge_costs.items()]
        if self.bias_costs:
            out["bias_cost_coefficients"] = dict(self.bias_costs)
        out.update(copy.deepcopy(self.extra))
        return out

    def to_json(self) -> str:
        """The JSON text written by :meth:`save` (one unit and one edge per line)."""
        return _json_lines(self.to_dict())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form to ``path`` atomically."""
        atomic_write_text(path, self.to_json())

    def copy(self) -> Graph:
        """An independent copy (units are immutable and shared; nothing is re-validated)."""
        twin = Graph.__new__(Graph)
        twin.units = list(self.units)
        twin.edges = list(self.edges)
        twin.biases = dict(self.biases)
        twin.edge_costs = dict(self.edge_costs)
        twin.bias_costs = dict(self.bias_costs)
        twin.extra = copy.deepcopy(self.extra)
        return twin

    # ------------------------------------------------------------------ checks and structure
    def validate(self) -> None:
        """Check names, roles, edges, biases and coefficients; raise a typed error naming the culprit."""
        self._checked_index()

    def _checked_index(self) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`validate`, returning :meth:`_index`'s arrays (one pass over the edges for both)."""
        if not all(map(isinstance, self.units, repeat(Unit))):
            bad = next(u for u in self.units if not isinstance(u, Unit))
            raise GraphFormatError(f"units must be synbal._adapters.graph.Unit objects, got {bad!r}")
        index = {u.name: k for k, u in enumerate(self.units)}
        if len(index) != len(self.units):
            seen_names: set[str] = set()
            for u in self.units:
                if u.name in seen_names:
                    raise GraphFormatError(f"duplicate unit name {u.name!r}")
                seen_names.add(u.name)
        arrays = edge_arrays(self.units, self.edges, check=True, index=index)
        roles = _Roles(self.units, index)
        for name, b in self.biases.items():
            self._check_biased(name, "bias", roles)
            if not math.isfinite(b):
                raise InvalidWeightError(f"bias of unit {name!r} is {b} (must be finite)")
        if self.edge_costs:
            seen = {(s, d) for s, d, _ in self.edges}
            for (s, d), c in self.edge_costs.items():
                if (s, d) not in seen:
                    raise GraphFormatError(f"cost_coefficients names edge {s} -> {d}, which is not in 'edges'")
                self._check_coefficient(c, f"cost coefficient of edge {s} -> {d}")
        for name, c in self.bias_costs.items():
            self._check_biased(name, "bias cost coefficient", roles)
            self._check_coefficient(c, f"bias cost coefficient of unit {name!r}")
        return arrays

    @staticmethod
    def _check_biased(name: str, what: str, roles: Mapping[str, str]) -> None:
        if name not in roles:
            raise GraphFormatError(f"{what} given for unknown unit {name!r}")
        if roles[name] == "input":
            raise GraphFormatError(f"{what} given for input unit {name!r} (inputs have no bias)")

    @staticmethod
    def _check_coefficient(c: float, what: str) -> None:
        if not (math.isfinite(c) and c >= 0):
            raise GraphFormatError(f"{what} must be a finite number >= 0, got {c}")

    def _names(self, role: str) -> list[str]:
        return [u.name for u in self.units if u.role == role]

    @property
    def inputs(self) -> list[str]:
        """Names of the input units, in unit order (the columns of ``simulate``'s input)."""
        return self._names("input")

    @property
    def outputs(self) -> list[str]:
        """Names of the output units, in unit order (the columns of ``simulate``'s result)."""
        return self._names("output")

    def unit(self, name: str) -> Unit:
        """The unit called ``name``."""
        for u in self.units:
            if u.name == name:
                return u
        raise GraphFormatError(f"no unit named {name!r}")

    def _index(self) -> tuple[dict[str, int], np.ndarray, np.ndarray, np.ndarray]:
        """Unit index by name, and the edges' source index, destination index and weight."""
        return edge_arrays(self.units, self.edges)

    @property
    def is_recurrent(self) -> bool:
        """True when the graph has a cycle (a self-loop counts)."""
        _, src, dst, _ = self._index()
        return _depths(len(self.units), src, dst) is None

    # ------------------------------------------------------------------ simulation
    def simulate(
        self, inputs: np.ndarray | Sequence[Sequence[float]], steps: int | None = None, *,
        dtype: type[np.floating[Any]] = np.float64,
    ) -> np.ndarray:
        """The network's outputs for a batch of inputs (in ``dtype``), shape ``(batch, n_outputs)``.

        ``inputs`` has shape ``(batch, n_inputs)``, columns in the order of :attr:`inputs`.
        Without ``steps`` the graph must be acyclic and is evaluated in topological order.
        With ``steps`` every unit is updated synchronously ``steps`` times,
        ``h(t+1) = f(W h(t) + b)``, from ``h(0) = 0`` with the inputs clamped (needed for
        recurrent graphs; for a DAG, ``steps ≥ depth`` gives the topological result).
        Output units are identity units. ``dtype=np.longdouble`` evaluates with the extended
        precision and range of the platform's long double (a reference for :func:`function_gap`).
        """
        x = np.asarray(inputs, dtype=dtype)
        n_in = len(self.inputs)
        if x.ndim != 2 or x.shape[1] != n_in:
            raise SynbalError(f"inputs must have shape (batch, {n_in}), got {x.shape}")
        index, src, dst, w = self._index()
        n = len(self.units)
        in_idx = np.array([index[name] for name in self.inputs], dtype=np.int64)
        out_idx = np.array([index[name] for name in self.outputs], dtype=np.int64)
        W = sp.csr_array((w.astype(dtype), (dst, src)), shape=(n, n))
        b = np.zeros(n, dtype=dtype)
        for name, value in self.biases.items():
            b[index[name]] = value
        values = np.zeros((x.shape[0], n), dtype=dtype)
        values[:, in_idx] = x
        groups = self._activation_groups()
        if steps is None:
            depth = _depths(n, src, dst)
            if depth is None:
                raise SynbalError("the graph is recurrent (it has a cycle); pass steps= to simulate it")
            is_input = np.zeros(n, dtype=bool)
            is_input[in_idx] = True
            for level in range(1, int(depth.max(initial=0)) + 1):
                rows = np.flatnonzero((depth == level) & ~is_input)
                z = (W[rows] @ values.T).T + b[rows]
                values[:, rows] = _activate(z, rows, groups)
            return values[:, out_idx]
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise SynbalError(f"steps must be an integer >= 0, got {steps!r}")
        active = np.setdiff1d(np.arange(n), in_idx)
        for _ in range(int(steps)):
            z = (W[active] @ values.T).T + b[active]
            values[:, active] = _activate(z, active, groups)
        return values[:, out_idx]

    def _activation_groups(self) -> list[tuple[np.ndarray, Activation]]:
        """Units sharing one activation spec (identity for inputs/outputs), for vectorised evaluation."""
        groups: dict[str, tuple[list[int], Activation]] = {}
        for k, u in enumerate(self.units):
            key = json.dumps(u.act.to_json(), sort_keys=True)
            groups.setdefault(key, ([], u.act))[0].append(k)
        return [(np.array(ids, dtype=np.int64), act) for ids, act in groups.values()]

    def __repr__(self) -> str:
        roles = [u.role for u in self.units]
        return (
            f"Graph({roles.count('input')} inputs, {roles.count('hidden')} hidden, "
            f"{roles.count('output')} outputs, {len(self.edges)} edges, {len(self.biases)} biases)"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable


def _activate(z: np.ndarray, rows: np.ndarray, groups: list[tuple[np.ndarray, Activation]]) -> np.ndarray:
    """Apply each unit's activation to the columns of ``z`` (column ``k`` belongs to unit ``rows[k]``)."""
    out = np.empty_like(z)
    for ids, act in groups:
        cols = np.flatnonzero(np.isin(rows, ids))
        if cols.size:
            out[:, cols] = act(z[:, cols])
    return out


def _costs(coef: np.ndarray, w: np.ndarray, power: float) -> np.ndarray:
    """``coef·|w|^p``; taken as ``exp(log coef + p·log|w|)`` where ``|w|^p`` alone would leave float64
    (a coefficient of 1e-300 on a weight of 1e250, say), so the product is exact whenever it is in range."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        cost = coef * np.abs(w) ** power
        bad = ~np.isfinite(cost) | ((cost == 0) & (coef != 0) & (w != 0))
        if bad.any():
            cost[bad] = np.exp(np.log(coef[bad]) + power * np.log(np.abs(w[bad])))
    return cost


def _runs(keys: np.ndarray, width: int) -> list[tuple[tuple[int, int], np.ndarray]]:
    """``((key // width, key % width), positions)`` for each distinct key, in increasing key order
    (positions in their original order)."""
    if keys.size == 0:
        return []
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], keys.size].tolist()
    return [((k // width, k % width), order[a:b])
            for k, a, b in zip(sorted_keys[starts].tolist(), starts.tolist(), ends, strict=True)]


class _Roles(Mapping[str, str]):
    """Unit name → role, read through the name index (no second dict of every unit)."""

    def __init__(self, units: Sequence[Unit], index: dict[str, int]) -> None:
        self._units, self._index = units, index

    def __getitem__(self, name: str) -> str:
        return self._units[self._index[name]].role

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def _depths(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Longest-path depth of each unit from the sources (Kahn's algorithm); ``None`` on a cycle."""
    depth, acyclic = longest_path_depths(n, src, dst)
    return depth if acyclic else None


def function_gap(a: Graph, b: Graph, inputs: np.ndarray, steps: int | None = None) -> float:
    """How much further ``b``'s float64 outputs are from ``a``'s function than ``a``'s own, relative.

    The reference is ``a`` evaluated in extended precision (long double: more digits and a far
    wider exponent range), ``f``. The gap is ``max(|f_b − f| − |f_a − f|) / max |f|`` over the
    outputs where ``a`` is finite in float64: rounding that ``a`` itself suffers in float64 (a
    subnormal product that flushes to 0, say) is not held against ``b``, and outputs where ``a``'s
    float64 result is off by more than ``UNRELIABLE·max |f|`` (an ill-conditioned evaluation such
    as ``sin`` of a huge argument) are not compared. It is ``inf`` when ``b`` overflows (or gives
    NaN) at any output where ``a`` is finite — a network that overflows where the reference does
    not computes a different function in float64 — and ``nan`` when no output of ``a`` is finite
    and reliable (nothing can be compared). ``steps`` as in :meth:`Graph.simulate`.

    >>> g = Graph.from_layers([np.array([[2.0]]), np.array([[0.5]])])
    >>> h = GraphAdapter(g).apply(np.array([3.0]))
    >>> function_gap(g, h, np.array([[1.0], [-2.0], [0.3]])) < 1e-15
    True
    >>> big = GraphAdapter(g).apply(np.array([709.0]))   # h scaled by e^709: its activation overflows
    >>> function_gap(g, big, np.array([[1e10]]))
    inf
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        fa = a.simulate(inputs, steps=steps)
        fb = b.simulate(inputs, steps=steps)
        ok = np.isfinite(fa)
        if not ok.any():
            return float("nan")
        if not np.all(np.isfinite(fb[ok])):
            return float("inf")
        exact = a.simulate(inputs, steps=steps, dtype=np.longdouble)[ok]
        exact = np.where(np.isfinite(exact), exact, fa[ok])
        scale = max(np.max(np.abs(exact)), np.finfo(np.longdouble).smallest_subnormal)
        own = np.abs(fa[ok] - exact)
        reliable = own <= UNRELIABLE * scale  # else a's own float64 result is noise (sin of 1e20, say)
        if not reliable.any():
            return float("nan")
        excess = np.abs(fb[ok] - exact) - own
        return float(max(np.max(excess[reliable]), 0.0) / scale)


def verify_same_function(
    original: Graph,
    balanced: Graph,
    *,
    samples: int = 16,
    steps: int = 6,
    rtol: float = 1e-8,
    seed: int = 0,
) -> float | None:
    """Check on random standard-normal inputs that ``balanced`` computes ``original``'s function.

    Recurrent graphs are compared after ``steps`` synchronous steps. Returns the relative gap
    (see :func:`function_gap`) over the outputs where the original is finite, ``None`` when
    every output of the original overflows (nothing can be checked), and raises
    :class:`~synbal.errors.VerificationError` when the gap exceeds ``rtol`` — in particular
    when the balanced network overflows (inf/NaN) where the original does not.
    """
    inputs = np.random.default_rng(seed).standard_normal((samples, len(original.inputs)))
    gap = function_gap(original, balanced, inputs, steps if original.is_recurrent else None)
    if math.isnan(gap):
        return None
    if math.isinf(gap):
        raise VerificationError(
            "the balanced network's outputs overflow (inf or NaN) on random inputs where the original's are finite"
        )
    if gap > rtol:
        raise VerificationError(
            f"the balanced network's outputs differ from the original's by {gap:.3e} (relative) > {rtol:g}"
        )
    return gap


# ---------------------------------------------------------------------------------------- adapter
class GraphAdapter:
    """Extract a :class:`~synbal._problem.problem.BalanceProblem` from a :class:`Graph`, and apply scales back.

    One variable per scalable hidden unit, in unit order, named after the unit. Every weight is
    costed (also those between fixed units), biases in separate ``bias=True`` blocks. For a
    layered net the costs are split into one block per pair of layers (inputs, outputs and
    non-scalable units form the fixed group), which the ``tied`` closed form and the exact
    solver's coarse correction use; otherwise one sparse all-units block per power.

    >>> from synbal._problem.regularizers import parse_regularizer
    >>> g = Graph.from_layers([np.full((2, 1), 2.0), np.full((1, 2), 0.5)])
    >>> prob = GraphAdapter(g).problem(parse_regularizer("l2"))
    >>> prob.names, [layer.tolist() for layer in prob.layers]
    (['h1_0', 'h1_1'], [[0, 1]])
    >>> IN, OUT = prob.in_out(np.zeros(2)); IN.tolist(), OUT.tolist()
    ([4.0, 4.0], [0.25, 0.25])
    """

    def __init__(self, graph: Graph) -> None:
        if not isinstance(graph, Graph):
            raise SynbalError(f"GraphAdapter needs a synbal.Graph, got {type(graph).__name__}")
        self._index, self._src, self._dst, self._w = graph._checked_index()
        self.graph = graph
        n_units = len(graph.units)
        # one pass over the units: the degree of every scalable unit, NaN for the others
        # (a hidden unit's activation is always parsed; None becomes NaN)
        degrees = np.array([u.activation.degree if u.role == "hidden" else None  # type: ignore[union-attr]
                            for u in graph.units], dtype=np.float64)
        scalable = ~np.isnan(degrees)
        self._scalable = scalable
        self._scalable_units = np.flatnonzero(scalable)
        self.var = np.full(n_units, -1, dtype=np.int64)  # unit → variable (-1: fixed)
        self.var[self._scalable_units] = np.arange(self._scalable_units.size)
        n = self._scalable_units.size
        fixed_rank = np.cumsum(~scalable) - 1
        self.unit_ids = np.where(scalable, self.var, n + fixed_rank)  # stable id per unit
        self.degree = degrees[self._scalable_units]
        self._edge_coef = (np.array([graph.edge_costs.get((s, d), 1.0) for s, d, _ in graph.edges], dtype=np.float64)
                           if graph.edge_costs else np.ones(len(graph.edges)))
        self._bias_units = np.array([self._index[name] for name in graph.biases], dtype=np.int64)
        self._bias = np.array(list(graph.biases.values()), dtype=np.float64)
        self._bias_coef = np.array(
            [graph.bias_costs.get(name, 1.0) for name in graph.biases], dtype=np.float64
        )
        self._layers = self._find_layers()
        self._names: list[str] | None = None

    @property
    def names(self) -> list[str]:
        """Problem variable names: the scalable units' names, in unit order."""
        if self._names is None:
            self._names = [self.graph.units[k].name for k in self._scalable_units.tolist()]
        return self._names

    def _find_layers(self) -> list[np.ndarray] | None:
        """Scalable units grouped by depth (unit indices), when they form a layered net."""
        n_units = len(self.graph.units)
        is_var = self.var >= 0
        depth = _depths(n_units, self._src, self._dst)
        if depth is None:  # cycles elsewhere: use the subgraph of scalable units alone
            inner = is_var[self._src] & is_var[self._dst]
            depth = _depths(n_units, self._src[inner], self._dst[inner])
            if depth is None:
                return None
        inner = is_var[self._src] & is_var[self._dst]
        if np.any(depth[self._dst[inner]] != depth[self._src[inner]] + 1):
            return None
        units = self._scalable_units
        return [units[idx] for _, idx in _runs(depth[units], 1)]

    # ------------------------------------------------------------------ Adapter protocol
    #: What the costs are of, in refusals (the :class:`~synbal._problem.costs.CostSink` protocol).
    where = "a graph"

    def problem(self, reg: Regularizer) -> BalanceProblem:
        """The balance problem of the graph's weights for ``reg`` (rescaled when costs leave float64)."""
        return reg.costs_for(self)

    def problem_as_given(self, reg: Regularizer) -> BalanceProblem:
        """The balance problem of the weights exactly as given, never rescaled (costs may be ``inf``).

        For reports on the unscaled network (:func:`synbal.deficit`); solvers use :meth:`problem`.
        """
        return reg.costs_for(_AsGiven(self))

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> BalanceProblem:
        """The problem of ``Σ coef·|w|^p``, costed at a conditioned origin when costs leave float64."""
        w, b, origin = self._conditioned([(t.coef, t.power) for t in terms])
        problem = self._power_problem(terms, w, b)
        if origin is not None:
            self._check_costs(terms, w, b)
            problem.origin = origin
            problem.origin_value = self._log_domain_value(terms)
        return problem

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> BalanceProblem:
        """The problem of the custom costs ``g(|w|)`` of every weight and bias."""
        layers = None if self._layers is None else [self.var[layer] for layer in self._layers]
        custom = CustomCosts(
            dst=np.concatenate([self.var[self._dst], self.var[self._bias_units]]),
            src=np.concatenate([self.var[self._src], np.full(self._bias_units.size, -1)]),
            magnitude=np.abs(np.concatenate([self._w, self._bias])),
            coef=np.concatenate([self._edge_coef, self._bias_coef]),
            g=g,
            dg=dg,
        )
        return BalanceProblem(self.degree, [], names=self.names, layers=layers, custom=custom)

    def _power_problem(self, terms: tuple[PowerTerm, ...], w: np.ndarray, b: np.ndarray) -> BalanceProblem:
        """The problem of weights ``w`` and biases ``b`` (an l_{p,q} aggregates as its single power p)."""
        layers = None if self._layers is None else [self.var[layer] for layer in self._layers]
        blocks: list[CostBlock] = []
        with np.errstate(over="ignore", under="ignore"):
            for term in terms:
                blocks += self._power_blocks(term.coef, term.power, w, b)
        return BalanceProblem(self.degree, blocks, names=self.names, layers=layers)

    def _conditioned(self, terms: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Weights and biases to cost, and the origin ``u0`` they are scaled by (``None``: as given).

        Only when some cost ``coef·|w|^p`` leaves the safe range (see :mod:`synbal._problem.conditioning`).
        """
        coefs = np.concatenate([self._edge_coef, self._bias_coef])
        mags = np.abs(np.concatenate([self._w, self._bias]))
        live = (mags > 0) & (coefs > 0)
        log_mag = np.log(mags[live])
        if not needs_conditioning(log_mag, np.log(coefs[live]), terms):
            return self._w, self._bias, None
        dst = np.concatenate([self.var[self._dst], self.var[self._bias_units]])[live]
        src = np.concatenate([self.var[self._src], np.full(self._bias_units.size, -1)])[live]
        # a cost coef·|w|^p is the p-th power of coef^(1/p)·|w|: per-weight coefficients count too
        u0 = condition(dst, src, log_mag + np.log(coefs[live]) / max(p for _, p in terms), self.degree)
        ue = np.append(u0, 0.0)
        ce = np.append(self.degree, 1.0)
        w = scale_weights(self._w, ue[self.var[self._dst]] - ce[self.var[self._src]] * ue[self.var[self._src]])
        b = scale_weights(self._bias, ue[self.var[self._bias_units]])
        return w, b, u0

    def _check_costs(self, terms: tuple[PowerTerm, ...], w: np.ndarray, b: np.ndarray) -> None:
        """Refuse weights whose cost overflows float64 even at the conditioned origin: an edge between
        two fixed units is never rescaled, nor are dead units, so ``R`` cannot be represented."""
        coefs = np.concatenate([self._edge_coef, self._bias_coef])
        with np.errstate(divide="ignore"):
            log_mag = np.log(np.abs(np.concatenate([w, b])))
            for t in terms:
                bad = np.flatnonzero((coefs > 0) & (np.log(t.coef * coefs) + t.power * log_mag > LOG_MAX))
                if bad.size:
                    k = int(bad[0])
                    where = (f"edge {self.graph.edges[k][0]} -> {self.graph.edges[k][1]}" if k < len(self.graph.edges)
                             else f"the bias of unit {list(self.graph.biases)[k - len(self.graph.edges)]!r}")
                    raise NumericRangeError(
                        f"the cost |w|^{t.power:g} of {where} overflows float64 even after rescaling "
                        f"({bad.size} weights do): the regularizer cannot be represented"
                    )

    def _log_domain_value(self, terms: tuple[PowerTerm, ...]) -> float:
        """``R`` of the weights as given, summed in the log domain (``inf`` when it leaves float64)."""
        from scipy.special import logsumexp

        coefs = np.concatenate([self._edge_coef, self._bias_coef])
        mags = np.abs(np.concatenate([self._w, self._bias]))
        live = (mags > 0) & (coefs > 0)
        logs = [np.log(t.coef * coefs[live]) + t.power * np.log(mags[live]) for t in terms]
        with np.errstate(over="ignore"):
            return float(np.exp(logsumexp(np.concatenate(logs)))) if live.any() else 0.0

    def _groups(self) -> list[np.ndarray]:
        """Unit-index groups of the cost blocks: the layers and the fixed units, or all units."""
        if self._layers is None:
            return [np.arange(len(self.graph.units))]
        return [*self._layers, np.flatnonzero(self.var < 0)]

    def _power_blocks(self, coef: float, power: float, w: np.ndarray, bias: np.ndarray) -> list[CostBlock]:
        """One sparse block per pair of unit groups that has a non-zero cost, then the bias blocks.

        Edges are sorted once by their pair of groups (linear in the edges, whatever the depth);
        beyond ``MAX_GROUPS`` groups (very deep nets) one all-units block is built instead, which
        the general solvers handle in linear time per iteration.
        """
        n_units = len(self.graph.units)
        groups = [g for g in self._groups() if g.size]
        if len(groups) > MAX_GROUPS:
            groups = [np.arange(n_units)]
        group_of = np.zeros(n_units, dtype=np.int64)
        pos = np.zeros(n_units, dtype=np.int64)
        for k, g in enumerate(groups):
            group_of[g] = k
            pos[g] = np.arange(g.size)
        cost = _costs(coef * self._edge_coef, w, power)
        live = np.flatnonzero(cost != 0)
        dst, src, cost = self._dst[live], self._src[live], cost[live]
        blocks = []
        for (gd, gs), idx in _runs(group_of[dst] * len(groups) + group_of[src], len(groups)):
            rows, cols = groups[gd], groups[gs]
            block = sp.csr_array((cost[idx], (pos[dst[idx]], pos[src[idx]])), shape=(rows.size, cols.size))
            blocks.append(CostBlock(power, self.var[rows], self.var[cols], block, fixed_ids=self.unit_ids[rows]))
        bias_cost = _costs(coef * self._bias_coef, bias, power)
        pick = np.flatnonzero(bias_cost > 0)
        for _, idx in _runs(group_of[self._bias_units[pick]] * len(groups), len(groups)):
            units = self._bias_units[pick[idx]]
            blocks.append(
                CostBlock(power, self.var[units], np.array([-1]), bias_cost[pick[idx], None], bias=True,
                          fixed_ids=self.unit_ids[units])
            )
        return blocks

    def apply(self, u: np.ndarray, *, inplace: bool = False) -> Graph:
        """Multiply each weight ``w_ij`` (``j → i``) by ``exp(u_i − c_j u_j)`` and each bias by ``exp(u_i)``.

        ``u`` has one log-scale per scalable unit (problem order); fixed units have ``u = 0``
        and ``c = 1``. Works on a copy unless ``inplace``; returns the scaled graph.
        """
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if u.size != self._scalable_units.size:
            raise SynbalError(f"expected {self._scalable_units.size} log-scales, got {u.size}")
        if not np.all(np.isfinite(u)):
            raise InvalidWeightError("log-scales must be finite")
        ue = np.zeros(len(self.graph.units))
        ue[self._scalable_units] = u
        ce = np.ones(len(self.graph.units))
        ce[self._scalable_units] = self.degree
        new_w = scale_weights(self._w, ue[self._dst] - ce[self._src] * ue[self._src])
        new_b = scale_weights(self._bias, ue[self._bias_units])
        for values, old, what in ((new_w, self._w, "edge"), (new_b, self._bias, "bias")):
            # a weight that over- or underflows would change the network (an edge lost to 0, say)
            bad = np.flatnonzero(~np.isfinite(values) | ((values == 0) & (old != 0)))
            if bad.size:
                k = int(bad[0])
                where = (f"{self.graph.edges[k][0]} -> {self.graph.edges[k][1]}" if what == "edge"
                         else f"of unit {list(self.graph.biases)[k]!r}")
                flow = "overflows" if not np.isfinite(values[k]) else "underflows to 0 in"
                raise NumericRangeError(
                    f"the scaled {what} {where} {flow} float64 ({bad.size} weights do): the balanced network "
                    "cannot be represented"
                )
        target = self.graph if inplace else self.graph.copy()
        # in C (map/zip): a list of 300,000 new edge tuples in tens of milliseconds
        sources, destinations = (map(itemgetter(k), self.graph.edges) for k in range(2))
        target.edges[:] = list(zip(sources, destinations, new_w.tolist(), strict=True))
        for name, b in zip(list(self.graph.biases), new_b, strict=True):
            target.biases[name] = float(b)
        return target

    def excluded(self) -> dict[str, str]:
        """Hidden units that are never scaled, with the reason."""
        return {
            u.name: f"activation {u.activation_name} is not positively homogeneous"
            for u, scalable in zip(self.graph.units, self._scalable.tolist(), strict=True)
            if not scalable and u.role == "hidden"
        }


@dataclass(frozen=True)
class _AsGiven:
    """The graph's costs of the weights as given: :meth:`GraphAdapter.problem_as_given`'s cost sink."""

    adapter: GraphAdapter

    @property
    def where(self) -> str:
        return self.adapter.where

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> BalanceProblem:
        return self.adapter._power_problem(terms, self.adapter._w, self.adapter._bias)

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> BalanceProblem:
        return self.adapter.custom_costs(g, dg)


register_adapter(lambda source: isinstance(source, Graph), GraphAdapter)
