"""Hugging Face ``transformers`` models as discovery sees them (``transformers`` is never imported here).

A ``transformers`` model returns its key/value cache (``DynamicCache``, ``EncoderDecoderCache``)
with its outputs when ``config.use_cache`` is set; ``torch.export`` cannot flatten those objects,
and a cache is not part of the function being balanced anyway. :func:`export_ready` turns the
cache off in every configuration the model holds (an encoder-decoder keeps a separate copy per
stack) for the duration of the trace, and restores each setting after.

>>> import torch
>>> from types import SimpleNamespace
>>> model = torch.nn.Linear(2, 2)
>>> model.config = SimpleNamespace(use_cache=True)
>>> with export_ready(model):
...     model.config.use_cache
False
>>> model.config.use_cache
True
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

__all__ = ["export_ready"]


@contextmanager
def export_ready(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``use_cache`` in every ``config`` of ``model``'s modules for the block."""
    saved: dict[int, tuple[Any, bool]] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and id(config) not in saved and getattr(config, "use_cache", None) is True:
            saved[id(config)] = (config, True)
            config.use_cache = False
    try:
        yield model
    finally:
        for config, value in saved.values():
            config.use_cache = value
