"""Resumable records of finished runs, so long reproductions survive interruption.

:class:`RunCache` keeps small results as JSON lines; :class:`BatchRecord` keeps batches of
array results (one ``.npz`` file per batch of runs), such as ``fig9``'s end points.

Each finished run is one JSON line ``{"key": ..., "value": ...}`` appended (and flushed to disk)
to ``OUT/NAME-runs.jsonl``. A rerun with the same output directory skips every run whose key
is already there; several processes may share the file (each line is one ``write`` of an
``O_APPEND`` file), e.g. one process per dataset. A line cut short by a crash is ignored.

>>> import tempfile, pathlib
>>> cache = RunCache(pathlib.Path(tempfile.mkdtemp()) / "demo-runs.jsonl")
>>> key = {"net": "784-256-10", "seed": 0}
>>> cache.get(key) is None
True
>>> cache.put(key, [0.1, 0.9])
>>> RunCache(cache.path).get({"seed": 0, "net": "784-256-10"})
[0.1, 0.9]
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from synbal._io import atomic_write_bytes
from synbal.experiments._report import to_jsonable

__all__ = ["BatchRecord", "RunCache"]


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


class RunCache:
    """Finished runs of one experiment, keyed by a JSON-able dict of everything that sets the result."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._done: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Read the runs other processes may have appended since."""
        self._done.clear()
        if not self.path.exists():
            return
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(entry, dict) and "key" in entry and "value" in entry:
                    self._done[entry["key"]] = entry["value"]

    def __len__(self) -> int:
        return len(self._done)

    def get(self, key: dict[str, Any]) -> Any:
        """The stored value of a finished run, or ``None``. Non-finite floats come back as ``None``."""
        return self._done.get(_canonical(key))

    def put(self, key: dict[str, Any], value: Any) -> None:
        """Record a finished run (appended as one line and flushed to disk)."""
        canonical = _canonical(key)
        line = json.dumps({"key": canonical, "value": to_jsonable(value)}, allow_nan=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self._done[canonical] = value


class BatchRecord:
    """Array results of finished runs on disk, one ``.npz`` file per batch of consecutive seeds.

    Every file carries ``fingerprint`` (of the problem and of the settings that set a run);
    files with another fingerprint are ignored and left alone, so a changed problem starts
    afresh. Files are written atomically; one that cannot be read is skipped (its runs are
    simply done again).

    >>> import tempfile, pathlib
    >>> record = BatchRecord(pathlib.Path(tempfile.mkdtemp()), "settings-a")
    >>> record.save(np.array([5, 6]), value=np.array([[1.0], [2.0]]))
    >>> found = record.load()
    >>> sorted(found), found[6]["value"].tolist()
    ([5, 6], [2.0])
    >>> BatchRecord(record.folder, "settings-b").load()
    {}
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        """Seed → that run's row of every saved array, for every recorded run."""
        found: dict[int, dict[str, np.ndarray]] = {}
        for path in sorted(self.folder.glob("runs-*.npz")):
            try:
                with np.load(path, allow_pickle=False) as data:
                    if str(data["fingerprint"]) != self.fingerprint:
                        continue
                    names = [k for k in data.files if k not in ("fingerprint", "seeds")]
                    arrays = {k: data[k] for k in names}
                    for row, seed in enumerate(data["seeds"].tolist()):
                        found[int(seed)] = {k: arrays[k][row] for k in names}
            except (OSError, ValueError, KeyError):
                continue  # a file cut short by a crash
        return found

    def save(self, seeds: np.ndarray, **arrays: np.ndarray) -> None:
        """Record the runs ``seeds`` (consecutive); row ``k`` of each array belongs to ``seeds[k]``."""
        buffer = io.BytesIO()
        contents: dict[str, Any] = {"fingerprint": np.array(self.fingerprint), "seeds": seeds, **arrays}
        np.savez(buffer, **contents)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.folder / f"runs-{int(seeds[0]):07d}-{int(seeds[-1]):07d}.npz", buffer.getvalue())
