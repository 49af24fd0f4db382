"""Import torchvision's pure-Python models for tests and benchmarks, whatever its compiled part does.

torchvision is a test/benchmark dependency only (the ``dev`` extra), never used by the package.
Its compiled extension may not load next to the CPU build of torch pinned here; importing its
models then fails while registering fake kernels for its C++ ops (``torch.library.register_fake``
raises ``RuntimeError``). The models themselves are plain ``nn.Module`` code that needs none of
those ops, so registration failures are ignored during the import.

``torchvision_models()`` returns ``torchvision.models`` or ``None`` when torchvision is absent;
:data:`needs_torchvision` is a pytest mark that skips a test cleanly in that case.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

__all__ = ["needs_torchvision", "torchvision_models"]


def _tolerant(register: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.library.register_fake`` that skips ops the compiled extension never defined."""

    def safe(*args: Any, **kwargs: Any) -> Any:
        try:
            decorator = register(*args, **kwargs)
        except RuntimeError:
            return lambda f: f

        def wrap(f: Any) -> Any:
            try:
                return decorator(f)
            except RuntimeError:
                return f

        return wrap

    return safe


@functools.cache
def torchvision_models() -> ModuleType | None:
    """``torchvision.models`` (imported once, tolerating a broken compiled extension), or ``None``."""
    try:
        import torch.library
    except ImportError:
        return None
    original = torch.library.register_fake
    torch.library.register_fake = _tolerant(original)
    try:
        import torchvision.models as models
    except ImportError:
        return None
    finally:
        torch.library.register_fake = original
    return models


needs_torchvision = pytest.mark.skipif(torchvision_models() is None, reason="torchvision is not installed")
