"""The command line's contract, as a reusable check for tests and fuzzing (issue 17).

The contract: exit status 0, 1 or 2; with 2 (bad input) or 1 (failed function check) exactly
one stderr line ``synbal: error: ...`` and no traceback; with 1 or 2 no output written; with 0
every output valid (a balanced network that loads, strict JSON reports); never a hidden
temporary file left beside an output.

>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "bad.json").write_text('{"format": "synbal.graph/1"}')
>>> check_json_file(d / "bad.json")
[]
>>> run_cli(["inspect", str(d / "bad.json")]).code
2

``check_json_file(path)`` runs ``synbal balance`` (with ``--report``) and ``synbal inspect
--json`` on a network file and returns the list of contract violations (empty when kept);
``strict=True`` also counts ``synbal: internal error`` lines (an exception no check foresaw)
as violations. ``run_cli`` runs one command in this process (fast) or as a subprocess (what a
user sees, including warnings and logging that bypass ``sys.stderr``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synbal._cli.main import main
from synbal.errors import SynbalError

__all__ = ["CliResult", "assert_strict_json", "check_contract", "check_json_file", "run_cli"]

EXIT_CODES = (0, 1, 2)


@dataclass
class CliResult:
    """What one command-line run did: exit status (``None``: it crashed or hung), stdout, stderr."""

    argv: list[str]
    code: int | None
    stdout: str
    stderr: str


def run_cli(argv: Sequence[str], *, in_process: bool = True, timeout: float = 120.0,
            cwd: str | os.PathLike[str] | None = None) -> CliResult:
    """Run ``synbal ARGV``; an exception escaping ``main`` is recorded as ``code=None`` with its traceback."""
    args = [str(a) for a in argv]
    if not in_process:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            proc = subprocess.run([sys.executable, "-m", "synbal._cli.main", *args], capture_output=True, text=True,
                                  timeout=timeout, cwd=cwd, env=env, errors="backslashreplace")
        except subprocess.TimeoutExpired as exc:
            return CliResult(args, None, str(exc.stdout or ""), f"timed out after {timeout} s")
        return CliResult(args, proc.returncode, proc.stdout, proc.stderr)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(args)
        except BaseException:  # the contract says nothing may escape
            code = None
            err.write(traceback.format_exc())
    return CliResult(args, code, out.getvalue(), err.getvalue())


def assert_strict_json(text: str) -> Any:
    """Parse ``text`` as strict JSON (``NaN``/``Infinity`` are errors); return the value."""

    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _output_problems(path: Path, kind: str) -> list[str]:
    from synbal._adapters.graph import Graph

    if not path.exists():
        return [f"exit 0 but {path.name} was not written"]
    try:
        if kind == "graph":
            Graph.load(path)
        else:
            assert_strict_json(path.read_text(encoding="utf-8"))
    except (SynbalError, OSError, ValueError) as exc:  # unreadable, malformed or not strict JSON
        return [f"{path.name} is not a valid {kind} output: {type(exc).__name__}: {exc}"[:300]]
    return []


def check_contract(result: CliResult, outputs: dict[Path, str] | None = None, *,
                   strict: bool = False) -> list[str]:
    """Violations of the contract by ``result``; ``outputs`` maps files the run may write to a kind.

    Kinds: ``"graph"`` (must load with :meth:`synbal._adapters.graph.Graph.load`), ``"json"`` (strict JSON),
    ``"stdout-json"`` is checked on the captured standard output instead of a file.
    """
    problems: list[str] = []
    where = " ".join(result.argv[:2])
    if result.code not in EXIT_CODES:
        problems.append(f"{where}: exit status {result.code}")
    if "Traceback" in result.stderr:
        problems.append(f"{where}: traceback on stderr")
    lines = result.stderr.splitlines()
    if result.code in (1, 2):
        if len(lines) != 1 or not lines[0].startswith(("synbal: error: ", "synbal: internal error: ")):
            problems.append(f"{where}: exit {result.code} with {len(lines)} stderr lines: {result.stderr[:300]!r}")
        elif strict and lines[0].startswith("synbal: internal error"):
            problems.append(f"{where}: untyped exception: {lines[0][:300]}")
    for path, kind in (outputs or {}).items():
        if kind == "stdout-json":
            if result.code == 0:
                try:
                    assert_strict_json(result.stdout)
                except ValueError as exc:
                    problems.append(f"{where}: stdout is not strict JSON ({exc})")
        elif result.code == 0:
            problems += [f"{where}: {p}" for p in _output_problems(path, kind)]
        elif path.exists():
            problems.append(f"{where}: exit {result.code} but {path.name} was written")
        leftovers = [p.name for p in path.parent.glob(f".{path.name}.*.tmp")]
        if leftovers:
            problems.append(f"{where}: temporary files left: {leftovers}")
    return problems


def check_json_file(path: str | os.PathLike[str], *, in_process: bool = True, strict: bool = False,
                    extra_args: Sequence[str] = ()) -> list[str]:
    """Run ``balance`` and ``inspect --json`` on the network file ``path``; the contract violations."""
    with tempfile.TemporaryDirectory(prefix="synbal-contract-") as tmp:
        out, report = Path(tmp) / "out.json", Path(tmp) / "report.json"
        balanced = run_cli(["balance", str(path), "-o", str(out), "--report", str(report), *extra_args],
                           in_process=in_process)
        problems = check_contract(balanced, {out: "graph", report: "json"}, strict=strict)
        inspected = run_cli(["inspect", str(path), "--json"], in_process=in_process)
        problems += check_contract(inspected, {Path(tmp) / "stdout": "stdout-json"}, strict=strict)
    return problems
