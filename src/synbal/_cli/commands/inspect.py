"""``synbal inspect``: the per-unit balance of a network.

``synbal inspect IN.json [--reg SPEC] [--json]`` prints each scalable unit's IN and OUT cost,
degree, relative deficit and status (free, dead, …), per-layer sums for layered nets, and the
totals (regularizer, overall deficit, max relative deficit, Frobenius norm); ``--json`` prints
the same as strict JSON (non-finite numbers as ``null``, listed with their values under
``non_finite``). PyTorch model inputs go to
:func:`synbal._cli.commands.model_files.inspect_model_file`; a Hugging Face model folder (``config.json``
and safetensors shards) is measured out of core there, one component in memory at a time.
"""

from __future__ import annotations

import argparse

from synbal._adapters.graph import Graph
from synbal._cli.commands import add_model_options, add_network_arguments, input_path, is_model_input, model_support
from synbal._front import deficit
from synbal._jsonsafe import json_text
from synbal.errors import SynbalError

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

#: ``synbal --help``'s line for the command, and its ``--help`` description.
HELP = "print the per-unit balance table and totals"
DESCRIPTION = ("Measure how balanced a network is: per-unit IN/OUT costs and relative deficits "
               "|IN - c*OUT| / (IN + c*OUT), and totals.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``inspect`` subcommand's arguments (:func:`synbal._cli.main.build_parser` adds its parser)."""
    add_network_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--max-rows", type=int, default=None, help="show at most this many units in the table")
    p.add_argument("--progress", action="store_true", help="show a progress bar (a model folder: one step per shard)")
    add_model_options(p, verify=False)


def run(args: argparse.Namespace) -> int:
    """Print the balance report of the input; the exit status."""
    if args.max_rows is not None and args.max_rows < 0:
        raise SynbalError(f"--max-rows must be >= 0, got {args.max_rows}")
    if is_model_input(args):
        return int(model_support().inspect_model_file(args))
    report = deficit(Graph.load(input_path(args)), args.reg)
    if args.json:
        print(json_text(report.as_dict()), end="")
    else:
        print(report.format_table(args.max_rows))
    return 0
