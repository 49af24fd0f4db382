"""``synbal balance``: balance a network file and write the balanced network.

``synbal balance IN.json -o OUT.json [--reg SPEC] [--method M] [--tol T] [--max-sweeps N]
[--seed S] [--theta X] [--report R.json]`` writes the balanced graph in the same format (the
input is never overwritten; outputs are written atomically), checks on random inputs that
it computes the same function (``--no-verify`` skips this), and with ``--report`` writes a
strict JSON report (regularizer before/after, max relative deficit, convergence, sweeps, seconds,
per-sweep history; non-finite numbers as ``null``, listed under ``non_finite``). The network and
the report are written together or not at all. ``IN`` may be ``example:NAME`` for a network shipped in
:mod:`synbal.examples` (``synbal balance example:recurrent_mixed -o balanced.json``).
PyTorch model inputs (``MODEL.pt2`` or ``--factory``/``--weights``) are handled by
:func:`synbal._cli.commands.model_files.balance_model_file`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

from synbal._adapters.graph import Graph, verify_same_function
from synbal._cli.commands import add_model_options, add_network_arguments, input_path, is_model_input, model_support
from synbal._front import BalanceResult, balance
from synbal._io import atomic_write_all, ensure_not_input
from synbal._jsonsafe import json_text
from synbal._solvers import METHODS
from synbal.errors import SynbalError

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "finite_float", "run"]

#: ``synbal --help``'s line for the command, and its ``--help`` description.
HELP = "balance a network and write the balanced copy"
DESCRIPTION = ("Rescale every scalable hidden unit so that the network is balanced for the "
               "regularizer (its unique minimum over rescalings); the network's function is unchanged.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``balance`` subcommand's arguments (:func:`synbal._cli.main.build_parser` adds its parser)."""
    add_network_arguments(p)
    p.add_argument("-o", "--output", required=True, help="where to write the balanced network")
    p.add_argument("--method", default="exact",
                   help=f"one of {', '.join(sorted(METHODS))} (default exact)")
    p.add_argument("--tol", type=finite_float, default=1e-10, help="target max relative deficit (default 1e-10)")
    p.add_argument("--max-sweeps", type=int, default=10_000, help="sweep budget (default 10000)")
    p.add_argument("--seed", type=int, default=None, help="seed of random schedules")
    p.add_argument("--theta", type=finite_float, default=1.0, help="partial-step exponent in (0, 1] (default 1)")
    p.add_argument("--sets", metavar="A,B;C,D",
                   help="unit groups of method tied, e.g. 'h0,h1;h2,h3' (default: the layers)")
    p.add_argument("--closed-form", action="store_true",
                   help="method tied on a bias-free layered BiLU net: the Appendix-B closed form")
    p.add_argument("--report", metavar="R.json", help="write a JSON report here")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    add_model_options(p, verify=True)


def finite_float(text: str) -> float:
    """An option's value as a finite float (``nan``, ``inf`` are usage errors).

    >>> finite_float("1e-8")
    1e-08
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Balance the input, write the outputs, print a summary; the exit status."""
    model = is_model_input(args)
    source = None if model else input_path(args)
    protected = [str(x) for x in (source or args.input, args.weights) if x]
    ensure_not_input(args.output, *protected)
    if args.report:
        ensure_not_input(args.report, *protected, args.output)
    if source is None:
        return int(model_support().balance_model_file(args, sets=_parse_sets(args.sets), closed_form=args.closed_form))
    graph = Graph.load(source)
    result = balance(
        graph,
        args.reg,
        args.method,
        tol=args.tol,
        max_sweeps=args.max_sweeps,
        seed=args.seed,
        theta=args.theta,
        progress=args.progress,
        sets=_parse_sets(args.sets),
        closed_form=args.closed_form,
    )
    gap = None if args.no_verify else verify_same_function(graph, result.net)
    outputs = [(args.output, result.net.to_json())]
    if args.report:
        report = result.report()
        report.update(input=str(source), output=str(args.output), verified=_verified(args, gap),
                      function_gap=gap, scales=result.scales)
        outputs.append((args.report, json_text(report)))
    atomic_write_all([(path, _writer(text)) for path, text in outputs])  # both files, or neither
    print(summary(result, args.input, str(args.output), _verified(args, gap), gap))
    return 0


def _writer(text: str) -> Callable[[Path], object]:
    return lambda tmp: tmp.write_bytes(text.encode("utf-8"))


def _parse_sets(spec: str | None) -> list[list[str]] | None:
    """``"a,b;c"`` → ``[["a", "b"], ["c"]]``."""
    if spec is None:
        return None
    groups = [[name.strip() for name in group.split(",") if name.strip()] for group in spec.split(";")]
    if not all(groups):
        raise SynbalError(f"--sets {spec!r}: every group needs at least one unit name")
    return groups


def _verified(args: argparse.Namespace, gap: float | None) -> str:
    if args.no_verify:
        return "skipped"
    return "no (outputs overflow)" if gap is None else "yes"


def summary(result: BalanceResult, source: str, target: str, verified: str, gap: float | None) -> str:
    """A few lines on what balancing did."""
    before, after = result.regularizer_before, result.regularizer_after
    change = f" ({100.0 * (after - before) / before:+.2f}%)" if before > 0 else ""
    status = "converged" if result.converged else "NOT converged"
    lines = [
        f"balanced {source} -> {target}: {result.problem.n} scalable units, method {result.method}, "
        f"regularizer {result.regularizer}",
        f"  regularizer {before:.10g} -> {after:.10g}{change}",
        f"  max relative deficit {result.max_relative_deficit:.3e}: {status} after {result.sweeps} sweeps "
        f"in {result.seconds:.3g} s",
    ]
    if verified == "yes" and gap is not None:
        lines.append(f"  same function on random inputs (max relative difference {gap:.2e})")
    elif verified != "skipped":
        lines.append("  function not checked: outputs overflow on random inputs")
    dead = [name for name, d in zip(result.problem.names or [], result.problem.dead_mask(), strict=True) if d]
    if dead:
        lines.append(f"  dead units left alone (no incoming or no outgoing cost): {', '.join(dead)}")
    if result.excluded:
        lines.append(f"  non-scalable hidden units left unchanged: {', '.join(result.excluded)}")
    lines.extend(f"  {note}" for note in result.notes)
    return "\n".join(lines)
