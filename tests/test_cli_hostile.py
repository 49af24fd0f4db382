"""Hostile inputs to the command line: one typed line and exit 2, never a traceback (issue 17)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import synbal._cli.commands.balance as balance_command
from cli_contract import assert_strict_json, run_cli
from synbal._adapters.graph import Graph
from synbal._io import PAUSE_ENV, atomic_write_text
from synbal.data._idx import read_idx
from synbal.errors import ActivationError, DataError, GraphFormatError, InvalidWeightError
from test_graph_errors import BASE

HUGE = "1" + "0" * 400  # 10**400: beyond float64


def _doc(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return doc


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


# Each case: the JSON text of a network and what its one error line must say.
HOSTILE_TEXTS = {
    "weight 10**400": (json.dumps(BASE).replace("0.5]", HUGE + "]", 1), "beyond the float64 range"),
    "4301-digit integer": (json.dumps(BASE).replace("0.5]", "7" * 4301 + "]", 1), "4301 digits"),
    "nested 100,000 deep": (_deep(100_000), "nested deeper"),
    "extra field 900 deep": (json.dumps(_doc()).replace("{", '{"x": ' + _deep(900) + ", ", 1), "nested deeper"),
    "activation parameter 10**400": (
        json.dumps(BASE).replace('"c": 2.0', f'"c": {HUGE}'), "beyond the float64 range"),
    "NaN in an unknown field": (json.dumps(_doc(note={"x": float("nan")})), "field 'note'"),
    "Infinity in a unit's unknown field": (
        json.dumps(BASE).replace('"role": "input"}', '"role": "input", "tag": Infinity}', 1), "field 'tag'"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TEXTS))
def test_hostile_json_is_one_typed_line(tmp_path: Path, case: str) -> None:
    text, expected = HOSTILE_TEXTS[case]
    net, out = tmp_path / "net.json", tmp_path / "out.json"
    net.write_text(text)
    for argv in (["balance", str(net), "-o", str(out)], ["inspect", str(net)], ["inspect", str(net), "--json"]):
        result = run_cli(argv, in_process=True)
        assert result.code == 2, result
        assert expected in result.stderr and "internal error" not in result.stderr, result.stderr
    assert not out.exists()
    with pytest.raises(GraphFormatError):
        Graph.load(net)


def test_hostile_values_through_the_api_are_typed() -> None:
    with pytest.raises(InvalidWeightError):
        Graph.from_dict(_doc(edges=[["x0", "h0", 10**400], ["h0", "h1", 1.0], ["h1", "y0", 1.0]]))
    units = copy.deepcopy(BASE["units"])
    units[2]["activation"]["c"] = 10**400
    with pytest.raises(ActivationError):
        Graph.from_dict(_doc(units=units))
    units[2]["activation"]["c"] = 10**5000  # too long even to print
    with pytest.raises(ActivationError, match="bits"):
        Graph.from_dict(_doc(units=units))
    with pytest.raises(GraphFormatError, match="field 'note'"):
        Graph.from_dict(_doc(note=[float("nan")]))
    deep: list[Any] = []
    for _ in range(900):
        deep = [deep]
    with pytest.raises(GraphFormatError, match="nested deeper"):
        Graph.from_dict(_doc(note=deep))


def test_example_shape_that_does_not_fit_the_model(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),)), str(path))
    for argv in (["inspect", str(path), "--example-shape", "2,7"],
                 ["balance", str(path), "--example-shape", "2,7", "-o", str(tmp_path / "o.pt2")]):
        result = run_cli(argv, in_process=True)
        assert result.code == 2 and "--example-shape" in result.stderr, result


def test_idx_header_whose_byte_count_overflows(tmp_path: Path) -> None:
    path = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + np.array([2**31, 2**31, 4], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header))
    with pytest.raises(DataError, match="bytes of data"):
        read_idx(path, ndim=3)


def _overflowing_net(tmp_path: Path) -> Path:
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_doc(edges=[["x0", "h0", 1e200], ["h0", "h1", 1e200], ["h1", "y0", 1.5]])))
    return path


def test_inspect_json_is_strict_even_when_r_is_inf(tmp_path: Path) -> None:
    result = run_cli(["inspect", str(_overflowing_net(tmp_path)), "--json"], in_process=True)
    assert result.code == 0 and result.stderr == ""  # no RuntimeWarning beside the output
    data = assert_strict_json(result.stdout)
    assert data["non_finite"] and all(v in ("inf", "nan", "-inf") for v in data["non_finite"].values())


def test_report_with_non_finite_numbers_is_written_with_the_output(tmp_path, monkeypatch) -> None:
    net, out, report = tmp_path / "net.json", tmp_path / "out.json", tmp_path / "r.json"
    net.write_text(json.dumps(BASE))
    real = balance_command.BalanceResult.report

    def infinite_report(self):
        return {**real(self), "regularizer_before": float("inf")}

    monkeypatch.setattr(balance_command.BalanceResult, "report", infinite_report)
    result = run_cli(["balance", str(net), "-o", str(out), "--report", str(report)], in_process=True)
    assert result.code == 0, result
    data = assert_strict_json(report.read_text())
    assert data["regularizer_before"] is None and data["non_finite"] == {"regularizer_before": "inf"}
    assert Graph.load(out)


def test_output_and_report_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    net, out = tmp_path / "net.json", tmp_path / "out.json"
    net.write_text(json.dumps(BASE))
    (tmp_path / "r.json").mkdir()  # the report cannot be written
    result = run_cli(["balance", str(net), "-o", str(out), "--report", str(tmp_path / "r.json")], in_process=True)
    assert result.code == 2 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "r.json"]  # no temporary left


def test_balance_of_an_overflowing_net_never_breaks_the_contract(tmp_path: Path) -> None:
    out, report = tmp_path / "out.json", tmp_path / "r.json"
    result = run_cli(["balance", str(_overflowing_net(tmp_path)), "-o", str(out), "--report", str(report)],
                     in_process=True)
    assert out.exists() == report.exists() == (result.code == 0)
    if report.exists():
        assert_strict_json(report.read_text())


def test_unexpected_exceptions_are_one_line(tmp_path, monkeypatch) -> None:
    net = tmp_path / "net.json"
    net.write_text(json.dumps(BASE))

    def broken(*args, **kwargs):
        raise TypeError("unforeseen\nmulti-line")

    monkeypatch.setattr(balance_command, "balance", broken)
    result = run_cli(["balance", str(net), "-o", str(tmp_path / "o.json")], in_process=True)
    assert result.code == 2 and result.stderr == "synbal: internal error: TypeError: unforeseen multi-line\n"


def test_unit_names_that_cannot_be_encoded_do_not_crash(tmp_path: Path) -> None:
    text = json.dumps(BASE).replace('"h0"', '"h\\ud800"')
    net = tmp_path / "net.json"
    net.write_text(text)
    result = run_cli(["inspect", str(net)], in_process=False)
    assert result.code == 0 and "h\\ud800" in result.stdout, result


# ----------------------------------------------------------------------------- atomic writes
def test_writes_are_synced_before_the_rename(tmp_path, monkeypatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "a.txt", "data")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "a.txt").read_text() == "data"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_write_leaves_no_temporary_file(tmp_path: Path, sig: int, code: int) -> None:
    net, out, flag = tmp_path / "net.json", tmp_path / "out.json", tmp_path / "paused"
    net.write_text(json.dumps(BASE))
    env = {**os.environ, PAUSE_ENV: str(flag), "PYTHONPATH": os.pathsep.join(sys.path)}
    # a shell's background job (CI started with `&`) ignores SIGINT, and children inherit that: the
    # child gets the default disposition back, as it has when started from a terminal
    proc = subprocess.Popen([sys.executable, "-m", "synbal._cli.main", "balance", str(net), "-o", str(out),
                             "--report", str(tmp_path / "r.json")], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), proc.communicate()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # paused with temporaries
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "paused"], err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_model_that_fails_its_check_writes_nothing(tmp_path: Path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    import synbal._cli.commands.model_files as cli_support
    from synbal.errors import VerificationError

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    path, out, report = tmp_path / "m.pt2", tmp_path / "o.pt2", tmp_path / "r.json"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),)), str(path))

    def mismatch(*args, **kwargs):
        raise VerificationError("written file differs")

    monkeypatch.setattr(cli_support, "verify_outputs", mismatch)
    result = run_cli(["balance", str(path), "-o", str(out), "--report", str(report)], in_process=True)
    assert result.code == 1 and result.stderr == "synbal: error: written file differs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2"]
