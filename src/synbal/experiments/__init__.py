"""Reproductions of the papers' simulations: ``synbal reproduce NAME``.

Each experiment is a module with ``run(ctx: ExperimentContext) -> dict`` that writes PNG plots,
a JSON file with every number and setting, and a markdown summary into ``ctx.out_dir`` (see
:mod:`synbal.experiments.report`), and optionally ``OPTIONS``: the ``ctx.extra`` keys it reads
(``--set KEY=VALUE``) with a description each. ``EXPERIMENTS`` maps names to
``(module, one-line claim)``; modules are imported only when run.

>>> import pathlib, tempfile
>>> ctx = ExperimentContext(out_dir=pathlib.Path(tempfile.mkdtemp()), extra={"epoch": 3})
>>> run_experiment("fig7", ctx)
Traceback (most recent call last):
...
synbal.errors.SynbalError: fig7 has no option 'epoch'; its options: epochs, seeds, threads, train_size
"""

from __future__ import annotations

import importlib
from typing import Any

from synbal.errors import SynbalError
from synbal.experiments.report import ExperimentContext

__all__ = ["EXPERIMENTS", "GRIDS", "ExperimentContext", "experiment_options", "run_experiment"]

#: Experiments whose independent runs go through :func:`synbal.experiments.backend.run_grid`, so any
#: backend may run them (``synbal reproduce NAME --backend ray``).
GRIDS = ("fig7", "fig7-lc", "fig8", "fig8-lc", "speed")

EXPERIMENTS: dict[str, tuple[str, str]] = {}
EXPERIMENTS["saul"] = ("synbal.experiments.saul", "parallel multiplicative updates minimise l_{p,q} monotonically")
EXPERIMENTS["lnn"] = ("synbal.experiments.lnn", "linear nets conserve W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}; ReLU breaks it")
EXPERIMENTS["lnn-relu"] = ("synbal.experiments.lnn_relu", "7-layer ReLU MLP on MNIST: layer norms, Conjecture 4")
EXPERIMENTS["fig9"] = ("synbal.experiments.fig9", "1,000 random orders of stochastic balancing: one balanced state")
EXPERIMENTS["fig9-lc"] = ("synbal.experiments.fig9_lc", "the same on the locally connected CIFAR-10 net")
EXPERIMENTS["fig7"] = ("synbal.experiments.fig7", "MNIST autoencoder: only SGD on E + R (L2, L1) converges to balance")
EXPERIMENTS["fig8"] = ("synbal.experiments.fig8", "balanced start: a finite learning rate loses balance without R")
EXPERIMENTS["fig7-lc"] = ("synbal.experiments.fig7_lc", "fig7 on the locally connected CIFAR-10 net (or a stand-in)")
EXPERIMENTS["fig8-lc"] = ("synbal.experiments.fig8_lc", "fig8 on the locally connected CIFAR-10 net (or a stand-in)")
EXPERIMENTS["uniqueness"] = ("synbal.experiments.uniqueness",
                             "random orders on non-layered, recurrent, mixed, BiPU graphs (L1, L0.5, L2): one state")
EXPERIMENTS["diagnostic"] = ("synbal.experiments.diagnostic",
                             "on E + βR the deficit falls as training converges and flags an unconverged run")
EXPERIMENTS["appendixb"] = ("synbal.experiments.appendixb",
                            "Appendix B closed form for tied layer balancing: printed eq. 12.7 vs corrected")
EXPERIMENTS["speed"] = ("synbal.experiments.speed", "balancing at start / every epoch vs not: accuracy and speed")
EXPERIMENTS["speed2"] = ("synbal.experiments.speed2",
                         "speed v2: AAAI recipe literally, tuned lr, long horizon; paired decision rules")
EXPERIMENTS["quant"] = ("synbal.experiments.quant", "range balancing vs cross-layer equalization for quantization")


def run_experiment(name: str, ctx: ExperimentContext) -> dict[str, Any]:
    """Run the experiment ``name`` and return its results dictionary."""
    if name not in EXPERIMENTS:
        available = ", ".join(sorted(EXPERIMENTS)) or "none"
        raise SynbalError(f"unknown experiment {name!r}; available: {available}")
    module = importlib.import_module(EXPERIMENTS[name][0])
    options = experiment_options(name)
    unknown = sorted(set(ctx.extra) - set(options))
    if unknown:
        listed = ", ".join(sorted(options)) or "none"
        raise SynbalError(f"{name} has no option {', '.join(map(repr, unknown))}; its options: {listed}")
    if ctx.backend is not None and name not in GRIDS:
        raise SynbalError(f"{name} does not run on the {ctx.backend.name} backend (its runs are not split into "
                          f"independent tasks); grids that do: {', '.join(GRIDS)}")
    result: dict[str, Any] = module.run(ctx)
    return result


def experiment_options(name: str) -> dict[str, str]:
    """The ``--set`` options of experiment ``name`` (option → description)."""
    module = importlib.import_module(EXPERIMENTS[name][0])
    return dict(getattr(module, "OPTIONS", {}))
