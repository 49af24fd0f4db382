"""What ``synbal balance`` and ``synbal inspect`` do with PyTorch model files.

* ``synbal balance MODEL.pt2 -o OUT.pt2`` — a ``torch.export`` program: its module is balanced and
  the program is saved with the balanced parameter values.
* ``synbal balance --factory pkg.module:function --weights W.safetensors -o OUT.safetensors`` —
  the factory builds the model, the weights are loaded with safetensors, the balanced state is
  saved with safetensors.
* ``synbal balance MODEL_DIR -o OUT_DIR [--replace] [--max-component-mb N] [--verify]`` — a Hugging Face model
  folder (``config.json`` and safetensors shards), balanced out of core by
  :func:`synbal.torch.balance_checkpoint` (exact solver, one component in memory at a time).
* ``synbal inspect MODEL_DIR [--reg SPEC] [--json] [--max-rows N] [--progress]`` — the balance of such
  a folder, measured out of core by :func:`synbal.torch.inspect_checkpoint`.

Example inputs come from the program (when stored) or ``--example-shape``. Unless
``--no-verify``, the written file is read back and run on the example inputs, and must compute
the same function as the input. Bad input raises a :class:`~synbal.errors.SynbalError`
subclass (the CLI exits with status 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synbal._adapters.torch.apply import run_model, verify_outputs
from synbal._adapters.torch.files import (
    LoadedModel,
    load_exported,
    load_factory,
    model_writer,
    parse_shape,
)
from synbal._adapters.torch.inspection import inspect
from synbal._front import balance, deficit
from synbal._io import atomic_write_all, ensure_not_input
from synbal._jsonsafe import json_text
from synbal.errors import SynbalError

__all__ = ["balance_model_file", "inspect_model_file", "load_model_file"]


def _opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def _inputs_of(args: argparse.Namespace) -> list[str]:
    return [str(p) for p in (_opt(args, "input"), _opt(args, "weights")) if p]


def load_model_file(args: argparse.Namespace) -> LoadedModel:
    """The model named by ``args`` (``input`` .pt2, or ``factory`` + ``weights``)."""
    shape = parse_shape(_opt(args, "example_shape"))
    seed = _opt(args, "seed")
    factory = _opt(args, "factory")
    if factory:
        weights = _opt(args, "weights")
        source = _opt(args, "input")
        if weights is None and source and str(source).lower().endswith(".safetensors"):
            weights = source
        return load_factory(factory, weights, shape, seed)
    source = _opt(args, "input")
    if source is None:
        raise SynbalError("no model: give MODEL.pt2, or --factory pkg.module:function with --weights W.safetensors")
    if Path(source).suffix.lower() != ".pt2":
        raise SynbalError(
            f"cannot read model file {source!r}: use a torch.export program (.pt2), or "
            "--factory pkg.module:function with --weights W.safetensors (pickled .pt/.pth files are "
            "never loaded)"
        )
    return load_exported(source, shape, seed, trust_pickle=bool(_opt(args, "trust_pickle", False)))


def _check_output(args: argparse.Namespace, loaded: LoadedModel) -> Path:
    output = _opt(args, "output")
    if not output:
        raise SynbalError("give the output file with -o")
    out = Path(output)
    wanted = ".pt2" if loaded.program is not None else ".safetensors"
    if out.suffix.lower() != wanted:
        raise SynbalError(f"output {output!r} must be a {wanted} file for this input")
    ensure_not_input(out, *_inputs_of(args))
    report = _opt(args, "report")
    if report:
        ensure_not_input(report, *_inputs_of(args), out)
    return out


def _read_back(loaded: LoadedModel, out: Path) -> Any:
    if loaded.program is not None:
        return load_exported(out).model
    import copy

    from safetensors.torch import load_model

    model = copy.deepcopy(loaded.model)
    load_model(model, str(out), strict=True)
    return model


def _folder_only(args: argparse.Namespace) -> None:
    """A model folder brings its config and weights; options naming others are refused."""
    if _opt(args, "factory") or _opt(args, "weights"):
        raise SynbalError("a model folder brings its own config and weights: drop --factory and --weights")


def _balance_folder(args: argparse.Namespace) -> int:
    """``synbal balance MODEL_DIR -o OUT_DIR``: out-of-core balancing of a Hugging Face model folder."""
    from synbal._adapters.torch.out_of_core import balance_checkpoint

    _folder_only(args)
    if _opt(args, "method", "exact") != "exact":
        raise SynbalError(f"a model folder is balanced with method exact, not {_opt(args, 'method')!r}")
    limit = _opt(args, "max_component_mb")
    report = balance_checkpoint(
        _opt(args, "input"), _opt(args, "output"), _opt(args, "reg", "l2"), tol=_opt(args, "tol", 1e-10),
        max_sweeps=_opt(args, "max_sweeps", 10_000), replace=bool(_opt(args, "replace", False)),
        max_component_bytes=None if limit is None else int(limit * 2**20), progress=bool(_opt(args, "progress")),
        verify=bool(_opt(args, "verify", False)))
    if _opt(args, "report"):
        text = json_text(report.as_dict())
        atomic_write_all([(_opt(args, "report"), lambda tmp: tmp.write_text(text, encoding="utf-8"))])
    change = (100.0 * (report.regularizer_after - report.regularizer_before) / report.regularizer_before
              if report.regularizer_before > 0 else 0.0)
    print(f"balanced {report.model_dir} -> {report.out_dir}: {report.groups} scalable groups in "
          f"{report.components} components, method exact, regularizer {report.regularizer}")
    print(f"  regularizer {report.regularizer_before:.10g} -> {report.regularizer_after:.10g} ({change:+.2f}%)")
    print(f"  max relative deficit {report.max_relative_deficit:.3e}: "
          f"{'converged' if report.converged else 'NOT converged'}; discovery {report.discovery_seconds:.3g} s, "
          f"balance {report.balance_seconds:.3g} s")
    print(f"  read {report.tensors_read} tensors, {report.bytes_read} bytes in {report.reads} reads "
          f"({report.checkpoint_reads:.3f} x the checkpoint's {report.checkpoint_bytes} bytes)")
    print(f"  function {'verified (same logits)' if report.verified else 'not checked (--verify loads it in memory)'}")
    if report.left_out:
        print(f"  not copied (weights in other formats, unbalanced): {', '.join(report.left_out)}")
    return 0


def balance_model_file(args: argparse.Namespace, *, sets: list[list[str]] | None = None,
                       closed_form: bool = False) -> int:
    """Balance a model file and write the balanced one (see the module docstring); returns 0.

    ``sets`` (group names, as ``synbal inspect`` lists them) and ``closed_form`` go to
    :func:`synbal.balance` like the CLI's other method options."""
    if _opt(args, "input") and Path(_opt(args, "input")).is_dir():
        if sets is not None or closed_form:
            raise SynbalError("a model folder is balanced with method exact: --sets and --closed-form do not apply")
        return _balance_folder(args)
    loaded = load_model_file(args)
    out = _check_output(args, loaded)
    verify = not _opt(args, "no_verify", False)
    before = run_model(loaded.model, loaded.example_inputs) if verify else None
    result = balance(
        loaded.model,
        _opt(args, "reg", "l2"),
        _opt(args, "method", "exact"),
        tol=_opt(args, "tol", 1e-10),
        max_sweeps=_opt(args, "max_sweeps", 10_000),
        seed=_opt(args, "seed"),
        theta=_opt(args, "theta", 1.0),
        progress=bool(_opt(args, "progress", False)),
        example_inputs=loaded.example_inputs,
        verify=verify,
        sets=sets,
        closed_form=closed_form,
    )
    write_model = model_writer(loaded, result.net)

    def write_checked(tmp: Path) -> None:  # the file as written must compute the same function
        write_model(tmp)
        if before is not None:
            verify_outputs(before, run_model(_read_back(loaded, tmp), loaded.example_inputs), f"written file {out}")

    outputs: list[tuple[str | Path, Callable[[Path], object]]] = [(out, write_checked)]
    report = _opt(args, "report")
    if report:
        data = result.report()
        data.update(input=_inputs_of(args), output=str(out), verified=verify, scales=result.scales)
        text = json_text(data)
        outputs.append((report, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    atomic_write_all(outputs)  # nothing appears unless the check passed and every file is written
    change = (100.0 * (result.regularizer_after - result.regularizer_before) / result.regularizer_before
              if result.regularizer_before > 0 else 0.0)
    status = "converged" if result.converged else "NOT converged"
    print(f"balanced {', '.join(_inputs_of(args)) or _opt(args, 'factory')} -> {out}: "
          f"{result.problem.n} scalable groups, method {result.method}, regularizer {result.regularizer}")
    print(f"  regularizer {result.regularizer_before:.10g} -> {result.regularizer_after:.10g} ({change:+.2f}%)")
    print(f"  max relative deficit {result.max_relative_deficit:.3e}: {status} after {result.sweeps} sweeps "
          f"in {result.seconds:.3g} s; function {'verified' if verify else 'not checked (--no-verify)'}")
    if result.excluded:
        print(f"  excluded units: {len(result.excluded)} ranges (see synbal inspect)")
    for note in result.notes:
        print(f"  {note}")
    return 0


def _inspect_folder(args: argparse.Namespace) -> int:
    """``synbal inspect MODEL_DIR``: the balance of a Hugging Face model folder, measured out of core."""
    from synbal._adapters.torch.checkpoint_inspect import inspect_checkpoint

    _folder_only(args)
    report = inspect_checkpoint(_opt(args, "input"), _opt(args, "reg", "l2"), progress=bool(_opt(args, "progress")))
    if _opt(args, "json", False):
        print(json_text(report.as_dict()), end="")
    else:
        print(report.format_table(_opt(args, "max_rows")))
    return 0


def inspect_model_file(args: argparse.Namespace) -> int:
    """Print a model file's scalable groups, excluded units, and per-group balance; returns 0."""
    if _opt(args, "input") and Path(_opt(args, "input")).is_dir():
        return _inspect_folder(args)
    loaded = load_model_file(args)
    info = inspect(loaded.model, loaded.example_inputs)
    info.model_name = str(_opt(args, "factory") or Path(str(_opt(args, "input"))).name)
    report = deficit(loaded.model, _opt(args, "reg", "l2"), example_inputs=loaded.example_inputs, verify=False)
    if _opt(args, "json", False):
        print(json_text({
            "groups": [{"name": g.name, "size": g.size, "members": g.members, "incoming": g.incoming,
                        "outgoing": g.outgoing, "degree": g.degree} for g in info.groups],
            "excluded": info.excluded,
            "shared": info.shared,
            "blocks": info.blocks,
            "balance": report.as_dict(),
        }), end="")
        return 0
    max_rows = _opt(args, "max_rows")
    if max_rows is not None:
        info.max_groups = int(max_rows)
    print(info)
    print()
    print(report.format_table(max_rows))
    return 0
