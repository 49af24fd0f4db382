"""Figure 9: stochastic balancing always reaches the same balanced state.

The claim (Theorem 9.1 and Figure 9 of the synaptic-balance paper): balancing one randomly
chosen hidden unit at a time converges, whatever the random order, to one state that depends
only on the initial weights, and the Frobenius norm of the weights decreases on the way.

What this experiment does, for the MNIST autoencoder 784-200-100-50-100-200-784 (``fig9``) and
the locally connected net 3072-5000-2592-1296-300-100-10 (``fig9-lc``):

1. build the network and train it briefly (a few epochs) so that the weights are realistic;
2. extract its L2 balance problem once (the PyTorch adapter), and find the balanced state
   ``W_balanced`` with the exact solver (``method="exact"``) as the reference;
3. run stochastic balancing many times (1,000 in the full run) from the same weights with
   different random orders (the compiled many-runs kernel, seed ``s + r`` for run ``r``);
4. on a grid of steps, measure each run's relative distance ``‖W(t) − W_balanced‖_F /
   ‖W_balanced‖_F`` and ``‖W(t)‖_F`` (over every weight and bias the problem covers), and at the
   end the largest distance to ``W_balanced`` and between the runs' end points.

Everything is computed on the extracted problem — weights are ``w·exp(u_dst − c·u_src)`` for
log-scales ``u`` — so no model tensor is touched during the 1,000 runs.

>>> import numpy as np
>>> from synbal._problem.problem import BalanceProblem, CostBlock
>>> # x -> h -> y with weights 2 and 0.5 (L2 costs 4 and 0.25): balanced at λ = 1/2
>>> prob = BalanceProblem(np.ones(1), [CostBlock(2.0, [0], [-1], [[4.0]]),
...                                   CostBlock(2.0, [-1], [0], [[0.25]])])
>>> space = WeightSpace(prob, np.log([0.5]))
>>> dist, norm = space.measure(np.zeros((1, 1)))  # W = (2, 0.5), W_balanced = (1, 1)
>>> round(float(dist[0]) ** 2, 12), round(float(norm[0]) ** 2, 12)
(1.25, 4.25)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numba
import numpy as np
import scipy.sparse as sp

from synbal._problem.problem import BalanceProblem
from synbal._problem.regularizers import parse_regularizer
from synbal._solvers import SolveOptions, solve
from synbal.data._dataset import ImageDataset
from synbal.errors import SynbalError
from synbal.experiments._report import ExperimentContext
from synbal.experiments._tasks import cifar_or_standin
from synbal.experiments.backend import Backend, RunSpec, run_grid
from synbal.experiments.cache import BatchRecord

__all__ = [
    "Ensemble",
    "Fig9Settings",
    "WeightSpace",
    "analyse_problem",
    "endpoint_spread",
    "reproduce",
    "run",
    "run_lc",
    "settings_for",
    "stochastic_ensemble",
]

#: The claim is supported when every run ends this close (relative) to ``W_balanced``.
SAME_STATE_THRESHOLD = 1e-6

#: The runs "follow different paths" when the std of their distances to W_balanced reaches this
#: percentage of the mean somewhere along the way.
DIFFERENT_PATHS_PERCENT = 1.0


def _paths(spread_percent: float) -> str:
    """``"do follow different paths"`` or ``"follow nearly the same path"`` (see the threshold).

    >>> _paths(5.0), _paths(0.1)
    ('do follow different paths', 'follow nearly the same path')
    """
    return "do follow different paths" if spread_percent >= DIFFERENT_PATHS_PERCENT else "follow nearly the same path"


#: Upper bound on the floats held at once for recorded trajectories and distance evaluation.
_MEMORY_FLOATS = 8_000_000


@dataclass(frozen=True)
class Fig9Settings:
    """Every knob of one fig9 run (all recorded in the JSON).

    ``runs`` stochastic runs with seeds ``seed, seed+1, …``; each stops when its max relative
    deficit is at most ``tol``; trajectories are sampled on about ``grid_points`` sweeps.
    Training: ``train_epochs`` epochs of SGD (``lr``, ``momentum``, ``batch_size``) on
    ``train_size`` examples (``None``: all of the loaded training set); the test loss is
    reported on the first ``eval_size`` test examples (``None``: all).
    """

    runs: int
    tol: float = 1e-10
    grid_points: int = 120
    seed: int = 0
    train_epochs: int = 3
    train_size: int | None = None
    batch_size: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    eval_size: int | None = None


# ---------------------------------------------------------------------------- weight geometry
class WeightSpace:
    """Frobenius geometry of the weights behind an L2 balance problem.

    For an L2 problem every cost entry is ``A[r, k] = Σ w²`` over the weights from unit ``k`` to
    unit ``r``, all multiplied by the same factor ``exp(u_r − c_k u_k)``. With ``δ = u − u_ref``,
    ``α_r = expm1(δ_r)``, ``β_k = expm1(−c_k δ_k)`` and ``A*`` the costs at ``u_ref``,

    ``‖W(u) − W(u_ref)‖²_F = Σ A*_rk (α_r + β_k + α_r β_k)²
    = Σ_r α_r² [A*(1+β)²]_r + 2 Σ_r α_r [A* β(1+β)]_r + Σ_k β_k² [A*ᵀ1]_k``,

    two matrix products per block for a whole batch of states, and no difference of two large
    squares, so a distance of 1e-10 of the norm is still measured accurately.
    """

    def __init__(self, problem: BalanceProblem, u_ref: np.ndarray) -> None:
        if problem.powers != (2.0,) or problem.custom is not None:
            raise SynbalError(
                "weight distances need the L2 balance problem (costs = squared weights); "
                f"got powers {problem.powers}"
            )
        n = problem.n
        u_ref = np.asarray(u_ref, dtype=np.float64)
        if u_ref.shape != (n,):
            raise SynbalError(f"reference log-scales have shape {u_ref.shape}, expected ({n},)")
        ue = np.append(u_ref, 0.0)
        ce = np.append(problem.degree, 1.0)
        self.n = n
        self._u_ref = u_ref
        self._blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]] = []
        total = 0.0
        for b in problem.blocks:
            dst = np.where(b.dst < 0, n, b.dst)
            src = np.where(b.src < 0, n, b.src)
            y = np.exp(2.0 * ue[dst])
            x = np.exp(-2.0 * ce[src] * ue[src])
            if b.is_sparse:
                scaled: Any = sp.csr_array(sp.diags_array(y) @ b.matrix @ sp.diags_array(x))
            else:
                scaled = np.asarray(b.matrix) * y[:, None] * x[None, :]
            col_sums = np.asarray(scaled.sum(axis=0)).reshape(-1)
            total += float(col_sums.sum())
            self._blocks.append((dst, src, ce[src], scaled, col_sums))
        self.reference_norm = float(math.sqrt(total))
        #: identifies the reference state (distances are measured from it)
        self.fingerprint = hashlib.sha256(u_ref.tobytes()).hexdigest()

    def measure(self, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(‖W(u) − W(u_ref)‖_F, ‖W(u)‖_F)`` for every row ``u`` of ``U`` (shape ``(m, n)``)."""
        U = np.atleast_2d(np.asarray(U, dtype=np.float64))
        if U.ndim != 2 or U.shape[1] != self.n:
            raise SynbalError(f"log-scales have shape {U.shape}, expected (m, {self.n})")
        delta = np.concatenate([U - self._u_ref, np.zeros((U.shape[0], 1))], axis=1)
        dist2 = np.zeros(U.shape[0])
        norm2 = np.zeros(U.shape[0])
        for dst, src, c_src, scaled, col_sums in self._blocks:
            alpha = np.expm1(delta[:, dst])
            beta = np.expm1(-c_src * delta[:, src])
            grow = (1.0 + beta) ** 2
            # (scaled @ v.T).T for a batch v of source vectors, dense or sparse alike
            in_grow = np.asarray(scaled @ grow.T).T
            in_mixed = np.asarray(scaled @ (beta * (1.0 + beta)).T).T
            dist2 += np.sum(alpha * alpha * in_grow + 2.0 * alpha * in_mixed, axis=1)
            dist2 += (beta * beta) @ col_sums
            norm2 += np.sum((1.0 + alpha) ** 2 * in_grow, axis=1)
        return np.sqrt(np.maximum(dist2, 0.0)), np.sqrt(norm2)


