"""Activation functions and their behaviour under positive rescaling.

A hidden unit is *scalable* when its activation is positively homogeneous:
``f(λx) = λ^c f(x)`` for all ``λ > 0``. BiLUs (linear, ReLU, leaky ReLU, |x|, ``a·x`` for
``x<0`` and ``b·x`` for ``x≥0``) have degree ``c = 1``; BiPUs (``C·x^c`` for ``x≥0``,
``D·|x|^c`` for ``x<0``) have degree ``c``. Every other activation (tanh, sigmoid, GELU, …) is
accepted for simulation but never scaled.

>>> a = parse_activation({"type": "bilu", "a": 0.2, "b": 1.0})
>>> a.scalable, a.degree
(True, 1.0)
>>> float(a(-2.0))
-0.4
>>> parse_activation("tanh").scalable
False
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbal.errors import ActivationError

__all__ = ["MAX_DEGREE", "MIN_DEGREE", "Activation", "parse_activation"]

ArrayFn = Callable[[np.ndarray], np.ndarray]


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(np.asarray(x / np.sqrt(2.0), dtype=np.float64)))  # erf has no long double loop


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return np.asarray(expit(x))


_NON_SCALABLE: dict[str, ArrayFn] = {
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "gelu": _gelu,
    "silu": lambda x: x * _sigmoid(x),
    "softplus": _softplus,
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sin": np.sin,
    "exp": np.exp,
}

_BILU_ALIASES: dict[str, tuple[float, float]] = {
    "linear": (1.0, 1.0),
    "identity": (1.0, 1.0),
    "relu": (0.0, 1.0),
    "abs": (-1.0, 1.0),
    "leaky_relu": (0.01, 1.0),
}


@dataclass(frozen=True)
class Activation:
    """A unit's activation: its JSON spec, how to evaluate it, and its homogeneity degree.

    ``degree`` is ``c`` for scalable units (1 for BiLUs) and ``None`` for non-scalable ones.
    """

    spec: str | dict[str, Any]
    degree: float | None
    fn: ArrayFn = field(compare=False, repr=False)

    @property
    def scalable(self) -> bool:
        """True when ``f(λx) = λ^c f(x)`` for every ``λ > 0``."""
        return self.degree is not None

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        a = np.asarray(x)
        return self.fn(a if a.dtype == np.longdouble else a.astype(np.float64, copy=False))

    def to_json(self) -> str | dict[str, Any]:
        """The JSON form this activation was read from (a copy)."""
        return dict(self.spec) if isinstance(self.spec, dict) else self.spec


def _bilu(a: float, b: float) -> ArrayFn:
    return lambda x: np.where(x >= 0, b * x, a * x)


def _bipu(c: float, C: float, D: float) -> ArrayFn:
    return lambda x: np.where(x >= 0, C * np.abs(x) ** c, D * np.abs(x) ** c)


#: The BiPU degrees synbal accepts: ``MIN_DEGREE <= c <= MAX_DEGREE``. Scaling a unit of degree
#: ``c`` by ``λ`` divides its outgoing weights by ``λ^c`` and its balanced scale is about
#: ``(c·OUT/IN)^{1/(p(1+c))}``; far outside this range ``λ^c`` or ``c·OUT`` leave float64 even for
#: ordinary weights (a degree of 1e-320 makes ``c·OUT`` underflow to 0 and the scale 0).
MIN_DEGREE = 0.01
MAX_DEGREE = 100.0


def _number(obj: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ActivationError(f"{where}: parameter {key!r} must be a finite number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:
        x = float("inf")
    if not np.isfinite(x):
        shown = repr(value) if isinstance(value, float) else f"an integer of {value.bit_length()} bits"
        raise ActivationError(f"{where}: parameter {key!r} must be a finite number, got {shown}")
    return x


def parse_activation(spec: object, *, where: str = "activation") -> Activation:
    """Read an activation from its JSON form (a name or a ``{"type": ...}`` object).

    ``where`` names the unit in error messages.
    """
    if isinstance(spec, str):
        name = spec.lower()
        if name in _BILU_ALIASES:
            a, b = _BILU_ALIASES[name]
            return Activation(spec, 1.0, _bilu(a, b))
        if name in _NON_SCALABLE:
            return Activation(spec, None, _NON_SCALABLE[name])
        known = sorted([*_BILU_ALIASES, *_NON_SCALABLE, "bilu", "bipu"])
        raise ActivationError(f"{where}: unknown activation {spec!r}; known: {', '.join(known)}")
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind == "bilu":
            a = _number(spec, "a", 0.0, where)
            b = _number(spec, "b", 1.0, where)
            return Activation(dict(spec), 1.0, _bilu(a, b))
        if kind == "bipu":
            c = _number(spec, "c", 1.0, where)
            if not MIN_DEGREE <= c <= MAX_DEGREE:
                raise ActivationError(
                    f"{where}: BiPU degree c must be between {MIN_DEGREE:g} and {MAX_DEGREE:g}, got {c:g}"
                )
            C = _number(spec, "C", 1.0, where)
            D = _number(spec, "D", 0.0, where)
            return Activation(dict(spec), c, _bipu(c, C, D))
        if isinstance(kind, str) and kind.lower() in {*_BILU_ALIASES, *_NON_SCALABLE}:
            base = parse_activation(kind, where=where)
            return Activation(dict(spec), base.degree, base.fn)
        raise ActivationError(f"{where}: unknown activation object {dict(spec)!r}")
    raise ActivationError(f"{where}: activation must be a string or an object, got {spec!r}")
