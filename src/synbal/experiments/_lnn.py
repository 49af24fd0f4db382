"""Layer dynamics of deep linear nets (Basu et al., Fig. 1) and of ReLU nets (Fig. 2, eq. 29).

``synbal reproduce lnn`` — the paper's synthetic task: 10-dimensional samples from a mixture of
3 Gaussians (random means, randomly rotated and scaled covariances, 400 samples each), centred
and whitened (the theory assumes ``Σ_xx = I``, eq. 14); targets ``y = A x`` for a fixed random
``3 × 10`` matrix ``A``, so ``Σ_yx = A``. Nets 10-6-3 and 10-8-6-4-3, no biases, Glorot
initialization, full-batch gradient descent on ``(1/2m) Σ ‖ŷ − y‖²`` with a small step ``η``
(time ``t = step · η``, the paper's ``τ = 1/η``). Measured, over several seeds:

1. layer norms ``‖W_l‖_F`` over time (Fig. 1 i–ii), ``‖W_L ⋯ W_1‖_F`` against ``‖Σ_yx‖_F``,
   ``Π‖W_l‖_F``, and the drift ``‖C_l(t) − C_l(0)‖_F`` of ``C_l = W_l W_lᵀ − W_{l+1}ᵀ W_{l+1}``;
2. the upper bound (17): ``U = (‖W_1‖_F + Δ)^L``, ``κ1 = min_t ‖Σ_yx‖/‖ΠW‖``,
   ``κ2 = min_t ‖ΠW‖/U`` (the paper's definitions), ``M = (2κ1 + 1)‖Σ_yx‖``; the ODE
   ``τ dU/dt = L U^{2(1−1/L)} (M − κ2 U)`` is integrated from ``U(0)`` and compared with the
   trajectory, and repeated for ``L = 2, 3, 4`` with the 2-layer constants (Fig. 1 iii);
3. the conservation law, quantitatively: ``‖C_l(T) − C_l(0)‖_F`` after a fixed time ``T`` for
   several ``η`` (log–log slope; 1 means drift ∝ η, exact per step: ``η²(G_l G_lᵀ − G_{l+1}ᵀ
   G_{l+1})``), for the linear nets and for the same nets with ReLU;
4. the ReLU symmetry breaking (eq. 29): the exact rate ``dC_l/dt`` (from the gradients), its
   within-sample decomposition ``−Σ_i (d_ij − d_ik)(a_ij z_ik − a_ik z_ij)`` over neuron pairs
   gated differently on the same sample, and the paper's cross-sample expression evaluated
   literally, compared with the exact rate.

``synbal reproduce lnn-relu`` (:mod:`synbal.experiments._lnn_relu`) — a 7-layer bias-free ReLU MLP
784-100×6-10 on MNIST: layer norms over training (Fig. 2), the per-neuron deficit monitor, and
the test of Conjecture 4 (upper layers' Gram rates match: ``‖d(W_{l+1}ᵀW_{l+1})/dt −
d(W_lW_lᵀ)/dt‖_F → 0``; growth rates of upper-layer norms become similar).

>>> task = make_mixture_task(seed=0, per_component=50)
>>> task.x.shape, task.y.shape, round(float(np.abs(task.sigma_xx - np.eye(10)).max()), 12)
((150, 10), (150, 3), 0.0)
>>> Ws = glorot_init([10, 6, 3], seed=0, distribution="normal")
>>> loss, grads = mlp_loss_and_grads(Ws, task.x, task.y, "linear")
>>> rates = gram_rates(Ws, grads)
>>> bool(np.abs(rates.difference[0]).max() < 1e-12)  # Theorem 1
True
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from synbal.dynamics import GramMonitor, glorot_init, gram_rates
from synbal.errors import SynbalError
from synbal.experiments import _lnn_verdicts as words
from synbal.experiments._lnn_verdicts import transition_sharpness
from synbal.experiments._report import ExperimentContext, new_figure, plot_mean_std, write_outputs

__all__ = [
    "MixtureTask",
    "bound_trajectory",
    "eq29_terms",
    "fit_loglog_slope",
    "make_mixture_task",
    "measure_kappas",
    "mlp_loss_and_grads",
    "paper_init",
    "run",
    "train_gd",
]

LNN_WIDTHS: tuple[tuple[int, ...], ...] = ((10, 6, 3), (10, 8, 6, 4, 3))
INITS = ("glorot", "small")


# ------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class MixtureTask:
    """Whitened inputs ``x`` (m, d), targets ``y = x Aᵀ`` (m, k) and their covariances."""

    x: np.ndarray
    y: np.ndarray
    A: np.ndarray
    sigma_yx: np.ndarray
    sigma_xx: np.ndarray


def make_mixture_task(*, seed: int, dim: int = 10, out_dim: int = 3, components: int = 3,
                      per_component: int = 400, whiten: bool = True) -> MixtureTask:
    """The paper's synthetic regression task (see the module docstring).

    Each component has mean ``N(0, 2² I)`` and covariance ``R diag(s²) Rᵀ`` with ``R`` a random
    rotation and ``s ~ U(0.2, 2)``; the pooled sample is centred and (by default) whitened
    exactly (``Σ_xx = I``); ``A`` has ``N(0, 1)`` entries.
    """
    if min(dim, out_dim, components, per_component) < 1:
        raise SynbalError("make_mixture_task: every size must be at least 1")
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(components):
        R, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        scales = rng.uniform(0.2, 2.0, dim)
        mean = rng.normal(0.0, 2.0, dim)
        parts.append(mean + (rng.standard_normal((per_component, dim)) * scales) @ R.T)
    x = np.concatenate(parts)
    x -= x.mean(axis=0)
    if whiten:
        evals, evecs = np.linalg.eigh(x.T @ x / len(x))
        x = x @ (evecs / np.sqrt(evals)) @ evecs.T
    A = rng.standard_normal((out_dim, dim))
    y = x @ A.T
    m = len(x)
    return MixtureTask(x=x, y=y, A=A, sigma_yx=y.T @ x / m, sigma_xx=x.T @ x / m)


# ------------------------------------------------------------------------------- the model


def mlp_loss_and_grads(Ws: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray,
                       activation: str) -> tuple[float, list[np.ndarray]]:
    """Loss ``(1/2m) Σ ‖ŷ − y‖²`` of the bias-free MLP ``W_L f(⋯ f(W_1 x))`` and its gradients.

    ``activation`` is ``"linear"`` or ``"relu"`` (hidden layers only; the output is linear).
    """
    zs, hs = _forward(Ws, x, activation)
    m = x.shape[0]
    err = hs[-1] - y
    loss = 0.5 * float(np.sum(err * err)) / m
    grads: list[np.ndarray] = [np.empty(0)] * len(Ws)
    delta = err / m  # ∂loss/∂(output pre-activation)
    for k in range(len(Ws) - 1, -1, -1):
        grads[k] = delta.T @ hs[k]
        if k > 0:
            delta = delta @ Ws[k]
            if activation == "relu":
                delta = delta * (zs[k - 1] > 0)
    return loss, grads


def _forward(Ws: Sequence[np.ndarray], x: np.ndarray, activation: str) -> tuple[list[np.ndarray],
                                                                             list[np.ndarray]]:
    """Pre-activations ``z_l`` (hidden layers) and layer inputs/outputs ``h_0 = x … h_L = ŷ``."""
    if activation not in ("linear", "relu"):
        raise SynbalError(f"activation must be 'linear' or 'relu', got {activation!r}")
    hs = [x]
    zs = []
    for k, W in enumerate(Ws):
        z = hs[-1] @ W.T
        if k < len(Ws) - 1:
            zs.append(z)
            hs.append(np.maximum(z, 0.0) if activation == "relu" else z)
        else:
            hs.append(z)
    return zs, hs


@dataclass
class Trajectory:
    """What :func:`train_gd` records every ``record_every`` steps."""

    times: np.ndarray  # t = step·η
    norms: np.ndarray  # (T, L)
    product_norm: np.ndarray  # ‖W_L ⋯ W_1‖_F
    loss: np.ndarray
    drift: np.ndarray  # (T, L−1) ‖C_l(t) − C_l(0)‖_F
    relative_drift: np.ndarray
    diagonal_drift: np.ndarray
    asymmetry: np.ndarray  # (T, L−1) relative ‖dC_l/dt‖ at the recorded steps
    final_weights: list[np.ndarray]


def train_gd(Ws: Sequence[np.ndarray], task: MixtureTask, *, lr: float, time_span: float,
             activation: str = "linear", record_every: int = 1) -> Trajectory:
    """Full-batch gradient descent for ``round(time_span/lr)`` steps; records the dynamics."""
    if lr <= 0 or time_span <= 0 or record_every < 1:
        raise SynbalError("train_gd: lr and time_span must be positive, record_every ≥ 1")
    steps = round(time_span / lr)
    Ws = [np.array(W, dtype=np.float64) for W in Ws]
    monitor = GramMonitor()
    times, prods, losses, asym = [], [], [], []
    for step in range(steps + 1):
        loss, grads = mlp_loss_and_grads(Ws, task.x, task.y, activation)
        if step % record_every == 0 or step == steps:
            monitor.update(Ws, step)
            times.append(step * lr)
            losses.append(loss)
            prods.append(np.linalg.norm(_product(Ws)))
            asym.append(gram_rates(Ws, grads).relative_asymmetry())
        if step < steps:
            for W, G in zip(Ws, grads, strict=True):
                W -= lr * G
        if not math.isfinite(loss):
            raise SynbalError(f"gradient descent diverged at step {step} (lr={lr})")
    arr = monitor.as_arrays()
    return Trajectory(
        times=np.array(times), norms=arr["norms"], product_norm=np.array(prods), loss=np.array(losses),
        drift=arr["drift"], relative_drift=arr["relative_drift"], diagonal_drift=arr["diagonal_drift"],
        asymmetry=np.array(asym), final_weights=Ws,
    )


def _product(Ws: Sequence[np.ndarray]) -> np.ndarray:
    P = Ws[0]
    for W in Ws[1:]:
        P = W @ P
    return P


# --------------------------------------------------------------------------- the bound (17)


def measure_kappas(norms: np.ndarray, product_norm: np.ndarray, sigma_norm: float,
                   layer: int = 0) -> dict[str, float]:
    """κ1, κ2, Δ and ``U(0)`` of Theorem 3, measured on a trajectory as the paper defines them.

    ``Δ`` is the largest difference between two layer norms over the whole trajectory (the
    paper assumes it is fixed at initialization; it is not exactly); ``U = (‖W_layer‖ + Δ)^L``;
    ``κ1 = min_t ‖Σ_yx‖/‖ΠW(t)‖`` (largest κ1 with ``‖Σ_yx‖ ≥ κ1‖ΠW‖`` for all t) and
    ``κ2 = min_t ‖ΠW(t)‖/U(t)``.

    >>> k = measure_kappas(np.array([[1.0, 1.0], [2.0, 2.0]]), np.array([0.5, 3.0]), 3.0)
    >>> k["kappa1"], k["kappa2"], k["delta"]
    (1.0, 0.5, 0.0)
    """
    L = norms.shape[1]
    spread = norms.max(axis=1) - norms.min(axis=1)
    delta = float(spread.max())
    U = (norms[:, layer] + delta) ** L
    positive = product_norm > 0
    if not np.any(positive):
        raise SynbalError("measure_kappas: the product W_L⋯W_1 is zero along the whole trajectory")
    return {
        "kappa1": float(np.min(sigma_norm / product_norm[positive])),
        "kappa2": float(np.min(product_norm / U)),
        "delta": delta,
        "delta_at_init": float(spread[0]),
        "U0": float(U[0]),
        "layers": float(L),
    }


def bound_trajectory(times: np.ndarray, *, U0: float, layers: int, M: float, kappa2: float) -> np.ndarray:
    """Solve ``dU/dt = L U^{2(1−1/L)} (M − κ2 U)`` (eq. 17 with equality, τ = 1) at ``times``.

    >>> U = bound_trajectory(np.array([0.0, 50.0]), U0=0.1, layers=2, M=2.0, kappa2=1.0)
    >>> round(float(U[0]), 6), round(float(U[1]), 4)
    (0.1, 2.0)
    """
    from scipy.integrate import solve_ivp

    L = float(layers)

    def rhs(_t: float, u: np.ndarray) -> np.ndarray:
        v = max(float(u[0]), 0.0)
        return np.array([L * v ** (2.0 * (1.0 - 1.0 / L)) * (M - kappa2 * v)])

    sol = solve_ivp(rhs, (float(times[0]), float(times[-1])), [U0], t_eval=times, method="LSODA",
                    rtol=1e-9, atol=1e-12)
    if not sol.success:
        raise SynbalError(f"integrating the bound (17) failed: {sol.message}")
    return np.asarray(sol.y[0])


def t_lower_bound(U: float, *, U0: float, layers: int, M: float, kappa2: float,
                  as_printed: bool = False) -> float:
    """Eq. (18): the least time for ``U0 → U`` under the deep-net rate ``L U² (M − κ2 U)``.

    The exact integral is ``(1/L)[(κ2/M²) log(U(M − κ2U0)/(U0(M − κ2U))) − 1/(MU) + 1/(MU0)]``;
    ``as_printed=True`` gives the paper's form ``(κ2/L)[(1/M²) log(U(M−U0)/(U0(M−U))) − 1/(MU)
    + 1/(MU0)]``, which equals it only for κ2 = 1.

    >>> from scipy.integrate import quad
    >>> exact = quad(lambda U: 1 / (2 * U**2 * (2 - 0.5 * U)), 0.5, 1.0)[0]  # L=2, M=2, κ2=0.5
    >>> round(t_lower_bound(1.0, U0=0.5, layers=2, M=2.0, kappa2=0.5) - exact, 12)
    0.0
    >>> round(t_lower_bound(1.0, U0=0.5, layers=2, M=2.0, kappa2=0.5, as_printed=True), 6), round(exact, 6)
    (0.193663, 0.302956)
    """
    if as_printed:
        return kappa2 / layers * (math.log(U * (M - U0) / (U0 * (M - U))) / M**2 - 1 / (M * U) + 1 / (M * U0))
    log_term = kappa2 / M**2 * math.log(U * (M - kappa2 * U0) / (U0 * (M - kappa2 * U)))
    return (log_term - 1 / (M * U) + 1 / (M * U0)) / layers


# ----------------------------------------------------------------------- eq. 29 (ReLU)


def eq29_terms(Ws: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Per hidden layer of a bias-free ReLU MLP: the exact ``dC_l/dt`` and the eq. 29 pieces.

    Returns, for each hidden layer, ``exact`` = ``‖dC_l/dt‖_F`` (from the gradients),
    ``scale`` = ``max(‖d(W_lW_lᵀ)/dt‖, ‖d(W_{l+1}ᵀW_{l+1})/dt‖)``, ``diagonal`` = ``max |diag
    dC_l/dt|`` (zero: the per-neuron law survives ReLU), ``gate_formula_error`` = relative
    difference between the exact rate and its within-sample decomposition
    ``−(B + Bᵀ)``, ``B = (D⊙Ã)ᵀZ − Ãᵀ(D⊙Z)`` (``D`` gates, ``Z`` pre-activations, ``Ã``
    loss gradients at the layer's outputs), ``paper_rhs`` = ``‖RHS of eq. 29‖_F`` evaluated
    literally (gates frozen, ``Σ_{i≠j}`` over sample pairs, divided by ``m² − m``),
    ``paper_rhs_error`` = ``‖LHS − RHS‖/‖LHS‖`` and ``mixed_gate_fraction`` = the fraction of
    (sample, neuron pair) with different gates.
    """
    zs, hs = _forward(Ws, x, "relu")
    _, grads = mlp_loss_and_grads(Ws, x, y, "relu")
    rates = gram_rates(list(Ws), grads)
    m = x.shape[0]
    # Ã_l = ∂loss/∂h_l for every hidden layer (back-propagated)
    post_grads: list[np.ndarray] = [np.empty(0)] * (len(Ws) - 1)
    delta = (hs[-1] - y) / m
    for k in range(len(Ws) - 1, 0, -1):
        post_grads[k - 1] = delta @ Ws[k]
        delta = post_grads[k - 1] * (zs[k - 1] > 0)
    gates = [(z > 0).astype(np.float64) for z in zs]
    out = []
    for k, diff in enumerate(rates.difference):
        D, Z, At = gates[k], zs[k], post_grads[k]
        B = (D * At).T @ Z - At.T @ (D * Z)
        gate_rate = -(B + B.T)
        exact = float(np.linalg.norm(diff))
        scale = max(np.linalg.norm(rates.incoming[k]), np.linalg.norm(rates.outgoing[k]))
        rhs = _paper_eq29_rhs(Ws, grads, gates, k, m)
        lhs = -diff  # d/dt(W_{l+1}ᵀW_{l+1}) − d/dt(W_lW_lᵀ)
        n = D.shape[1]
        on = D.sum(axis=0)
        # samples where neurons j and k are gated differently: c_j + c_k − 2 N_jk
        mixed = (on[:, None] + on[None, :] - 2.0 * (D.T @ D)).sum() / (m * n * max(n - 1, 1))
        out.append({
            "exact": exact,
            "scale": float(scale),
            "relative": float(exact / scale) if scale > 0 else 0.0,
            "diagonal": float(np.abs(np.diag(diff)).max()),
            "gate_formula_error": float(np.linalg.norm(gate_rate - diff) / max(exact, 1e-300)),
            "paper_rhs": float(np.linalg.norm(rhs)),
            "paper_rhs_error": float(np.linalg.norm(lhs - rhs) / max(exact, 1e-300)),
            "mixed_gate_fraction": float(mixed),
        })
    return out


