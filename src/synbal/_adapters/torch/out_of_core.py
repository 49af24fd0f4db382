"""Out-of-core balancing of a Hugging Face model folder: one component in memory at a time.

:func:`balance_checkpoint` (``synbal balance MODEL_DIR -o OUT_DIR``):

1. builds the model from ``config.json`` on the ``meta`` device and discovers its groups there
   (``torch.export`` traces shapes only; discovery is the one used in memory, on the same class and
   config, so the groups are the same — no weight is materialised);
2. splits the groups into independent components (:mod:`synbal._adapters.torch.components`);
3. shard by shard: copies the tensors no group touches byte for byte (summing their costs on the
   way), then, for every component with a tensor in that shard, reads its tensors (and only
   those, one read each), solves it exactly with the regularizer used in memory, rescales the
   tensors in their own dtype and writes them at their offsets in the output shards;
4. copies the config, tokenizer and other files, and renames the output folder into place.

With ``verify=True`` (off by default: it needs the model in memory, twice in turn) the written
folder is checked before it is renamed into place: the input folder's model and the written one
are loaded with ``transformers`` one after the other and must give the same logits on fixed token
ids (:func:`~synbal._adapters.torch.apply.verify_outputs`' tolerance for the dtype: ``1e-4``
relative in float32, ``1e-8`` in float64); otherwise
:class:`~synbal.errors.VerificationError` is raised and nothing is written.

Peak memory is the largest component's tensors plus the solver's state (one decoder block), not
the model. A component larger than ``max_component_bytes`` is refused before any work (one pass
over its tensors is needed per Newton step otherwise; this is not done). The output folder is
written as a temporary folder beside ``out_dir`` and renamed at the end: it never exists half
written. ``out_dir`` must not be ``model_dir`` (nor a folder holding it), and must be absent or
empty unless ``replace=True``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from synbal._adapters.torch.apply import row_col_factors, scale_parameter, verify_outputs
from synbal._adapters.torch.checkpoint_plan import Plan, checkpoint_regularizer, piece_cost, plan_checkpoint
from synbal._adapters.torch.components import sub_discovery
from synbal._adapters.torch.extract import build_problem
from synbal._adapters.torch.hf_folder import ModelFolder, load_model, open_folder, trace_inputs
from synbal._adapters.torch.safetensors_io import ShardReader, ShardWriter
from synbal._front import _final_state
from synbal._problem.regularizers import Regularizer, RegularizerSpec
from synbal._solvers import solve
from synbal._solvers.base import SolveOptions
from synbal.errors import CheckpointError, SynbalError

__all__ = ["CheckpointReport", "balance_checkpoint", "verify_folder"]


@dataclass
class CheckpointReport:
    """What :func:`balance_checkpoint` did: groups, ``R`` before/after, deficit, and the reads it made.

    ``bytes_read / checkpoint_bytes`` is the number of times the checkpoint was read (1.0: every
    byte once); ``reads`` counts read calls.

    >>> report = CheckpointReport("model", "balanced", "l2", bytes_read=3_000, checkpoint_bytes=3_010)
    >>> round(report.checkpoint_reads, 3), report.as_dict()["regularizer"]
    (0.997, 'l2')
    """

    model_dir: str
    out_dir: str
    regularizer: str
    groups: int = 0
    components: int = 0
    regularizer_before: float = 0.0
    regularizer_after: float = 0.0
    max_relative_deficit: float = 0.0
    converged: bool = True
    tensors_read: int = 0
    bytes_read: int = 0
    reads: int = 0
    checkpoint_bytes: int = 0
    largest_component_bytes: int = 0
    discovery_seconds: float = 0.0
    balance_seconds: float = 0.0
    left_out: list[str] = field(default_factory=list)
    verified: bool = False  # the written folder's logits were checked against the input's

    @property
    def checkpoint_reads(self) -> float:
        return self.bytes_read / self.checkpoint_bytes if self.checkpoint_bytes else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "checkpoint_reads": self.checkpoint_reads}


def _check_out(root: Path, out: Path, replace: bool) -> None:
    src, dst = root.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        raise SynbalError(f"output folder {out} is the model folder or holds it; choose another path")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not replace:
        raise SynbalError(f"output folder {out} exists and is not empty; remove it or pass replace=True "
                          "(--replace on the command line)")


def _copy_fixed(file: str, folder: ModelFolder, writer: ShardWriter, reader: ShardReader, costed: dict[str, str],
                reg: Regularizer, scaled: set[str]) -> float:
    """Copy the shard's tensors that are not rescaled; the cost of those that are model parameters."""
    header, total = folder.shards[file], 0.0
    for name, entry in header.tensors.items():
        if name in scaled:
            continue
        offset = 0
        for piece in reader.pieces(header, name):
            writer.write(name, piece, offset)
            offset += len(piece)
            if name in costed:
                total += piece_cost(reg, costed[name], entry, piece)
        writer.done(name)
    return total


def _solve_part(plan: Plan, k: int, folder: ModelFolder, reader: ShardReader, writers: dict[str, ShardWriter],
                reg: Regularizer, options: SolveOptions) -> tuple[float, float, float, bool]:
    """Read, solve, rescale and write component ``k``; its ``(R before, R after, deficit, converged)``."""
    tensors = plan.read_part(folder, reader, k)
    sub = sub_discovery(plan.discovery, plan.parts[k], tensors)
    problem = build_problem(sub, reg)
    result = solve(problem, reg, "exact", options)
    final = _final_state(problem, reg, result, None)
    for name, (rf, cf) in row_col_factors(sub, final.u).items():
        scale_parameter(tensors[name], rf, cf)
    for name, tensor in tensors.items():
        writers[folder.weight_map[plan.key[name]]].write_tensor(plan.key[name], tensor)
    return final.before, final.after, final.deficit, bool(result.converged)


