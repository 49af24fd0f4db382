"""Shared output of the reproductions: plots with mean ± 1 std shading, JSON, markdown.

>>> import numpy as np, tempfile, pathlib
>>> ctx = ExperimentContext(out_dir=pathlib.Path(tempfile.mkdtemp()), quick=True)
>>> fig, ax = new_figure()
>>> plot_mean_std(ax, np.arange(3), np.array([[1.0, 2, 3], [1.2, 2.1, 2.9]]), label="run")
>>> paths = write_outputs(ctx, "demo", results={"x": [1, 2]}, settings={"lr": 0.1},
...                       summary_md="# demo", figures={"curve": fig})
>>> sorted(p.name for p in paths)
['demo.json', 'demo.md', 'demo_curve.png']
"""

from __future__ import annotations

import io
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synbal._io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["ExperimentContext", "environment", "new_figure", "plot_mean_std", "table_head", "to_jsonable",
           "write_outputs"]


@dataclass
class ExperimentContext:
    """Where and how an experiment runs.

    ``data`` is a user path to real data (``None``: the embedded default or a stated stand-in),
    ``quick`` selects the few-minute variant, ``seeds`` overrides the number of seeds, and
    ``extra`` holds the experiment's own options (``--set KEY=VALUE``). Grid experiments
    (:data:`synbal.experiments.GRIDS`) run their independent runs on ``backend``.

    >>> ctx = ExperimentContext(out_dir=Path("out"), quick=True)
    >>> ctx.n_seeds(full=5, quick=2), ExperimentContext(Path("out"), seeds=7).n_seeds(full=5, quick=2)
    (2, 7)
    """

    out_dir: Path
    quick: bool = False
    seeds: int | None = None
    data: Path | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    #: where a grid's independent runs execute (:mod:`synbal.experiments.backend`; ``None``: in-process)
    backend: Any = None

    def n_seeds(self, full: int, quick: int) -> int:
        """The number of seeds to use: the user's choice, else ``quick`` or ``full``."""
        if self.seeds is not None:
            return self.seeds
        return quick if self.quick else full


def environment() -> dict[str, str]:
    """Versions of what produced a result (recorded in every JSON)."""
    import numpy
    import scipy
    import torch

    from synbal import __version__

    return {
        "synbal": __version__,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def table_head(*cells: str) -> list[str]:
    """The first two lines of a markdown table with these column titles.

    >>> table_head("net", "ratio")
    ['| net | ratio |', '|---|---|']
    """
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (5.0, 3.6)) -> tuple[Any, Any]:
    """A matplotlib figure on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=True)
    return fig, axes


def plot_mean_std(ax: Any, x: np.ndarray, runs: np.ndarray, *, label: str, color: str | None = None,
                  logy: bool = False) -> None:
    """Plot the mean over runs (rows) with a ±1 std shaded band, the paper's style."""
    runs = np.atleast_2d(np.asarray(runs, dtype=np.float64))
    mean = runs.mean(axis=0)
    std = runs.std(axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color)
    lo = mean - std
    if logy:
        lo = np.maximum(lo, mean * 1e-3)
        ax.set_yscale("log")
    ax.fill_between(x, lo, mean + std, color=line.get_color(), alpha=0.25, linewidth=0)


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones, tuples as lists and non-finite floats as ``None``."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_outputs(
    ctx: ExperimentContext,
    name: str,
    *,
    results: dict[str, Any],
    settings: dict[str, Any],
    summary_md: str,
    figures: dict[str, Any],
) -> list[Path]:
    """Write ``NAME.json`` (results, settings, versions), ``NAME.md`` and ``NAME_KEY.png``.

    Every file is written atomically; non-finite floats become ``null`` in the JSON.
    """
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    payload = {
        "experiment": name,
        "quick": ctx.quick,
        "settings": settings,
        "environment": environment(),
        "results": results,
    }
    json_path = ctx.out_dir / f"{name}.json"
    atomic_write_json(json_path, to_jsonable(payload))
    paths.append(json_path)
    md_path = ctx.out_dir / f"{name}.md"
    atomic_write_text(md_path, summary_md.rstrip() + "\n")
    paths.append(md_path)
    for key, fig in figures.items():
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=120)
        png = ctx.out_dir / f"{name}_{key}.png"
        atomic_write_bytes(png, buf.getvalue())
        paths.append(png)
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
