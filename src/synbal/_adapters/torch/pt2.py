"""Reading ``torch.export`` archives (``.pt2``) without running code from the file.

:func:`torch.export.load` unpickles parts of an archive (tensor-subclass weights and constants
with ``torch.load(weights_only=False)``, opaque constants with :func:`pickle.loads`, example
inputs through an unsafe fallback), loads AOTInductor shared libraries, evaluates the program's
symbolic-shape strings with :func:`sympy.sympify` (which calls ``eval``) and lets a graph call
functions that import modules by name. A tampered ``.pt2`` can therefore run code on loading.

:func:`read_program` reads the same archives safely:

* weights and constants only from raw tensor records (never a pickled member);
* example inputs with ``torch.load(weights_only=True)`` (tensors and plain containers only);
* the serialized program (plain JSON) is checked before torch turns it into a graph: every
  operator must be an ``aten``/``prims`` operator without file access, a higher-order operator
  or a basic arithmetic builtin, every symbolic expression a small arithmetic expression over
  sympy's number classes, and there must be no guard code.

Anything else raises :class:`~synbal.errors.UnsafeFileError`; ``trust_pickle=True`` (the CLI's
``--trust-pickle``) hands the file to :func:`torch.export.load` instead, which runs whatever the
file contains: use it only for files you made yourself.

>>> import torch, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "m.pt2"
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
>>> torch.export.save(torch.export.export(model, (torch.ones(1, 3),)), str(path))
>>> program = read_program(path)
>>> bool(torch.equal(program.module()(torch.ones(1, 3)), model(torch.ones(1, 3))))
True
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import math
import operator
import re
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

import torch

from synbal.errors import ModelError, SynbalError, UnsafeFileError

__all__ = ["quiet_torch", "read_program"]

_MODEL = "model"
#: Operators a program may call besides ``aten``/``prims`` operators and higher-order operators.
_BUILTINS = (
    operator.getitem, operator.add, operator.mul, operator.sub, operator.truediv, operator.floordiv,
    operator.mod, operator.pow, operator.neg, operator.abs, operator.ge, operator.le, operator.gt,
    operator.lt, operator.eq, operator.ne, operator.and_, operator.or_, operator.not_,
    operator.lshift, operator.rshift, math.ceil, math.floor, math.trunc, round,
    torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_not,
    torch.sym_sqrt, torch.sym_sum, torch._C._set_grad_enabled,
)
_NAMESPACES = ("aten", "prims")
#: ``aten`` operators that touch files (``aten::save`` writes a pickle anywhere).
_FILE_ARGS = frozenset({"filename", "file", "path", "f"})
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan",
    "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not", "oo", "zoo", "nan",
    "true", "false", "True", "False", "Piecewise", "ITE", "One", "Zero", "NegativeOne", "Half",
    "Infinity", "NegativeInfinity", "BooleanTrue", "BooleanFalse",
})
_SYMBOL = re.compile(r"[a-z]+[0-9]+\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_EXPR_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.BinOp,
               ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Tuple, ast.Add, ast.Sub, ast.Mult, ast.Div,
               ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE,
               ast.Gt, ast.GtE, ast.And, ast.Or)


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep torch's log records and warnings off stderr (synbal reports one line itself)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def read_program(path: str | Path, *, trust_pickle: bool = False) -> Any:
    """The ``torch.export.ExportedProgram`` in ``path``, read without running code from it.

    Raises :class:`~synbal.errors.UnsafeFileError` for archives that cannot be read that way
    (unless ``trust_pickle``) and :class:`~synbal.errors.ModelError` for unreadable ones.
    """
    p = Path(path)
    try:
        with quiet_torch():
            if trust_pickle:
                return torch.export.load(str(p))
            return _read_safely(p)
    except SynbalError:
        raise
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        raise ModelError(f"{str(p)!r} is not a readable torch.export program ({detail})") from None


def _read_safely(path: Path) -> Any:
    from torch._export.serde import schema
    from torch._export.serde.serialize import ExportedProgramDeserializer, _dict_to_dataclass
    from torch.export.pt2_archive import constants as names
    from torch.export.pt2_archive._package import PT2ArchiveReader

    reader = PT2ArchiveReader(str(path))
    members = reader.get_file_names()
    _refuse_code_members(path, members)
    version = reader.read_string(names.ARCHIVE_VERSION_PATH)
    if version != names.ARCHIVE_VERSION_VALUE:
        raise ModelError(f"{str(path)!r}: archive version {version!r} is not {names.ARCHIVE_VERSION_VALUE!r}")
    program_member = names.MODELS_FILENAME_FORMAT.format(_MODEL)
    if program_member not in members:
        raise ModelError(f"{str(path)!r} holds no exported program ({program_member!r} is missing)")
    obj = json.loads(reader.read_bytes(program_member))
    check_program(obj, str(path))
    program = _dict_to_dataclass(schema.ExportedProgram, obj)
    state_dict = _tensors(reader, names.WEIGHTS_CONFIG_FILENAME_FORMAT.format(_MODEL), names.WEIGHTS_DIR, path)
    constants = _tensors(reader, names.CONSTANTS_CONFIG_FILENAME_FORMAT.format(_MODEL), names.CONSTANTS_DIR, path)
    example = _example_inputs(reader, names.SAMPLE_INPUTS_FILENAME_FORMAT.format(_MODEL), members, path)
    return ExportedProgramDeserializer().deserialize(program, state_dict, constants, example)


def _refuse_code_members(path: Path, members: list[str]) -> None:
    from torch.export.pt2_archive import constants as names

    for member in members:
        if member.startswith(names.AOTINDUCTOR_DIR):
            why = "compiled AOTInductor code"
        elif member.startswith((names.WEIGHTS_DIR, names.CONSTANTS_DIR)) and member.endswith(".pt"):
            why = "pickled weights in the legacy format"
        elif member.startswith(names.CONSTANTS_DIR) and Path(member).name.startswith(
                (names.CUSTOM_OBJ_FILENAME_PREFIX, names.OPAQUE_OBJ_FILENAME_PREFIX)):
            why = "pickled custom objects"
        else:
            continue
        _unsafe(path, f"member {member!r} holds {why}")


def _unsafe(path: Path | str, what: str) -> NoReturn:
    raise UnsafeFileError(
        f"{str(path)!r}: {what}, which loading would run as code; synbal refuses it "
        "(if you made this file yourself, --trust-pickle / trust_pickle=True loads it anyway)"
    )


def check_program(obj: object, where: str) -> None:
    """Refuse a serialized program (its JSON) whose loading or running could execute code."""
    if not isinstance(obj, dict):
        raise ModelError(f"{where!r}: the serialized program is not a JSON object")
    if obj.get("guards_code"):
        _unsafe(where, "the program carries guard code")
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if isinstance(item.get("expr_str"), str):
                _check_expr(item["expr_str"], where)
            if isinstance(item.get("as_operator"), str):
                _check_operator(item["as_operator"], where)
            if {"target", "inputs", "outputs"} <= item.keys():
                if not isinstance(item["target"], str):
                    raise ModelError(f"{where!r}: a node's target is not a string")
                _check_operator(item["target"], where)
            stack.extend(item.values())


def _check_operator(name: str, where: str) -> None:
    if not _allowed_operator(name):
        _unsafe(where, f"the program calls {name[:200]!r}, which is not a plain tensor operator")


@lru_cache(maxsize=4096)
def _allowed_operator(name: str) -> bool:
    from torch._export.serde.serialize import GraphModuleDeserializer
    from torch._ops import HigherOrderOperator, OpOverload

    try:
        op = GraphModuleDeserializer().deserialize_operator(name)
    except Exception:  # an extension namespace torch does not know
        return False
    if isinstance(op, HigherOrderOperator):
        return True
    if isinstance(op, OpOverload):
        schema = op._schema
        return (op.namespace in _NAMESPACES and schema.name not in ("aten::save", "aten::from_file")
                and not any(arg.name in _FILE_ARGS for arg in schema.arguments))
    return any(op is allowed for allowed in _BUILTINS)


def _check_expr(text: str, where: str) -> None:
    """Symbolic shapes are parsed with ``sympy.sympify`` (``eval``): allow plain arithmetic only."""
    try:
        tree = ast.parse(text, mode="eval") if len(text) <= 10_000 else None
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    symbols = _symbol_names(tree) if tree is not None else set()
    if tree is None or not all(_plain_expr_node(node, symbols) for node in ast.walk(tree)):
        _unsafe(where, f"the symbolic expression {text[:80]!r} is not plain arithmetic")


def _symbol_names(tree: ast.AST) -> set[int]:
    """The ``'s0'`` in ``Symbol('s0', ...)``: the only string constants an expression may hold."""
    return {id(node.args[0]) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Symbol"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            and _IDENT.match(node.args[0].value)}


def _plain_expr_node(node: ast.AST, symbol_names: set[int]) -> bool:
    from torch.utils._sympy import functions

    names = _SYMPY_NAMES | set(getattr(functions, "__all__", ()))
    if not isinstance(node, _EXPR_NODES):
        return False
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in names
    if isinstance(node, ast.Name):
        return node.id in names or bool(_SYMBOL.match(node.id))
    if isinstance(node, ast.keyword):
        return node.arg is not None and bool(_IDENT.match(node.arg)) and not node.arg.startswith("_")
    if isinstance(node, ast.Constant):
        value = node.value
        return (id(node) in symbol_names or value is None or isinstance(value, (bool, float))
                or (isinstance(value, int) and abs(value) < 2**63))
    return True


def _tensors(reader: Any, config_member: str, directory: str, path: Path) -> dict[str, torch.Tensor]:
    """Weights or constants from raw tensor records; a pickled record is refused."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        _dict_to_dataclass,
        deserialize_scalar_type,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )
    from torch.export.pt2_archive._package import _build_file_map

    if config_member not in reader.get_file_names():
        raise ModelError(f"{str(path)!r}: {config_member!r} is missing")
    config = _dict_to_dataclass(schema.PayloadConfig, json.loads(reader.read_string(config_member)))
    for name, meta in config.config.items():
        if meta.use_pickle or meta.tensor_meta is None:
            _unsafe(path, f"tensor {name!r} is stored as a pickle")
    flat = _build_file_map(reader, config, directory)  # raw records only (all checked above)
    out: dict[str, torch.Tensor] = {}
    for name, meta in config.config.items():
        tm = meta.tensor_meta
        base = flat[meta.path_name]
        if base.dtype != deserialize_scalar_type(tm.dtype):
            raise ModelError(f"{str(path)!r}: tensor {name!r} has inconsistent dtypes")
        value = torch.as_strided(base, deserialize_size(tm.sizes), deserialize_stride(tm.strides),
                                 deserialize_storage_offset(tm.storage_offset))
        out[name] = torch.nn.Parameter(value, requires_grad=tm.requires_grad) if meta.is_param else value
    return out


def _example_inputs(reader: Any, member: str, members: list[str], path: Path) -> Any:
    """``(args, kwargs)`` read weights-only (no arbitrary objects), or ``None`` when absent."""
    if member not in members:
        return None
    data = reader.read_bytes(member)
    if not data:
        return None
    try:
        inputs = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception:
        _unsafe(path, "the stored example inputs are not plain tensors (reading them needs unpickling)")
    if not (isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], tuple)
            and isinstance(inputs[1], dict)):
        raise ModelError(f"{str(path)!r}: the stored example inputs are not (args, kwargs)")
    return inputs