def _paper_eq29_rhs(Ws: Sequence[np.ndarray], grads: Sequence[np.ndarray], gates: Sequence[np.ndarray],
                    k: int, m: int) -> np.ndarray:
    """``(1/(m²−m)) Σ_{i≠j} d/dt(W̄_{l+1,i}ᵀ W̄_{l+1,j} − W̄_{l,i} W̄_{l,j}ᵀ)`` with frozen gates.

    ``W̄_{l,i} = D_{l,i} W_l``; for the output layer ``D = I``. With ``c`` the per-neuron count of
    active samples and ``N = DᵀD`` the co-activation counts: ``Σ_{i≠j} D_i D_j = diag(c² − c)``
    and ``Σ_{i≠j} D_i X D_j = diag(c) X diag(c) − X ⊙ N``.
    """
    W_in, W_out = Ws[k], Ws[k + 1]
    Wdot_in, Wdot_out = -grads[k], -grads[k + 1]
    if k + 1 < len(gates):
        c_up = gates[k + 1].sum(axis=0)
        P = c_up * c_up - c_up
    else:
        P = np.full(W_out.shape[0], float(m * m - m))
    upper = Wdot_out.T @ (P[:, None] * W_out) + W_out.T @ (P[:, None] * Wdot_out)
    X = Wdot_in @ W_in.T + W_in @ Wdot_in.T
    c = gates[k].sum(axis=0)
    N = gates[k].T @ gates[k]
    lower = c[:, None] * X * c[None, :] - X * N
    result: np.ndarray = (upper - lower) / (m * m - m)
    return result


