"""Fuzzing the command line with hostile network files: the CLI contract always holds (issue 17).

A seeded generator mutates valid networks into hostile ones (huge and over-long integers, NaN
and infinities, deep nesting, wrong types, missing fields, odd unicode, broken JSON text) and
:func:`cli_contract.check_json_file` runs ``synbal balance --report`` and ``synbal inspect
--json`` on each. The default run checks 200 documents in this process; the ``slow`` run 2,000, and 40 more as
real processes.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_contract import check_json_file
from test_graph_errors import BASE

_LAYERED: dict[str, Any] = {
    "format": "synbal.graph/1",
    "units": [{"name": "x0", "role": "input"}, {"name": "x1", "role": "input"},
              {"name": "a", "role": "hidden", "activation": "relu"},
              {"name": "b", "role": "hidden", "activation": {"type": "bilu", "a": 0.3, "b": 2.0}},
              {"name": "t", "role": "hidden", "activation": "tanh"},
              {"name": "y0", "role": "output"}],
    "edges": [["x0", "a", 0.7], ["x1", "a", -1.2], ["x0", "b", 0.4], ["a", "b", 1.1], ["b", "a", 0.2],
              ["b", "t", -0.5], ["a", "y0", 2.0], ["t", "y0", 0.3], ["b", "y0", -1.0]],
    "biases": {"a": 0.1, "y0": -0.3},
    "cost_coefficients": [["a", "y0", 0.5]],
    "bias_cost_coefficients": {"b": 0.0},
    "description": "a small recurrent net",
}
#: Values written into the JSON text in place of their placeholder strings.
_TEXT_VALUES = {
    "@HUGE@": "1" + "0" * 400,
    "@LONG@": "7" * 4301,
    "@NEGHUGE@": "-" + "9" * 320,
    "@DEEP@": "[" * 100_000 + "]" * 100_000,
    "@DEEP900@": "[" * 900 + "]" * 900,
    "@OBJDEEP@": '{"a": ' * 2000 + "0" + "}" * 2000,
}
_VALUES: list[Any] = [
    *_TEXT_VALUES, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 1e-320, 5e-324, -0.0, 0, 1, -1,
    10**20, True, False, None, "", "x" * 5000, "h\ud800", "\u202eevil", "😀", "\x00", [], {}, [1, 2], {"type": 1},
    {"type": "bipu", "c": 1e-320}, {"type": "bipu", "c": "@HUGE@"}, [["x0"]], ["x0", "h0", 1.0, 2.0],
]
_REGS = ["l2", "l1", "l0.5", "l3", "1*l2+0.01*l1", "l2,1"]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            yield from _paths(value, (*prefix, index))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def _mutate(doc: dict[str, Any], rng: random.Random) -> str:
    """Change ``doc`` in place in one hostile way; returns a label."""
    paths = [p for p in _paths(doc) if p] or [("edges",)]
    units = [u for u in doc.get("units", []) if isinstance(u, dict)] if isinstance(doc.get("units"), list) else []
    kind = rng.choice(["set", "set", "set", "delete", "add", "rename", "retype"])
    path = rng.choice(paths)
    parent = _parent(doc, path)
    if kind == "set" or (kind == "rename" and not units):
        parent[path[-1]] = copy.deepcopy(rng.choice(_VALUES))
    elif kind == "delete":
        del parent[path[-1]]
    elif kind == "add":
        target = rng.choice([doc, *units])
        target[rng.choice(["extra", "note", "\u00e9t\u00e9", "name ", "activation"])] = copy.deepcopy(
            rng.choice(_VALUES))
    elif kind == "rename":
        rng.choice(units)["name"] = rng.choice(["", "x0", "h\ud800", "\u0000", "a" * 10_000, "y0", "😀", "h0 ", "1"])
    else:
        key = rng.choice(list(doc))
        doc[key] = rng.choice([dict(enumerate(doc[key])) if isinstance(doc[key], list) else [doc[key]],
                               json.dumps(doc[key]), None])
    return f"{kind} {'/'.join(map(str, path))[:60]}"


def _text(doc: dict[str, Any], rng: random.Random) -> bytes:
    text = json.dumps(doc)
    for placeholder, value in _TEXT_VALUES.items():
        text = text.replace(json.dumps(placeholder), value)
    roll = rng.random()
    if roll < 0.05:
        text = text[: rng.randrange(len(text))]  # truncated
    elif roll < 0.08:
        text = text.replace('"edges"', '"edges": [], "edges"', 1)  # duplicate key
    elif roll < 0.10:
        return b"\xef\xbb\xbf" + text.encode()  # byte-order mark
    elif roll < 0.12:
        raw = bytearray(text.encode("utf-8", "surrogatepass"))
        raw[rng.randrange(len(raw))] = 0xFF  # not UTF-8
        return bytes(raw)
    return text.encode("utf-8", "surrogatepass")


def hostile_documents(seed: int, count: int) -> Iterator[tuple[str, bytes, list[str]]]:
    """``count`` hostile network files: (label, bytes, extra CLI arguments)."""
    rng = random.Random(seed)
    for k in range(count):
        doc = copy.deepcopy(rng.choice([BASE, _LAYERED]))
        labels = [_mutate(doc, rng) for _ in range(rng.choice([1, 1, 2, 3]))]
        args = ["--reg", rng.choice(_REGS)]
        yield f"#{k}: {'; '.join(labels)}", _text(doc, rng), args


def _fuzz(tmp_path: Path, seed: int, count: int, *, in_process: bool = True) -> None:
    failures = []
    path = tmp_path / "net.json"
    for label, data, args in hostile_documents(seed, count):
        path.write_bytes(data)
        problems = check_json_file(path, extra_args=args, in_process=in_process)
        if problems:
            failures.append(f"{label} {args}: {problems}")
    assert not failures, f"{len(failures)} of {count} documents broke the contract:\n" + "\n".join(failures[:20])


def test_cli_contract_on_hostile_documents(tmp_path: Path) -> None:
    _fuzz(tmp_path, seed=17, count=200)


@pytest.mark.slow
def test_cli_contract_on_many_hostile_documents(tmp_path: Path) -> None:
    _fuzz(tmp_path, seed=1717, count=2000)


@pytest.mark.slow
def test_cli_contract_in_real_processes(tmp_path: Path) -> None:
    """As a user runs it: warnings and log records that bypass ``sys.stderr`` would show here."""
    _fuzz(tmp_path, seed=7, count=40, in_process=False)


def test_generator_is_hostile_and_reproducible() -> None:
    first = list(hostile_documents(3, 50))
    assert first == list(hostile_documents(3, 50))
    assert len({data for _, data, _ in first}) == 50
    valid = 0
    for _, data, _ in first:
        try:
            json.loads(data)
            valid += 1
        except (ValueError, RecursionError):
            pass
    assert 0 < valid < 50  # both parseable documents with bad content and broken JSON text
