"""Loading a tampered ``.pt2`` never runs code from it (issue 17, critical).

Each hostile archive is first shown to run its payload under plain ``torch.export.load`` (so the
test can fail), then synbal must refuse it with :class:`UnsafeFileError` and no marker file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.export.pt2_archive._package import PT2ArchiveReader, PT2ArchiveWriter

from synbal._adapters.torch.files import load_exported
from synbal._adapters.torch.pt2 import check_program, read_program
from synbal.errors import ModelError, UnsafeFileError

Records = dict[str, bytes]
_SKIP = (".data/version", ".data/serialization_id", "byteorder")


class _Payload:
    """Unpickling this creates ``path`` (stands for any code an attacker would run)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def _pickled(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _exported(path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),)), str(path))


def _tamper(src: Path, out: Path, change: Callable[[Records], None]) -> Path:
    with PT2ArchiveReader(str(src)) as reader:
        records = {name: reader.read_bytes(name) for name in reader.get_file_names()}
    change(records)
    with PT2ArchiveWriter(str(out)) as writer:
        for name, data in records.items():
            if name not in _SKIP:
                writer.write_bytes(name, data)
    return out


def _edit_json(records: Records, member: str, edit: Callable[[dict], None]) -> None:
    obj = json.loads(records[member])
    edit(obj)
    records[member] = json.dumps(obj).encode()


def _pickled_weight(marker: Path) -> Callable[[Records], None]:
    def change(records: Records) -> None:
        config = "data/weights/model_weights_config.json"
        path = json.loads(records[config])["config"]["0.weight"]["path_name"]
        _edit_json(records, config, lambda c: c["config"]["0.weight"].update(use_pickle=True))
        records[f"data/weights/{path}"] = _pickled(_Payload(marker))
    return change


def _opaque_constant(marker: Path) -> Callable[[Records], None]:
    def change(records: Records) -> None:
        import pickle

        meta = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        _edit_json(records, "data/constants/model_constants_config.json", lambda c: c["config"].update(k=meta))
        records["data/constants/opaque_obj_0"] = pickle.dumps(_Payload(marker))
    return change


def _example_inputs(marker: Path) -> Callable[[Records], None]:
    def change(records: Records) -> None:
        records["data/sample_inputs/model.pt"] = _pickled(((_Payload(marker),), {}))
    return change


PAYLOADS = {"weights": _pickled_weight, "constants": _opaque_constant, "example_inputs": _example_inputs}


@pytest.mark.parametrize("where", sorted(PAYLOADS))
def test_pickled_members_are_refused(tmp_path: Path, where: str) -> None:
    src, marker = tmp_path / "clean.pt2", tmp_path / "MARKER"
    _exported(src)
    bad = _tamper(src, tmp_path / "bad.pt2", PAYLOADS[where](marker))
    with pytest.raises(UnsafeFileError, match="--trust-pickle"):
        read_program(bad)
    with pytest.raises(UnsafeFileError):
        load_exported(bad)
    assert not marker.exists()
    # the payload is real: torch.export.load (and synbal's explicit opt-in) run it
    with contextlib.suppress(ModelError):  # the payload is no tensor; it ran before torch noticed
        read_program(bad, trust_pickle=True)
    assert marker.exists()


def test_cli_refuses_pickled_archive_in_one_line(tmp_path: Path) -> None:
    from cli_contract import run_cli

    src, marker = tmp_path / "clean.pt2", tmp_path / "MARKER"
    _exported(src)
    bad = _tamper(src, tmp_path / "bad.pt2", _pickled_weight(marker))
    for cmd in (["inspect", str(bad)], ["balance", str(bad), "-o", str(tmp_path / "out.pt2")]):
        result = run_cli(cmd, in_process=True)
        assert result.code == 2 and result.stderr.count("\n") == 1 and "refuses" in result.stderr, result
    assert not marker.exists() and not (tmp_path / "out.pt2").exists()
    result = run_cli(["inspect", str(bad), "--trust-pickle"], in_process=True)  # the explicit opt-in
    assert marker.exists() and result.code in (0, 2), result