# ------------------------------------------------------------------------------ statistics


def fit_loglog_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of ``log y`` against ``log x``.

    >>> round(fit_loglog_slope(np.array([1.0, 2.0, 4.0]), np.array([3.0, 6.0, 12.0])), 12)
    1.0
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2 or np.any(x <= 0) or np.any(y <= 0):
        raise SynbalError("fit_loglog_slope needs at least two positive (x, y) pairs")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def _mean_std(values: Any) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std())}


# ----------------------------------------------------------------------------- lnn: run


@dataclass(frozen=True)
class LnnSettings:
    """Settings of ``synbal reproduce lnn`` (quick: fewer seeds and learning rates)."""

    seeds: int
    lr: float = 0.005
    time_span: float = 20.0
    record_every: int = 10
    small_beta: float = 0.25
    sweep_lrs: tuple[float, ...] = (0.00125, 0.0025, 0.005, 0.01, 0.02)
    sweep_time: float = 2.0
    per_component: int = 400
    eq29_every: int = 5  # in recorded points
    eq29_time: float = 4.0

    @classmethod
    def for_context(cls, ctx: ExperimentContext) -> LnnSettings:
        if ctx.quick:
            return cls(seeds=ctx.n_seeds(5, 2), sweep_lrs=(0.0025, 0.005, 0.01), sweep_time=1.0)
        return cls(seeds=ctx.n_seeds(5, 2))


