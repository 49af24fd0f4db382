"""The ``synbal`` command line: ``synbal balance``, ``inspect``, ``reproduce``, ``demo``.

Each subcommand lives in a module of :mod:`synbal._cli.commands` with ``HELP``, ``DESCRIPTION``,
``add_arguments(parser)`` and ``run(args) -> int``; :func:`build_parser` registers them all. Exit
status 0 on success, 2 on bad input (one line on stderr, no traceback), 1 when a balanced network
fails its function check. Any other exception is also exit 2 with one line
(``synbal: internal error: …``); warnings (NumPy/SciPy ``RuntimeWarning``, torch's log) are kept
off stderr; SIGINT (130) and SIGTERM (143) remove partly written outputs.

>>> args = build_parser().parse_args(["balance", "net.json", "-o", "balanced.json", "--reg", "l1"])
>>> args.method, args.reg, args.tol
('exact', 'l1', 1e-10)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

from synbal import __version__
from synbal._io import Terminated
from synbal.errors import SynbalError, VerificationError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Modules of :mod:`synbal._cli.commands`, in the order ``synbal --help`` lists them.
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
        module_name = f"synbal._cli.commands.{name}"
        if importlib.util.find_spec(module_name) is None:  # a command not shipped in this build
            continue
        command = importlib.import_module(module_name)
        p = subparsers.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    try:
        text = str(exc)
    except Exception:  # e.g. a message holding an integer too long to print
        text = ""
    return " ".join(text.split()) or type(exc).__name__


def _terminate(signum: int, frame: object) -> NoReturn:
    raise Terminated


@contextlib.contextmanager
def _cli_environment() -> Iterator[None]:
    """Warnings off stderr, SIGTERM as an exception (so partial outputs are removed), for one run."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    for stream in (sys.stdout, sys.stderr):  # unit names may hold lone surrogates
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


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
    with _cli_environment():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
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
    except Terminated:
        print("synbal: terminated", file=sys.stderr)
        return 143
    except RecursionError:
        print("synbal: error: input nested too deeply", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug or an input no check foresaw: still one line, never a traceback
        print(f"synbal: internal error: {type(exc).__name__}: {_one_line(exc)[:500]}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
