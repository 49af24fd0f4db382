"""Log-domain conditioning for :class:`~synbal._adapters.dense.DenseNet`: the guarantees graphs have.

A DenseNet's costs are matrix-free ``coef·|W|^p`` products, exact while every cost stays inside
float64. Weights far from 1 (``(1e150)^3 = inf``, ``(1e-150)^3 = 0``) break that, although the
balanced state is usually well inside the range. As for graphs (:mod:`synbal._problem.conditioning`):

* :func:`log_extremes` gives each layer's smallest non-zero and largest ``log|w|`` (one compiled
  pass per matrix, no temporary), so the test for trouble costs almost nothing;
* :func:`conditioned_problem` then finds log-scales ``u0`` balancing each unit's largest
  incoming and outgoing weight and costs the weights scaled by ``u0`` in the log domain
  (``exp(log coef + p(log|w| + u_i − c u_j))``, materialised in float64): the problem's
  *origin* is ``u0``, and a cost that overflows even there raises
  :class:`~synbal.errors.NumericRangeError`;
* :func:`scaling_is_safe` tells when scales may be applied in place as they are; otherwise
  :func:`scaled_layer` applies them without intermediate over- or underflow and refuses a weight
  that leaves the range of its dtype (a weight lost to 0 would change the function).

>>> import numpy as np
>>> float(np.exp(log_extremes(np.array([[0.0, -1e-150], [1e150, 2.0]]))[0]))  # doctest: +ELLIPSIS
1.0000000000000...e-150
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numba
import numpy as np
from scipy.special import logsumexp

from synbal._problem.conditioning import LOG_MAX, condition, scale_weights
from synbal._problem.problem import BalanceProblem, CostBlock
from synbal.errors import NumericRangeError

if TYPE_CHECKING:
    from synbal._problem.costs import PowerTerm

__all__ = ["conditioned_problem", "log_extremes", "scaled_layer", "scaling_is_safe"]


class _Layers(Protocol):
    @property
    def weights(self) -> Sequence[np.ndarray]: ...
    @property
    def biases(self) -> Sequence[np.ndarray | None]: ...


class DenseNetAdapter(Protocol):
    """What the conditioning reads of the dense adapter (a protocol, so this module needs no import of it)."""

    @property
    def net(self) -> _Layers: ...
    @property
    def index(self) -> Sequence[np.ndarray]: ...
    @property
    def n(self) -> int: ...
    @property
    def names(self) -> Sequence[str]: ...


@numba.njit(cache=True, fastmath=True)
def _abs_range(flat: np.ndarray) -> tuple[float, float]:
    # branch-free min/max reductions (vectorised by LLVM); zeros count as +inf for the minimum.
    # Finite input only (the adapter refuses NaN/Inf first), so fastmath's no-NaN assumption holds.
    lo, hi = np.inf, 0.0
    for k in range(flat.size):
        a = abs(flat[k])
        hi = max(hi, a)
        lo = min(lo, a if a > 0 else np.inf)
    return float(lo), float(hi)


def log_extremes(a: np.ndarray) -> np.ndarray:
    """``[log min |a|, log max |a|]`` over the non-zero entries of ``a`` (empty when all are zero)."""
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)
    if flat.dtype in (np.float32, np.float64) and flat.size:
        lo, hi = _abs_range(flat)
    else:
        mags = np.abs(flat.astype(np.float64))
        lo, hi = (float(mags[mags > 0].min()), float(mags.max())) if (mags > 0).any() else (np.inf, 0.0)
    return np.log(np.array([lo, hi])) if hi > 0 else np.zeros(0)


def _weights_by_unit(adapter: DenseNetAdapter) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dst, src, log|w|)`` of every non-zero weight and bias (unit indices, ``-1`` fixed)."""
    dst, src, logs = [], [], []
    with np.errstate(divide="ignore"):
        for k, (W, b) in enumerate(zip(adapter.net.weights, adapter.net.biases, strict=True)):
            rows, cols = np.meshgrid(adapter.index[k + 1], adapter.index[k], indexing="ij")
            mats = [(rows, cols, np.log(np.abs(W.astype(np.float64))))]
            if b is not None:
                mats.append((adapter.index[k + 1], np.full(b.size, -1), np.log(np.abs(b.astype(np.float64)))))
            for r, s, lg in mats:
                keep = np.isfinite(lg)
                dst.append(r[keep])
                src.append(s[keep])
                logs.append(lg[keep])
    return np.concatenate(dst), np.concatenate(src), np.concatenate(logs)