def _bound_checks(traj: Trajectory, sigma_norm: float, kappas: dict[str, float], L: int,
                  bound: np.ndarray) -> dict[str, float]:
    """How the trajectory compares with the bound (17) and with the steps of its derivation."""
    U = (traj.norms[:, 0] + kappas["delta"]) ** L
    prod_of_norms = traj.norms.prod(axis=1)
    k1, k2 = kappas["kappa1"], kappas["kappa2"]
    dUdt = np.gradient(U, traj.times)
    M_paper = (2 * k1 + 1) * sigma_norm
    rate_bound = L * U ** (2 * (1 - 1 / L)) * (M_paper - k2 * U)
    return {
        "bound_dominates_product_of_norms": float(np.mean(prod_of_norms <= bound * (1 + 1e-9))),
        "bound_dominates_U": float(np.mean(bound * (1 + 1e-9) >= U)),
        "rate_inequality_17_holds": float(np.mean(dUdt <= rate_bound + 1e-9 * np.abs(rate_bound))),
        "max_product_of_norms_over_bound": float(np.max(prod_of_norms / bound)),
    }


def paper_init(widths: Sequence[int], *, seed: int, beta: float) -> list[np.ndarray]:
    """The initialization of the paper's Corollary 2.3: i.i.d. ``N(0, β/(n_l n_{l+1}))`` entries.

    Every layer then has ``E‖W_l‖_F² = β`` (equal expected norms, small for small β).

    >>> [bool(abs(np.linalg.norm(W) ** 2 - 0.25) < 0.01) for W in paper_init([400, 300, 200], seed=0, beta=0.25)]
    [True, True]
    """
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, math.sqrt(beta / (a * b)), size=(b, a)) for a, b in itertools.pairwise(widths)]


def _initial_weights(init: str, widths: Sequence[int], seed: int, st: LnnSettings) -> list[np.ndarray]:
    if init == "glorot":
        return glorot_init(widths, seed=10_000 + seed, distribution="normal")
    return paper_init(widths, seed=10_000 + seed, beta=st.small_beta)


def _run_linear_net(widths: tuple[int, ...], init: str, st: LnnSettings, seeds: Sequence[int],
                    progress: Callable[[], None]) -> dict[str, Any]:
    L = len(widths) - 1
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        task = make_mixture_task(seed=seed, per_component=st.per_component)
        sigma_norm = float(np.linalg.norm(task.sigma_yx))
        Ws = _initial_weights(init, widths, seed, st)
        traj = train_gd(Ws, task, lr=st.lr, time_span=st.time_span, record_every=st.record_every)
        kappas = measure_kappas(traj.norms, traj.product_norm, sigma_norm)
        M = (2 * kappas["kappa1"] + 1) * sigma_norm
        bound = bound_trajectory(traj.times, U0=kappas["U0"], layers=L, M=M, kappa2=kappas["kappa2"])
        runs.append({"seed": seed, "sigma_norm": sigma_norm, "traj": traj, "kappas": kappas, "M": M,
                     "bound": bound, "checks": _bound_checks(traj, sigma_norm, kappas, L, bound)})
        progress()
    return {"widths": widths, "init": init, "runs": runs}


def _sweep(widths: tuple[int, ...], activation: str, st: LnnSettings, seeds: Sequence[int],
           progress: Callable[[], None]) -> dict[str, Any]:
    """Drift of C_l after the fixed time ``sweep_time`` for every learning rate and seed."""
    drift = np.zeros((len(seeds), len(st.sweep_lrs), len(widths) - 2))
    diag = np.zeros_like(drift)
    for i, seed in enumerate(seeds):
        task = make_mixture_task(seed=seed, per_component=st.per_component)
        W0 = glorot_init(widths, seed=10_000 + seed, distribution="normal")
        for j, lr in enumerate(st.sweep_lrs):
            traj = train_gd(W0, task, lr=lr, time_span=st.sweep_time, activation=activation,
                            record_every=10**9)
            drift[i, j] = traj.drift[-1]
            diag[i, j] = traj.diagonal_drift[-1]
            progress()
    lrs = np.array(st.sweep_lrs)
    total = np.linalg.norm(drift, axis=2)
    slopes = [fit_loglog_slope(lrs, total[i]) for i in range(len(seeds))]
    diag_total = diag.max(axis=2)
    diag_slopes = [fit_loglog_slope(lrs, diag_total[i]) for i in range(len(seeds)) if np.all(diag_total[i] > 0)]
    return {"widths": list(widths), "activation": activation, "lrs": lrs, "drift": drift,
            "diagonal_drift": diag, "slope": _mean_std(slopes), "slopes": slopes,
            "diagonal_slope": _mean_std(diag_slopes) if diag_slopes else None}