@contextmanager
def _staging(out: Path, replace: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``, renamed to ``out`` when the block succeeds, removed otherwise."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        old = None
        if out.exists() and (replace or (out.is_dir() and not any(out.iterdir()))):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _run(folder: ModelFolder, plan: Plan, tmp: Path, reg: Regularizer, options: SolveOptions,
         report: CheckpointReport, progress: bool) -> None:
    from tqdm.auto import tqdm

    reader = ShardReader()
    writers = {file: ShardWriter(header, tmp / file) for file, header in folder.shards.items()}
    scaled = {plan.key[n] for part in plan.parts for n in part.params}
    costed = {plan.key[n]: n for n in plan.fixed}
    pending = list(range(len(plan.parts)))
    before = after = 0.0
    with tqdm(total=len(folder.shards), unit="shard", desc="balancing shards", disable=not progress) as bar:
        for file in folder.shards:
            fixed_cost = _copy_fixed(file, folder, writers[file], reader, costed, reg, scaled)
            before, after = before + fixed_cost, after + fixed_cost
            for k in [k for k in pending if file in plan.part_shards[k]]:
                b, a, deficit, converged = _solve_part(plan, k, folder, reader, writers, reg, options)
                before, after = before + b, after + a
                report.max_relative_deficit = max(report.max_relative_deficit, deficit)
                report.converged &= converged
                pending.remove(k)
            bar.update(1)
    for writer in writers.values():
        writer.close()
    report.regularizer_before, report.regularizer_after = before, after
    report.tensors_read, report.bytes_read, report.reads = reader.tensors_read, reader.bytes_read, reader.reads


def _logits(root: Path, length: int = 8) -> list[torch.Tensor]:
    """The logits (the main output) of the folder ``root``'s model, loaded in memory, on fixed token ids."""
    model = load_model(root)
    vocab = int(getattr(model.config, "vocab_size", 2) or 2)
    ids = torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(*trace_inputs(model, length, ids))
    return [out.logits if hasattr(out, "logits") else out[0]]


def verify_folder(model_dir: Path, written: Path, where: str) -> None:
    """Raise :class:`~synbal.errors.VerificationError` unless the two folders' models give the same logits."""
    before = _logits(model_dir)
    verify_outputs(before, _logits(written), where)


def balance_checkpoint(model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], reg: RegularizerSpec = "l2",
                       *, tol: float = 1e-10, max_sweeps: int = 10_000, replace: bool = False,
                       max_component_bytes: int | None = None, progress: bool = False,
                       verify: bool = False) -> CheckpointReport:
    """Balance the Hugging Face model folder ``model_dir`` out of core into ``out_dir`` (see the module docstring).

    Bad input raises a :class:`~synbal.errors.SynbalError` (a :class:`~synbal.errors.CheckpointError`
    for the folder's own defects); ``out_dir`` then does not appear. ``transformers`` must be
    installed (``synbal[hf]``); the README shows a complete run.

    >>> import os, tempfile
    >>> from synbal.errors import CheckpointError
    >>> root = tempfile.mkdtemp()
    >>> for name, data in [("config.json", b"{}"), ("pytorch_model.bin", b"pickled")]:
    ...     with open(os.path.join(root, name), "wb") as f:
    ...         _ = f.write(data)
    >>> try:  # pickled weights are never loaded
    ...     balance_checkpoint(root, os.path.join(root + ".out"))
    ... except CheckpointError as exc:
    ...     print(str(exc).split("(")[1].split(")")[0], os.path.exists(root + ".out"))
    pytorch_model.bin False
    """
    regularizer = checkpoint_regularizer(reg)
    root, out = Path(model_dir), Path(out_dir)
    folder = open_folder(root)
    _check_out(root, out, replace)
    report = CheckpointReport(str(root), str(out), str(regularizer), checkpoint_bytes=folder.nbytes,
                              left_out=list(folder.left_out))
    start = time.perf_counter()
    plan = plan_checkpoint(folder)
    report.discovery_seconds = time.perf_counter() - start
    report.groups, report.components = plan.discovery.n, len(plan.parts)
    sizes = [plan.part_bytes(folder, k) for k in range(len(plan.parts))]
    report.largest_component_bytes = max(sizes, default=0)
    if max_component_bytes is not None and report.largest_component_bytes > max_component_bytes:
        k = int(np.argmax(sizes))
        raise CheckpointError(f"component {k} (groups {plan.discovery.names[int(plan.parts[k].groups[0])]}...) needs "
                              f"{sizes[k]} bytes of tensors in memory, over the limit of {max_component_bytes}")
    start = time.perf_counter()
    with _staging(out, replace) as tmp:
        _run(folder, plan, tmp, regularizer, SolveOptions(tol=tol, max_sweeps=max_sweeps), report, progress)
        for name in folder.other_files:
            shutil.copy2(folder.root / name, tmp / name)
        if verify:
            verify_folder(folder.root, tmp, f"written folder {out}")
            report.verified = True
    report.balance_seconds = time.perf_counter() - start
    return report
