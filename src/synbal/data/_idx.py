"""Reading and writing IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not.

An IDX file is a 4-byte magic number ``0x00 0x00 TYPE NDIM`` (``TYPE = 0x08`` for unsigned
bytes), ``NDIM`` big-endian 32-bit sizes, then the data. Every check failure raises
:class:`~synbal.errors.DataError` naming the file.

>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "x-idx3-ubyte.gz"
>>> write_idx(path, np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
>>> read_idx(path, ndim=3).tolist()
[[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from synbal._io import atomic_write_bytes
from synbal.errors import DataError

__all__ = ["read_idx", "write_idx"]

_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} is missing")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"data file {str(path)!r} is truncated or not valid gzip: {exc}") from exc


def read_idx(path: str | os.PathLike[str], *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions into a ``uint8`` array."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"data file {str(path)!r} is not an IDX file (bad magic number)")
    if raw[2] != _UBYTE or raw[3] != ndim:
        raise DataError(
            f"data file {str(path)!r}: magic number 0x{raw[:4].hex()} says type 0x{raw[2]:02x} "
            f"with {raw[3]} dimensions; expected unsigned bytes (0x08) with {ndim}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"data file {str(path)!r} ends inside its header")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape)  # Python ints: (2**31, 2**31, 4) must not wrap around to 0
    if len(raw) - header != expected:
        raise DataError(
            f"data file {str(path)!r}: header says shape {shape} ({expected} bytes) but the file "
            f"holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a ``uint8`` array as IDX (gzip-compressed, reproducibly, when ``path`` ends in ``.gz``)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8 or not 1 <= arr.ndim <= 255:
        raise DataError(f"IDX output needs a uint8 array with 1..255 dimensions, got {arr.dtype} {arr.shape}")
    payload = bytes([0, 0, _UBYTE, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes() + arr.tobytes()
    if Path(path).suffix == ".gz":
        buf = io.BytesIO()
        # mtime=0 and no file name: the same array always gives the same bytes (and checksum).
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
            gz.write(payload)
        payload = buf.getvalue()
    atomic_write_bytes(path, payload)
