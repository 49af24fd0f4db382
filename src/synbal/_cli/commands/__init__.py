"""Subcommands of the ``synbal`` command line (see :mod:`synbal._cli.main`).

Each command module here (``balance``, ``inspect``, ``reproduce``, ``demo``) has ``HELP`` (its line
in ``synbal --help``), ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> int`` (the exit
status); :func:`synbal._cli.main.build_parser` adds each parser and sets ``func=run``. This package
also holds what the ``balance`` and ``inspect`` commands share: telling explicit-network files from
PyTorch model inputs and the options those model inputs take (here), and what they do with PyTorch
model files (:mod:`synbal._cli.commands.model_files`, imported only when such a file is given).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

from synbal.errors import SynbalError

__all__ = [
    "EXAMPLE_PREFIX",
    "add_model_options",
    "add_network_arguments",
    "input_path",
    "is_model_input",
    "model_support",
]

#: ``synbal balance example:NAME`` reads the network ``NAME`` shipped in :mod:`synbal.examples`.
EXAMPLE_PREFIX = "example:"


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The input network file and the ``--reg`` regularizer (``balance`` and ``inspect``)."""
    parser.add_argument("input", nargs="?",
                        help="network file: NET.json (synbal.graph/1), MODEL.pt2, a Hugging Face model folder "
                        "(config.json + safetensors shards, balanced out of core), or example:NAME for a "
                        "shipped example (issue_example, recurrent_mixed, layered)")
    parser.add_argument("--reg", default="l2",
                        help="regularizer: l2, l1, l0.5, 1*l2+0.01*l1, l2,1 (l_{p,q}), ... (default l2)")


def add_model_options(parser: argparse.ArgumentParser, *, verify: bool) -> None:
    """Options for PyTorch model inputs (handled by :mod:`synbal._cli.commands.model_files`)."""
    group = parser.add_argument_group("PyTorch models (a .pt2 torch.export file, or a factory and weights)")
    group.add_argument("--factory", metavar="PKG.MODULE:FUNCTION",
                       help="a function that builds the model (its weights come from --weights); this "
                       "IMPORTS AND RUNS the named code (the working directory is searched after the "
                       "installed packages)")
    group.add_argument("--weights", metavar="W.safetensors", help="weights for --factory (safetensors)")
    group.add_argument("--example-shape", metavar="SHAPE",
                       help="shape of an example input used to trace the model, e.g. 1,3,32,32")
    group.add_argument("--trust-pickle", action="store_true",
                       help="load a .pt2 even if it holds pickled data, compiled code or code-like parts, "
                       "with torch.export.load: this RUNS CODE FROM THE FILE; use it only for files you "
                       "made yourself (without it such files are refused)")
    if verify:
        group.add_argument("--no-verify", action="store_true",
                           help="skip checking that the balanced network computes the same function")
        group.add_argument("--replace", action="store_true",
                           help="a model folder input (config.json + safetensors shards): replace an existing, "
                           "non-empty output folder (it is swapped out only once the new one is complete)")
        group.add_argument("--max-component-mb", type=float, metavar="MB",
                           help="a model folder input: refuse if one independent component's tensors exceed MB")
        group.add_argument("--verify", action="store_true",
                           help="a model folder input: load the input and the written folder in memory in turn and "
                           "check they give the same logits (off by default: the model must fit in memory)")


def is_model_input(args: argparse.Namespace) -> bool:
    """True for PyTorch model inputs: ``--factory`` given, or an input file that is not ``.json``.

    >>> is_model_input(argparse.Namespace(input="net.json", factory=None))
    False
    >>> is_model_input(argparse.Namespace(input="model.pt2", factory=None))
    True
    >>> is_model_input(argparse.Namespace(input="example:layered", factory=None))
    False
    """
    if getattr(args, "factory", None):
        return True
    if args.input is None or args.input.startswith(EXAMPLE_PREFIX):
        return False
    return Path(args.input).suffix.lower() != ".json"


def input_path(args: argparse.Namespace) -> Path:
    """The input network file; ``example:NAME`` names a network shipped in :mod:`synbal.examples`.

    >>> input_path(argparse.Namespace(input="example:layered")).name
    'layered.json'
    """
    if args.input is None:
        raise SynbalError("no input: give a network file (NET.json or MODEL.pt2) or --factory and --weights")
    if args.input.startswith(EXAMPLE_PREFIX):
        from synbal.examples import example_path

        return example_path(args.input[len(EXAMPLE_PREFIX) :])
    return Path(args.input)


def model_support() -> ModuleType:
    """:mod:`synbal._cli.commands.model_files`, or a clear error when it cannot be imported."""
    try:
        return importlib.import_module("synbal._cli.commands.model_files")
    except ImportError as exc:
        raise SynbalError(f"PyTorch model inputs are not available ({exc}); use a .json network") from None
