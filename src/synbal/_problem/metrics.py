"""Balance diagnostics: per-unit IN/OUT costs, deficits, regularizer, norms.

All of them are functions of a :class:`~synbal._problem.problem.BalanceProblem` and log-scales ``u``,
so they are available for every source synbal can extract.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
...                                   CostBlock(2.0, [-1], [0], [[1.0]])], names=["h"])
>>> rep = deficit_report(prob)
>>> rep.units[0].deficit, round(rep.units[0].relative_deficit, 3)
(9.0, 0.6)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbal._problem.problem import BalanceProblem, Records

__all__ = ["DeficitReport", "LayerBalance", "UnitArrays", "UnitBalance", "deficit_report", "label_totals", "report_of",
           "unit_arrays"]



@dataclass(slots=True)  # a plain record: slots make building one per unit of a large net cheap
class UnitBalance:
    """One unit's balance: ``IN``/``OUT`` cost, degree ``c``, the paper's deficit ``(IN − c·OUT)²``."""

    name: str
    IN: float
    OUT: float
    degree: float
    deficit: float
    relative_deficit: float
    status: str  # "free", "dead", "floating", "pinned", "drifting" (no minimum: see BalanceProblem.drifting_mask)


@dataclass(slots=True)
class LayerBalance:
    """Aggregate balance of one layer (an independent set of units)."""

    index: int
    units: int
    IN: float
    OUT: float
    max_relative_deficit: float


@dataclass
class DeficitReport:
    """Per-unit and overall balance of a network for one regularizer.

    ``overall_deficit`` is the paper's measure (sum of ``(IN − c·OUT)²`` over hidden units);
    ``max_relative_deficit`` is the scale-free one used for tolerances (free units only).

    >>> import numpy as np, synbal
    >>> rep = synbal.deficit(synbal.Graph.from_layers([np.array([[2.0]]), np.array([[1.0]])]), "l2")
    >>> rep.regularizer_value, rep.overall_deficit, rep.max_relative_deficit
    (5.0, 9.0, 0.6)
    """

    regularizer: str
    units: Sequence[UnitBalance]
    regularizer_value: float
    overall_deficit: float
    max_relative_deficit: float
    frobenius_norm: float | None
    layers: Sequence[LayerBalance] = field(default_factory=list)
    excluded: dict[str, str] = field(default_factory=dict)

    @property
    def dead(self) -> list[str]:
        return [u.name for u in self.units if u.status == "dead"]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return {
            "regularizer": self.regularizer,
            "regularizer_value": self.regularizer_value,
            "overall_deficit": self.overall_deficit,
            "max_relative_deficit": self.max_relative_deficit,
            "frobenius_norm": self.frobenius_norm,
            "units": [_record(u) for u in self.units],
            "layers": [_record(layer) for layer in self.layers],
            "excluded": dict(self.excluded),
            "dead": self.dead,
        }

    def format_table(self, max_rows: int | None = None) -> str:
        """A readable per-unit table followed by the totals."""
        lines = [f"{'unit':<24} {'status':<8} {'IN':>12} {'OUT':>12} {'c':>5} {'rel.deficit':>12}"]
        rows = self.units if max_rows is None else self.units[:max_rows]
        for u in rows:
            lines.append(
                f"{u.name:<24} {u.status:<8} {u.IN:>12.5g} {u.OUT:>12.5g} {u.degree:>5g} "
                f"{u.relative_deficit:>12.3e}"
            )
        if max_rows is not None and len(self.units) > max_rows:
            lines.append(f"... ({len(self.units) - max_rows} more units)")
        if self.layers:
            lines.append("")
            lines.append(f"{'layer':<8} {'units':>6} {'IN':>12} {'OUT':>12} {'max rel.deficit':>16}")
            for layer in self.layers:
                lines.append(
                    f"{layer.index:<8} {layer.units:>6} {layer.IN:>12.5g} {layer.OUT:>12.5g} "
                    f"{layer.max_relative_deficit:>16.3e}"
                )
        lines.append("")
        lines.append(f"regularizer ({self.regularizer}): {self.regularizer_value:.10g}")
        lines.append(f"overall deficit: {self.overall_deficit:.6g}")
        lines.append(f"max relative deficit: {self.max_relative_deficit:.3e}")
        if self.frobenius_norm is not None:
            lines.append(f"Frobenius norm: {self.frobenius_norm:.10g}")
        if self.dead:
            lines.append(f"dead units (left alone): {', '.join(self.dead)}")
        if self.excluded:
            lines.append(f"non-scalable units (never moved): {len(self.excluded)}")
        return "\n".join(lines)


def _record(obj: UnitBalance | LayerBalance) -> dict[str, Any]:
    """A record's fields as a dict (slots classes have no ``__dict__``)."""
    return {name: getattr(obj, name) for name in obj.__slots__}