def _eq29_along_training(widths: tuple[int, ...], st: LnnSettings, seed: int) -> dict[str, Any]:
    """ReLU net trained like the linear one; eq. 29 quantities at regular times."""
    task = make_mixture_task(seed=seed, per_component=st.per_component)
    Ws = glorot_init(widths, seed=10_000 + seed, distribution="normal")
    steps = round(st.eq29_time / st.lr)
    every = st.record_every * st.eq29_every
    times, rows = [], []
    for step in range(steps + 1):
        if step % every == 0:
            times.append(step * st.lr)
            rows.append(eq29_terms(Ws, task.x, task.y))
        _, grads = mlp_loss_and_grads(Ws, task.x, task.y, "relu")
        for W, G in zip(Ws, grads, strict=True):
            W -= st.lr * G
    keys = rows[0][0].keys()
    return {"times": np.array(times),
            **{key: np.array([[layer[key] for layer in row] for row in rows]) for key in keys}}


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """``synbal reproduce lnn``: Fig. 1 of Basu et al., the conservation law and its ReLU breaking."""
    st = LnnSettings.for_context(ctx)
    seeds = list(range(st.seeds))
    total = len(seeds) * (2 * len(LNN_WIDTHS) + 2 * len(LNN_WIDTHS) * len(st.sweep_lrs))
    start = time.perf_counter()
    with tqdm(total=total, desc="lnn", disable=not ctx.progress) as bar:
        nets = {f"{init}-{len(w) - 1}": _run_linear_net(w, init, st, seeds, lambda: bar.update())
                for init in INITS for w in LNN_WIDTHS}
        sweeps = {f"{act}-{len(w) - 1}": _sweep(w, act, st, seeds, lambda: bar.update())
                  for act in ("linear", "relu") for w in LNN_WIDTHS}
    eq29 = {len(w) - 1: _eq29_along_training(w, st, seeds[0]) for w in LNN_WIDTHS}
    depth = {init: _depth_comparison(nets[f"{init}-2"], st) for init in INITS}
    results = _lnn_results(nets, sweeps, eq29, depth)
    results["seconds"] = time.perf_counter() - start
    results["verdict"] = _verdict(results)
    figures = _lnn_figures(nets, sweeps, eq29, depth)
    settings = {**st.__dict__, "widths": [list(w) for w in LNN_WIDTHS], "loss": "(1/2m) sum ||y_hat - y||^2",
                "inits": {"glorot": "Glorot normal N(0, 2/(n_in+n_out)) (lr sweep and ReLU runs too)",
                          "small": "paper's Corollary 2.3: N(0, beta/(n_in n_out)), E||W_l||^2 = beta"},
                "bias": False,
                "data": "3-component Gaussian mixture, 10-d, centred and whitened; y = A x, A ~ N(0,1) 3x10"}
    write_outputs(ctx, "lnn", results=results, settings=settings, summary_md=_lnn_summary(results, st),
                  figures=figures)
    return results


def _depth_comparison(net2: dict[str, Any], st: LnnSettings) -> dict[str, Any]:
    """Fig. 1 (iii): the bound (17) for L = 2, 3, 4 with the 2-layer net's constants (seed 0)."""
    run0 = net2["runs"][0]
    k = run0["kappas"]
    w1 = float(run0["traj"].norms[0, 0])
    M = run0["M"]
    times = np.concatenate([[0.0], np.logspace(-4, np.log10(st.time_span), 400)])
    curves, reach, t18, t18_printed = {}, {}, {}, {}
    for L in (2, 3, 4):
        U0 = (w1 + k["delta"]) ** L
        U = bound_trajectory(times, U0=U0, layers=L, M=M, kappa2=k["kappa2"])
        curves[L] = U
        target = 0.9 * M / k["kappa2"]
        hit = np.nonzero(target <= U)[0]
        reach[L] = float(times[hit[0]]) if hit.size else None
        if target > U0:
            t18[L] = t_lower_bound(target, U0=U0, layers=L, M=M, kappa2=k["kappa2"])
            # the printed form takes log(U(M − U0)/(U0(M − U))): defined only while U < M
            t18_printed[L] = (t_lower_bound(target, U0=U0, layers=L, M=M, kappa2=k["kappa2"], as_printed=True)
                              if target < M else None)
    sharp = {L: transition_sharpness(times, curves[L], M / k["kappa2"]) for L in curves}
    return {"times": times, "curves": curves, "time_to_90pct": reach, "eq18_lower_bound": t18,
            "bound_sharpness": sharp,
            "eq18_as_printed": t18_printed, "M": M, "kappa1": k["kappa1"], "kappa2": k["kappa2"],
            "delta": k["delta"], "w1_0": w1}


def _per_seed(runs: list[dict[str, Any]], get: Callable[[dict[str, Any]], float]) -> dict[str, float]:
    return _mean_std([get(r) for r in runs])


