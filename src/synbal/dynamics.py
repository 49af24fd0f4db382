"""Layer dynamics of layered networks: layer norms, Gram differences and their drift.

For a layered net ``x ↦ W_L f(… f(W_1 x))`` (``W_l`` of shape ``(n_{l+1}, n_l)``) the matrices

    C_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}        (l = 1 … L−1, each n_{l+1} × n_{l+1})

are conserved by gradient flow when ``f`` is linear (Basu et al., Theorem 1; Arora et al. 2018).
The diagonal of ``C_l`` is the L2 balance deficit ``IN − OUT`` of each hidden neuron between
``W_l`` and ``W_{l+1}`` (no bias), the per-neuron conservation law of the synaptic-balance paper,
which also holds for any BiLU (ReLU, leaky ReLU, …). With ReLU the off-diagonal part is no
longer conserved: two neurons gated differently on a sample break the symmetry.

Gradient descent with step ``η`` changes ``C_l`` per step by exactly
``η² (G_l G_lᵀ − G_{l+1}ᵀ G_{l+1})`` for a linear net (``G`` the gradients), so after a fixed
training time ``T = kη`` the drift of ``C_l`` shrinks in proportion to ``η``.

What is here: :func:`layer_weights` reads the matrices of a model (``nn.Sequential`` of
``nn.Linear`` with optional activations, a :class:`~synbal._adapters.dense.DenseNet`, or a list of
matrices); :func:`layer_norms`, :func:`gram_differences`, :func:`neuron_deficits`,
:func:`gram_rates` (the gradient-flow rate of ``C_l`` from the current gradients);
:class:`GramMonitor` (records norms and the drift of ``C_l`` during training, ``update(model,
step)``); initializations :func:`glorot_init` and :func:`balanced_init` (Corollary 2.2,
``C_l = 0``) and :func:`load_weights` to write matrices into a model.

>>> import numpy as np
>>> Ws = balanced_init([4, 3, 2], seed=0)
>>> [W.shape for W in Ws]
[(3, 4), (2, 3)]
>>> bool(np.abs(gram_differences(Ws)[0]).max() < 1e-12)
True
>>> norms = layer_norms(Ws)
>>> bool(abs(norms[0] - norms[1]) < 1e-12)
True
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synbal.errors import ModelError, SynbalError

__all__ = [
    "GramMonitor",
    "GramRates",
    "GramRecord",
    "balanced_init",
    "glorot_init",
    "gram_differences",
    "gram_rates",
    "layer_norms",
    "layer_weights",
    "linear_layers",
    "load_weights",
    "neuron_deficits",
]


# --------------------------------------------------------------------------------------------
# reading weights


def linear_layers(model: Any) -> list[Any]:
    """The ``nn.Linear`` modules of a layered torch model, in forward order.

    Accepted: an ``nn.Sequential`` (possibly nested) whose parametrised modules are all
    ``nn.Linear``; parameter-free modules (activations, ``Flatten``, ``Dropout``) are skipped.
    Consecutive layers must chain (``out_features`` of one = ``in_features`` of the next).

    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Sequential(nn.Linear(3, 2)))
    >>> [(m.in_features, m.out_features) for m in linear_layers(model)]
    [(4, 3), (3, 2)]
    >>> linear_layers(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    synbal.errors.ModelError: module '1' (LayerNorm) has parameters but is not nn.Linear; ...
    """
    import torch.nn as nn

    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    layers: list[nn.Linear] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif any(True for _ in module.parameters(recurse=False)):
            raise ModelError(
                f"module {name or type(model).__name__!r} ({type(module).__name__}) has parameters "
                "but is not nn.Linear; layer dynamics need a chain of linear layers"
            )
    if not layers:
        raise ModelError(f"{type(model).__name__} has no nn.Linear layers")
    for k in range(1, len(layers)):
        if layers[k].in_features != layers[k - 1].out_features:
            raise ModelError(
                f"linear layer {k} takes {layers[k].in_features} inputs but layer {k - 1} gives "
                f"{layers[k - 1].out_features}; not a chain"
            )
    return layers


def layer_weights(model: Any) -> list[np.ndarray]:
    """The weight matrices ``W_1 … W_L`` of ``model`` as float64 copies (shape ``(out, in)``).

    ``model`` is a torch layered model (see :func:`linear_layers`), a
    :class:`~synbal._adapters.dense.DenseNet`, or a sequence of 2-D arrays / tensors.

    >>> [W.shape for W in layer_weights([np.ones((3, 2)), np.ones((1, 3))])]
    [(3, 2), (1, 3)]
    """
    from synbal._adapters.dense import DenseNet

    if isinstance(model, DenseNet):
        mats: Sequence[Any] = model.weights
    elif isinstance(model, (list, tuple)):
        mats = model
    else:
        mats = [layer.weight for layer in linear_layers(model)]
    weights = [_as_matrix(W, k) for k, W in enumerate(mats)]
    if not weights:
        raise ModelError("no weight matrices given")
    for k in range(1, len(weights)):
        if weights[k].shape[1] != weights[k - 1].shape[0]:
            raise ModelError(
                f"weight {k} has shape {weights[k].shape}, which does not follow {weights[k - 1].shape}"
            )
    return weights


def _as_matrix(W: Any, k: int) -> np.ndarray:
    if hasattr(W, "detach"):
        W = W.detach().cpu().double().numpy()
    arr = np.array(W, dtype=np.float64, copy=True)
    if arr.ndim != 2:
        raise ModelError(f"weight {k} must be a 2-D matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"weight {k} has NaN or Inf entries")
    return arr


def layer_norms(model: Any) -> np.ndarray:
    """Frobenius norms ``‖W_l‖_F`` of every layer (float64).

    >>> layer_norms([np.array([[3.0, 4.0]]), np.array([[2.0]])]).tolist()
    [5.0, 2.0]
    """
    return np.array([np.linalg.norm(W) for W in layer_weights(model)])


def gram_differences(model: Any) -> list[np.ndarray]:
    """``C_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}`` for ``l = 1 … L−1`` (one per hidden layer).

    >>> C = gram_differences([np.array([[2.0], [1.0]]), np.array([[1.0, 1.0]])])[0]
    >>> C.tolist()
    [[3.0, 1.0], [1.0, 0.0]]
    """
    Ws = layer_weights(model)
    return [Ws[k] @ Ws[k].T - Ws[k + 1].T @ Ws[k + 1] for k in range(len(Ws) - 1)]


def neuron_deficits(model: Any) -> list[np.ndarray]:
    """Per hidden neuron, ``IN − OUT`` of the squared weights: ``diag(C_l)``, one array per layer.

    Equal to the L2 ``IN − OUT`` that :func:`synbal.deficit` reports when the net has no biases.

    >>> neuron_deficits([np.array([[2.0], [1.0]]), np.array([[1.0, 1.0]])])[0].tolist()
    [3.0, 0.0]
    """
    Ws = layer_weights(model)
    return [np.sum(Ws[k] ** 2, axis=1) - np.sum(Ws[k + 1] ** 2, axis=0) for k in range(len(Ws) - 1)]


# --------------------------------------------------------------------------------------------
# rates under gradient flow


@dataclass(frozen=True)
class GramRates:
    """Gradient-flow rates of the two Gram matrices meeting at each hidden layer.

    ``incoming[l] = d(W_l W_lᵀ)/dt`` and ``outgoing[l] = d(W_{l+1}ᵀ W_{l+1})/dt`` for
    ``dW/dt = −∇``; ``difference[l] = dC_l/dt`` is zero for linear nets (Theorem 1) and the
    symmetry-breaking term (eq. 29 of Basu et al.) for ReLU nets.

    >>> rates = GramRates([np.array([[2.0]])], [np.array([[1.5]])])
    >>> rates.difference[0].tolist(), rates.relative_asymmetry().tolist()
    ([[0.5]], [0.25])
    """

    incoming: list[np.ndarray]
    outgoing: list[np.ndarray]

    @property
    def difference(self) -> list[np.ndarray]:
        return [a - b for a, b in zip(self.incoming, self.outgoing, strict=True)]

    def relative_asymmetry(self) -> np.ndarray:
        """``‖dC_l/dt‖_F / max(‖d(W_lW_lᵀ)/dt‖_F, ‖d(W_{l+1}ᵀW_{l+1})/dt‖_F)`` per hidden layer."""
        out = []
        for a, b in zip(self.incoming, self.outgoing, strict=True):
            scale = max(np.linalg.norm(a), np.linalg.norm(b))
            out.append(np.linalg.norm(a - b) / scale if scale > 0 else 0.0)
        return np.array(out)


def gram_rates(weights: Any, grads: Sequence[Any] | None = None) -> GramRates:
    """Rates of ``W_l W_lᵀ`` and ``W_{l+1}ᵀ W_{l+1}`` under the gradient flow ``dW/dt = −G``.

    ``weights`` is anything :func:`layer_weights` reads; ``grads`` the matching gradients (arrays
    or tensors). If ``grads`` is omitted, ``weights`` must be a torch model after
    ``loss.backward()`` and its layers' ``.grad`` are used.

    >>> W1, W2 = np.array([[1.0, 2.0]]), np.array([[3.0]])
    >>> r = gram_rates([W1, W2], [np.array([[0.1, 0.0]]), np.array([[0.5]])])
    >>> r.incoming[0].tolist(), r.outgoing[0].tolist(), r.difference[0].tolist()
    ([[-0.2]], [[-3.0]], [[2.8]])
    """
    Ws = layer_weights(weights)
    if grads is None:
        layers = linear_layers(weights)
        missing = [k for k, layer in enumerate(layers) if layer.weight.grad is None]
        if missing:
            raise SynbalError(f"linear layers {missing} have no .grad; call loss.backward() first")
        grads = [layer.weight.grad for layer in layers]
    Gs = [_as_matrix(G, k) for k, G in enumerate(grads)]
    if [G.shape for G in Gs] != [W.shape for W in Ws]:
        raise SynbalError(
            f"gradient shapes {[G.shape for G in Gs]} do not match weight shapes {[W.shape for W in Ws]}"
        )
    incoming, outgoing = [], []
    for k in range(len(Ws) - 1):
        a = Gs[k] @ Ws[k].T
        b = Ws[k + 1].T @ Gs[k + 1]
        incoming.append(-(a + a.T))
        outgoing.append(-(b + b.T))
    return GramRates(incoming, outgoing)


# --------------------------------------------------------------------------------------------
# monitor


@dataclass(frozen=True)
class GramRecord:
    """One observation of :class:`GramMonitor`.

    ``drift[l] = ‖C_l(t) − C_l(t_0)‖_F``; ``relative_drift[l]`` divides it by the larger of
    ``‖W_l W_lᵀ‖_F`` and ``‖W_{l+1}ᵀ W_{l+1}‖_F`` at ``t``; ``diagonal_drift[l]`` is the largest
    change of a neuron's deficit ``max_j |C_l(t)_jj − C_l(t_0)_jj|``; ``deficits`` holds
    ``diag C_l(t)`` when the monitor records them.

    >>> mon = GramMonitor(record_deficits=True)
    >>> first = mon.update([np.array([[1.0, 1.0]]), np.array([[2.0]])], 0)  # C = 2 − 4
    >>> rec = mon.update([np.array([[2.0, 2.0]]), np.array([[2.0]])], 1)   # C = 8 − 4
    >>> rec.step, rec.norms.round(4).tolist(), rec.drift.tolist(), [d.tolist() for d in rec.deficits]
    (1, [2.8284, 2.0], [6.0], [[4.0]])
    """

    step: int
    norms: np.ndarray
    drift: np.ndarray
    relative_drift: np.ndarray
    diagonal_drift: np.ndarray
    deficits: list[np.ndarray] | None = None


@dataclass
class GramMonitor:
    """Track layer norms and the drift of ``C_l`` during training: call ``update(model, step)``.

    The first observation is the reference ``C_l(t_0)``. ``every`` skips steps that are not
    multiples of it; ``record_deficits`` also stores every neuron's ``diag C_l``. The monitor is
    a plain callable (``monitor(model, step)``), so it plugs into any training-loop hook.

    >>> Ws = glorot_init([5, 4, 3], seed=1)
    >>> mon = GramMonitor()
    >>> _ = mon.update(Ws, 0)
    >>> Ws[0] *= 2.0
    >>> rec = mon.update(Ws, 1)
    >>> bool(rec.drift[0] > 0), len(mon.history)
    (True, 2)
    """

    every: int = 1
    record_deficits: bool = False
    history: list[GramRecord] = field(default_factory=list)
    reference: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise SynbalError(f"GramMonitor: every must be a positive integer, got {self.every!r}")

    def update(self, model: Any, step: int) -> GramRecord | None:
        """Observe ``model`` at ``step``; returns the new record (``None`` if the step is skipped)."""
        if self.history and step % self.every != 0:
            return None
        Ws = layer_weights(model)
        Cs = [Ws[k] @ Ws[k].T - Ws[k + 1].T @ Ws[k + 1] for k in range(len(Ws) - 1)]
        if self.reference is None:
            self.reference = [C.copy() for C in Cs]
        if [C.shape for C in Cs] != [C.shape for C in self.reference]:
            raise SynbalError("GramMonitor: the model's layer shapes changed since the first update")
        drift, rel, diag = [], [], []
        for k, (C, C0) in enumerate(zip(Cs, self.reference, strict=True)):
            d = np.linalg.norm(C - C0)
            scale = max(np.linalg.norm(Ws[k] @ Ws[k].T), np.linalg.norm(Ws[k + 1].T @ Ws[k + 1]))
            drift.append(d)
            rel.append(d / scale if scale > 0 else 0.0)
            diag.append(float(np.max(np.abs(np.diag(C) - np.diag(C0)))))
        record = GramRecord(
            step=int(step),
            norms=np.array([np.linalg.norm(W) for W in Ws]),
            drift=np.array(drift),
            relative_drift=np.array(rel),
            diagonal_drift=np.array(diag),
            deficits=[np.diag(C).copy() for C in Cs] if self.record_deficits else None,
        )
        self.history.append(record)
        return record

    __call__ = update

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The history as arrays: ``steps`` (T,), ``norms`` (T, L), ``drift`` (T, L−1), …"""
        if not self.history:
            raise SynbalError("GramMonitor has no observations yet")
        out = {
            "steps": np.array([r.step for r in self.history]),
            "norms": np.stack([r.norms for r in self.history]),
            "drift": np.stack([r.drift for r in self.history]),
            "relative_drift": np.stack([r.relative_drift for r in self.history]),
            "diagonal_drift": np.stack([r.diagonal_drift for r in self.history]),
        }
        return out


