"""Safetensors shards read one tensor at a time and written in place, without ``mmap``.

A safetensors file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON (name →
``dtype``, ``shape``, ``data_offsets``; an optional ``__metadata__``), then the tensors' bytes,
back to back. :func:`read_header` checks all of it against the file's size, so a shard cut
short is found before anything is balanced. :class:`ShardReader` reads a tensor (or a byte
range of it) with plain ``read`` calls and counts what it read; nothing is memory-mapped, so a
process's resident memory holds only the tensors it keeps (``safe_open`` maps the whole file,
and every page it touches counts in the peak RSS). :class:`ShardWriter` writes a shard with the
same header and layout as its source, each tensor at its own offset: tensors that are not
rescaled are copied byte for byte, rescaled ones are written when their component is solved.

>>> import tempfile, os, torch
>>> from safetensors.torch import save_file
>>> path = os.path.join(tempfile.mkdtemp(), "a.safetensors")
>>> save_file({"w": torch.arange(6.0).reshape(2, 3)}, path)
>>> header = read_header(path)
>>> header.tensors["w"].shape, header.tensors["w"].dtype
((2, 3), torch.float32)
>>> reader = ShardReader()
>>> reader.tensor(header, "w").tolist(), reader.bytes_read, reader.reads
([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], 24, 1)
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from synbal.errors import CheckpointError

__all__ = ["DTYPES", "ShardHeader", "ShardReader", "ShardWriter", "TensorEntry", "read_header"]

#: safetensors dtype names → torch dtypes (the ones synbal reads; any other is copied as bytes).
DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit
_COPY_CHUNK = 1 << 24  # bytes per read when copying or summing a tensor in pieces


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a shard: its dtype name, shape, and byte range in the file."""

    name: str
    dtype_name: str
    shape: tuple[int, ...]
    start: int  # absolute file offsets
    end: int

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES.get(self.dtype_name)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass
class ShardHeader:
    """A shard's path, its raw header bytes (length prefix included), size, and tensors by name."""

    path: Path
    raw: bytes
    size: int
    tensors: dict[str, TensorEntry] = field(default_factory=dict)


def _parse(path: Path, raw: bytes, size: int) -> dict[str, TensorEntry]:
    try:
        table = json.loads(raw[8:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"shard {path}: its safetensors header is not valid JSON ({exc})") from None
    if not isinstance(table, dict):
        raise CheckpointError(f"shard {path}: its safetensors header is not a JSON object")
    base, entries, expected = len(raw), {}, 0
    items = sorted(((k, v) for k, v in table.items() if k != "__metadata__"),
                   key=lambda kv: tuple(kv[1].get("data_offsets", (0, 0))) if isinstance(kv[1], dict) else (0, 0))
    for name, info in items:
        try:
            a, b = (int(x) for x in info["data_offsets"])
            shape = tuple(int(s) for s in info["shape"])
            dtype = str(info["dtype"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"shard {path}: the header entry of tensor {name!r} is malformed") from None
        if a != expected or b < a:
            raise CheckpointError(f"shard {path}: tensor {name!r} has data offsets {a}..{b}, expected to start at "
                                  f"{expected} (a corrupt header)")
        expected = b
        entries[name] = TensorEntry(name, dtype, shape, base + a, base + b)
    if base + expected != size:
        what = "cut short" if base + expected > size else "longer than its header says"
        raise CheckpointError(f"shard {path} is {what}: its header describes {base + expected} bytes, the file has "
                              f"{size}")
    return entries


def read_header(path: str | os.PathLike[str]) -> ShardHeader:
    """The header of the safetensors file ``path``, checked against the file's size.

    A missing, cut short or malformed file raises :class:`~synbal.errors.CheckpointError`.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            prefix = f.read(8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
            if not 0 < n <= min(_MAX_HEADER, size - 8):
                raise CheckpointError(f"shard {p} is cut short or not a safetensors file ({size} bytes, header "
                                      f"length {n})")
            raw = prefix + f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"shard {p} is missing") from None
    except IsADirectoryError:
        raise CheckpointError(f"shard {p} is a directory, not a safetensors file") from None
    return ShardHeader(p, raw, size, _parse(p, raw, size))


class ShardReader:
    """Reads tensors from shards with plain file reads, counting bytes and read calls."""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.reads = 0
        self.tensors_read = 0

    def read_range(self, path: Path, start: int, end: int) -> bytearray:
        """Bytes ``start..end`` of ``path`` (a shard whose size was checked by :func:`read_header`)."""
        buf = bytearray(end - start)
        try:
            with path.open("rb") as f:
                f.seek(start)
                got = f.readinto(buf)
        except OSError as exc:
            raise CheckpointError(f"shard {path}: cannot read bytes {start}..{end} ({exc})") from None
        if got != end - start:
            raise CheckpointError(f"shard {path} is cut short: bytes {start}..{end} could not be read")
        self.bytes_read += end - start
        self.reads += 1
        return buf

    def tensor(self, header: ShardHeader, name: str) -> torch.Tensor:
        """The tensor ``name`` of the shard (a fresh, writable CPU tensor)."""
        entry = header.tensors[name]
        if entry.dtype is None:
            raise CheckpointError(f"tensor {name!r} in shard {header.path} has dtype {entry.dtype_name}, which synbal "
                                  "cannot rescale")
        data = self.read_range(header.path, entry.start, entry.end)
        self.tensors_read += 1
        if not data:
            return torch.zeros(entry.shape, dtype=entry.dtype)
        return torch.frombuffer(data, dtype=entry.dtype).reshape(entry.shape)

    def pieces(self, header: ShardHeader, name: str) -> Iterator[bytearray]:
        """The bytes of tensor ``name`` in pieces of at most 16 MiB (whole elements each)."""
        entry = header.tensors[name]
        item = max(1, torch.empty(0, dtype=entry.dtype).element_size()) if entry.dtype is not None else 1
        step = max(item, _COPY_CHUNK // item * item)
        self.tensors_read += 1
        for a in range(entry.start, entry.end, step):
            yield self.read_range(header.path, a, min(entry.end, a + step))


class ShardWriter:
    """Writes a shard laid out exactly as its source (same header bytes, same offsets)."""

    def __init__(self, source: ShardHeader, path: Path) -> None:
        self.source = source
        self.path = path
        self.file: BinaryIO = path.open("w+b")
        self.file.write(source.raw)
        self.file.truncate(source.size)
        self.pending = set(source.tensors)

    def write(self, name: str, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Write ``data`` into tensor ``name``'s byte range, ``offset`` bytes in."""
        entry = self.source.tensors[name]
        if entry.start + offset + len(data) > entry.end:
            raise ValueError(f"{len(data)} bytes at {offset} overflow tensor {name!r} ({entry.nbytes} bytes)")
        self.file.seek(entry.start + offset)
        self.file.write(data)

    def write_tensor(self, name: str, t: torch.Tensor) -> None:
        """Write tensor ``name`` (same dtype and shape as in the source) and mark it done."""
        entry = self.source.tensors[name]
        if tuple(t.shape) != entry.shape or DTYPES.get(entry.dtype_name) != t.dtype:
            raise ValueError(f"tensor {name!r}: {t.dtype} {tuple(t.shape)} does not match the shard's "
                             f"{entry.dtype_name} {entry.shape}")
        if t.numel():
            self.write(name, t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        self.pending.discard(name)

    def done(self, name: str) -> None:
        self.pending.discard(name)

    def close(self) -> None:
        """Flush, sync and close (every tensor must have been written)."""
        if self.pending:
            raise ValueError(f"shard {self.path}: {len(self.pending)} tensors were never written")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
