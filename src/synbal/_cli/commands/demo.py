"""``synbal demo``: train the MNIST autoencoder briefly, balance it exactly, show what changed.

``synbal demo [--data DIR] [--out DIR] [--epochs N] [--seed S] [--no-progress]`` needs no
download (the embedded MNIST subset is the default), prints a balance report before and after
exact balancing, checks that the outputs are unchanged, and writes ``demo.json`` and
``demo_deficits.png`` into ``--out`` (default ``./synbal-demo``). See :mod:`synbal._cli.demo`.
"""

from __future__ import annotations

import argparse

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

#: ``synbal --help``'s line for the command, and its ``--help`` description.
HELP = "train the MNIST autoencoder briefly, balance it, show that only R changed"
DESCRIPTION = ("Train the paper's MNIST autoencoder (784-200-100-50-100-200-784, ReLU) for a "
               "few epochs on the embedded MNIST subset, print its L2 balance report, balance it exactly, "
               "check that its outputs are unchanged and that the regularizer dropped, and write a JSON "
               "of the numbers and a plot of the per-layer deficits before and after.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``demo`` subcommand's arguments (:func:`synbal._cli.main.build_parser` adds its parser)."""
    p.add_argument("--data", metavar="DIR",
                   help="directory with the four MNIST IDX .gz files (default: the embedded subset)")
    p.add_argument("--out", metavar="DIR", default="synbal-demo",
                   help="where to write demo.json and demo_deficits.png (default ./synbal-demo)")
    p.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batches (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit status (errors are raised as :class:`synbal.errors.SynbalError`)."""
    from synbal._cli.demo import DemoConfig, run_demo

    config = DemoConfig(epochs=args.epochs, seed=args.seed)
    run_demo(config, data=args.data, out_dir=args.out, progress=not args.no_progress)
    return 0