# ---------------------------------------------------------------------------- the runs
@dataclass
class Ensemble:
    """Many stochastic runs from ``u = 0``, sampled on a grid of sweeps.

    ``distance`` and ``norm`` have one row per run and one column per grid point (relative
    distance to the reference and ``‖W‖_F``); ``endpoints`` are the final log-scales;
    ``sweeps_used`` is negative for a run that did not reach ``tol`` within ``max_sweeps``.
    ``seconds`` is this call's time; ``resumed`` runs of it were read from the run record
    (done by an earlier, interrupted call) and are not in it.
    """

    sweep_grid: np.ndarray
    steps_per_sweep: int
    distance: np.ndarray
    norm: np.ndarray
    endpoints: np.ndarray
    sweeps_used: np.ndarray
    max_sweeps: int
    seconds: float
    resumed: int = 0

    @property
    def step_grid(self) -> np.ndarray:
        """The grid in single-unit balancing steps."""
        return self.sweep_grid * self.steps_per_sweep

    @property
    def converged(self) -> np.ndarray:
        return self.sweeps_used > 0


def _many_runs(problem: BalanceProblem) -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The compiled many-runs stochastic kernel for ``problem`` (one seeded stream per run)."""
    from synbal._compiled.chain_steps import step_kernel

    graph = step_kernel(problem)
    free = np.flatnonzero(problem.free_mask())

    def runs_fn(runs: int, seed: int, tol: float, max_sweeps: int, record_every: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return graph.many_stochastic(np.zeros(problem.n), free, runs, seed, tol, max_sweeps, 1.0,
                                     record_every)

    return runs_fn


@dataclass(frozen=True)
class _Plan:
    """How an ensemble runs: sweep budget, recording grid, and runs per batch."""

    max_sweeps: int
    record_every: int
    n_rec: int
    batch: int


def _plan(problem: BalanceProblem, runs_fn: Callable[..., Any], runs: int, seed: int, tol: float,
          grid_points: int) -> _Plan:
    """A pilot run (seed ``seed``) sets the budget: twice its sweeps plus 10; batches bound memory."""
    _, pilot, _ = runs_fn(1, seed, tol, 100_000, 0)
    needed = int(abs(pilot[0]))
    max_sweeps = 2 * needed + 10
    record_every = max(1, math.ceil(max_sweeps / grid_points))
    n_rec = max_sweeps // record_every + 1
    batch = max(1, min(runs, _MEMORY_FLOATS // max(1, n_rec * problem.n)))
    threads = numba.get_num_threads()
    if batch > threads:
        batch -= batch % threads  # whole rounds of the parallel threads
    return _Plan(max_sweeps, record_every, n_rec, batch)


class _Runs:
    """The ensemble's per-run arrays (one row per run), filled batch by batch."""

    def __init__(self, runs: int, n_rec: int, n: int) -> None:
        self.distance = np.empty((runs, n_rec))
        self.norm = np.empty((runs, n_rec))
        self.endpoints = np.empty((runs, n))
        self.sweeps_used = np.empty(runs, dtype=np.int64)

    def fill(self, rows: slice | int, distance: Any, norm: Any, endpoints: Any, sweeps_used: Any) -> None:
        self.distance[rows], self.norm[rows], self.endpoints[rows] = distance, norm, endpoints
        self.sweeps_used[rows] = sweeps_used


