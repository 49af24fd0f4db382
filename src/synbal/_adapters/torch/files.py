"""Model files for the CLI: ``torch.export`` programs (``.pt2``) and factory + safetensors weights.

Nothing is unpickled and no code from a model file runs: ``.pt2`` files are read by
:func:`synbal._adapters.torch.pt2.read_program` (raw tensor records, weights-only example inputs, a checked
program; :func:`torch.export.load`, which unpickles, only with ``trust_pickle=True``), weights with
:mod:`safetensors`. ``--factory`` imports and runs the named function: it is code the user chose.
Outputs are written atomically (:mod:`synbal._io`) and never over their input.

A balanced ``.pt2`` keeps the input program unchanged (graph, dynamic shapes, example inputs) and
only replaces the values of its parameters, which is equivalent to re-exporting the balanced
module but cannot lose export metadata.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synbal._adapters.torch.pt2 import quiet_torch, read_program
from synbal._io import atomic_write, atomic_write_bytes
from synbal.errors import ModelError, SynbalError

__all__ = ["LoadedModel", "load_exported", "load_factory", "model_writer", "parse_shape", "save_exported",
           "save_safetensors"]


@dataclass
class LoadedModel:
    """A model read from files, with its example inputs and the program it came from (``.pt2``).

    >>> loaded = LoadedModel(nn.Linear(2, 1), (torch.zeros(1, 2),))
    >>> loaded.program is None, tuple(loaded.model(*loaded.example_inputs).shape)
    (True, (1, 1))
    """

    model: nn.Module
    example_inputs: tuple[Any, ...]
    program: Any = None  # torch.export.ExportedProgram for .pt2 inputs


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,32,32"`` → ``(1, 3, 32, 32)``.

    >>> parse_shape("1, 3,32,32")
    (1, 3, 32, 32)
    >>> parse_shape("1,x")
    Traceback (most recent call last):
    ...
    synbal.errors.SynbalError: --example-shape must be positive integers separated by commas, e.g. 1,3,32,32; got '1,x'
    """
    if text is None:
        return None
    try:
        shape = tuple(int(s) for s in text.replace(" ", "").split(","))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise SynbalError(f"--example-shape must be positive integers separated by commas, e.g. 1,3,32,32; "
                          f"got {text!r}")
    return shape


def _example(model: nn.Module, shape: tuple[int, ...] | None, seed: int | None, what: str) -> tuple[Any, ...]:
    if shape is None:
        raise ModelError(f"{what}: give --example-shape (e.g. 1,3,32,32) so the model can be traced and verified")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    inputs = (torch.randn(*shape, generator=gen).to(dtype),)
    try:
        with torch.no_grad(), quiet_torch():
            model(*inputs)
    except Exception as exc:  # torch reports a shape mismatch as RuntimeError, AssertionError, ...
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"{what}: the model cannot run on an example input of shape "
                         f"{','.join(map(str, shape))} (--example-shape): {type(exc).__name__}: {detail}") from None
    return inputs


