"""``synbal inspect MODEL_DIR``: how far a checkpoint larger than memory is from balance, read out of core.

:func:`inspect_checkpoint` walks a Hugging Face model folder the way
:func:`~synbal.torch.balance_checkpoint` does (the model built on the ``meta`` device, its groups
discovered there and split into independent components; shard by shard, one component's tensors
in memory at a time, each tensor read once with plain reads) but writes nothing. Per component it
builds the balance problem of the stored tensors and measures it with the code the in-memory
report uses (:func:`synbal._problem.metrics.unit_arrays`, :func:`~synbal._problem.metrics.report_of`):
every scalable group's ``IN``/``OUT`` (float64 sums), degree, relative deficit and status, ``R``,
the overall and the largest relative deficit are those of :func:`synbal.deficit` on the loaded
model. The parameters no group touches (embeddings, ...) are read in pieces of 16 MiB only to add
their cost to ``R``; the checkpoint's other tensors are not read.

Besides every group's record (:attr:`CheckpointInspection.balance` is the in-memory
:class:`~synbal._problem.metrics.DeficitReport`), the report sums up each *layer* — the groups
whose names agree up to the index, e.g. ``model.layers.0.mlp.up_proj``: their count, summed IN and
OUT, largest and mean relative deficit of the free ones — and each component.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synbal._adapters.torch.checkpoint_plan import Plan, checkpoint_regularizer, piece_cost, plan_checkpoint
from synbal._adapters.torch.components import sub_discovery
from synbal._adapters.torch.extract import build_problem
from synbal._adapters.torch.hf_folder import ModelFolder, open_folder
from synbal._adapters.torch.safetensors_io import ShardReader
from synbal._problem.metrics import DeficitReport, UnitArrays, label_totals, report_of, unit_arrays
from synbal._problem.regularizers import Regularizer, RegularizerSpec, parse_regularizer

__all__ = ["CheckpointInspection", "ComponentBalance", "LayerSummary", "inspect_checkpoint"]


@dataclass
class LayerSummary:
    """The groups sharing one name up to their index: count, summed IN/OUT, deficits of the free ones."""

    name: str
    component: int
    groups: int
    IN: float
    OUT: float
    max_relative_deficit: float
    mean_relative_deficit: float


@dataclass
class ComponentBalance:
    """One independent component: its groups, tensors, part of ``R`` and deficits of its free groups."""

    index: int
    first_group: str
    groups: int
    tensors: int
    bytes: int
    regularizer_value: float
    max_relative_deficit: float
    mean_relative_deficit: float


def _free_stats(rel: np.ndarray, free: np.ndarray) -> tuple[float, float]:
    r = rel[free]
    return (float(r.max()), float(r.mean())) if r.size else (0.0, 0.0)


@dataclass
class CheckpointInspection:
    """What :func:`inspect_checkpoint` measured (see the module docstring).

    ``bytes_read`` equals ``touched_bytes`` (the stored bytes of the model's parameters) when every
    tensor it needs was read once; ``as_dict()`` is JSON-ready (``synbal._jsonsafe.json_text``).
    Built by hand here from one group's problem (IN 4, OUT 1):

    >>> from synbal._problem.problem import BalanceProblem, CostBlock
    >>> problem = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]), CostBlock(2.0, [-1], [0], [[1.0]])])
    >>> a = unit_arrays(problem)
    >>> report = CheckpointInspection("model", report_of(a, ["mlp[0]"], [], regularizer="l2", regularizer_value=5.0),
    ...                               a, np.array([1]), np.array([0]), [], [])
    >>> report.max_relative_deficit, report.worst_group, report.as_dict()["groups"][0]["OUT"]
    (0.6, 'mlp[0]', 1.0)
    """

    model_dir: str
    balance: DeficitReport
    arrays: UnitArrays
    sizes: np.ndarray  # neurons tied in each group
    component_of: np.ndarray  # each group's component
    layers: list[LayerSummary]
    components: list[ComponentBalance]
    untouched_regularizer_value: float = 0.0  # R's part in the parameters no group touches
    reader: ShardReader = field(default_factory=ShardReader)  # what was read: tensors, bytes, read calls
    touched_bytes: int = 0
    checkpoint_bytes: int = 0
    seconds: tuple[float, float] = (0.0, 0.0)  # discovery, then reading and measuring
    left_out: list[str] = field(default_factory=list)

    @property
    def groups(self) -> int:
        return int(self.sizes.size)

    @property
    def tensors_read(self) -> int:
        return self.reader.tensors_read

    @property
    def bytes_read(self) -> int:
        return self.reader.bytes_read

    @property
    def reads(self) -> int:
        return self.reader.reads

    @property
    def max_relative_deficit(self) -> float:
        return self.balance.max_relative_deficit

    @property
    def mean_relative_deficit(self) -> float:
        return _free_stats(self.arrays.relative, self.arrays.free)[1]

    @property
    def worst_group(self) -> str | None:
        """The free group with the largest relative deficit (``None`` without free groups)."""
        rel = np.where(self.arrays.free, self.arrays.relative, -1.0)
        return str(self.balance.units[int(np.argmax(rel))].name) if self.arrays.free.any() else None

    def totals(self) -> dict[str, Any]:
        """The checkpoint-wide numbers (those of ``as_dict()`` without the per-group lists)."""
        b = self.balance
        return {"model_dir": self.model_dir, "regularizer": b.regularizer, "regularizer_value": b.regularizer_value,
                "overall_deficit": b.overall_deficit, "max_relative_deficit": b.max_relative_deficit,
                "mean_relative_deficit": self.mean_relative_deficit, "worst_group": self.worst_group,
                "frobenius_norm": b.frobenius_norm, "groups": self.groups, "neurons": int(self.sizes.sum()),
                "free_groups": int(self.arrays.free.sum()), "layers": len(self.layers),
                "components": len(self.components), "untouched_regularizer_value": self.untouched_regularizer_value,
                "tensors_read": self.tensors_read, "bytes_read": self.bytes_read, "reads": self.reads,
                "touched_bytes": self.touched_bytes, "checkpoint_bytes": self.checkpoint_bytes,
                "discovery_seconds": self.seconds[0], "inspect_seconds": self.seconds[1],
                "left_out": list(self.left_out)}

    def as_dict(self) -> dict[str, Any]:
        """Totals, every group (name, size, degree, IN, OUT, deficit, relative deficit, status, component),
        the layers and the components, the excluded units and the dead groups."""
        groups = [{"name": u.name, "size": int(s), "degree": u.degree, "IN": u.IN, "OUT": u.OUT, "deficit": u.deficit,
                   "relative_deficit": u.relative_deficit, "status": u.status, "component": int(k)}
                  for u, s, k in zip(self.balance.units, self.sizes, self.component_of, strict=True)]
        return {"totals": self.totals(), "groups": groups, "layers": [asdict(x) for x in self.layers],
                "components": [asdict(c) for c in self.components], "excluded": dict(self.balance.excluded),
                "dead": self.balance.dead}

    def format_table(self, max_rows: int | None = None) -> str:
        """The layers and the components (at most ``max_rows`` of each), then the totals."""
        t, layers, parts = self.totals(), self.layers[:max_rows], self.components[:max_rows]
        w = max([len(x.name) for x in layers] + [len(c.first_group) for c in parts] + [12])
        lines = [f"{self.model_dir}: {t['groups']} scalable groups ({t['neurons']} neurons) in {t['layers']} layers "
                 f"and {t['components']} components, regularizer {t['regularizer']}",
                 f"{'layer':<{w}} {'comp':>5} {'groups':>6} {'IN':>12} {'OUT':>12} {'max rel.def':>12} "
                 f"{'mean rel.def':>12}"]
        lines += [f"{x.name:<{w}} {x.component:>5} {x.groups:>6} {x.IN:>12.5g} {x.OUT:>12.5g} "
                  f"{x.max_relative_deficit:>12.3e} {x.mean_relative_deficit:>12.3e}" for x in layers]
        if len(self.layers) > len(layers):
            lines.append(f"... ({len(self.layers) - len(layers)} more layers)")
        lines += ["", f"{'component':<9} {'first group':<{w}} {'groups':>6} {'MB':>9} {'R':>12} {'max rel.def':>12}"]
        lines += [f"{c.index:<9} {c.first_group:<{w}} {c.groups:>6} {c.bytes / 2**20:>9.3f} "
                  f"{c.regularizer_value:>12.5g} {c.max_relative_deficit:>12.3e}" for c in parts]
        if len(self.components) > len(parts):
            lines.append(f"... ({len(self.components) - len(parts)} more components)")
        return "\n".join([*lines, "", *self._total_lines(t)])

    def _total_lines(self, t: dict[str, Any]) -> list[str]:
        lines = [f"regularizer ({t['regularizer']}): {t['regularizer_value']:.10g} "
                 f"(of which {t['untouched_regularizer_value']:.6g} in parameters no group scales)",
                 f"overall deficit: {t['overall_deficit']:.6g}",
                 f"max relative deficit: {t['max_relative_deficit']:.3e} (group {t['worst_group']})",
                 f"mean relative deficit: {t['mean_relative_deficit']:.3e} over {t['free_groups']} free groups"]
        if t["frobenius_norm"] is not None:
            lines.append(f"Frobenius norm: {t['frobenius_norm']:.10g}")
        lines.append(f"read {t['tensors_read']} tensors, {t['bytes_read']} bytes in {t['reads']} reads (the model's "
                     f"parameters: {t['touched_bytes']} of the checkpoint's {t['checkpoint_bytes']} bytes)")
        if self.balance.dead:
            lines.append(f"dead groups (no cost, left alone): {len(self.balance.dead)}")
        if self.balance.excluded:
            lines.append(f"non-scalable unit ranges (never moved): {len(self.balance.excluded)}")
        if self.left_out:
            lines.append(f"not read (weights in other formats): {', '.join(self.left_out)}")
        return lines


@dataclass
class _Walk:
    """Per-group arrays and costs, filled one component (and one untouched tensor) at a time."""

    arrays: UnitArrays
    component_of: np.ndarray
    parts: list[ComponentBalance] = field(default_factory=list)
    value: float = 0.0  # R of the untouched parameters
    l2: float = 0.0  # their sum of squares (for the Frobenius norm)
    parts_value: float = 0.0
    parts_l2: float = 0.0


def _empty(n: int) -> _Walk:
    arrays = UnitArrays(np.zeros(n), np.zeros(n), np.ones(n), np.zeros(n), np.full(n, "free", dtype=object),
                        np.zeros(n, dtype=bool))
    return _Walk(arrays, np.full(n, -1, dtype=np.int64))


def _measure_part(plan: Plan, k: int, folder: ModelFolder, reader: ShardReader, regs: tuple[Regularizer, Regularizer],
                  walk: _Walk) -> None:
    """Read component ``k``'s tensors, measure its problem, put its groups' numbers in place."""
    part = plan.parts[k]
    tensors = plan.read_part(folder, reader, k)
    sub = sub_discovery(plan.discovery, part, tensors)
    reg, l2 = regs
    problem = build_problem(sub, reg)
    a = unit_arrays(problem)
    for name in ("IN", "OUT", "degree", "relative", "status", "free"):
        getattr(walk.arrays, name)[part.groups] = getattr(a, name)
    walk.component_of[part.groups] = k
    zero = np.zeros(problem.n)
    value = problem.value(zero)
    walk.parts_value += value
    walk.parts_l2 += value if str(reg) == str(l2) else build_problem(sub, l2).value(zero)
    worst, mean = _free_stats(a.relative, a.free)
    walk.parts.append(ComponentBalance(k, plan.discovery.names[int(part.groups[0])], int(part.groups.size),
                                       len(tensors), plan.part_bytes(folder, k), value, worst, mean))


def _walk(folder: ModelFolder, plan: Plan, reg: Regularizer, reader: ShardReader, progress: bool) -> _Walk:
    """Shard by shard: the untouched parameters' costs, then every component with a tensor in the shard."""
    from tqdm.auto import tqdm

    walk = _empty(plan.discovery.n)
    regs = (reg, parse_regularizer("l2"))
    same = str(reg) == str(regs[1])  # R is the sum of squares: the Frobenius norm needs no second pass
    costed = {plan.key[n]: n for n in plan.fixed}
    pending = list(range(len(plan.parts)))
    with tqdm(total=len(folder.shards), unit="shard", desc="inspecting shards", disable=not progress) as bar:
        for file, header in folder.shards.items():
            for key in [key for key in header.tensors if key in costed]:
                for piece in reader.pieces(header, key):
                    cost = piece_cost(reg, costed[key], header.tensors[key], piece)
                    walk.value += cost
                    walk.l2 += cost if same else piece_cost(regs[1], costed[key], header.tensors[key], piece)
            for k in [k for k in pending if file in plan.part_shards[k]]:
                _measure_part(plan, k, folder, reader, regs, walk)
                pending.remove(k)
            bar.update(1)
    walk.parts.sort(key=lambda c: c.index)
    return walk