class _Batches:
    """Everything a batch of runs needs, shipped once to every worker of a grid backend; the
    compiled kernel is built where it runs (on first use) and never pickled."""

    def __init__(self, problem: BalanceProblem, space: WeightSpace, tol: float, plan: _Plan,
                 runs_fn: Callable[..., Any] | None = None, numba_threads: int | None = None) -> None:
        self.problem, self.space, self.tol, self.plan = problem, space, tol, plan
        self.runs_fn, self.numba_threads = runs_fn, numba_threads

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "runs_fn": None}

    def run(self, first_seed: int, count: int) -> dict[str, np.ndarray]:
        """Runs with seeds ``first_seed …`` (``count`` of them): each row's arrays."""
        if self.runs_fn is None:
            self.runs_fn = _many_runs(self.problem)
        plan, n = self.plan, self.problem.n
        before = numba.get_num_threads()
        numba.set_num_threads(self.numba_threads or before)
        try:
            U, used, snaps = self.runs_fn(count, first_seed, self.tol, plan.max_sweeps, plan.record_every)
        finally:
            numba.set_num_threads(before)
        dist, nrm = self.space.measure(snaps.reshape(count * plan.n_rec, n))
        return {"distance": dist.reshape(count, plan.n_rec) / self.space.reference_norm,
                "norm": nrm.reshape(count, plan.n_rec), "endpoints": U, "sweeps_used": used}


def run_batch(batches: _Batches, first_seed: int, count: int) -> dict[str, np.ndarray]:
    """One task of the ensemble's grid (module-level, so any backend can run it)."""
    return batches.run(first_seed, count)


class _BatchStore:
    """The ensemble's :class:`~synbal.experiments.backend.RunRecord`: each finished batch becomes one
    file of the :class:`BatchRecord` (recorded runs are found per seed by :func:`_resume`, whatever
    batches wrote them, so ``get`` has nothing left to find)."""

    def __init__(self, store: BatchRecord) -> None:
        self.store = store

    @property
    def path(self) -> Path:
        return self.store.folder

    def get(self, key: dict[str, Any]) -> Any:
        return None

    def put(self, key: dict[str, Any], value: dict[str, np.ndarray]) -> None:
        self.store.save(np.arange(key["first_seed"], key["first_seed"] + key["count"]), **value)


