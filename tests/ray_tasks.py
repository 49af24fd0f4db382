"""Run functions for tests/test_ray_backend.py, importable by Ray workers (tests/ on their PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path


def square_or_die(x: int, folder: str) -> int:
    """``x²``; each execution leaves a file. Run ``x`` with ``folder/die-x`` present: the worker is
    killed (SIGKILL, as by an operator or the OOM killer) after the marker is removed."""
    Path(folder, f"ran-{x}-{uuid.uuid4().hex}").touch()
    time.sleep(0.3)
    marker = Path(folder, f"die-{x}")
    if marker.exists():
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x
