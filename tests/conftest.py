"""Shared fixtures: one local Ray instance per test session (each start costs seconds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_local() -> Iterator[Any]:
    """A local Ray instance with 2 CPUs (2 workers run at once), shared by every Ray test of the
    session; a ``RayBackend`` finds it running, uses it and leaves it up. Its workers see ``tests/``
    on their path (run functions of the tests live there)."""
    ray = pytest.importorskip("ray")
    from synbal.experiments.backend import RayBackend

    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), before or ""])
    try:
        assert RayBackend(num_cpus=2)._start()  # the options the command line uses
    finally:  # the workers inherit the path at start; this process keeps its own
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    yield ray
    ray.shutdown()
