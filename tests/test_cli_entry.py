"""``python -m synbal`` is the command line: same output and exit status as ``synbal._cli.main``."""

from __future__ import annotations

import os
import subprocess
import sys

import synbal


def _run_module(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-m", "synbal", *argv], capture_output=True, text=True,
                          timeout=120, env=env)


def test_python_m_synbal_runs_the_cli() -> None:
    done = _run_module("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"synbal {synbal.__version__}"


def test_python_m_synbal_keeps_the_exit_status_of_bad_input() -> None:
    done = _run_module("inspect", "no-such-file.json")
    assert done.returncode == 2
    assert done.stderr.startswith("synbal: error: ") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