@pytest.mark.slow
def test_cli_refuses_pickled_archive_in_one_line_as_a_process(tmp_path: Path) -> None:
    """As a user runs it: torch's log records would reach stderr here."""
    src, marker = tmp_path / "clean.pt2", tmp_path / "MARKER"
    _exported(src)
    bad = _tamper(src, tmp_path / "bad.pt2", _pickled_weight(marker))
    for cmd in (["inspect", str(bad)], ["balance", str(bad), "-o", str(tmp_path / "out.pt2")]):
        proc = subprocess.run([sys.executable, "-m", "synbal._cli.main", *cmd], capture_output=True, text=True,
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "refuses" in proc.stderr
    assert not marker.exists() and not (tmp_path / "out.pt2").exists()


def _node(obj: dict) -> dict:
    return obj["graph_module"]["graph"]["nodes"][0]


def test_code_in_the_program_json_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "clean.pt2"
    _exported(src)

    def custom_function(obj: dict) -> None:  # imports a module by name when the graph runs
        _node(obj)["target"] = "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch"

    def sympy_eval(obj: dict) -> None:  # sympify evals expression strings
        _node(obj)["inputs"].append({"name": "n", "arg": {"as_sym_int": {"as_expr": {
            "expr_str": "open('MARK', 'w')", "hint": None}}}, "kind": 2})

    def guards(obj: dict) -> None:  # guard code is exec'd by program.module()
        obj["guards_code"] = ["open('MARK', 'w') is None"]

    def file_op(obj: dict) -> None:  # aten::save writes a pickle anywhere
        _node(obj)["target"] = "torch.ops.aten.save.default"

    for edit in (custom_function, sympy_eval, guards, file_op):
        bad = _tamper(src, tmp_path / f"{edit.__name__}.pt2",
                      lambda r, e=edit: _edit_json(r, "models/model.json", e))
        with pytest.raises(UnsafeFileError):
            read_program(bad)
    assert not (tmp_path / "MARK").exists()


def test_code_members_are_refused(tmp_path: Path) -> None:
    src = tmp_path / "clean.pt2"
    _exported(src)
    aoti = _tamper(src, tmp_path / "aoti.pt2", lambda r: r.update({"data/aotinductor/model/x.so": b"\x7fELF"}))
    with pytest.raises(UnsafeFileError, match="AOTInductor"):
        read_program(aoti)
    legacy = _tamper(src, tmp_path / "legacy.pt2", lambda r: r.update({"data/weights/model.pt": b"x"}))
    with pytest.raises(UnsafeFileError, match="legacy"):
        read_program(legacy)


@pytest.mark.parametrize("expr", [
    "Symbol('s77', positive=True, integer=True)",
    "Mul(Integer(2), Symbol('s77', positive=True, integer=True))",
    "FloorDiv(Symbol('s0', integer=True), Integer(2)) + 1",
])
def test_plain_symbolic_expressions_pass(expr: str) -> None:
    check_program({"guards_code": [], "x": [{"expr_str": expr}]}, "p.pt2")


@pytest.mark.parametrize("expr", [
    "__import__('os').system('true')", "exec(chr(49))", "Symbol('s0').__class__", "Integer(10)**Integer(9)**9",
    "Rational('1/2')", "S('x')", "(" * 5000 + ")" * 5000, "lambda: 1", "[1][0]",
])
def test_code_like_symbolic_expressions_are_refused(expr: str) -> None:
    with pytest.raises(UnsafeFileError):
        check_program({"x": {"expr_str": expr}}, "p.pt2")


def test_clean_archives_still_load_and_run(tmp_path: Path) -> None:
    from torch.export import Dim

    class Reshape(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.lin(x)).reshape(x.shape[0] * 2, 2)

    model, path = Reshape(), tmp_path / "dyn.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(4, 3),), dynamic_shapes=({0: Dim("b")},)),
                      str(path))
    loaded = load_exported(path)
    x = torch.randn(5, 3)
    assert torch.equal(loaded.model(x), model(x))
    assert loaded.example_inputs[0].shape == (4, 3)


def test_corrupt_archive_is_one_typed_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "clean.pt2"
    _exported(src)
    data = bytearray(src.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    bad = tmp_path / "corrupt.pt2"
    bad.write_bytes(bytes(data))
    capfd.readouterr()
    with pytest.raises(ModelError):
        read_program(bad)
    assert capfd.readouterr().err == ""  # no torch log lines beside synbal's message


def test_other_model_formats_never_unpickle(tmp_path: Path) -> None:
    """Pickled ``.pt``/``.pth`` files are refused unread, also disguised as safetensors weights."""
    from safetensors.torch import save_model

    marker = tmp_path / "MARKER"
    payload = _pickled({"0.weight": _Payload(marker)})
    for name in ("m.pt", "m.pth", "m.bin"):
        (tmp_path / name).write_bytes(payload)
    (tmp_path / "fake.safetensors").write_bytes(payload)
    save_model(torch.nn.Linear(3, 2), str(tmp_path / "w.safetensors"))
    runs = [["inspect", "m.pt"], ["inspect", "m.pth"], ["balance", "m.bin", "-o", "o.pt2"],
            ["balance", "--factory", "torch.nn:Linear", "--weights", "m.pt", "-o", "o.safetensors"],
            ["balance", "--factory", "model_zoo:mlp", "--weights", "fake.safetensors", "--example-shape", "1,4",
             "-o", "o.safetensors"],
            ["inspect", "--factory", "model_zoo:mlp", "fake.safetensors", "--example-shape", "1,4"]]
    from cli_contract import run_cli

    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        for argv in runs:
            result = run_cli(argv, in_process=True)
            assert result.code == 2 and "internal error" not in result.stderr, result
    finally:
        os.chdir(cwd)
    assert not marker.exists()
    assert not list(tmp_path.glob("o.*"))


def test_mutated_programs_give_typed_errors_and_no_noise(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Random damage to the serialized program: a model, or a ModelError, never another exception."""
    import random

    from test_cli_fuzz import _VALUES, _parent, _paths

    src = tmp_path / "clean.pt2"
    _exported(src)
    rng = random.Random(5)
    outcomes = []
    for _ in range(30):
        def damage(obj: dict) -> None:
            path = rng.choice([p for p in _paths(obj) if p])
            value = rng.choice(_VALUES)
            if rng.random() < 0.3:
                del _parent(obj, path)[path[-1]]
            else:
                _parent(obj, path)[path[-1]] = 10**30 if isinstance(value, str) and value.startswith("@") else value

        bad = _tamper(src, tmp_path / "bad.pt2", lambda r, d=damage: _edit_json(r, "models/model.json", d))
        try:
            load_exported(bad)
            outcomes.append("loaded")
        except ModelError:
            outcomes.append("refused")
    assert "refused" in outcomes
    assert capfd.readouterr().err == ""
