"""Reproductions of the papers' simulations: ``synbal reproduce NAME``.

Each experiment is a function ``run(ctx: ExperimentContext) -> dict`` that writes PNG plots, a
JSON file with every number and setting, and a markdown summary into ``ctx.out_dir``, and may
read options from ``ctx.extra`` (``--set KEY=VALUE``). :data:`EXPERIMENTS` maps each name to an
:class:`Experiment`: where its function is, the claim it checks, and where its options are
described (option → description). Modules are imported only when an experiment is run or its
options are asked for.

>>> import pathlib, tempfile
>>> ctx = ExperimentContext(out_dir=pathlib.Path(tempfile.mkdtemp()), extra={"epoch": 3})
>>> run_experiment("fig7", ctx)
Traceback (most recent call last):
...
synbal.errors.SynbalError: fig7 has no option 'epoch'; its options: epochs, seeds, threads, train_size
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

from synbal.errors import SynbalError
from synbal.experiments._report import ExperimentContext

__all__ = ["EXPERIMENTS", "GRIDS", "Experiment", "ExperimentContext", "experiment_options", "run_experiment"]

#: Experiments whose independent runs go through :func:`synbal.experiments.backend.run_grid`, so any
#: backend may run them (``synbal reproduce NAME --backend ray``).
GRIDS = ("fig7", "fig7-lc", "fig8", "fig8-lc", "fig9", "fig9-lc", "quant", "speed")


def _resolve(reference: str) -> Any:
    """The object named by ``"package.module:name"`` (the module is imported now)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


class Experiment(NamedTuple):
    """One registered experiment: its function, the claim it checks, and its ``--set`` options.

    ``function`` and ``options`` are ``"module:name"`` references, resolved only when needed;
    ``options`` is empty for an experiment that takes none.

    >>> entry = Experiment("synbal.experiments._lc:run_fig7_lc", "fig7 on the LC net",
    ...                    "synbal.experiments._lc:OPTIONS")
    >>> entry.load().__name__, sorted(entry.option_table())[:2]
    ('run_fig7_lc', ['epochs', 'seeds'])
    """

    function: str
    claim: str
    options: str = ""

    def load(self) -> Callable[[ExperimentContext], dict[str, Any]]:
        """The experiment's function (its module is imported now)."""
        function: Callable[[ExperimentContext], dict[str, Any]] = _resolve(self.function)
        return function

    def option_table(self) -> dict[str, str]:
        """Its ``--set`` options: option → description."""
        return dict(_resolve(self.options)) if self.options else {}


_PKG = "synbal.experiments"
EXPERIMENTS: dict[str, Experiment] = {
    "saul": Experiment(f"{_PKG}._saul:run", "parallel multiplicative updates minimise l_{p,q} monotonically"),
    "lnn": Experiment(f"{_PKG}._lnn:run", "linear nets conserve W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}; ReLU breaks it"),
    "lnn-relu": Experiment(f"{_PKG}._lnn_relu:run", "7-layer ReLU MLP on MNIST: layer norms, Conjecture 4"),
    "fig9": Experiment(f"{_PKG}._fig9:run", "1,000 random orders of stochastic balancing: one balanced state"),
    "fig9-lc": Experiment(f"{_PKG}._fig9:run_lc", "the same on the locally connected CIFAR-10 net"),
    "fig7": Experiment(f"{_PKG}._fig7:run", "MNIST autoencoder: only SGD on E + R (L2, L1) converges to balance",
                       f"{_PKG}._fig7:OPTIONS"),
    "fig8": Experiment(f"{_PKG}._fig8:run", "balanced start: a finite learning rate loses balance without R",
                       f"{_PKG}._fig8:OPTIONS"),
    "fig7-lc": Experiment(f"{_PKG}._lc:run_fig7_lc", "fig7 on the locally connected CIFAR-10 net (or a stand-in)",
                          f"{_PKG}._lc:OPTIONS"),
    "fig8-lc": Experiment(f"{_PKG}._lc:run_fig8_lc", "fig8 on the locally connected CIFAR-10 net (or a stand-in)",
                          f"{_PKG}._lc:OPTIONS"),
    "uniqueness": Experiment(f"{_PKG}._uniqueness:run", "random orders on non-layered, recurrent, mixed, BiPU "
                             "graphs (L1, L0.5, L2): one state", f"{_PKG}._uniqueness:OPTIONS"),
    "diagnostic": Experiment(f"{_PKG}._diagnostic:run", "on E + βR the deficit falls as training converges and "
                             "flags an unconverged run", f"{_PKG}._diagnostic:OPTIONS"),
    "appendixb": Experiment(f"{_PKG}._appendixb:run", "Appendix B closed form for tied layer balancing: printed "
                            "eq. 12.7 vs corrected", f"{_PKG}._appendixb:OPTIONS"),
    "speed": Experiment(f"{_PKG}._speed:run", "balancing at start / every epoch vs not: accuracy and speed",
                        f"{_PKG}._speed:OPTIONS"),
    "speed2": Experiment(f"{_PKG}._speed2:run", "speed v2: AAAI recipe literally, tuned lr, long horizon; paired "
                         "decision rules", f"{_PKG}._speed2:OPTIONS"),
    "quant": Experiment(f"{_PKG}._quant:run", "range balancing vs cross-layer equalization for quantization",
                        f"{_PKG}._quant:OPTIONS"),
}


def _entry(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        available = ", ".join(sorted(EXPERIMENTS)) or "none"
        raise SynbalError(f"unknown experiment {name!r}; available: {available}")
    return EXPERIMENTS[name]


def run_experiment(name: str, ctx: ExperimentContext) -> dict[str, Any]:
    """Run the experiment ``name`` and return its results dictionary.

    An unknown name or option is a :class:`~synbal.errors.SynbalError` before anything runs:

    >>> import pathlib, tempfile
    >>> run_experiment("fig10", ExperimentContext(out_dir=pathlib.Path(tempfile.mkdtemp())))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.SynbalError: unknown experiment 'fig10'; available: appendixb, diagnostic, fig7, ...
    """
    entry = _entry(name)
    options = entry.option_table()
    unknown = sorted(set(ctx.extra) - set(options))
    if unknown:
        listed = ", ".join(sorted(options)) or "none"
        raise SynbalError(f"{name} has no option {', '.join(map(repr, unknown))}; its options: {listed}")
    if ctx.backend is not None and name not in GRIDS:
        raise SynbalError(f"{name} does not run on the {ctx.backend.name} backend (its runs are not split into "
                          f"independent tasks); grids that do: {', '.join(GRIDS)}")
    return entry.load()(ctx)


def experiment_options(name: str) -> dict[str, str]:
    """The ``--set`` options of experiment ``name`` (option → description).

    >>> experiment_options("appendixb")
    {'nets': 'number of random layered nets'}
    >>> experiment_options("fig9")
    {}
    """
    return _entry(name).option_table()