def _net_result(net: dict[str, Any]) -> dict[str, Any]:
    runs = net["runs"]
    return {
        "widths": list(net["widths"]),
        "init": net["init"],
        "times": runs[0]["traj"].times,
        "norms_mean": np.mean([r["traj"].norms for r in runs], axis=0),
        "product_norm_mean": np.mean([r["traj"].product_norm for r in runs], axis=0),
        "bound_mean": np.mean([r["bound"] for r in runs], axis=0),
        "sigma_yx_norm": _per_seed(runs, lambda r: r["sigma_norm"]),
        "final_product_norm": _per_seed(runs, lambda r: r["traj"].product_norm[-1]),
        "final_loss": _per_seed(runs, lambda r: r["traj"].loss[-1]),
        "layer_norm_spread_at_init": _per_seed(runs, lambda r: r["kappas"]["delta_at_init"]),
        "layer_norm_spread_max": _per_seed(runs, lambda r: r["kappas"]["delta"]),
        "layer_norm_spread_final": _per_seed(runs, lambda r: np.ptp(r["traj"].norms[-1])),
        "trace_C_change": _per_seed(runs, lambda r: _trace_change(r["traj"])),
        "final_relative_drift_max": _per_seed(runs, lambda r: r["traj"].relative_drift[-1].max()),
        "kappa1": _per_seed(runs, lambda r: r["kappas"]["kappa1"]),
        "kappa2": _per_seed(runs, lambda r: r["kappas"]["kappa2"]),
        "M": _per_seed(runs, lambda r: r["M"]),
        "time_to_90pct_of_sigma": _time_to_fit(runs),
        "bound_plateau_over_sigma": _per_seed(runs, lambda r: r["M"] / r["kappas"]["kappa2"] / r["sigma_norm"]),
        "transition_sharpness": _sharpness(runs),
        **{key: _mean_std([r["checks"][key] for r in runs]) for key in runs[0]["checks"]},
    }


def _lnn_results(nets: dict[str, dict[str, Any]], sweeps: dict[str, dict[str, Any]],
                 eq29: dict[int, dict[str, Any]], depth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "nets": {key: _net_result(net) for key, net in nets.items()},
        "lr_sweep": sweeps,
        "eq29": {str(L): e for L, e in eq29.items()},
        "depth_comparison": {init: {k: v for k, v in d.items() if k != "curves"} for init, d in depth.items()},
    }


