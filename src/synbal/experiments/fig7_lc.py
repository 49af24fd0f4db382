"""``synbal reproduce fig7-lc``: Figure 7 D–F on the locally connected net (see :mod:`synbal.experiments.lc`)."""

from __future__ import annotations

from synbal.experiments.lc import OPTIONS
from synbal.experiments.lc import run_fig7_lc as run

__all__ = ["OPTIONS", "run"]
