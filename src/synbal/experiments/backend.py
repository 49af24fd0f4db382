"""Where the independent training runs of a grid execute: in this process, or as Ray tasks.

A grid experiment lists its runs as :class:`RunSpec` — the run record's key (everything that
sets the result) and the arguments of one pure, module-level run function — and hands them to
:func:`run_grid`, which

* takes every run already in the :class:`~synbal.experiments.cache.RunCache` from there (runs
  finished earlier, by any backend, are never redone);
* gives the others to the backend and records each result the moment it arrives, so an
  interrupted grid loses no finished run and a rerun into the same ``--out`` resumes it;
* feeds one progress bar from finished runs (recorded ones count at once);
* returns every run's value in the order of the specs.

:class:`InProcess` (the default) runs them one after the other; :class:`RayBackend` submits
them as Ray tasks to a local Ray instance it starts (``address=None``) or to an existing
cluster (``address="ray://host:10001"`` or ``"auto"``). The run function must be importable on
the workers (install the same synbal there); arguments are shipped through Ray's object store
(each distinct one once), so no data path is needed on the workers.

>>> import tempfile, pathlib
>>> from synbal.experiments.cache import RunCache
>>> cache = RunCache(pathlib.Path(tempfile.mkdtemp()) / "demo-runs.jsonl")
>>> specs = [RunSpec({"x": x}, (x,)) for x in range(3)]
>>> run_grid(abs, specs, cache, InProcess(), progress=False)
[0, 1, 2]
>>> len(cache)
3
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from synbal.errors import SynbalError

__all__ = ["Backend", "GridError", "InProcess", "RayBackend", "RunRecord", "RunSpec", "make_backend", "run_grid"]


class GridError(SynbalError):
    """Some runs of a grid failed; the finished ones are recorded and a rerun does only the rest."""


@dataclass(frozen=True)
class RunSpec:
    """One independent run: its record key and the arguments of the grid's run function."""

    key: dict[str, Any]
    args: tuple[Any, ...]


class RunRecord(Protocol):
    """Where :func:`run_grid` keeps finished runs (:class:`~synbal.experiments.cache.RunCache`, or an
    experiment's own record of array results): the value of a recorded run (``None``: not recorded),
    and recording one."""

    @property
    def path(self) -> Path: ...

    def get(self, key: dict[str, Any]) -> Any: ...

    def put(self, key: dict[str, Any], value: Any) -> None: ...


