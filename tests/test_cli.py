"""The ``synbal`` command line: balance, inspect, reproduce; exit codes and one-line errors."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synbal
import synbal._cli.commands.balance as balance_command
from graph_factory import function_gap, random_inputs
from synbal._adapters.graph import Graph
from synbal._cli.main import main
from synbal.examples import example_path
from synbal.experiments import EXPERIMENTS
from test_graph_errors import BAD_DOCUMENTS, BASE

REPORT_FIELDS = {"regularizer_before", "regularizer_after", "max_relative_deficit", "converged", "sweeps", "seconds"}


@pytest.fixture
def net(tmp_path: Path) -> Path:
    path = tmp_path / "net.json"
    path.write_bytes(example_path("recurrent_mixed").read_bytes())
    return path


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("synbal: error: ") and "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- balance
def test_balance_writes_the_balanced_graph_and_a_report(net, tmp_path, capsys):
    before = net.read_bytes()
    out, report = tmp_path / "out.json", tmp_path / "report.json"
    assert main(["balance", str(net), "-o", str(out), "--report", str(report)]) == 0
    assert net.read_bytes() == before
    original, balanced = Graph.load(net), Graph.load(out)
    assert [u.to_dict() for u in balanced.units] == [u.to_dict() for u in original.units]
    assert balanced.to_dict()["description"] == original.to_dict()["description"]  # extra fields kept
    assert function_gap(original, balanced, random_inputs(np.random.default_rng(0), original), 6) <= 1e-10
    assert synbal.deficit(balanced).max_relative_deficit <= 1e-10
    data = json.loads(report.read_text())
    assert set(data) >= REPORT_FIELDS
    assert data["converged"] is True and data["max_relative_deficit"] <= 1e-10
    assert data["regularizer_after"] < data["regularizer_before"]
    assert data["regularizer_before"] == pytest.approx(synbal.deficit(original).regularizer_value)
    assert data["regularizer_after"] == pytest.approx(synbal.deficit(balanced).regularizer_value)
    assert data["verified"] == "yes" and data["function_gap"] <= 1e-10
    assert set(data["scales"]) == {"h0", "h1", "h2", "h3", "h4", "h5"}
    out_text = capsys.readouterr().out
    assert "converged" in out_text and "regularizer" in out_text and str(out) in out_text


@pytest.mark.parametrize(
    "options",
    [
        ["--method", "cyclic", "--reg", "l1", "--tol", "1e-9"],
        ["--method", "stochastic", "--seed", "3", "--reg", "1*l2+0.01*l1"],
        ["--method", "layer", "--theta", "0.5", "--max-sweeps", "50000"],
        ["--reg", "l0.5", "--no-verify"],
    ],
)
def test_balance_options_reach_the_solver(net, tmp_path, options):
    out, report = tmp_path / "out.json", tmp_path / "r.json"
    assert main(["balance", str(net), "-o", str(out), "--report", str(report), *options]) == 0
    data = json.loads(report.read_text())
    if "--method" in options:
        assert data["method"] == options[options.index("--method") + 1]
    reg = options[options.index("--reg") + 1] if "--reg" in options else "l2"
    assert data["regularizer"] == str(synbal.parse_regularizer(reg))
    assert data["converged"] is True
    assert data["verified"] == ("skipped" if "--no-verify" in options else "yes")


def test_balance_never_overwrites_the_input(net, tmp_path, capsys):
    before = net.read_bytes()
    same = tmp_path / "sub" / ".." / "net.json"
    for args in (
        ["balance", str(net), "-o", str(net)],
        ["balance", str(net), "-o", str(same)],
        ["balance", str(net), "-o", str(tmp_path / "o.json"), "--report", str(net)],
        ["balance", str(net), "-o", str(tmp_path / "o.json"), "--report", str(tmp_path / "o.json")],
    ):
        (tmp_path / "sub").mkdir(exist_ok=True)
        assert main(args) == 2
        assert "input file" in _one_error_line(capsys)
        assert net.read_bytes() == before
        assert not (tmp_path / "o.json").exists()


def _write_bad(tmp_path: Path, mutate) -> Path:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("mutate", "text"), [(case[1], case[3]) for case in BAD_DOCUMENTS],
                         ids=[case[0] for case in BAD_DOCUMENTS])
def test_every_bad_network_exits_2_with_one_line(tmp_path, capsys, mutate, text):
    bad = _write_bad(tmp_path, mutate)
    out = tmp_path / "out.json"
    assert main(["balance", str(bad), "-o", str(out)]) == 2
    line = _one_error_line(capsys)
    assert text in line and str(bad) in line
    assert not out.exists()
    assert main(["inspect", str(bad)]) == 2
    assert text in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["balance", "{missing}", "-o", "{out}"], "No such file"),
        (["balance", "{dir}", "-o", "{out}"], "directory"),
        (["balance", "{malformed}", "-o", "{out}"], "line 1, column"),
        (["balance", "{net}", "-o", "{out}", "--reg", "l-2"], "power must be > 0"),
        (["balance", "{net}", "-o", "{out}", "--reg", "l2+"], "cannot parse"),
        (["balance", "{net}", "-o", "{out}", "--method", "magic"], "unknown method 'magic'"),
        (["balance", "{net}", "-o", "{out}", "--tol", "0"], "tol"),
        (["balance", "{net}", "-o", "{out}", "--theta", "1.5"], "theta"),
        (["balance", "{net}", "-o", "{out}", "--tol", "abc"], "expected a finite number"),
        (["balance", "{net}", "-o", "{out}", "--tol", "nan"], "expected a finite number"),
        (["balance", "{net}", "-o", "{out}", "--theta", "inf"], "expected a finite number"),
        (["balance", "{net}"], "-o/--output"),
        (["balance", "-o", "{out}"], "no input"),
        (["balance", "{missing_model}", "-o", "{out}"], ""),
        (["inspect", "{missing}"], "No such file"),
        (["inspect", "{net}", "--reg", "p2"], "cannot parse"),
        (["inspect", "{net}", "--max-rows", "-1"], "--max-rows"),
        (["frobnicate"], "invalid choice"),
        (["reproduce", "no-such-experiment"], "unknown experiment"),
        (["reproduce"], "name an experiment"),
        (["reproduce", "speed", "--set", "epochs"], "expected KEY=VALUE"),
        (["reproduce", "fig8", "--set", "lr=0.1"], "fig8 has no option 'lr'"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(net, tmp_path, capsys, args, text):
    (tmp_path / "malformed.json").write_text('{"format": "synbal.graph/1", "units": [}')
    (tmp_path / "adir.json").mkdir()
    paths = {"missing": tmp_path / "missing.json", "out": tmp_path / "out.json", "net": net,
             "malformed": tmp_path / "malformed.json", "dir": tmp_path / "adir.json",
             "missing_model": tmp_path / "missing.pt2"}
    assert main([a.format(**{k: str(v) for k, v in paths.items()}) for a in args]) == 2
    assert text in _one_error_line(capsys)
    assert not (tmp_path / "out.json").exists()


def test_failed_function_check_exits_1_and_writes_nothing(net, tmp_path, capsys, monkeypatch):
    real_balance = balance_command.balance

    def broken_balance(*args, **kwargs):
        result = real_balance(*args, **kwargs)
        s, d, w = result.net.edges[0]
        result.net.edges[0] = (s, d, 2.0 * w)  # a bug in balancing would look like this
        return result

    monkeypatch.setattr(balance_command, "balance", broken_balance)
    out = tmp_path / "out.json"
    assert main(["balance", str(net), "-o", str(out)]) == 1
    assert "differ" in _one_error_line(capsys)
    assert not out.exists()
    assert main(["balance", str(net), "-o", str(out), "--no-verify"]) == 0


def test_console_process_exit_code_and_stderr(tmp_path):
    bad = _write_bad(tmp_path, BAD_DOCUMENTS[0][1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(synbal.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from synbal._cli.main import main; sys.exit(main())",
         "balance", str(bad), "-o", str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("synbal: error: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_shipped_examples_by_name(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["balance", "example:recurrent_mixed", "-o", str(out)]) == 0
    assert Graph.load(out).to_dict()["units"] == Graph.load(example_path("recurrent_mixed")).to_dict()["units"]
    assert main(["inspect", "example:layered"]) == 0
    assert "h2_3" in capsys.readouterr().out
    assert main(["inspect", "example:nope"]) == 2
    assert "unknown example 'nope'" in _one_error_line(capsys)
    assert main(["balance", "example:layered", "-o", str(example_path("layered"))]) == 2
    assert "input file" in _one_error_line(capsys)


# ----------------------------------------------------------------------------- inspect
def test_inspect_prints_the_table_and_totals(net, capsys):
    assert main(["inspect", str(net)]) == 0
    out = capsys.readouterr().out
    for name in ("h0", "h3", "h5"):
        assert name in out
    assert "t0" not in out.split("\n\n")[0]  # the tanh unit is not in the table
    assert "max relative deficit" in out and "regularizer (l2)" in out and "non-scalable" in out
    assert main(["inspect", str(net), "--max-rows", "2"]) == 0
    assert "(4 more units)" in capsys.readouterr().out


def test_inspect_json_matches_the_library(net, capsys):
    assert main(["inspect", str(net), "--json", "--reg", "l1"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = synbal.deficit(Graph.load(net), "l1").as_dict()
    assert data == json.loads(json.dumps(expected))
    assert [u["name"] for u in data["units"]] == ["h0", "h1", "h2", "h3", "h4", "h5"]
    assert data["regularizer"] == "l1" and data["excluded"] == {"t0": "activation tanh is not positively homogeneous"}


def test_inspect_after_balance_reports_balance(net, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["balance", str(net), "-o", str(out), "--tol", "1e-12"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["max_relative_deficit"] <= 1e-12
    for unit in data["units"]:
        assert unit["IN"] == pytest.approx(unit["degree"] * unit["OUT"], rel=1e-11)


# ----------------------------------------------------------------------------- reproduce and help
def test_reproduce_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("balance", "inspect", "reproduce"):
        assert command in out
    assert main([]) == 2


def test_tied_sets_and_closed_form_options(tmp_path, capsys):
    out = tmp_path / "tied.json"
    report = tmp_path / "tied_report.json"
    assert main(["balance", "example:layered", "-o", str(out), "--method", "tied",
                 "--sets", "h1_0,h1_1;h2_0", "--report", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["converged"] and data["max_relative_deficit"] <= 1e-10
    assert data["scales"]["h1_0"] == pytest.approx(data["scales"]["h1_1"], rel=1e-12)
    capsys.readouterr()
    assert main(["balance", "example:layered", "-o", str(out), "--method", "tied", "--closed-form"]) == 2
    assert "closed form" in capsys.readouterr().err
    assert main(["balance", "example:layered", "-o", str(out), "--sets", ";"]) == 2


def test_output_into_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    hidden = [f"h{i}" for i in range(3000)]  # a table far larger than a pipe's buffer
    graph = {"format": "synbal.graph/1",
             "units": [{"name": "x", "role": "input"}, {"name": "y", "role": "output"}]
             + [{"name": h, "role": "hidden", "activation": "relu"} for h in hidden],
             "edges": [["x", h, 1.0 + i % 7] for i, h in enumerate(hidden)] + [[h, "y", 0.5] for h in hidden]}
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(graph))
    proc = subprocess.run(f"{sys.executable} -m synbal._cli.main inspect {path} | head -n 1", shell=True,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.stdout.count("\n") == 1
    assert proc.stderr == ""


def test_written_files_get_ordinary_permissions(tmp_path: Path) -> None:
    from synbal._io import atomic_write_text

    mask = os.umask(0o022)
    try:
        fresh = tmp_path / "fresh.txt"
        atomic_write_text(fresh, "a")
        assert fresh.stat().st_mode & 0o777 == 0o644  # not a temporary file's 0o600
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert kept.read_text() == "new" and kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(mask)
