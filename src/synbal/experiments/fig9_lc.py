"""``synbal reproduce fig9-lc``: Figure 9 on the locally connected net (see :mod:`.fig9`).

Runs on CIFAR-10 when ``--data`` points at its python-format batch files, otherwise on the
stand-in of :func:`synbal.experiments.fig9.cifar10_standin`, which every output names.
"""

from __future__ import annotations

from synbal.experiments.fig9 import run_lc as run

__all__ = ["run"]