class Backend(Protocol):
    """Executes ``fn(*spec.args)`` for each spec, yielding ``(index, value)`` as runs finish
    (any order); a failed run yields ``(index, exception)``."""

    name: str

    def map(self, fn: Callable[..., Any], specs: Sequence[RunSpec]) -> Iterator[tuple[int, Any]]: ...

    def on_each_node(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """``fn(*args)`` once on every machine that runs tasks: machine → value (or the exception)."""
        ...


class InProcess:
    """Every run in this process, in order (an exception stops the grid, as before backends).

    >>> InProcess().on_each_node(max, 2, 3)
    {'this process': 3}
    """

    name = "in-process"

    def map(self, fn: Callable[..., Any], specs: Sequence[RunSpec]) -> Iterator[tuple[int, Any]]:
        for i, spec in enumerate(specs):
            yield i, fn(*spec.args)

    def on_each_node(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        return {"this process": fn(*args)}


def run_grid(fn: Callable[..., Any], specs: Sequence[RunSpec], cache: RunRecord | None,
             backend: Backend | None = None, *, progress: bool = True, desc: str = "runs") -> list[Any]:
    """Every spec's value: from the record, else computed by ``backend`` and recorded as it arrives
    (``cache=None``: nothing is recorded or reused)."""
    backend = backend or InProcess()
    values: list[Any] = [None if cache is None else cache.get(spec.key) for spec in specs]
    todo = [i for i, v in enumerate(values) if v is None]
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=desc, unit="run", disable=not progress)
    failures: list[tuple[int, BaseException]] = []
    try:
        for j, value in backend.map(fn, [specs[i] for i in todo]):
            i = todo[j]
            if isinstance(value, BaseException):
                failures.append((i, value))
                continue
            if cache is not None:
                cache.put(specs[i].key, value)
            values[i] = value
            bar.update(1)
    finally:
        bar.close()
    if failures:
        i, exc = failures[0]
        where = f"recorded in {cache.path}, rerun the same command to do the rest" if cache else "not recorded"
        raise GridError(f"{len(failures)} of {len(specs)} runs failed on the {backend.name} backend (first: "
                        f"{specs[i].key}: {type(exc).__name__}: {exc}); the {len(specs) - len(failures)} finished "
                        f"runs are {where}")
    return values


class RayBackend:
    """Runs as Ray tasks (one CPU each), on a local instance or the cluster at ``address``.

    ``num_cpus`` limits a local instance (default: all cores); ``retries`` is how often Ray
    reruns a task whose worker died (0: such a run fails the grid, the rest is recorded).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, retries: int = 3) -> None:
        try:
            import ray
        except ImportError:
            raise SynbalError("the ray backend needs Ray: pip install 'synbal[ray]'") from None
        self.ray = ray
        self.address, self.num_cpus, self.retries = address, num_cpus, retries

    def _start(self) -> bool:
        """Start or join Ray unless already connected; whether this backend started it."""
        if self.ray.is_initialized():
            return False
        # synbal draws its own progress bar; left on, Ray replaces builtins.print in this process (for
        # its own tqdm bars) the first time it relays a message from the cluster, for the process's life
        os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if self.address is None:
            options["num_cpus"] = self.num_cpus
        try:
            self.ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"join the Ray cluster at {self.address!r}" if self.address else "start a local Ray instance"
            raise SynbalError(f"cannot {where}: {exc}") from exc
        return True

    def _value(self, ref: Any) -> Any:
        """A finished task's value, or its error (reported, not raised: the grid records the others)."""
        try:
            return self.ray.get(ref)
        except (self.ray.exceptions.RayTaskError, self.ray.exceptions.RayError) as exc:
            return exc

    def on_each_node(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """``fn(*args)`` as one task pinned to each alive node with a CPU (node id → value, or the
        task's exception): a probe of what every worker machine can do, not just the first one."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started = self._start()
        ray = self.ray
        try:
            nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
            task = ray.remote(num_cpus=1, max_retries=self.retries)(fn)
            refs = {node: task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(*args) for node in nodes}
            return {node: self._value(r) for node, r in refs.items()}
        finally:
            if started:
                ray.shutdown()

    def map(self, fn: Callable[..., Any], specs: Sequence[RunSpec]) -> Iterator[tuple[int, Any]]:
        if not specs:
            return
        started = self._start()
        ray = self.ray
        try:
            task = ray.remote(num_cpus=1, max_retries=self.retries)(fn)
            stored: dict[int, Any] = {}  # each distinct non-scalar argument goes to the object store once

            def ref(a: Any) -> Any:
                if isinstance(a, (int, float, str, bool, type(None))):
                    return a
                if id(a) not in stored:
                    stored[id(a)] = ray.put(a)
                return stored[id(a)]

            pending = {task.remote(*(ref(a) for a in spec.args)): i for i, spec in enumerate(specs)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for r in done:
                    yield pending.pop(r), self._value(r)
        finally:
            if started:
                ray.shutdown()


def make_backend(name: str, address: str | None = None) -> Backend | None:
    """The backend named on the command line (``None``: in-process)."""
    if name == "inprocess":
        if address is not None:
            raise SynbalError("--address needs --backend ray")
        return None
    if name == "ray":
        return RayBackend(address)
    raise SynbalError(f"unknown backend {name!r}; choose inprocess or ray")
