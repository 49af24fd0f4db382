"""The ``synbal`` command line: ``synbal balance``, ``inspect``, ``reproduce``, ``demo``.

Each subcommand lives in a module of :mod:`synbal.commands` with ``register(subparsers)`` and
``run(args) -> int``. Exit status 0 on success, 2 on bad input (one line on stderr, no
traceback), 1 when a balanced network fails its function check.

>>> args = build_parser().parse_args(["balance", "net.json", "-o", "balanced.json", "--reg", "l1"])
>>> args.method, args.reg, args.tol
('exact', 'l1', 1e-10)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from synbal import __version__
from synbal.errors import SynbalError, VerificationError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Modules of :mod:`synbal.commands`, in the order ``synbal --help`` lists them.
COMMANDS = ("balance", "inspect", "reproduce", "demo")

EXIT_BAD_INPUT = 2
EXIT_FAILED_CHECK = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"synbal: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every available subcommand registered."""
    parser = _Parser(
        prog="synbal",
        description="Neural synaptic balance: balance networks of BiLU/BiPU units for any additive "
        "regularizer, inspect their balance, and reproduce the papers' simulations.",
    )
    parser.add_argument("--version", action="version", version=f"synbal {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"synbal.commands.{name}"
        if importlib.util.find_spec(module_name) is None:  # a command not shipped in this build
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except VerificationError as exc:
        print(f"synbal: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED_CHECK
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail too
        return 0
    except (SynbalError, OSError) as exc:
        print(f"synbal: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("synbal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
