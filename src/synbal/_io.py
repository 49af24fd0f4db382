"""Safe file output: atomic writes that never replace the input they were computed from.

A write goes to a hidden temporary file beside the target, is flushed to disk (``fsync``) and
renamed into place, so a crash leaves the old file or the complete new one, never an empty
one; the temporary file is removed on any exception, including the ``KeyboardInterrupt`` of
SIGINT and the :class:`Terminated` that the command line raises on SIGTERM.
:func:`atomic_write_all` writes several files so that all of them appear or none does.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(d / "a.txt", "hello")
>>> (d / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from synbal.errors import SynbalError

__all__ = [
    "Terminated",
    "atomic_write",
    "atomic_write_all",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "ensure_not_input",
]

#: Test hook: when set to a path, a write creates that file and waits (up to 60 s) before its rename,
#: so a test can signal the process at a known point. Never set in normal use.
PAUSE_ENV = "SYNBAL_TEST_PAUSE_BEFORE_RENAME"


class Terminated(BaseException):
    """Raised by the command line's SIGTERM handler so that ``finally`` blocks clean up."""


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


def _fsync(path: Path, *, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some systems cannot open directories; the file itself is synced
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _pause_for_tests() -> None:
    flag = os.environ.get(PAUSE_ENV)
    if flag:
        Path(flag).touch()
        time.sleep(60)


def atomic_write_all(items: Sequence[tuple[str | os.PathLike[str], Callable[[Path], object]]]) -> None:
    """For each ``(path, write)``: ``write(tmp)`` a temporary file beside ``path``; rename them all at the end.

    Nothing is renamed until every file is written and synced, and every temporary file is removed
    on failure. Files get the permissions a plainly created file would (``0o666`` less the umask;
    an existing file keeps its own), not the owner-only mode of a temporary file.
    """
    for path, _ in items:  # the one failure of a rename that can be foreseen: check it before writing
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    temps: list[tuple[Path, Path]] = []
    try:
        for path, write in items:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            temps.append((Path(tmp_name), target))
            write(temps[-1][0])
            _fsync(temps[-1][0])
            os.chmod(temps[-1][0], target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask())
        _pause_for_tests()
        for tmp, target in temps:
            os.replace(tmp, target)
            _fsync(target.parent, directory=True)
    finally:
        for tmp, _ in temps:
            if tmp.exists():
                tmp.unlink()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    atomic_write_all([(path, write)])


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN/Inf refused)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
