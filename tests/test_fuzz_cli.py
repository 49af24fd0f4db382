"""The JSON graph fuzzer (``fuzz_graphs``) through the command line, against the CLI contract.

Each generated network is balanced and inspected by ``synbal`` with the case's regularizer and
method; ``cli_contract`` checks the exit status (0, 1 only for a failed function check, 2 for
bad input), exactly one stderr line on exit 1 or 2 and never a traceback or an untyped
("internal error") exception, strict-JSON reports and outputs that load. A fast subset runs by
default; ``-m slow`` runs 10,000 cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_contract import check_json_file
from fuzz_graphs import fuzz_case


def _violations(seeds: range, tmp_path: Path) -> list[str]:
    problems: list[str] = []
    for seed in seeds:
        case = fuzz_case(seed)
        path = tmp_path / f"fuzz-{seed}.json"
        path.write_text(json.dumps(case["graph"]), encoding="utf-8")
        args = ["--reg", case["reg"], "--method", case["method"], "--max-sweeps", "200"]
        problems += [f"seed {seed}: {p}" for p in check_json_file(path, strict=True, extra_args=args)]
        path.unlink()
    return problems


def test_fuzzed_graphs_keep_the_cli_contract(tmp_path: Path) -> None:
    assert _violations(range(30), tmp_path) == []


@pytest.mark.slow
def test_ten_thousand_fuzzed_graphs_keep_the_cli_contract(tmp_path: Path) -> None:
    problems = _violations(range(20_000, 30_000), tmp_path)
    assert not problems, problems[:10]