# --------------------------------------------------------------------------------------------
# initializations


def _check_widths(widths: Sequence[int]) -> list[int]:
    ws = [int(w) for w in widths]
    if len(ws) < 2 or any(w < 1 for w in ws) or any(int(w) != w for w in widths):
        raise SynbalError(f"widths must be at least two positive integers, got {list(widths)}")
    return ws


def glorot_init(widths: Sequence[int], *, seed: int | None = None, distribution: str = "uniform",
                gain: float = 1.0) -> list[np.ndarray]:
    """Glorot (Xavier) matrices ``W_l`` of shape ``(widths[l+1], widths[l])`` in float64.

    ``distribution="uniform"``: ``U(−a, a)`` with ``a = gain·√(6/(n_in+n_out))`` (PyTorch's
    ``xavier_uniform_``); ``"normal"``: ``N(0, gain²·2/(n_in+n_out))``.

    >>> [W.shape for W in glorot_init([10, 6, 3], seed=0)]
    [(6, 10), (3, 6)]
    """
    ws = _check_widths(widths)
    if distribution not in ("uniform", "normal"):
        raise SynbalError(f"glorot_init: distribution must be 'uniform' or 'normal', got {distribution!r}")
    rng = np.random.default_rng(seed)
    out = []
    for n_in, n_out in itertools.pairwise(ws):
        std = gain * np.sqrt(2.0 / (n_in + n_out))
        if distribution == "uniform":
            a = std * np.sqrt(3.0)
            out.append(rng.uniform(-a, a, size=(n_out, n_in)))
        else:
            out.append(rng.normal(0.0, std, size=(n_out, n_in)))
    return out


