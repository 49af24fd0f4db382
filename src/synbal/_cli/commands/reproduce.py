"""``synbal reproduce``: rerun one of the papers' simulations.

``synbal reproduce NAME [--data PATH] [--out DIR] [--quick] [--seeds N] [--set KEY=VALUE ...]
[--no-progress] [--backend inprocess|ray [--address ADDR]]`` runs
:func:`synbal.experiments.run_experiment`, which writes ``NAME.json`` (every number and
setting), ``NAME.md`` (a summary) and ``NAME_*.png`` plots into ``DIR``;
``synbal reproduce --list`` lists the experiments, the claim each one checks and its options.
``--set`` passes an experiment's own options (an unknown one is an error); VALUE is read as
JSON when it parses, else taken as a string:

>>> parse_setting('datasets=["MNIST"]'), parse_setting("epochs=5"), parse_setting("fashion=/data/f")
(('datasets', ['MNIST']), ('epochs', 5), ('fashion', '/data/f'))
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synbal.errors import SynbalError
from synbal.experiments import EXPERIMENTS, ExperimentContext, experiment_options, run_experiment
from synbal.experiments.backend import make_backend

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "parse_setting", "run"]

#: ``synbal --help``'s line for the command, and its ``--help`` description.
HELP = "rerun a figure or claim of the papers (writes JSON, markdown and plots)"
DESCRIPTION = ("Reproduce one of the papers' simulations; see --list.")


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → ``(KEY, VALUE)``, VALUE decoded as JSON when it is valid JSON."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise SynbalError(f"--set: expected KEY=VALUE, got {text!r}")
    try:
        value: object = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``reproduce`` subcommand's arguments (:func:`synbal._cli.main.build_parser` adds its parser)."""
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--data", type=Path, help="path to the real data set (default: embedded data)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: results)")
    p.add_argument("--quick", action="store_true", help="the few-minute variant")
    p.add_argument("--seeds", type=int, help="number of seeds (default: the experiment's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an experiment's own option (repeatable; VALUE is JSON or a string)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess",
                   help="where a grid's independent training runs execute (default: inprocess; ray needs "
                        "synbal[ray])")
    p.add_argument("--address", help="with --backend ray: the cluster to join (ray://HOST:10001 or auto; "
                                      "default: start a local Ray instance)")


def run(args: argparse.Namespace) -> int:
    """List or run an experiment; the exit status."""
    if args.list:
        if not EXPERIMENTS:
            print("no experiments are registered")
        for name, entry in sorted(EXPERIMENTS.items()):
            print(f"{name:<20} {entry.claim}")
            for option, meaning in sorted(experiment_options(name).items()):
                print(f"{'':<22}--set {option}=...  {meaning}")
        return 0
    if not args.name:
        raise SynbalError("name an experiment to run (see 'synbal reproduce --list')")
    if args.name not in EXPERIMENTS:
        known = ", ".join(sorted(EXPERIMENTS)) or "none"
        raise SynbalError(f"unknown experiment {args.name!r}; available: {known}")
    if args.seeds is not None and args.seeds < 1:
        raise SynbalError(f"--seeds must be at least 1, got {args.seeds}")
    if args.data is not None and not args.data.exists():
        raise SynbalError(f"--data: {str(args.data)!r} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise SynbalError(f"--out: {str(args.out)!r} exists and is not a directory")
    extra = dict(parse_setting(item) for item in args.set)
    backend = make_backend(args.backend, args.address)
    ctx = ExperimentContext(out_dir=args.out, quick=args.quick, seeds=args.seeds, data=args.data,
                            progress=not args.no_progress, extra=extra, backend=backend)
    run_experiment(args.name, ctx)
    written = sorted(p.name for p in args.out.glob(f"{args.name}*") if p.is_file())
    print(f"{args.name}: wrote {', '.join(written) or 'nothing'} to {args.out}")
    return 0