def _layers(names: list[str], walk: _Walk) -> list[LayerSummary]:
    """The groups summed up per name without its index (``a.b[3]`` → ``a.b``), in the order first met."""
    a = walk.arrays
    codes: dict[str, int] = {}
    of = np.array([codes.setdefault(n.rsplit("[", 1)[0], len(codes)) for n in names], dtype=np.int64)
    m = len(codes)
    free_rel = np.where(a.free, a.relative, 0.0)
    count, IN, OUT, worst = label_totals(of, m, a.IN, a.OUT, free_rel)
    n_free = np.bincount(of, a.free.astype(np.float64), minlength=m)
    mean = np.divide(np.bincount(of, free_rel, minlength=m), n_free, out=np.zeros(m), where=n_free > 0)
    first = np.unique(of, return_index=True)[1]  # each layer's first group (codes are 0..m-1, in order)
    return [LayerSummary(name, int(walk.component_of[first[j]]), int(count[j]), float(IN[j]), float(OUT[j]),
                         float(worst[j]), float(mean[j])) for name, j in codes.items()]


def inspect_checkpoint(model_dir: str | os.PathLike[str], reg: RegularizerSpec = "l2", *,
                       progress: bool = False) -> CheckpointInspection:
    """Measure the balance of the Hugging Face model folder ``model_dir`` out of core (see the module docstring).

    ``reg`` is a sum of powers, as :func:`~synbal.torch.balance_checkpoint` takes (others raise
    :class:`~synbal.errors.RegularizerError`); the folder's defects raise
    :class:`~synbal.errors.CheckpointError` (the checks balancing makes). ``transformers`` must be
    installed (``synbal[hf]``); the README shows a complete run.

    >>> import os, tempfile
    >>> from synbal.errors import CheckpointError, RegularizerError
    >>> root = tempfile.mkdtemp()
    >>> for name, data in [("config.json", b"{}"), ("pytorch_model.bin", b"pickled")]:
    ...     with open(os.path.join(root, name), "wb") as f:
    ...         _ = f.write(data)
    >>> try:  # pickled weights are never loaded
    ...     inspect_checkpoint(root)
    ... except CheckpointError as exc:
    ...     print(str(exc).split("(")[1].split(")")[0])
    pytorch_model.bin
    >>> try:
    ...     inspect_checkpoint(root, "l2,1")
    ... except RegularizerError as exc:
    ...     print(str(exc).split(" (")[0])
    out-of-core balancing and inspection take sums of powers
    """
    regularizer = checkpoint_regularizer(reg)
    folder = open_folder(Path(model_dir))
    start = time.perf_counter()
    plan = plan_checkpoint(folder)
    discovery_seconds, start = time.perf_counter() - start, time.perf_counter()
    reader = ShardReader()
    walk = _walk(folder, plan, regularizer, reader, progress)
    d = plan.discovery
    names = list(d.names)
    balance = report_of(walk.arrays, names, d.layers or [], regularizer=str(regularizer),
                        regularizer_value=walk.parts_value + walk.value,
                        frobenius_norm=float(np.sqrt(walk.parts_l2 + walk.l2)), excluded=dict(d.excluded))
    touched = sum(plan.entry(folder, n).nbytes for n in d.params)
    return CheckpointInspection(
        str(model_dir), balance, walk.arrays, np.array([len(g) for g in d.groups], dtype=np.int64), walk.component_of,
        _layers(names, walk), walk.parts, walk.value, reader, touched, folder.nbytes,
        (discovery_seconds, time.perf_counter() - start), list(folder.left_out))
