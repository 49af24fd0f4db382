"""Layered networks given as plain weight matrices (numpy), without PyTorch.

:class:`DenseNet` holds ``W_1..W_L`` (``W_l`` of shape ``(n_l, n_{l-1})``), optional biases and
one homogeneous activation for the hidden layers. It is the fastest route for very large layered
nets (benchmarks, experiments on extracted weights): extraction keeps ``|W|^p`` matrix-free
(:class:`~synbal._compiled.powermatrix.PowerMatrix`: products read the weights directly and accumulate in
float64), and apply writes ``diag(Λ_l) W_l diag(Λ_{l-1}^{-c})`` back in the
weights' own dtype.

>>> import numpy as np, synbal
>>> net = DenseNet([np.array([[4.0]]), np.array([[0.25]])])
>>> res = synbal.balance(net, "l2")
>>> [w.tolist() for w in res.net.weights]
[[[1.0]], [[1.0]]]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from synbal._adapters.dense_range import conditioned_problem, log_extremes, scaled_layer, scaling_is_safe
from synbal._adapters.protocol import register_adapter
from synbal._compiled.powermatrix import PowerMatrix, scale_rows_cols
from synbal._problem.activations import Activation, parse_activation
from synbal._problem.conditioning import needs_conditioning
from synbal._problem.costs import CostFunction, PowerTerm
from synbal._problem.problem import BalanceProblem, CostBlock, CustomCosts, GeneratedNames, Matrix
from synbal._problem.regularizers import Regularizer
from synbal.errors import GraphFormatError, InvalidWeightError

__all__ = ["DenseNet"]


@dataclass
class DenseNet:
    """A fully connected layered net ``x → f(W_1 x + b_1) → … → W_L h + b_L``.

    The input and output layers are visible; every hidden unit uses ``activation`` (a BiLU or
    BiPU spec, default ReLU). ``biases[l]`` may be ``None``.

    >>> import synbal
    >>> net = DenseNet([np.array([[4.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 9.0]])], [np.array([2.0, 0.0]), None])
    >>> net.widths
    [2, 2, 1]
    >>> res = synbal.balance(net, "l2")  # unit 0: in 4² + 2² = 20, out 1 → λ⁴ = 1/20
    >>> [round(s, 6) for s in res.scales.values()], res.net.forward([[1.0, 1.0]]).round(9).tolist()
    ([0.472871, 3.0], [[15.0]])
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray | None] = field(default_factory=list)
    activation: str | dict[str, object] = "relu"

    def __post_init__(self) -> None:
        if not self.weights:
            raise GraphFormatError("a DenseNet needs at least one weight matrix")
        if not self.biases:
            self.biases = [None] * len(self.weights)
        if len(self.biases) != len(self.weights):
            raise GraphFormatError(f"{len(self.biases)} biases for {len(self.weights)} layers")
        for k in range(1, len(self.weights)):
            if self.weights[k].shape[1] != self.weights[k - 1].shape[0]:
                raise GraphFormatError(
                    f"layer {k}: weight shape {self.weights[k].shape} does not follow "
                    f"{self.weights[k - 1].shape}"
                )
        for k, b in enumerate(self.biases):
            if b is not None and b.shape != (self.weights[k].shape[0],):
                raise GraphFormatError(f"layer {k}: bias shape {b.shape} != ({self.weights[k].shape[0]},)")
        act = self.act
        if not act.scalable:
            raise GraphFormatError(f"DenseNet hidden activation {self.activation!r} is not homogeneous")

    @property
    def act(self) -> Activation:
        return parse_activation(self.activation, where="DenseNet activation")

    @property
    def widths(self) -> list[int]:
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The network's output for inputs ``x`` of shape ``(batch, n_0)`` (float64)."""
        h = np.asarray(x, dtype=np.float64)
        act = self.act
        for k, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ W.astype(np.float64).T
            if b is not None:
                h = h + b
            if k < len(self.weights) - 1:
                h = act(h)
        return h

    def copy(self) -> DenseNet:
        return copy.deepcopy(self)


def _power_sum(W: np.ndarray, p: float, coef: float) -> Matrix:
    """``coef·|W|^p``: matrix-free for float32/float64 weights, else materialised in float64."""
    if W.dtype in (np.float32, np.float64):
        return PowerMatrix(W, p, coef)
    return np.abs(W.astype(np.float64)) ** p * coef


def _all_finite(a: np.ndarray) -> bool:
    """No NaN or Inf in ``a``: one SIMD sum (any NaN/Inf makes it non-finite), the full test only
    when the sum itself is not finite (call under ``np.errstate(over="ignore", invalid="ignore")``)."""
    return bool(np.isfinite(a.sum()) or np.isfinite(a).all())