def _record(folder: Path, problem: BalanceProblem, space: WeightSpace, tol: float, plan: _Plan) -> BatchRecord:
    """The run record in ``folder``, fingerprinted by the problem and every setting that sets a run."""
    settings = f"{tol!r} {plan.max_sweeps} {plan.record_every} {plan.n_rec} {space.fingerprint}"
    return BatchRecord(folder, hashlib.sha256(f"{problem.fingerprint()} {settings}".encode()).hexdigest())


def _resume(store: BatchRecord, arrays: _Runs, runs: int, seed: int) -> list[int]:
    """Fill the runs the record holds; the others (indices) are still to do."""
    saved = store.load()
    todo = []
    for r in range(runs):
        if seed + r in saved:
            run = saved[seed + r]
            arrays.fill(r, run["distance"], run["norm"], run["endpoints"], int(run["sweeps_used"]))
        else:
            todo.append(r)
    return todo


def _stretches(todo: list[int], batch: int) -> Iterator[tuple[int, int]]:
    """``(first, count)``: the next stretch of consecutive runs of ``todo``, at most ``batch`` long."""
    todo = list(todo)
    while todo:
        first = todo[0]
        count = 1
        while count < min(batch, len(todo)) and todo[count] == first + count:
            count += 1
        del todo[:count]
        yield first, count


#: On a grid backend the runs are split into about this many tasks (fewer when memory bounds a batch).
GRID_TASKS = 32


def _run_todo(batches: _Batches, arrays: _Runs, todo: list[int], seed: int, store: BatchRecord | None,
              backend: Backend | None, progress: bool) -> None:
    """Every run of ``todo`` into ``arrays``, batch by batch on ``backend``, each batch recorded as it ends."""
    batch = batches.plan.batch
    if backend is not None:  # enough tasks to keep the workers busy, each on one thread
        batch = min(batch, max(1, math.ceil(len(todo) / GRID_TASKS)))
        batches = _Batches(batches.problem, batches.space, batches.tol, batches.plan, numba_threads=1)
    stretches = list(_stretches(todo, batch))
    specs = [RunSpec({"first_seed": seed + first, "count": count}, (batches, seed + first, count))
             for first, count in stretches]
    record = None if store is None else _BatchStore(store)
    values = run_grid(run_batch, specs, record, backend, progress=progress, desc="stochastic run batches")
    for (first, count), value in zip(stretches, values, strict=True):
        arrays.fill(slice(first, first + count), value["distance"], value["norm"], value["endpoints"],
                    value["sweeps_used"])