def _status(problem: BalanceProblem) -> np.ndarray:
    floating, pinned = problem.grounding()
    return np.select([problem.dead_mask(), floating, pinned, problem.drifting_mask()],
                     ["dead", "floating", "pinned", "drifting"], "free")


@dataclass
class UnitArrays:
    """Per-unit ``IN``, ``OUT``, degree, relative deficit, status and free mask: what a
    :class:`DeficitReport` is made of, so the reports of independent parts can be joined.

    >>> import numpy as np
    >>> from synbal._problem.problem import BalanceProblem, CostBlock
    >>> arrays = unit_arrays(BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
    ...                                                  CostBlock(2.0, [-1], [0], [[1.0]])]))
    >>> arrays.IN.tolist(), arrays.OUT.tolist(), arrays.status.tolist()
    ([4.0], [1.0], ['free'])
    """

    IN: np.ndarray
    OUT: np.ndarray
    degree: np.ndarray
    relative: np.ndarray
    status: np.ndarray
    free: np.ndarray


def unit_arrays(problem: BalanceProblem, u: np.ndarray | None = None) -> UnitArrays:
    """The :class:`UnitArrays` of ``problem`` at log-scales ``u`` (default: the unscaled weights)."""
    u = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    IN, OUT = problem.in_out(u)
    return UnitArrays(IN, OUT, np.asarray(problem.degree, dtype=np.float64), problem.relative_deficit(u),
                      _status(problem), problem.free_mask())


def report_of(arrays: UnitArrays, names: Sequence[str], layers: list[np.ndarray], *, regularizer: str,
              regularizer_value: float, frobenius_norm: float | None = None,
              excluded: dict[str, str] | None = None) -> DeficitReport:
    """The :class:`DeficitReport` of units given by their arrays (``regularizer_value`` is ``R``)."""
    IN, OUT, c, rel, status = arrays.IN, arrays.OUT, arrays.degree, arrays.relative, arrays.status
    deficits = (IN - c * OUT) ** 2

    def unit(i: int) -> UnitBalance:
        return UnitBalance(name=names[i], IN=float(IN[i]), OUT=float(OUT[i]), degree=float(c[i]),
                           deficit=float(deficits[i]), relative_deficit=float(rel[i]), status=str(status[i]))

    free = arrays.free
    return DeficitReport(
        regularizer=regularizer,
        units=Records(IN.size, unit),
        regularizer_value=regularizer_value,
        overall_deficit=float(np.sum(deficits)),
        max_relative_deficit=float(rel[free].max()) if free.any() else 0.0,
        frobenius_norm=frobenius_norm,
        layers=_layer_balance(layers, IN, OUT, np.where(free, rel, 0.0)),
        excluded=dict(excluded or {}),
    )


def deficit_report(
    problem: BalanceProblem,
    u: np.ndarray | None = None,
    *,
    regularizer: str = "l2",
    frobenius_norm: float | None = None,
    excluded: dict[str, str] | None = None,
) -> DeficitReport:
    """Measure the balance of ``problem`` at log-scales ``u`` (default: the unscaled weights)."""
    u = np.zeros(problem.n) if u is None else np.asarray(u, dtype=np.float64)
    return report_of(unit_arrays(problem, u), problem.names or [], problem.layers or [], regularizer=regularizer,
                     regularizer_value=problem.value(u), frobenius_norm=frobenius_norm, excluded=excluded)


def label_totals(label: np.ndarray, m: int, IN: np.ndarray, OUT: np.ndarray, rel: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label ``0..m-1`` (``label[i]`` is unit ``i``'s): the count, summed IN and OUT, and the
    largest ``rel`` (0 for an empty label; ``rel`` is 0 for units that should not count).

    >>> [t.tolist() for t in label_totals(np.array([0, 1, 0]), 2, np.ones(3), np.arange(3.0), np.array([.1, .3, .2]))]
    [[2, 1], [2.0, 1.0], [2.0, 1.0], [0.2, 0.3]]
    """
    worst = np.zeros(m)
    np.maximum.at(worst, label, rel)
    return (np.bincount(label, minlength=m), np.bincount(label, IN, minlength=m), np.bincount(label, OUT, minlength=m),
            worst)


def _layer_balance(layers: list[np.ndarray], IN: np.ndarray, OUT: np.ndarray, rel: np.ndarray
                   ) -> Sequence[LayerBalance]:
    """Per layer: its size, summed IN and OUT, and the largest relative deficit of its free units
    (``rel`` is 0 for the others); one pass over all units, whatever the number of layers."""
    if not layers:
        return []
    members = np.concatenate(layers)
    layer_of = np.repeat(np.arange(len(layers)), [layer.size for layer in layers])
    sizes, ins, outs, worst = label_totals(layer_of, len(layers), IN[members], OUT[members], rel[members])

    def layer(k: int) -> LayerBalance:
        return LayerBalance(index=k, units=int(sizes[k]), IN=float(ins[k]), OUT=float(outs[k]),
                            max_relative_deficit=float(worst[k]))

    return Records(len(layers), layer)
