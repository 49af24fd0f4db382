"""JSON for hostile input and strict output.

Reading (:func:`parse_json`, :func:`read_json`): integers beyond the float64 range (``10**400``,
a 4,301-digit literal) and documents nested deeper than :data:`MAX_DEPTH` raise the caller's
:class:`~synbal.errors.SynbalError` subclass instead of ``OverflowError``, ``ValueError`` or
``RecursionError``; :func:`check_json_value` also refuses non-finite numbers in values synbal
keeps and writes back (unknown fields).

Writing (:func:`finite_json`): strict JSON has no ``Infinity`` or ``NaN``, so non-finite floats
become ``null`` and their places are listed, with their values as strings, under
``"non_finite"``.

>>> parse_json('{"w": [1, 2.5]}', "net.json")
{'w': [1, 2.5]}
>>> parse_json('{"w": [1, 1' + '0' * 400 + ']}', "net.json")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
synbal.errors.SynbalError: net.json: the integer ...(401 digits) at line 1, column 11 is beyond the float64 range
>>> parse_json("[" * 200 + "]" * 200, "net.json")
Traceback (most recent call last):
...
synbal.errors.SynbalError: net.json: JSON nested deeper than 100 levels
>>> finite_json({"R": float("inf"), "rows": [{"d": float("nan")}, {"d": 0.5}]})
{'R': None, 'rows': [{'d': None}, {'d': 0.5}], 'non_finite': {'R': 'inf', 'rows[0].d': 'nan'}}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from synbal.errors import SynbalError

__all__ = ["MAX_DEPTH", "check_json_value", "finite_json", "json_text", "parse_json", "read_json"]

#: Deepest nesting accepted in a JSON document (synbal's own formats need fewer than 10).
MAX_DEPTH = 100
_MAX_DIGITS = 309  # every integer with more digits is beyond float64's range (1.8e308)


class _OutOfRangeError(Exception):
    """An integer literal beyond the float64 range (carries the literal, to find its place)."""

    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _integer(literal: str) -> int:
    value = int(literal) if len(literal.lstrip("-")) <= _MAX_DIGITS else None
    if value is None or not math.isfinite(_as_float(value)):
        raise _OutOfRangeError(literal)
    return value


def _out_of_range(text: str, literal: str, where: str) -> str:
    digits = len(literal.lstrip("-"))
    shown = literal if len(literal) <= 20 else f"{literal[:12]}... ({digits} digits)"
    start = text.find(literal)
    place = f" at line {text.count(chr(10), 0, start) + 1}, column {start - text.rfind(chr(10), 0, start)}"
    return f"{where}: the integer {shown}{place if start >= 0 else ''} is beyond the float64 range"


def _as_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def parse_json(text: str, where: str, error: type[SynbalError] = SynbalError) -> Any:
    """``json.loads(text)`` whose every failure is ``error`` naming ``where``."""
    try:
        obj = json.loads(text, parse_int=_integer)
    except _OutOfRangeError as exc:
        raise error(_out_of_range(text, exc.literal, where)) from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise error(f"{where}: JSON nested deeper than {MAX_DEPTH} levels") from None
    check_json_value(obj, where, error, finite=False)
    return obj


def read_json(path: str | os.PathLike[str], error: type[SynbalError] = SynbalError) -> Any:
    """The JSON document in the UTF-8 file ``path`` (see :func:`parse_json`); OS errors pass through."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{os.fspath(path)}: not a UTF-8 text file ({exc.reason})") from None
    return parse_json(text, os.fspath(path), error)


def check_json_value(value: object, where: str, error: type[SynbalError] = SynbalError, *,
                     finite: bool = True) -> None:
    """Raise ``error`` unless ``value`` is plain JSON (str keys, no cycles) at most :data:`MAX_DEPTH` deep.

    With ``finite`` (the default) NaN and infinite floats are refused too: they cannot be written.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise error(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            if not all(isinstance(k, str) for k in item):
                raise error(f"{where}: object keys must be strings")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float):
            if finite and not math.isfinite(item):
                raise error(f"{where}: holds {item}, which JSON cannot represent")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not math.isfinite(_as_float(item)):
                raise error(f"{where}: holds an integer beyond the float64 range")
        elif not (item is None or isinstance(item, (str, bool))):
            raise error(f"{where}: holds a {type(item).__name__}, which is not a JSON value")


def finite_json(obj: Any) -> Any:
    """A copy of ``obj`` with non-finite floats as ``null``, listed under ``"non_finite"`` when a dict."""
    found: dict[str, str] = {}

    def clean(item: Any, place: str) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            found[place] = str(item)
            return None
        if isinstance(item, dict):
            return {k: clean(v, f"{place}.{k}" if place else str(k)) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v, f"{place}[{i}]") for i, v in enumerate(item)]
        return item

    out = clean(obj, "")
    if found and isinstance(out, dict):
        out["non_finite"] = found
    return out


def json_text(obj: Any) -> str:
    """Indented strict JSON of :func:`finite_json` ``(obj)``, ending in a newline.

    >>> print(json_text({"R": float("-inf")}))
    {
      "R": null,
      "non_finite": {
        "R": "-inf"
      }
    }
    <BLANKLINE>
    """
    return json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"