def _log_costs(adapter: DenseNetAdapter, u0: np.ndarray, c: float, log_coef: float, p: float
               ) -> list[tuple[int, bool, np.ndarray]]:
    """Per layer (weights, then bias): ``log`` of ``coef·|w·e^{u_i − c u_j}|^p`` at the origin ``u0``."""
    ue = np.append(u0, 0.0)
    ce = np.where(np.arange(ue.size) < u0.size, c, 1.0)
    out = []
    with np.errstate(divide="ignore"):
        for k, (W, b) in enumerate(zip(adapter.net.weights, adapter.net.biases, strict=True)):
            rows, cols = adapter.index[k + 1], adapter.index[k]
            shift = ue[rows][:, None] - (ce[cols] * ue[cols])[None, :]
            out.append((k, False, log_coef + p * (np.log(np.abs(W.astype(np.float64))) + shift)))
            if b is not None:
                log_b = np.log(np.abs(b.astype(np.float64)))[:, None]
                out.append((k, True, log_coef + p * (log_b + ue[rows][:, None])))
    return out


def conditioned_problem(adapter: DenseNetAdapter, terms: tuple[PowerTerm, ...], c: float,
                        layers: list[np.ndarray], out_ids: np.ndarray) -> BalanceProblem:
    """The problem of the net's weights costed at the conditioned origin (see the module docstring)."""
    dst, src, log_mag = _weights_by_unit(adapter)
    u0 = condition(dst, src, log_mag, np.full(adapter.n, c))
    blocks: list[CostBlock] = []
    every_log: list[np.ndarray] = []
    last = len(adapter.net.weights) - 1
    for term in terms:
        for k, bias, logs in _log_costs(adapter, u0, c, float(np.log(term.coef)), term.power):
            if np.any(logs > LOG_MAX):
                raise NumericRangeError(
                    f"DenseNet layer {k}: the cost |w|^{term.power:g} of a {'bias' if bias else 'weight'} overflows "
                    "float64 even after rescaling: the regularizer cannot be represented")
            src_idx = np.array([-1]) if bias else adapter.index[k]
            blocks.append(CostBlock(term.power, adapter.index[k + 1], src_idx, np.exp(logs), bias=bias,
                                    fixed_ids=out_ids if k == last else None))
        # R of the weights as given, summed in the log domain
        for W, b in zip(adapter.net.weights, adapter.net.biases, strict=True):
            for a in (W, b):
                if a is not None:
                    with np.errstate(divide="ignore"):
                        lg = np.log(np.abs(a.astype(np.float64))).reshape(-1)
                    every_log.append(np.log(term.coef) + term.power * lg[np.isfinite(lg)])
    problem = BalanceProblem(np.full(adapter.n, c), blocks, names=adapter.names, layers=layers)
    problem.origin = u0
    logs_all = np.concatenate(every_log) if every_log else np.zeros(0)
    with np.errstate(over="ignore"):
        problem.origin_value = float(np.exp(logsumexp(logs_all))) if logs_all.size else 0.0
    return problem


def scaled_layer(a: np.ndarray, d: np.ndarray, where: str) -> np.ndarray:
    """``a·e^d`` (``d`` broadcast to ``a``) in ``a``'s dtype, computed without intermediate over- or
    underflow; a result outside that dtype (overflow, or a non-zero weight lost to 0) raises
    :class:`~synbal.errors.NumericRangeError`."""
    scaled = scale_weights(a.astype(np.float64), np.broadcast_to(d, a.shape))
    with np.errstate(over="ignore", under="ignore"):
        cast = scaled.astype(a.dtype)
    bad = ~np.isfinite(cast) | ((cast == 0) & (a != 0))
    if bad.any():
        flow = "overflows" if not np.isfinite(cast[bad]).all() else "underflows to 0 in"
        raise NumericRangeError(f"{where}: a scaled weight {flow} {a.dtype} ({int(bad.sum())} weights do): "
                                "the balanced network cannot be represented")
    return cast


def scaling_is_safe(log_range: np.ndarray, dtype: np.dtype, shift: float) -> bool:
    """Whether every weight with ``log|w|`` in ``log_range`` stays a normal number of ``dtype`` when
    multiplied by a factor ``e^d`` with ``|d| <= shift`` (then the fast in-place scaling is exact)."""
    if not log_range.size:
        return True
    info = np.finfo(dtype if np.issubdtype(dtype, np.floating) else np.float64)
    return bool(log_range.max() + shift < np.log(info.max) - 1.0 and log_range.min() - shift > np.log(info.tiny) + 1.0)
