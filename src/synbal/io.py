"""Safe file output: atomic writes that never replace the input they were computed from.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synbal.errors import SynbalError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "ensure_not_input"]


def ensure_not_input(output: str | os.PathLike[str], *inputs: str | os.PathLike[str]) -> None:
    """Raise if ``output`` is the same file as any of ``inputs`` (never overwrite an input)."""
    out = Path(output)
    for inp in inputs:
        p = Path(inp)
        same = out.resolve() == p.resolve()
        if not same and out.exists() and p.exists():
            same = os.path.samefile(out, p)
        if same:
            raise SynbalError(f"output {str(output)!r} is the input file; choose another path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions a plainly created file would (``0o666`` less the umask; an
    existing file keeps its own), not the owner-only mode of a temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN/Inf refused)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