class DenseNetAdapter:
    """Extract/apply for :class:`DenseNet` (see :class:`synbal._adapters.protocol.Adapter`)."""

    def __init__(self, net: DenseNet) -> None:
        self.net = net
        with np.errstate(over="ignore", invalid="ignore"):
            for k, W in enumerate(net.weights):
                if not _all_finite(W):
                    raise InvalidWeightError(f"DenseNet layer {k}: weight matrix has NaN or Inf entries")
            for k, b in enumerate(net.biases):
                if b is not None and not _all_finite(b):
                    raise InvalidWeightError(f"DenseNet layer {k}: bias has NaN or Inf entries")
        widths = net.widths
        self.index: list[np.ndarray] = []
        off = 0
        for k, w in enumerate(widths):
            if k in (0, len(widths) - 1):
                self.index.append(np.full(w, -1, dtype=np.int64))
            else:
                self.index.append(np.arange(off, off + w, dtype=np.int64))
                off += w
        self.n = off
        starts = np.cumsum([0, *widths[1:-1]])

        def name_of(i: int) -> str:
            k = int(np.searchsorted(starts, i, side="right"))
            return f"layer{k}.{i - int(starts[k - 1])}"

        self.names = GeneratedNames(self.n, name_of)
        self._log_range: np.ndarray | None = None

    #: What the costs are of, in refusals (the :class:`~synbal._problem.costs.CostSink` protocol).
    where = "a DenseNet"

    def problem(self, reg: Regularizer) -> BalanceProblem:
        return reg.costs_for(self)

    def power_costs(self, terms: tuple[PowerTerm, ...]) -> BalanceProblem:
        """The problem of ``Σ coef·|w|^p``: matrix-free blocks, or costed at a conditioned origin."""
        c = float(self.net.act.degree or 1.0)
        layers = self.index[1:-1]
        out_ids = np.arange(self.net.widths[-1]) + self.n
        if needs_conditioning(self.log_range(), 0.0, [(t.coef, t.power) for t in terms]):
            return conditioned_problem(self, terms, c, layers, out_ids)  # costs would leave float64
        blocks = []
        last = len(self.net.weights) - 1
        for term in terms:
            for k, (W, b) in enumerate(zip(self.net.weights, self.net.biases, strict=True)):
                fixed_ids = out_ids if k == last else None
                blocks.append(CostBlock(term.power, self.index[k + 1], self.index[k],
                                        _power_sum(W, term.power, term.coef), fixed_ids=fixed_ids))
                if b is not None:
                    blocks.append(CostBlock(term.power, self.index[k + 1], np.array([-1]),
                                            _power_sum(b[:, None], term.power, term.coef), bias=True,
                                            fixed_ids=fixed_ids))
        return BalanceProblem(np.full(self.n, c), blocks, names=self.names, layers=layers)

    def custom_costs(self, g: CostFunction, dg: CostFunction) -> BalanceProblem:
        """The problem of the custom costs ``g(|w|)`` of every weight and bias."""
        c = float(self.net.act.degree or 1.0)
        return BalanceProblem(np.full(self.n, c), [], names=self.names, layers=self.index[1:-1],
                              custom=self._custom(g, dg))

    def _custom(self, g: CostFunction, dg: CostFunction) -> CustomCosts:
        dst, src, mag = [], [], []
        for k, (W, b) in enumerate(zip(self.net.weights, self.net.biases, strict=True)):
            r, s = np.meshgrid(self.index[k + 1], self.index[k], indexing="ij")
            dst.append(r.ravel())
            src.append(s.ravel())
            mag.append(np.abs(W, dtype=np.float64).ravel())
            if b is not None:
                dst.append(self.index[k + 1])
                src.append(np.full(b.size, -1))
                mag.append(np.abs(b.astype(np.float64)))
        d = np.concatenate(dst)
        return CustomCosts(d, np.concatenate(src), np.concatenate(mag), np.ones(d.size), g, dg)

    def log_range(self) -> np.ndarray:
        """``log|w|`` of the smallest non-zero and the largest weight or bias of every layer."""
        if self._log_range is None:
            parts = [log_extremes(a) for a in [*self.net.weights, *self.net.biases] if a is not None]
            self._log_range = np.concatenate(parts) if parts else np.zeros(0)
        return self._log_range

    def apply(self, u: np.ndarray, *, inplace: bool) -> DenseNet:
        ue = np.append(np.asarray(u, dtype=np.float64), 0.0)
        c = float(self.net.act.degree or 1.0)
        shift = float(np.max(np.abs(ue))) * (1.0 + c)
        if not all(scaling_is_safe(self.log_range(), a.dtype, shift) for a in self.net.weights):
            return self._apply_extreme(ue, c, inplace)
        net = self.net if inplace else self.net.copy()
        for k in range(len(net.weights)):
            row = np.exp(ue[self.index[k + 1]])
            col = np.exp(-c * ue[self.index[k]])
            scale_rows_cols(net.weights[k], row, col)
            b = net.biases[k]
            if b is not None:
                b[...] = (b.astype(np.float64) * row).astype(b.dtype)
        return net

    def _apply_extreme(self, ue: np.ndarray, c: float, inplace: bool) -> DenseNet:
        """Apply scales that may take a weight near the ends of its dtype: every layer is scaled
        (and checked) before any is written, so a refused result leaves the net untouched."""
        scaled = []
        for k, (W, b) in enumerate(zip(self.net.weights, self.net.biases, strict=True)):
            rows, cols = ue[self.index[k + 1]], c * ue[self.index[k]]
            scaled.append((scaled_layer(W, rows[:, None] - cols[None, :], f"DenseNet layer {k}"),
                           None if b is None else scaled_layer(b, rows, f"DenseNet layer {k} bias")))
        net = self.net if inplace else self.net.copy()
        for k, (W, b) in enumerate(scaled):
            net.weights[k][...] = W
            if b is not None:
                net.biases[k][...] = b  # type: ignore[index]
        return net

    def excluded(self) -> dict[str, str]:
        return {}


register_adapter(lambda s: isinstance(s, DenseNet), DenseNetAdapter)