def _time_to_fit(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Time for ‖ΠW‖ to reach 90% of ‖Σ_yx‖: mean ± std over the seeds that got there."""
    hits = []
    for r in runs:
        idx = np.nonzero(r["traj"].product_norm >= 0.9 * r["sigma_norm"])[0]
        if idx.size:
            hits.append(float(r["traj"].times[idx[0]]))
    return {**(_mean_std(hits) if hits else {"mean": None, "std": None}), "reached": f"{len(hits)}/{len(runs)}"}


def _sharpness(runs: list[dict[str, Any]]) -> float | None:
    """Mean over seeds of :func:`~.lnn_verdicts.transition_sharpness` (``None``: a seed never got there)."""
    found = [transition_sharpness(r["traj"].times, r["traj"].product_norm, r["sigma_norm"]) for r in runs]
    return None if any(v is None for v in found) else float(np.mean([v for v in found if v is not None]))


def _trace_change(traj: Trajectory) -> float:
    """Largest relative change of ‖W_l‖² − ‖W_{l+1}‖² (= trace C_l) from start to end."""
    sq = traj.norms**2
    diff = sq[:, :-1] - sq[:, 1:]
    scale = np.maximum(sq[0, :-1], sq[0, 1:])
    return float(np.max(np.abs(diff[-1] - diff[0]) / scale))


_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]


def _norms_figure(net: dict[str, Any], title: str) -> Any:
    """Fig. 1 i–ii: layer norms, the product, ‖Σ_yx‖, and (two layers) Π‖W_l‖ with the bound."""
    runs = net["runs"]
    t = runs[0]["traj"].times
    L = len(net["widths"]) - 1
    fig, ax = new_figure(size=(6.0, 4.2))
    for layer in range(L):
        plot_mean_std(ax, t, np.array([r["traj"].norms[:, layer] for r in runs]), label=f"‖W{layer + 1}‖_F",
                      color=_COLORS[layer])
    plot_mean_std(ax, t, np.array([r["traj"].product_norm for r in runs]), label="‖W_L⋯W_1‖_F", color="black")
    ax.axhline(float(np.mean([r["sigma_norm"] for r in runs])), color="tab:purple", ls="--", label="‖Σ_yx‖_F")
    if L == 2:
        plot_mean_std(ax, t, np.array([r["traj"].norms.prod(axis=1) for r in runs]), label="‖W1‖_F‖W2‖_F",
                      color="tab:red")
        plot_mean_std(ax, t, np.array([r["bound"] for r in runs]), label="bound (17)", color="tab:brown")
        ax.set_yscale("log")
    ax.set_xlabel("time t = step·η")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def _depth_figure(depth: dict[str, dict[str, Any]]) -> Any:
    fig, axes = new_figure(ncols=len(depth))
    for ax, (init, d) in zip(np.atleast_1d(axes), depth.items(), strict=True):
        for L, U in d["curves"].items():
            ax.plot(d["times"][1:], U[1:], label=f"L = {L}")
        ax.set_xscale("log")
        ax.axhline(d["M"] / d["kappa2"], color="gray", ls=":", label="M/κ2")
        ax.set_yscale("log")
        ax.set_xlabel("time t")
        ax.set_ylabel("U(t) from (17) with equality")
        ax.set_title(f"Fig. 1 iii ({init} init constants)")
        ax.legend(fontsize=8)
    return fig


def _drift_figure(nets: dict[str, dict[str, Any]], eq29: dict[int, dict[str, Any]]) -> Any:
    fig, axes = new_figure(ncols=2)
    for key, net in nets.items():
        t = net["runs"][0]["traj"].times
        rel = np.array([r["traj"].relative_drift.max(axis=1) for r in net["runs"]])
        plot_mean_std(axes[0], t[1:], np.maximum(rel[:, 1:], 1e-18), label=f"linear {key}", logy=True)
    axes[0].set_xlabel("time t")
    axes[0].set_ylabel("max_l ‖C_l(t) − C_l(0)‖_F / ‖W_lW_lᵀ‖_F")
    axes[0].set_title("linear nets: drift of C_l (finite η)")
    axes[0].legend(fontsize=7)
    for L, e in eq29.items():
        for layer in range(e["relative"].shape[1]):
            axes[1].plot(e["times"], e["relative"][:, layer], label=f"ReLU L={L}, C_{layer + 1}")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("time t")
    axes[1].set_ylabel("‖dC_l/dt‖_F / ‖d(W_lW_lᵀ)/dt‖_F")
    axes[1].set_title("ReLU nets: symmetry-breaking rate (eq. 29)")
    axes[1].legend(fontsize=6)
    return fig


def _sweep_figure(sweeps: dict[str, dict[str, Any]]) -> Any:
    fig, ax = new_figure(size=(6.0, 4.2))
    for key, sw in sweeps.items():
        total = np.linalg.norm(sw["drift"], axis=2)
        plot_mean_std(ax, sw["lrs"], total, label=f"{key}: ‖ΔC‖_F (slope {sw['slope']['mean']:.2f})", logy=True)
        if sw["activation"] == "relu":
            plot_mean_std(ax, sw["lrs"], np.maximum(sw["diagonal_drift"].max(axis=2), 1e-18),
                          label=f"{key}: max |Δ diag C| (per-neuron)", logy=True)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("drift of C_l after a fixed time")
    ax.legend(fontsize=6)
    return fig


def _lnn_figures(nets: dict[str, dict[str, Any]], sweeps: dict[str, dict[str, Any]],
                 eq29: dict[int, dict[str, Any]], depth: dict[str, dict[str, Any]]) -> dict[str, Any]:
    figures = {}
    for init in INITS:
        figures[f"fig1_two_layer_{init}"] = _norms_figure(nets[f"{init}-2"], f"10-6-3 linear net, {init} init")
        figures[f"fig1_four_layer_{init}"] = _norms_figure(nets[f"{init}-4"],
                                                           f"10-8-6-4-3 linear net, {init} init")
    figures["fig1_bound_depth"] = _depth_figure(depth)
    figures["drift"] = _drift_figure(nets, eq29)
    figures["drift_vs_lr"] = _sweep_figure(sweeps)
    return figures


def _fmt(d: dict[str, float] | None, digits: int = 3) -> str:
    if d is None:
        return "n/a"
    return f"{d['mean']:.{digits}g} ± {d['std']:.{digits}g}"


def _show(value: float | None, why: str = "U0 above the target") -> str:
    return f"n/a ({why})" if value is None else f"{value:.4g}"


def _depth_sentence(res: dict[str, Any]) -> str:
    """Compare the bound's depth trend with the trained nets' (from the numbers, per init)."""
    parts = []
    for init, dc in res["depth_comparison"].items():
        bound = [dc["time_to_90pct"].get(L) for L in (2, 4)]
        fits = [res["nets"][f"{init}-{L}"]["time_to_90pct_of_sigma"]["mean"] for L in (2, 4)]
        if None in bound or None in fits:
            parts.append(f"{init} init: not comparable (a time is missing)")
            continue
        b = "sooner" if bound[1] < bound[0] else "later"
        f = "sooner" if fits[1] < fits[0] else "later"
        parts.append(f"{init} init: the bound saturates {b} for L=4 than for L=2 "
                     f"({bound[1]:.3g} vs {bound[0]:.3g}); the trained 4-layer net fits {f} than the "
                     f"2-layer one ({fits[1]:.3g} vs {fits[0]:.3g})")
    trained = {f"trained {key}": net["transition_sharpness"] for key, net in res["nets"].items()}
    bound_sharp = {f"bound {init} L={L}": dc["bound_sharpness"][L]
                   for init, dc in res["depth_comparison"].items() for L in (2, 4)}
    return "Depth (Fig. 1 iii) — " + "; ".join(parts) + ". " + words.depth_sentence(trained, bound_sharp)


def _verdict(res: dict[str, Any]) -> str:
    sweeps = res["lr_sweep"]
    return words.conservation_verdict(
        {k: v["slope"]["mean"] for k, v in sweeps.items() if v["activation"] == "linear"},
        {k: v["slope"]["mean"] for k, v in sweeps.items() if v["activation"] == "relu"})


def _norms_paragraph(nets: dict[str, Any]) -> str:
    return words.norms_sentence(
        {k: n["final_product_norm"]["mean"] / n["sigma_yx_norm"]["mean"] for k, n in nets.items()},
        {k: n["layer_norm_spread_at_init"]["mean"] for k, n in nets.items()},
        {k: n["layer_norm_spread_final"]["mean"] for k, n in nets.items()})


def _conservation_paragraph(sweeps: dict[str, Any]) -> str:
    pick = {act: {k: v for k, v in sweeps.items() if v["activation"] == act} for act in ("linear", "relu")}
    return words.conservation_sentence(
        {k: v["slope"]["mean"] for k, v in pick["linear"].items()},
        {k: v["slope"]["mean"] for k, v in pick["relu"].items()},
        {k: v["diagonal_slope"]["mean"] for k, v in pick["relu"].items() if v["diagonal_slope"] is not None})


def _eq29_paragraph(eq29: dict[str, Any]) -> str:
    rel_diag = [float(np.max(e["diagonal"] / np.maximum(e["scale"], 1e-300))) for e in eq29.values()]
    return words.eq29_sentence(
        gate_error=max(float(np.max(e["gate_formula_error"])) for e in eq29.values()),
        diagonal=max(rel_diag),
        rhs_errors=(min(float(np.min(e["paper_rhs_error"])) for e in eq29.values()),
                    max(float(np.max(e["paper_rhs_error"])) for e in eq29.values())))


def _norms_section(res: dict[str, Any], st: LnnSettings) -> list[str]:
    nets = res["nets"]
    lines = [
        "# Layer dynamics of deep linear nets (Basu et al., Fig. 1)",
        "",
        f"**Result: {_verdict(res)}** (claim: linear nets conserve C_l = W_lW_lᵀ − W_{{l+1}}ᵀW_{{l+1}}, "
        "ReLU breaks it; rule: every linear drift slope against η within "
        f"{words.SLOPE_TOLERANCE:g} of 1, every ReLU one within {words.SLOPE_TOLERANCE:g} of 0).",
        "",
        f"{st.seeds} seeds (mean ± std), full-batch GD, η = {st.lr}, time T = {st.time_span} "
        "(t = step·η), whitened 3-Gaussian mixture (1,200 samples), y = A x. Two inits: `glorot` "
        "(Glorot normal, as asked) and `small` (the paper's Corollary 2.3 scaling N(0, β/(n_l n_{l+1})), "
        f"β = {st.small_beta}, so that every ‖W_l‖ starts ≈ √β as the paper's Fig. 1 assumes).",
        "",
        "## Layer norms and the product (Fig. 1 i–ii)",
        "",
        "| run | ‖Σ_yx‖_F | final ‖ΠW‖_F | final loss | spread max_l‖W_l‖ − min_l‖W_l‖ at t=0 | at the end |"
        " max over training | change of ‖W_l‖² − ‖W_{l+1}‖² (rel.) | final max rel. drift of C_l |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, n in nets.items():
        lines.append(
            f"| {key} | {_fmt(n['sigma_yx_norm'])} | {_fmt(n['final_product_norm'])} | "
            f"{_fmt(n['final_loss'])} | {_fmt(n['layer_norm_spread_at_init'])} | "
            f"{_fmt(n['layer_norm_spread_final'])} | {_fmt(n['layer_norm_spread_max'])} | "
            f"{_fmt(n['trace_C_change'])} | {_fmt(n['final_relative_drift_max'])} |")
    lines += ["", _norms_paragraph(nets), ""]
    return lines


def _bound_section(nets: dict[str, Any]) -> list[str]:
    lines = [
        "## The bound (17) with κ1, κ2 measured as in the paper",
        "",
        "| run | κ1 | κ2 | M = (2κ1+1)‖Σ_yx‖ | bound ≥ Π‖W_l‖ (fraction of t) | bound ≥ U |"
        " rate inequality (17) holds (fraction of t) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, n in nets.items():
        lines.append(
            f"| {key} | {_fmt(n['kappa1'])} | {_fmt(n['kappa2'])} | {_fmt(n['M'])} | "
            f"{_fmt(n['bound_dominates_product_of_norms'])} | {_fmt(n['bound_dominates_U'])} | "
            f"{_fmt(n['rate_inequality_17_holds'])} |")
    lines += [
        "",
        words.bound_sentence([n["kappa1"]["mean"] for n in nets.values()],
                             [n["kappa2"]["mean"] for n in nets.values()],
                             [n["bound_plateau_over_sigma"]["mean"] for n in nets.values()]),
        "",
        "Integrating (23) gives t_U ≥ (1/L)[(κ2/M²) log(U(M − κ2U0)/(U0(M − κ2U))) − 1/(MU) + 1/(MU0)], "
        "which differs from the printed (18) unless κ2 = 1; the table below gives both (the curves use "
        "the printed M).",
        "",
    ]
    return lines


def _depth_section(res: dict[str, Any]) -> list[str]:
    nets = res["nets"]
    lines: list[str] = []
    for init, dc in res["depth_comparison"].items():
        lines += [
            f"Fig. 1 iii, {init} init (2-layer constants, seed 0: κ1 = {dc['kappa1']:.3g}, "
            f"κ2 = {dc['kappa2']:.3g}, Δ = {dc['delta']:.3g}, ‖W1(0)‖ = {dc['w1_0']:.3g}):",
            "",
            "| L | time for the bound to reach 90% of M/κ2 | eq. 18 lower bound (exact integral) |"
            " eq. 18 as printed | measured: time for ‖ΠW‖ to reach 90% of ‖Σ_yx‖ (seeds that did) |",
            "|---|---|---|---|---|",
        ]
        for L in (2, 3, 4):
            fit = nets[f"{init}-{L}"]["time_to_90pct_of_sigma"] if f"{init}-{L}" in nets else None
            measured = ("n/a (no L=3 net)" if fit is None else
                        f"{_fmt(fit) if fit['mean'] is not None else 'never'} ({fit['reached']})")
            printed = (_show(dc["eq18_as_printed"][L], "log of a negative number: U > M")
                       if L in dc["eq18_as_printed"] else _show(None))
            lines.append(f"| {L} | {_show(dc['time_to_90pct'].get(L))} | {_show(dc['eq18_lower_bound'].get(L))} | "
                         f"{printed} | {measured} |")
        lines.append("")
    lines += [_depth_sentence(res), ""]
    return lines


def _conservation_section(res: dict[str, Any], st: LnnSettings) -> list[str]:
    lines = [
        "## Conservation law vs learning rate (glorot init; drift after fixed time "
        f"T = {st.sweep_time}, η ∈ {list(st.sweep_lrs)})",
        "",
        "| net | log–log slope of ‖C(T) − C(0)‖_F vs η | slope of max |Δ diag C_l| (per-neuron deficits) |",
        "|---|---|---|",
    ]
    for key, s in res["lr_sweep"].items():
        lines.append(f"| {key} | {_fmt(s['slope'])} | {_fmt(s['diagonal_slope'])} |")
    lines += [
        "",
        _conservation_paragraph(res["lr_sweep"]),
        "",
    ]
    return lines


def _eq29_section(res: dict[str, Any], st: LnnSettings) -> list[str]:
    lines = [
        f"## The ReLU symmetry-breaking term (eq. 29; seed 0, glorot init, t ∈ [0, {st.eq29_time}])",
        "",
        "| net | hidden layer | ‖dC_l/dt‖/‖d(W_lW_lᵀ)/dt‖ (t=0 → end) | max |diag dC_l/dt| | "
        "within-sample gate formula: rel. error | paper's cross-sample RHS: rel. error vs exact |"
        " fraction of (sample, neuron pair) gated differently (t=0 → end) |",
        "|---|---|---|---|---|---|---|",
    ]
    for L, e in res["eq29"].items():
        for layer in range(e["relative"].shape[1]):
            lines.append(
                f"| L={L} | {layer + 1} | {e['relative'][0, layer]:.3g} → {e['relative'][-1, layer]:.3g} | "
                f"{np.max(e['diagonal'][:, layer]):.2e} | {np.max(e['gate_formula_error'][:, layer]):.2e} | "
                f"{np.min(e['paper_rhs_error'][:, layer]):.3g} – {np.max(e['paper_rhs_error'][:, layer]):.3g} | "
                f"{e['mixed_gate_fraction'][0, layer]:.3g} → {e['mixed_gate_fraction'][-1, layer]:.3g} |")
    lines += [
        "",
        _eq29_paragraph(res["eq29"]),
    ]
    return lines


def _lnn_summary(res: dict[str, Any], st: LnnSettings) -> str:
    return "\n".join([*_norms_section(res, st), *_bound_section(res["nets"]), *_depth_section(res),
                      *_conservation_section(res, st), *_eq29_section(res, st)])
