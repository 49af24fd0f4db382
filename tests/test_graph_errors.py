"""Every malformed network raises its typed error, naming the offending item."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import synbal
from synbal._adapters.graph import Graph, GraphAdapter, Unit
from synbal.errors import ActivationError, GraphFormatError, InvalidWeightError, RegularizerError, SynbalError

BASE: dict[str, Any] = {
    "format": "synbal.graph/1",
    "units": [
        {"name": "x0", "role": "input"},
        {"name": "h0", "role": "hidden", "activation": "relu"},
        {"name": "h1", "role": "hidden", "activation": {"type": "bipu", "c": 2.0}},
        {"name": "y0", "role": "output"},
    ],
    "edges": [["x0", "h0", 0.5], ["h0", "h1", -0.2], ["h1", "y0", 1.5]],
    "biases": {"h0": 0.1},
}


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc.pop(key)


def _append(key: str, item: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc[key].append(item)


# (id, mutation, error type, text the message must contain)
BAD_DOCUMENTS = [
    ("nan-weight", _set(("edges", 1, 2), float("nan")), InvalidWeightError, "h0 -> h1"),
    ("inf-weight", _set(("edges", 0, 2), float("inf")), InvalidWeightError, "x0 -> h0"),
    ("nan-bias", _set(("biases", "h0"), float("nan")), InvalidWeightError, "'h0'"),
    ("inf-bias", _set(("biases", "h0"), -float("inf")), InvalidWeightError, "'h0'"),
    ("unknown-activation", _set(("units", 1, "activation"), "swishy"), ActivationError, "'h0'"),
    ("unknown-activation-object", _set(("units", 2, "activation"), {"type": "poly"}), ActivationError, "'h1'"),
    ("bad-bipu-degree", _set(("units", 2, "activation"), {"type": "bipu", "c": -1.0}), ActivationError, "'h1'"),
    ("duplicate-unit", _append("units", {"name": "h0", "role": "hidden", "activation": "relu"}),
     GraphFormatError, "duplicate unit name 'h0'"),
    ("duplicate-edge", _append("edges", ["h0", "h1", 3.0]), GraphFormatError, "duplicate edge h0 -> h1"),
    ("edge-unknown-source", _append("edges", ["zz", "h1", 3.0]), GraphFormatError, "unknown unit 'zz'"),
    ("edge-unknown-destination", _append("edges", ["h0", "q", 3.0]), GraphFormatError, "unknown unit 'q'"),
    ("edge-into-input", _append("edges", ["h0", "x0", 3.0]), GraphFormatError, "into input unit 'x0'"),
    ("bias-on-input", _set(("biases", "x0"), 1.0), GraphFormatError, "input unit 'x0'"),
    ("bias-on-unknown", _set(("biases", "nope"), 1.0), GraphFormatError, "unknown unit 'nope'"),
    ("wrong-format", _set(("format",), "synbal.graph/2"), GraphFormatError, "synbal.graph/1"),
    ("missing-format", _delete("format"), GraphFormatError, "'format'"),
    ("missing-units", _delete("units"), GraphFormatError, "'units'"),
    ("missing-edges", _delete("edges"), GraphFormatError, "'edges'"),
    ("units-not-list", _set(("units",), {"x0": "input"}), GraphFormatError, "'units'"),
    ("edges-not-list", _set(("edges",), {"x0": "h0"}), GraphFormatError, "'edges'"),
    ("edge-too-short", _set(("edges", 1), ["h0", "h1"]), GraphFormatError, "edges entry #1"),
    ("edge-weight-string", _set(("edges", 2, 2), "1.5"), GraphFormatError, "h1 -> y0"),
    ("edge-weight-bool", _set(("edges", 2, 2), True), GraphFormatError, "h1 -> y0"),
    ("biases-not-object", _set(("biases",), [1.0]), GraphFormatError, "'biases'"),
    ("unit-not-object", _set(("units", 1), "h0"), GraphFormatError, "unit #1"),
    ("unit-missing-name", _set(("units", 1), {"role": "hidden", "activation": "relu"}), GraphFormatError,
     "unit #1"),
    ("unit-missing-role", _set(("units", 1), {"name": "h0", "activation": "relu"}), GraphFormatError, "'h0'"),
    ("unit-bad-role", _set(("units", 1, "role"), "visible"), GraphFormatError, "'h0'"),
    ("hidden-without-activation", _set(("units", 1), {"name": "h0", "role": "hidden"}), GraphFormatError,
     "'h0'"),
    ("output-with-relu", _set(("units", 3, "activation"), "relu"), GraphFormatError, "'y0'"),
    ("input-with-bilu", _set(("units", 0, "activation"), {"type": "bilu", "a": 0.5, "b": 1.0}),
     GraphFormatError, "'x0'"),
    ("coefficient-unknown-edge", _set(("cost_coefficients",), [["x0", "h1", 1.0]]), GraphFormatError,
     "x0 -> h1"),
    ("coefficient-negative", _set(("cost_coefficients",), [["x0", "h0", -1.0]]), GraphFormatError,
     "x0 -> h0"),
    ("coefficient-duplicate", _set(("cost_coefficients",), [["x0", "h0", 1.0], ["x0", "h0", 2.0]]),
     GraphFormatError, "x0 -> h0"),
    ("bias-coefficient-input", _set(("bias_cost_coefficients",), {"x0": 1.0}), GraphFormatError, "'x0'"),
    ("bias-coefficient-nan", _set(("bias_cost_coefficients",), {"h0": float("nan")}), GraphFormatError, "'h0'"),
]


@pytest.mark.parametrize(("mutate", "error", "text"), [case[1:] for case in BAD_DOCUMENTS],
                         ids=[case[0] for case in BAD_DOCUMENTS])
def test_bad_document_raises_its_error(mutate, error, text):
    doc = copy.deepcopy(BASE)
    mutate(doc)
    with pytest.raises(error) as info:
        Graph.from_dict(doc)
    assert text in str(info.value)
    assert isinstance(info.value, SynbalError)


def test_base_document_is_valid():
    assert Graph.from_dict(BASE).to_dict() == BASE


@pytest.mark.parametrize("doc", [[], "graph", 3, None])
def test_non_object_document(doc):
    with pytest.raises(GraphFormatError, match="JSON object"):
        Graph.from_dict(doc)


def test_malformed_json_file_names_path_line_and_column(tmp_path):
    path = tmp_path / "net.json"
    path.write_text('{"format": "synbal.graph/1",\n "units": [\n   {"name": "x0",, "role": "input"}]}\n')
    with pytest.raises(GraphFormatError) as info:
        Graph.load(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "column 18" in message


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(BASE).replace("-0.2", "NaN"))  # Python's json reads the NaN literal
    with pytest.raises(InvalidWeightError, match="h0 -> h1") as info:
        Graph.load(path)
    assert str(path) in str(info.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GraphFormatError, match="UTF-8"):
        Graph.load(binary)
    with pytest.raises(FileNotFoundError):
        Graph.load(tmp_path / "missing.json")


def test_programmatic_construction_is_validated():
    units = [Unit("x", "input"), Unit("h", "hidden", "relu"), Unit("y", "output")]
    with pytest.raises(InvalidWeightError, match="x -> h"):
        Graph(units, [("x", "h", float("nan"))])
    with pytest.raises(GraphFormatError, match="duplicate edge x -> h"):
        Graph(units, [("x", "h", 1.0), ("x", "h", 2.0)])
    with pytest.raises(GraphFormatError, match="role"):
        Unit("z", "hiden", "relu")
    g = Graph(units, [("x", "h", 1.0), ("h", "y", 1.0)])
    g.edges.append(("h", "x", 1.0))  # edited by hand: checked again before use
    with pytest.raises(GraphFormatError, match="into input unit 'x'"):
        GraphAdapter(g)
    with pytest.raises(GraphFormatError, match="into input unit 'x'"):
        g.validate()


def test_regularizer_and_method_errors():
    g = Graph.from_dict(BASE)
    for spec in ("l0", "l-1", "lx", "0*l2"):
        with pytest.raises(RegularizerError):
            synbal.balance(g, spec)
    with pytest.raises(SynbalError, match="unknown method 'fast'"):
        synbal.balance(g, "l2", "fast")
    with pytest.raises(SynbalError, match="theta"):
        synbal.balance(g, "l2", "cyclic", theta=0.0)
    with pytest.raises(SynbalError, match="log-scales"):
        GraphAdapter(g).apply(np.zeros(5))