def _orthonormal_columns(rng: np.random.Generator, n: int, r: int) -> np.ndarray:
    q, rr = np.linalg.qr(rng.standard_normal((n, r)))
    return q * np.sign(np.diag(rr))


def balanced_init(widths: Sequence[int], *, seed: int | None = None, layer_norm: float | None = None,
                  product: np.ndarray | None = None) -> list[np.ndarray]:
    """Matrices with ``C_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1} = 0`` for every hidden layer (Corollary 2.2).

    Construction: with ``r = min(widths)`` and random ``Q_l`` (``n_l × r``, orthonormal columns)
    ``W_l = Q_{l+1} S^{1/L} Q_lᵀ``, so that ``W_l W_lᵀ = Q_{l+1} S^{2/L} Q_{l+1}ᵀ = W_{l+1}ᵀ W_{l+1}``
    (the paper's ``V_{l+1} = U_l``, ``Σ_l Σ_lᵀ = Σ_{l+1}ᵀ Σ_{l+1}``). All layers get the same
    Frobenius norm.

    ``product``: factor this ``(widths[-1], widths[0])`` matrix (its rank must be at most ``r``)
    so that ``W_L ⋯ W_1 = product`` (the balanced factorisation of Arora et al.); otherwise
    ``S = s·I`` with every ``‖W_l‖_F = layer_norm`` (default: the geometric mean of the expected
    Glorot layer norms ``√(2 n_in n_out / (n_in + n_out))``).

    >>> A = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    >>> Ws = balanced_init([3, 4, 2], seed=0, product=A)
    >>> bool(np.allclose(Ws[1] @ Ws[0], A))
    True
    """
    ws = _check_widths(widths)
    L = len(ws) - 1
    r = min(ws)
    rng = np.random.default_rng(seed)
    Q = [_orthonormal_columns(rng, n, r) for n in ws]
    if product is not None:
        if layer_norm is not None:
            raise SynbalError("balanced_init: give layer_norm or product, not both")
        A = np.asarray(product, dtype=np.float64)
        if A.shape != (ws[-1], ws[0]):
            raise SynbalError(f"balanced_init: product must have shape {(ws[-1], ws[0])}, got {A.shape}")
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        if np.any(s[r:] > 1e-12 * max(1.0, s[0])):
            raise SynbalError(f"balanced_init: product has rank > min(widths) = {r}")
        Q[0], Q[-1], sing = Vt[:r].T, U[:, :r], s[:r]
    else:
        if layer_norm is None:
            glorot = [np.sqrt(2.0 * a * b / (a + b)) for a, b in itertools.pairwise(ws)]
            layer_norm = float(np.exp(np.mean(np.log(glorot))))
        if not np.isfinite(layer_norm) or layer_norm <= 0:
            raise SynbalError(f"balanced_init: layer_norm must be a positive number, got {layer_norm!r}")
        sing = np.full(r, (layer_norm / np.sqrt(r)) ** L)
    root = sing ** (1.0 / L)
    return [(Q[k + 1] * root) @ Q[k].T for k in range(L)]


# --------------------------------------------------------------------------------------------
# writing weights


def load_weights(model: Any, weights: Sequence[np.ndarray]) -> None:
    """Copy ``weights`` into the ``nn.Linear`` layers of ``model`` (in place, in their dtype).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2, bias=False), torch.nn.Linear(2, 1, bias=False))
    >>> load_weights(net, balanced_init([3, 2, 1], seed=0))
    >>> bool(np.abs(gram_differences(net)[0]).max() < 1e-6)
    True
    """
    import torch

    layers = linear_layers(model)
    if len(layers) != len(weights):
        raise ModelError(f"{len(weights)} matrices for {len(layers)} linear layers")
    for k, (layer, W) in enumerate(zip(layers, weights, strict=True)):
        if tuple(layer.weight.shape) != tuple(np.shape(W)):
            raise ModelError(f"layer {k}: weight shape {tuple(layer.weight.shape)} != {np.shape(W)}")
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(np.asarray(W), dtype=layer.weight.dtype))
