"""The training history: one record per epoch (and optionally per logged step), JSON and CSV.

>>> import tempfile, pathlib
>>> h = TrainingHistory()
>>> h.add(kind="epoch", epoch=0, step=0, loss=1.5)
>>> h.add(kind="epoch", epoch=1, step=10, loss=0.5, accuracy=0.9)
>>> h.column("loss")
[1.5, 0.5]
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> h.write_csv(d / "h.csv"); (d / "h.csv").read_text().splitlines()[0]
'kind,epoch,step,loss,accuracy'
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from typing import Any

from synbal._io import atomic_write_json, atomic_write_text

__all__ = ["TrainingHistory"]


@dataclass
class TrainingHistory:
    """Records (dicts of numbers) in the order they were logged, plus balancing events.

    >>> import json, pathlib, tempfile
    >>> h = TrainingHistory(settings={"lr": 0.1})
    >>> h.add(kind="epoch", epoch=0, loss=2.0); h.add(kind="step", step=5, loss=1.5)
    >>> h.add(kind="epoch", epoch=1, loss=float("nan"))
    >>> [r["epoch"] for r in h.epochs()], h.column("loss", kind="step")
    ([0, 1], [1.5])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "history.json"
    >>> h.write_json(path)
    >>> json.loads(path.read_text())["records"][2]  # NaN is written as null
    {'kind': 'epoch', 'epoch': 1, 'loss': None}
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    balance_events: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, **values: Any) -> None:
        self.records.append(dict(values))

    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch records (epoch 0 is the state before training)."""
        return [r for r in self.records if r.get("kind") == "epoch"]

    def column(self, key: str, kind: str = "epoch") -> list[float]:
        """One quantity over the records of ``kind`` (``nan`` where it was not logged)."""
        return [float(r.get(key, math.nan)) for r in self.records if r.get("kind") == kind]

    def as_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "records": self.records, "balance_events": self.balance_events}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Everything (settings, records, balancing events) as JSON; non-finite numbers → null."""
        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        atomic_write_json(path, clean(self.as_dict()))

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """The records as CSV (columns in first-seen order, empty where not logged)."""
        columns: list[str] = []
        for r in self.records:
            columns.extend(k for k in r if k not in columns)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.records)
        atomic_write_text(path, buf.getvalue())