def stochastic_ensemble(problem: BalanceProblem, space: WeightSpace, *, runs: int, seed: int = 0, tol: float = 1e-10,
                        grid_points: int = 120, progress: bool = False, record: Path | None = None,
                        backend: Backend | None = None) -> Ensemble:
    """Run stochastic balancing ``runs`` times from the problem's weights (``u = 0``).

    A pilot run (seed ``seed``) measures how many sweeps convergence takes; every run then
    gets twice that plus 10 sweeps, and trajectories are recorded on about ``grid_points``
    evenly spaced sweeps. Runs are processed in batches so that memory stays bounded; run
    ``r`` always uses seed ``seed + r``, so results do not depend on the batching.

    With ``record`` (a folder), every finished batch is saved there, and runs already saved for
    the same problem and settings are loaded instead of run again: an interrupted ensemble
    resumes where it stopped. ``backend`` (:mod:`synbal.experiments.backend`; default: this
    process) runs the batches, e.g. as Ray tasks: the numbers are the same.

    >>> import numpy as np
    >>> from synbal._problem.problem import BalanceProblem, CostBlock
    >>> prob = BalanceProblem(np.ones(2), [CostBlock(2.0, [0], [-1], [[4.0]]),
    ...     CostBlock(2.0, [1], [0], [[1.0]]), CostBlock(2.0, [-1], [1], [[0.25]])])
    >>> ens = stochastic_ensemble(prob, WeightSpace(prob, np.log([0.5, 0.5])), runs=3)
    >>> bool(ens.converged.all()), bool(ens.distance[:, -1].max() < 1e-8)
    (True, True)
    """
    if runs < 1:
        raise SynbalError(f"runs must be at least 1, got {runs}")
    if grid_points < 2:
        raise SynbalError(f"grid_points must be at least 2, got {grid_points}")
    start_time = time.perf_counter()
    runs_fn = _many_runs(problem)
    plan = _plan(problem, runs_fn, runs, seed, tol, grid_points)
    arrays = _Runs(runs, plan.n_rec, problem.n)
    store = None if record is None else _record(record, problem, space, tol, plan)
    todo = list(range(runs)) if store is None else _resume(store, arrays, runs, seed)
    _run_todo(_Batches(problem, space, tol, plan, runs_fn), arrays, todo, seed, store, backend, progress)
    # keep one grid point past the slowest run (later points only repeat the end states)
    keep = min(plan.n_rec, int(np.abs(arrays.sweeps_used).max()) // plan.record_every + 2)
    return Ensemble(sweep_grid=np.arange(keep) * plan.record_every, steps_per_sweep=int(problem.free_mask().sum()),
                    distance=arrays.distance[:, :keep], norm=arrays.norm[:, :keep], endpoints=arrays.endpoints,
                    sweeps_used=arrays.sweeps_used, max_sweeps=plan.max_sweeps,
                    seconds=time.perf_counter() - start_time, resumed=runs - len(todo))


def endpoint_spread(problem: BalanceProblem, endpoints: np.ndarray) -> dict[str, float]:
    """How far the runs' end points are from each other.

    ``max_log_scale_spread`` is ``max_i (max_r u_ri − min_r u_ri)`` over units (exact over all
    pairs of runs); ``max_relative_distance_to_run0`` is the largest ``‖W_r − W_0‖_F / ‖W_0‖_F``.
    Any two end points are at most twice the largest distance to ``W_balanced`` apart.
    """
    spread = endpoints.max(axis=0) - endpoints.min(axis=0) if endpoints.size else np.zeros(0)
    space = WeightSpace(problem, endpoints[0])
    dist, _ = space.measure(endpoints)
    return {
        "max_log_scale_spread": float(spread.max()) if spread.size else 0.0,
        "max_relative_distance_to_run0": float(dist.max() / space.reference_norm),
    }


# ---------------------------------------------------------------------------- analysis
def _max_spread_percent(distance: np.ndarray) -> float:
    """Largest std/mean (in %) of the distance across runs, before the runs reach the tolerance."""
    mean = distance.mean(axis=0)
    moving = mean > 1e3 * mean[-1]
    if not moving.any():
        return 0.0
    return float(100.0 * (distance.std(axis=0)[moving] / mean[moving]).max())


def _problem_numbers(problem: BalanceProblem, ens: Ensemble) -> dict[str, Any]:
    return {
        "units": problem.n,
        "free_units": ens.steps_per_sweep,
        "weight_entries": int(sum(b.matrix.nnz if b.is_sparse else np.count_nonzero(np.asarray(b.matrix))
                                  for b in problem.blocks)),
    }


def _runs_numbers(ens: Ensemble) -> dict[str, Any]:
    used = np.abs(ens.sweeps_used)
    return {
        "count": int(ens.sweeps_used.shape[0]),
        "converged": int(ens.converged.sum()),
        "sweeps_min": int(used.min()),
        "sweeps_mean": float(used.mean()),
        "sweeps_max": int(used.max()),
        "sweep_budget": ens.max_sweeps,
        "steps_per_sweep": ens.steps_per_sweep,
        "seconds": ens.seconds,
        "resumed_from_record": ens.resumed,
    }


def _final_numbers(problem: BalanceProblem, ens: Ensemble) -> dict[str, Any]:
    final_dist = ens.distance[:, -1]
    final_norm = ens.norm[:, -1]
    initial_norm = float(ens.norm[0, 0])
    return {
        "max_relative_distance_to_balanced": float(final_dist.max()),
        "mean_relative_distance_to_balanced": float(final_dist.mean()),
        **endpoint_spread(problem, ens.endpoints),
        "frobenius_norm_mean": float(final_norm.mean()),
        "frobenius_norm_std": float(final_norm.std()),
        "frobenius_norm_decrease_percent": 100.0 * (1.0 - float(final_norm.mean()) / initial_norm),
        "max_distance_spread_percent": _max_spread_percent(ens.distance),
        "norm_monotone_in_every_run": bool(np.all(np.diff(ens.norm, axis=1) <= 1e-12 * initial_norm)),
    }


def _curves(ens: Ensemble) -> dict[str, Any]:
    return {
        "sweeps": ens.sweep_grid,
        "steps": ens.step_grid,
        "relative_distance_mean": ens.distance.mean(axis=0),
        "relative_distance_std": ens.distance.std(axis=0),
        "frobenius_norm_mean": ens.norm.mean(axis=0),
        "frobenius_norm_std": ens.norm.std(axis=0),
    }


def analyse_problem(problem: BalanceProblem, settings: Fig9Settings, *, progress: bool = False,
                    record: Path | None = None, backend: Backend | None = None) -> tuple[dict[str, Any], Ensemble]:
    """Reference by the exact solver, the stochastic ensemble, and every summary number
    (``record``: the folder of :func:`stochastic_ensemble`'s resumable run record; ``backend``:
    where its batches run)."""
    start = time.perf_counter()
    exact = solve(problem, parse_regularizer("l2"), "exact",
                  SolveOptions(tol=min(settings.tol, 1e-12), max_sweeps=10_000, progress=progress))
    exact_seconds = time.perf_counter() - start
    space = WeightSpace(problem, exact.u)
    ens = stochastic_ensemble(problem, space, runs=settings.runs, seed=settings.seed,
                              tol=settings.tol, grid_points=settings.grid_points,
                              progress=progress, record=record, backend=backend)
    results: dict[str, Any] = {
        "problem": _problem_numbers(problem, ens),
        "reference": {
            "method": "exact",
            "converged": exact.converged,
            "max_relative_deficit": problem.max_relative_deficit(exact.u),
            "seconds": exact_seconds,
            "frobenius_norm": space.reference_norm,
        },
        "initial": {
            "frobenius_norm": float(ens.norm[0, 0]),
            "relative_distance_to_balanced": float(ens.distance[0, 0]),
            "max_relative_deficit": problem.max_relative_deficit(np.zeros(problem.n)),
        },
        "runs": _runs_numbers(ens),
        "final": _final_numbers(problem, ens),
        "curves": _curves(ens),
    }
    results["supports_claim"] = bool(
        ens.converged.all() and results["final"]["max_relative_distance_to_balanced"] <= SAME_STATE_THRESHOLD
        and results["final"]["frobenius_norm_decrease_percent"] > 0.0
    )
    return results, ens


# ---------------------------------------------------------------------------- outputs
def plot_ensemble(ens: Ensemble, title: str) -> Any:
    """Figure 9 in the paper's style: distance to ``W_balanced`` and ``‖W‖_F``, mean ± 1 std."""
    from synbal.experiments._report import new_figure, plot_mean_std

    fig, (ax_dist, ax_norm) = new_figure(ncols=2)
    sweeps = ens.sweep_grid
    xlabel = f"sweeps ({ens.steps_per_sweep} single-unit steps, random units)"
    floor = np.finfo(np.float64).eps
    plot_mean_std(ax_dist, sweeps, np.maximum(ens.distance, floor),
                  label=f"mean ± 1 std over {ens.distance.shape[0]} runs", logy=True)
    ax_dist.set_xlabel(xlabel)
    ax_dist.set_ylabel("‖W(t) − W_balanced‖_F / ‖W_balanced‖_F")
    ax_dist.set_title(f"{title}: distance to W_balanced", fontsize=10)
    ax_dist.legend(loc="upper right", fontsize=8)
    plot_mean_std(ax_norm, sweeps, ens.norm, label=f"mean ± 1 std over {ens.norm.shape[0]} runs")
    ax_norm.axhline(ens.norm[:, -1].mean(), color="grey", linestyle=":", linewidth=1,
                    label="‖W_balanced‖_F")
    ax_norm.set_xlabel(xlabel)
    ax_norm.set_ylabel("‖W‖_F (weights and biases)")
    ax_norm.set_title(f"{title}: norm of the weights", fontsize=10)
    ax_norm.legend(loc="upper right", fontsize=8)
    return fig


def summary_markdown(name: str, title: str, results: dict[str, Any], settings: Fig9Settings,
                     setup: dict[str, Any]) -> str:
    """The short human-readable verdict written next to the JSON."""
    fin = results["final"]
    runs = results["runs"]
    ini = results["initial"]
    verdict = "supports" if results["supports_claim"] else "does NOT support"
    return "\n".join([
        f"# {name}: stochastic balancing reaches one balanced state ({title})",
        "",
        "**Claim (paper, Figure 9 / Theorem 9.1):** stochastic balancing, applied many times with "
        "different random orders to the same initial weights, always converges to the same "
        "balanced state, and decreases the norm of the weights.",
        "",
        f"**Setup:** {setup['description']}",
        f"Data: {setup['data_source']}.",
        f"Weights: {setup['weights']}.",
        f"{runs['count']} stochastic runs (seeds {settings.seed}…{settings.seed + runs['count'] - 1}), "
        f"L2 regularizer, stop at max relative deficit ≤ {settings.tol:g}; reference "
        f"W_balanced from the exact solver (max relative deficit "
        f"{results['reference']['max_relative_deficit']:.1e}).",
        "",
        "**Result:**",
        f"- runs converged: {runs['converged']} / {runs['count']} "
        f"(sweeps of {runs['steps_per_sweep']} single-unit steps: min {runs['sweeps_min']}, "
        f"mean {runs['sweeps_mean']:.1f}, max {runs['sweeps_max']})",
        f"- relative distance to W_balanced: {ini['relative_distance_to_balanced']:.3g} at the "
        f"start; at the end max {fin['max_relative_distance_to_balanced']:.2e}, mean "
        f"{fin['mean_relative_distance_to_balanced']:.2e}",
        f"- end points vs each other: max relative distance to run 0 "
        f"{fin['max_relative_distance_to_run0']:.2e}; largest spread of a unit's log-scale "
        f"across runs {fin['max_log_scale_spread']:.2e}",
        f"- ‖W‖_F: {ini['frobenius_norm']:.6g} → {fin['frobenius_norm_mean']:.6g} "
        f"(± {fin['frobenius_norm_std']:.1e} across runs), a decrease of "
        f"{fin['frobenius_norm_decrease_percent']:.2f}%; never increased along any run: "
        f"{'yes' if fin['norm_monotone_in_every_run'] else 'NO'}",
        f"- the runs {_paths(results['final']['max_distance_spread_percent'])}: along the way the std of "
        f"the distance across runs reaches {results['final']['max_distance_spread_percent']:.1f}% of its "
        f"mean (threshold for 'different paths': {DIFFERENT_PATHS_PERCENT:g}%)",
        "",
        "**Differences from the paper:** W_balanced comes from the exact solver (the paper "
        "takes it from a stochastic run); the network is trained briefly before balancing "
        "(the paper's caption says the weights were initialised randomly, its panel titles say "
        "trained), so the balancing starts from realistic, unbalanced weights; runs stop at the "
        "tolerance above; ‖W‖_F counts every weight and bias; distances are relative to "
        "‖W_balanced‖_F. The paper gives no numbers to compare with, only the curves.",
        "",
        f"**Verdict:** the result {verdict} the claim (criterion: every run converged and ends "
        f"within {SAME_STATE_THRESHOLD:g} relative distance of W_balanced, and ‖W‖_F decreased).",
    ])


# ---------------------------------------------------------------------------- the experiments
@dataclass(frozen=True)
class _Network:
    """What differs between ``fig9`` (MNIST autoencoder) and ``fig9-lc`` (locally connected net)."""

    name: str
    title: str
    description: str
    loss: Literal["sse", "cross_entropy"]
    batch_size: int
    lr: float
    init: str  # the name of the models.py constant describing the factory's initialisation


_AE = _Network("fig9", "MNIST autoencoder",
               "MNIST autoencoder 784-200-100-50-100-200-784, ReLU in every layer (paper, section 10)",
               "sse", 200, 3e-3, "DEFAULT_INIT")
_LC = _Network("fig9-lc", "locally connected net",
               "locally connected net 3072-5000-2592-1296-300-100-10 (three unshared-weight "
               "layers, kernels 8/8/10, then fully connected; leaky ReLU hidden units, softmax "
               "output; paper, section 10)", "cross_entropy", 5, 0.01, "LC_INIT")

#: (full, quick) settings; ``--seeds N`` sets the number of stochastic runs.
_SETTINGS = {
    "fig9": (Fig9Settings(runs=1000, train_epochs=5, train_size=None, batch_size=200, lr=3e-3),
             Fig9Settings(runs=20, train_epochs=2, train_size=2000, batch_size=200, lr=3e-3,
                          grid_points=60)),
    "fig9-lc": (Fig9Settings(runs=1000, train_epochs=1, train_size=2000, batch_size=5, lr=0.01,
                             eval_size=500),
                Fig9Settings(runs=10, train_epochs=1, train_size=300, batch_size=5, lr=0.01,
                             eval_size=300, grid_points=60)),
}


def settings_for(ctx: ExperimentContext, name: str) -> Fig9Settings:
    """The settings of experiment ``name`` for this context (quick or full, ``--seeds``)."""
    full, quick = _SETTINGS[name]
    chosen = quick if ctx.quick else full
    return replace(chosen, runs=ctx.n_seeds(full.runs, quick.runs))


def _dataset(net: _Network, ctx: ExperimentContext) -> ImageDataset:
    from synbal.data import load_mnist

    return load_mnist(ctx.data) if net is _AE else cifar_or_standin(ctx.data)


def _trained_problem(net: _Network, ctx: ExperimentContext, settings: Fig9Settings
                     ) -> tuple[BalanceProblem, dict[str, Any]]:
    """Build the network, train it briefly, and extract its L2 balance problem."""
    import torch

    from synbal._adapters.protocol import adapter_for
    from synbal.experiments import _models as models
    from synbal.experiments._models import lc_cifar_net, mnist_autoencoder
    from synbal.training import TrainConfig, train

    dataset = _dataset(net, ctx)
    if settings.train_size is not None and settings.train_size < dataset.n_train:
        dataset = dataset.subset(settings.train_size, seed=settings.seed)
    flat = net is _AE
    x, y = dataset.tensors("train", flatten=flat)
    x_test, y_test = dataset.tensors("test", flatten=flat)
    x_test, y_test = x_test[: settings.eval_size], y_test[: settings.eval_size]
    model = mnist_autoencoder(seed=settings.seed) if net is _AE else lc_cifar_net(seed=settings.seed)
    targets, test_targets = (x, x_test) if net is _AE else (y, y_test)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    start = time.perf_counter()
    history = train(model, optimizer, (x, targets),
                    TrainConfig(epochs=settings.train_epochs, batch_size=settings.batch_size,
                                loss=net.loss, monitor=False, seed=settings.seed,
                                progress=ctx.progress),
                    eval_data=(x_test, test_targets))
    if history.settings.get("diverged"):
        raise SynbalError(f"{net.name}: the brief training diverged; lower the learning rate")
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        problem = adapter_for(model, example_inputs=x[:2]).problem(parse_regularizer("l2"))
    test_loss = history.column("test_loss")
    weights = (
        f"{getattr(models, net.init)} (seed {settings.seed}), then {settings.train_epochs} "
        f"epoch(s) of SGD (lr {settings.lr:g}, momentum {settings.momentum:g}, batch "
        f"{settings.batch_size}, {net.loss} loss, no regularizer) on {dataset.n_train} training "
        f"images; loss on {x_test.shape[0]} test images {test_loss[0]:.4g} → {test_loss[-1]:.4g}"
    )
    setup = {
        "description": net.description,
        "data_source": dataset.source,
        "weights": weights,
        "training_seconds": train_seconds,
        "extraction_seconds": time.perf_counter() - start,
        "test_loss": test_loss,
        "test_accuracy": history.column("test_accuracy") if net is _LC else None,
    }
    return problem, setup


def reproduce(ctx: ExperimentContext, name: str, settings: Fig9Settings | None = None) -> dict[str, Any]:
    """Run ``fig9`` or ``fig9-lc`` with ``settings`` (default: :func:`settings_for`) and write
    ``NAME.json``, ``NAME.md`` and ``NAME_balancing.png`` into ``ctx.out_dir``.

    Finished stochastic runs are kept in ``ctx.out_dir / "NAME-runs"`` (one ``.npz`` per batch,
    end points included), so an interrupted reproduction started again with the same ``--out``
    and settings resumes; that folder can be deleted once the outputs are written.
    """
    from synbal.experiments._report import write_outputs

    nets = {"fig9": _AE, "fig9-lc": _LC}
    if name not in nets:
        raise SynbalError(f"unknown fig9 variant {name!r}; choose fig9 or fig9-lc")
    net = nets[name]
    settings = settings or settings_for(ctx, name)
    if settings.runs < 1:
        raise SynbalError(f"{name}: the number of runs (--seeds) must be at least 1, got {settings.runs}")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)  # a bad --out fails before the long work
    start = time.perf_counter()
    problem, setup = _trained_problem(net, ctx, settings)
    results, ens = analyse_problem(problem, settings, progress=ctx.progress, record=ctx.out_dir / f"{name}-runs",
                                   backend=ctx.backend)
    results["setup"] = setup
    results["seconds"] = time.perf_counter() - start
    summary = summary_markdown(name, net.title, results, settings, setup)
    title = net.title if ctx.data is not None or net is _AE else f"{net.title} (stand-in data)"
    write_outputs(ctx, name, results=results,
                  settings={**asdict(settings), "data": ctx.data, "quick": ctx.quick,
                            "same_state_threshold": SAME_STATE_THRESHOLD},
                  summary_md=summary, figures={"balancing": plot_ensemble(ens, title)})
    return results


def run(ctx: ExperimentContext) -> dict[str, Any]:
    """``synbal reproduce fig9``: the MNIST autoencoder."""
    return reproduce(ctx, "fig9")


def run_lc(ctx: ExperimentContext) -> dict[str, Any]:
    """``synbal reproduce fig9-lc``: the locally connected net (CIFAR-10 or the stand-in)."""
    return reproduce(ctx, "fig9-lc")
