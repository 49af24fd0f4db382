"""The contract checker itself: it flags every kind of violation (so fuzzing with it can fail)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_contract import CliResult, assert_strict_json, check_contract, check_json_file, run_cli
from synbal.examples import example_path

ARGV = ["balance", "net.json"]


def _result(code: int | None, stderr: str = "", stdout: str = "") -> CliResult:
    return CliResult(ARGV, code, stdout, stderr)


@pytest.mark.parametrize(("result", "flag"), [
    (_result(3, "synbal: error: x\n"), "exit status 3"),
    (_result(None, "Traceback (most recent call last):\n"), "exit status None"),
    (_result(2, "Traceback (most recent call last):\n  ...\nValueError: x\n"), "traceback"),
    (_result(2, "synbal: error: one\nsynbal: error: two\n"), "2 stderr lines"),
    (_result(2, "RuntimeWarning: overflow\nsynbal: error: x\n"), "2 stderr lines"),
    (_result(2, ""), "0 stderr lines"),
    (_result(1, "oops\n"), "1 stderr lines"),
])
def test_violations_are_flagged(result: CliResult, flag: str) -> None:
    problems = check_contract(result)
    assert problems and flag in problems[0]


def test_kept_contracts_pass() -> None:
    assert check_contract(_result(2, "synbal: error: bad input\n")) == []
    assert check_contract(_result(1, "synbal: error: function changed\n")) == []
    assert check_contract(_result(0, "", "fine\n")) == []
    assert check_contract(_result(2, "synbal: internal error: TypeError: x\n")) == []
    assert "untyped" in check_contract(_result(2, "synbal: internal error: TypeError: x\n"), strict=True)[0]


def test_outputs_are_checked(tmp_path: Path) -> None:
    graph, report = tmp_path / "out.json", tmp_path / "r.json"
    outputs = {graph: "graph", report: "json"}
    assert any("not written" in p for p in check_contract(_result(0), outputs))
    graph.write_text('{"format": "synbal.graph/1"}')
    report.write_text('{"R": Infinity}')
    problems = check_contract(_result(0), outputs)
    assert any("out.json is not a valid graph" in p for p in problems)
    assert any("r.json is not a valid json" in p for p in problems)
    assert any("was written" in p for p in check_contract(_result(2, "synbal: error: x\n"), outputs))
    graph.unlink()
    report.unlink()
    (tmp_path / ".out.json.abc.tmp").write_text("")
    assert any("temporary files left" in p for p in check_contract(_result(2, "synbal: error: x\n"), outputs))
    stdout = {tmp_path / "stdout": "stdout-json"}
    assert check_contract(_result(0, "", '{"a": NaN}'), stdout)
    assert check_contract(_result(0, "", '{"a": null}'), stdout) == []


def test_strict_json_parser() -> None:
    assert assert_strict_json('{"a": [1, null]}') == {"a": [1, None]}
    for text in ('{"a": NaN}', "[Infinity]", "-Infinity"):
        with pytest.raises(ValueError, match="not strict JSON"):
            assert_strict_json(text)


def test_a_valid_network_keeps_the_contract_in_process_and_as_a_process(tmp_path: Path) -> None:
    net = tmp_path / "net.json"
    net.write_text(example_path("recurrent_mixed").read_text())
    assert check_json_file(net, strict=True) == []
    result = run_cli(["inspect", str(net), "--json"], in_process=False)
    assert result.code == 0 and result.stderr == "" and json.loads(result.stdout)


def test_an_escaping_exception_is_recorded(monkeypatch) -> None:
    import synbal._cli.main

    def explode(argv):
        raise SystemExit("boom")

    monkeypatch.setattr(synbal._cli.main, "main", explode)
    import cli_contract

    monkeypatch.setattr(cli_contract, "main", explode)
    result = run_cli(["inspect", "x.json"])
    assert result.code is None and "SystemExit" in result.stderr
    assert check_contract(result)
