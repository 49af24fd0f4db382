"""A Hugging Face model folder as out-of-core balancing reads it: config, shard headers, other files.

:func:`open_folder` reads ``config.json``, the index ``model.safetensors.index.json`` (or the single
``model.safetensors``) and every shard's header, and checks them against each other: a missing or
cut short shard, or an index entry naming a tensor its shard does not hold, raises
:class:`~synbal.errors.CheckpointError` before any work. Weights in pickle-based formats
(``pytorch_model.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are never loaded: a folder holding only those
is refused, and beside safetensors shards they (and other frameworks' weights) are not copied, as
they would hold the weights unbalanced. :func:`meta_model` builds the model the config describes on
the ``meta`` device (shapes only, no weights) with ``transformers``.

>>> import json, os, tempfile, torch
>>> from safetensors.torch import save_file
>>> root = tempfile.mkdtemp()
>>> save_file({"w": torch.ones(2)}, os.path.join(root, "model.safetensors"))
>>> with open(os.path.join(root, "config.json"), "w") as f:
...     json.dump({"model_type": "llama"}, f)
>>> folder = open_folder(root)
>>> list(folder.weight_map.items()), folder.other_files
([('w', 'model.safetensors')], ['config.json'])
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synbal._adapters.torch.safetensors_io import ShardHeader, read_header
from synbal.errors import CheckpointError

__all__ = ["INDEX", "SINGLE", "ModelFolder", "load_model", "meta_model", "open_folder", "trace_inputs"]

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_OTHER_WEIGHTS = (".h5", ".msgpack", ".gguf", ".onnx")


@dataclass
class ModelFolder:
    """What :func:`open_folder` found: shard headers by file, tensor → file, files to copy, files left out."""

    root: Path
    shards: dict[str, ShardHeader]
    weight_map: dict[str, str]
    other_files: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(h.size for h in self.shards.values())


def _weight_map(root: Path) -> dict[str, str]:
    index = root / INDEX
    if not index.is_file():
        if (root / SINGLE).is_file():
            return {name: SINGLE for name in read_header(root / SINGLE).tensors}
        pickled = sorted(p.name for p in root.iterdir() if p.suffix.lower() in _PICKLED)
        if pickled:
            raise CheckpointError(f"model folder {root} holds weights only in pickle-based files "
                                  f"({', '.join(pickled)}), which synbal never loads (they can run code): convert "
                                  "them to safetensors first")
        raise CheckpointError(f"model folder {root} has neither {INDEX} nor {SINGLE}")
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
        mapping = data["weight_map"]
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"index {index} is not a valid safetensors index (no weight_map of names to files)") \
            from None
    for name, file in mapping.items():
        if Path(file).name != file:
            raise CheckpointError(f"index {index}: tensor {name!r} maps to {file!r}, which is not a file in the folder")
    return dict(mapping)


def open_folder(path: str | Path) -> ModelFolder:
    """Read and cross-check a model folder (see the module docstring)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"model folder {root} does not exist or is not a directory")
    if not (root / "config.json").is_file():
        raise CheckpointError(f"no config.json in model folder {root}: it is needed to build the model's structure")
    mapping = _weight_map(root)
    shards = {file: read_header(root / file) for file in sorted(set(mapping.values()))}
    for name, file in mapping.items():
        if name not in shards[file].tensors:
            raise CheckpointError(f"the index names tensor {name!r} in shard {root / file}, which does not hold it")
    other: list[str] = []
    left_out: list[str] = []
    for p in sorted(root.iterdir()):
        if p.name in shards or not p.is_file():
            continue
        weights = p.suffix.lower() in _PICKLED + _OTHER_WEIGHTS or p.name.endswith(".safetensors")
        (left_out if weights else other).append(p.name)
    return ModelFolder(root, shards, mapping, other, left_out)


def _transformers() -> Any:
    try:
        import transformers
    except Exception as exc:  # not installed, or an optional dependency of it fails to import
        raise CheckpointError(f"balancing a Hugging Face model folder needs transformers (pip install 'synbal[hf]'); "
                              f"importing it failed: {type(exc).__name__}: {exc}") from None
    return transformers


def _model_class(root: Path) -> tuple[Any, Any]:
    """The ``transformers`` class ``root/config.json`` names, and the config."""
    T = _transformers()
    try:
        config = T.AutoConfig.from_pretrained(str(root), local_files_only=True)
    except Exception as exc:
        raise CheckpointError(f"config {root / 'config.json'} cannot be read by transformers: "
                              f"{type(exc).__name__}: {exc}") from None
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise CheckpointError(f"config {root / 'config.json'} names no architecture (\"architectures\"), so the "
                              "checkpoint's tensor names cannot be matched to a model class")
    cls = getattr(T, names[0], None)
    if cls is None:
        raise CheckpointError(f"config {root / 'config.json'}: transformers cannot build {names[0]}: "
                              "it has no such class")
    return cls, config


def meta_model(root: Path) -> nn.Module:
    """The model ``root/config.json`` describes, built on the ``meta`` device in eval mode."""
    cls, config = _model_class(root)
    try:
        with torch.device("meta"):
            model = cls(config)
    except Exception as exc:
        raise CheckpointError(f"config {root / 'config.json'}: transformers cannot build {cls.__name__}: "
                              f"{type(exc).__name__}: {exc}") from None
    return model.eval()


def load_model(root: Path) -> nn.Module:
    """The model of the folder ``root`` with its weights, in memory (CPU, stored dtype, eval mode)."""
    cls, _ = _model_class(root)
    major, minor = (int(x) for x in _transformers().__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"  # renamed in 4.56
    try:
        model = cls.from_pretrained(str(root), local_files_only=True, use_safetensors=True, **{dtype_key: "auto"})
    except Exception as exc:
        raise CheckpointError(f"model folder {root}: transformers cannot load {cls.__name__}: "
                              f"{type(exc).__name__}: {exc}") from None
    return model.eval()


def trace_inputs(model: nn.Module, length: int = 8, ids: torch.Tensor | None = None) -> tuple[Any, ...]:
    """Positional token-id inputs (``ids``; zeros on the ``meta`` device by default): ``input_ids``, and
    ``decoder_input_ids`` (``None`` for the arguments between) when the model's ``forward`` takes them.

    >>> class M(nn.Module):
    ...     def forward(self, input_ids, attention_mask=None, decoder_input_ids=None): ...
    >>> [None if x is None else tuple(x.shape) for x in trace_inputs(M())]
    [(1, 8), None, (1, 8)]
    """
    params = list(inspect.signature(model.forward).parameters)
    ids = torch.zeros(1, length, dtype=torch.long, device="meta") if ids is None else ids
    wanted = {"input_ids": ids}
    if "decoder_input_ids" in params:
        wanted["decoder_input_ids"] = ids
    last = max(params.index(k) for k in wanted if k in params) if any(k in params for k in wanted) else 0
    return tuple(wanted.get(name) for name in params[: last + 1]) if params else (ids,)