def load_exported(path: str | Path, shape: tuple[int, ...] | None = None, seed: int | None = None, *,
                  trust_pickle: bool = False) -> LoadedModel:
    """Read a ``torch.export`` program; its module runs on the stored example inputs (else ``shape``).

    Nothing from the file is unpickled or run unless ``trust_pickle`` (see :mod:`synbal._adapters.torch.pt2`).

    >>> import tempfile, synbal
    >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "model.pt2")
    >>> torch.export.save(torch.export.export(model, (torch.randn(5, 3),)), path)
    >>> loaded = load_exported(path)  # read without unpickling; the stored example inputs come along
    >>> [tuple(x.shape) for x in loaded.example_inputs]
    [(5, 3)]
    >>> synbal.balance(loaded.model, "l2", example_inputs=loaded.example_inputs).converged
    True
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file {str(p)!r} does not exist")
    program = read_program(p, trust_pickle=trust_pickle)
    try:
        with quiet_torch():
            module = program.module()
    except Exception as exc:
        raise ModelError(f"{str(p)!r}: cannot build a module from the program ({type(exc).__name__}: {exc})") from exc
    stored = getattr(program, "example_inputs", None)
    if shape is None and stored is not None:
        args, kwargs = stored
        if kwargs:
            raise ModelError(f"{str(p)!r}: example inputs with keyword arguments are not supported; "
                             "give --example-shape")
        inputs = tuple(args)
    else:
        inputs = _example(module, shape, seed, str(p))
    return LoadedModel(module, inputs, program)


@contextlib.contextmanager
def _cwd_importable() -> Iterator[None]:
    """The working directory on ``sys.path`` *after* the installed packages, for one import only.

    A module in the working directory can then never shadow a library (``./safetensors.py``).
    """
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _factory_parts(spec: str) -> tuple[str, str]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SynbalError(f"--factory must look like pkg.module:function, got {spec!r}")
    return module_name, attr


def _import_factory(spec: str) -> Callable[[], Any]:
    module_name, attr = _factory_parts(spec)
    try:
        with _cwd_importable():
            module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any exception the module raises while importing
        raise SynbalError(f"--factory {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: {exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SynbalError(f"--factory {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SynbalError(f"--factory {spec!r} is not callable")
    return obj


def load_factory(spec: str, weights: str | Path | None, shape: tuple[int, ...] | None,
                 seed: int | None = None) -> LoadedModel:
    """Build ``pkg.module:function()``, load ``weights`` (safetensors) into it, put it in eval mode.

    This imports and runs the named code. The working directory is searched after the installed
    packages (so it never shadows a library), so a factory in ``./mymodels.py`` is ``mymodels:build``.
    """
    _factory_parts(spec)
    if weights is None:
        raise SynbalError("--factory needs --weights W.safetensors")
    w = Path(weights)
    if w.suffix.lower() != ".safetensors":
        raise SynbalError(f"--weights must be a .safetensors file (nothing is unpickled), got {str(w)!r}")
    if not w.is_file():
        raise ModelError(f"weights file {str(w)!r} does not exist")
    factory = _import_factory(spec)
    try:
        model = factory()
    except Exception as exc:  # the user's code: any exception is a bad --factory
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(f"--factory {spec!r} failed: {type(exc).__name__}: {detail}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"--factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    from safetensors.torch import load_model

    try:
        load_model(model, str(w), strict=True)
    except Exception as exc:  # safetensors raises RuntimeError/SafetensorError on mismatches
        raise ModelError(f"cannot load {str(w)!r} into the model of {spec!r}: {exc}") from exc
    model.eval()
    return LoadedModel(model, _example(model, shape, seed, spec))


def model_writer(loaded: LoadedModel, balanced: nn.Module) -> Callable[[Path], None]:
    """A function that writes ``balanced`` in the format of ``loaded`` (``.pt2`` or safetensors) to a path."""
    if loaded.program is None:
        from safetensors.torch import save_model

        return lambda path: save_model(balanced, str(path))
    data = _exported_bytes(loaded, balanced)

    def write(path: Path) -> None:
        Path(path).write_bytes(data)

    return write


def save_safetensors(model: nn.Module, path: str | Path) -> None:
    """Write ``model``'s state (shared tensors stored once) to ``path`` atomically."""
    atomic_write(path, model_writer(LoadedModel(model, ()), model))


def save_exported(loaded: LoadedModel, balanced: nn.Module, path: str | Path) -> None:
    """Write ``loaded.program`` with the parameter values of ``balanced`` to ``path`` atomically."""
    atomic_write_bytes(path, _exported_bytes(loaded, balanced))


def _exported_bytes(loaded: LoadedModel, balanced: nn.Module) -> bytes:
    program = loaded.program
    if program is None:
        raise ModelError("internal: not an exported program")
    new = dict(balanced.named_parameters(remove_duplicate=False))
    missing = [name for name in program.state_dict if name not in new and name in dict(
        loaded.model.named_parameters(remove_duplicate=False))]
    if missing:
        raise ModelError(f"balanced module lacks parameters {missing[:5]} of the exported program")
    with torch.no_grad():
        for name, value in program.state_dict.items():
            if name in new and isinstance(value, torch.Tensor):
                value.copy_(new[name].detach().to(value.dtype))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()
