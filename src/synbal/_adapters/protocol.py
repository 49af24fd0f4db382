"""The adapter protocol: how a source (graph, PyTorch model, …) becomes a balance problem and back.

An adapter *extracts* a :class:`~synbal._problem.problem.BalanceProblem` for a regularizer, and *applies*
log-scales ``u`` (one per problem unit) to a copy of its source (or in place). Adapters register
themselves by the type they handle, so :func:`synbal.balance` dispatches on the input's type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import Regularizer
from synbal.errors import OptionError, SynbalError

__all__ = ["Adapter", "adapter_for", "check_adapter_options", "register_adapter"]


class Adapter(Protocol):
    """What the balancing front end needs from a source of weights."""

    def problem(self, reg: Regularizer) -> BalanceProblem:
        """Aggregate the source's weight costs for ``reg`` into a balance problem."""
        ...

    def apply(self, u: np.ndarray, *, inplace: bool) -> Any:
        """Scale unit ``k`` by ``exp(u[k])``; return the balanced source (a copy unless ``inplace``)."""
        ...

    def excluded(self) -> dict[str, str]:
        """Units that are never scaled (non-homogeneous activation, …), name → reason."""
        ...


AdapterFactory = Callable[..., Adapter]
_REGISTRY: list[tuple[Callable[[object], bool], AdapterFactory]] = []


def register_adapter(matches: Callable[[object], bool], factory: AdapterFactory) -> None:
    """Register ``factory(source, **options)`` for sources where ``matches(source)`` is true."""
    _REGISTRY.append((matches, factory))


_builtin_loaded = False


def _load_builtin_adapters() -> None:
    global _builtin_loaded
    _builtin_loaded = True
    import synbal._adapters.dense  # registers DenseNet
    import synbal._adapters.graph  # noqa: F401  (registers Graph)


def _factory_for(source: object) -> AdapterFactory | None:
    if not _builtin_loaded:
        _load_builtin_adapters()
    if _looks_like_torch(source):
        import synbal._adapters.torch  # noqa: F401  (registers nn.Module and exported programs)
    for matches, factory in _REGISTRY:
        if matches(source):
            return factory
    return None


def _keywords(factory: AdapterFactory) -> tuple[str, ...] | None:
    """The keyword options ``factory(source, **options)`` takes (``None``: any)."""
    params = list(inspect.signature(factory).parameters.values())[1:]  # the source comes first
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def check_adapter_options(source: object, options: Mapping[str, Any], also: Sequence[str] = ()) -> None:
    """Raise :class:`~synbal.errors.OptionError` for an option neither ``source``'s adapter nor the
    caller (whose own keywords are ``also``) takes, naming the options that are taken."""
    factory = _factory_for(source)
    accepted = None if factory is None else _keywords(factory)
    if accepted is None:
        return
    unknown = [k for k in options if k not in accepted]
    if unknown:
        taken = ", ".join([*also, *accepted]) or "none"
        raise OptionError(
            f"unknown option {unknown[0]}= for a {type(source).__name__}; the options taken are: {taken}"
        )


def _looks_like_torch(source: object) -> bool:
    """True for torch objects, decided without importing torch (it is slow to import)."""
    return any(cls.__module__.split(".")[0] == "torch" for cls in type(source).__mro__)


def adapter_for(source: object, **options: Any) -> Adapter:
    """The adapter for ``source`` (a :class:`~synbal._adapters.graph.Graph`, an ``nn.Module``, …)."""
    factory = _factory_for(source)
    if factory is not None:
        check_adapter_options(source, options)
        return factory(source, **options)
    raise SynbalError(
        f"cannot balance an object of type {type(source).__name__}; "
        "expected a synbal.Graph or a torch.nn.Module"
    )
