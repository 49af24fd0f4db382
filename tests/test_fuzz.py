"""Fuzzing the JSON graph format through the API (generator and checker in ``fuzz_graphs``).

A fast subset runs by default; ``-m slow`` runs 10,000 cases. Every case must end ``ok``,
``typed`` (a SynbalError) or ``range`` (the balanced net computes the same function in long
double but over- or underflows in float64 where the original does not: a failed function
check, reported as such); never an untyped exception, a
hang, a result with a zero/infinite scale or a non-finite R, or a changed function.
"""

from __future__ import annotations

import time
import warnings

import pytest

from fuzz_graphs import OUTCOMES, fuzz_case, fuzz_graph, run_case, run_many

ACCEPTABLE = {"ok", "typed", "range"}


def _check(seeds: range, max_sweeps: int = 1000) -> None:
    start = time.perf_counter()
    tally, failures = run_many(seeds, max_sweeps)
    seconds = time.perf_counter() - start
    print(f"fuzz {seeds.start}..{seeds.stop - 1}: {dict(tally)} in {seconds:.1f} s")
    bad = {k: v[:5] for k, v in failures.items() if k not in ACCEPTABLE}
    assert not bad, bad
    assert set(tally) <= set(OUTCOMES)


def test_fuzz_fast_subset() -> None:
    _check(range(100), max_sweeps=100)


@pytest.mark.slow
def test_fuzz_ten_thousand_cases() -> None:
    _check(range(10_000, 20_000))


def test_generator_is_deterministic_and_varied() -> None:
    graphs = [fuzz_graph(s) for s in range(40)]
    assert fuzz_graph(5) == graphs[5]
    assert len({len(g["units"]) for g in graphs}) > 5
    assert any(any(abs(e[2]) > 1e100 for e in g["edges"]) for g in graphs)
    assert any(any(0 < abs(e[2]) < 2.3e-308 for e in g["edges"]) for g in graphs)  # subnormals
    assert {fuzz_case(s)["method"] for s in range(40)} >= {"exact", "stochastic", "layer"}


def test_checker_flags_a_changed_function() -> None:
    """The checker is not blind: a balanced net whose weights were tampered with is 'changed'."""
    import synbal
    from synbal._adapters.graph import Graph

    case = {"graph": {"format": "synbal.graph/1",
                      "units": [{"name": "x", "role": "input"}, {"name": "h", "role": "hidden", "activation": "relu"},
                                {"name": "y", "role": "output"}],
                      "edges": [["x", "h", 2.0], ["h", "y", 3.0]]}, "reg": "l2", "method": "exact"}
    assert run_case(case) == ("ok", "")
    original = synbal.balance

    def tampered(net: Graph, *args: object, **kwargs: object) -> synbal.BalanceResult:
        res = original(net, *args, **kwargs)
        res.net.edges[0] = ("x", "h", res.net.edges[0][2] * 1.5)
        return res

    synbal.balance = tampered  # type: ignore[assignment]
    try:
        assert run_case(case)[0] == "changed"
    finally:
        synbal.balance = original


def test_regressions_found_by_the_slow_run() -> None:
    """Seed 17350 (an ℓ_{2,1} norm past float64) raised OverflowError; now a typed error."""
    assert run_case(fuzz_case(17350))[0] in ACCEPTABLE


@pytest.mark.parametrize("seed", [13752, 19268])
def test_mixed_powers_at_extreme_magnitudes_converge(seed: int) -> None:
    """Seeds 13752 (``l2+l0.5``) and 19268 (``1*l2+0.01*l1``) stalled at relative deficit 1.0 for 1,000
    Newton iterations (42-57 s): a unit far from balance on a scale R's rounding hides. Now exact
    local steps move it, and Newton converges in a few iterations."""
    import synbal
    from synbal import Graph

    case = fuzz_case(seed)
    res = synbal.balance(Graph.from_dict(case["graph"]), case["reg"], case["method"], max_sweeps=1000, seed=0)
    assert res.converged and res.max_relative_deficit <= 1e-10
    assert res.sweeps <= 30
    assert run_case(case)[0] == "ok"


def test_mixed_powers_near_overflow_end_fast() -> None:
    """Seed 16291 (``1*l2+0.01*l1``, R near 1e307) also stalled for 1,000 iterations; it now ends within
    seconds (every method stops with a typed error: its costs leave float64 on the way; a stall past
    ``HANG_SECONDS`` would make ``run_case`` report a hang)."""
    assert run_case(fuzz_case(16291))[0] in ACCEPTABLE


def test_a_newton_search_that_cannot_move_stops_at_once() -> None:
    """Seed 14316 (``l2+l0.5`` on weights of 1e±150, a BiPU self-loop): from its 7th iteration on,
    ``exact``'s line search returned a step of 1e-15, below the rounding of the log-scales, so
    every later iteration repeated it; it spent all 1,000 (15-30 s, a "hang" on a loaded machine).
    Now it stops there, not converged, and says so."""
    import synbal
    from synbal import Graph

    case = fuzz_case(14316)
    res = synbal.balance(Graph.from_dict(case["graph"]), case["reg"], case["method"], max_sweeps=1000, seed=0)
    assert not res.converged and res.sweeps <= 20
    assert any("no longer change the log-scales in float64" in note for note in res.notes)
    assert run_case(case)[0] == "ok"


def test_a_schedule_stops_once_its_costs_leave_float64() -> None:
    """Seed 16950 (``tied``, ``l2+l0.5`` on weights spanning float64): R turned NaN after a few
    sweeps, and the schedule went on to its 1,000th (8-15 s) before the final state refused it.
    Now it stops at the first NaN; the outcome is the same typed error."""
    import numpy as np

    from synbal import Graph
    from synbal._adapters.graph import GraphAdapter
    from synbal._problem.regularizers import parse_regularizer
    from synbal._solvers import SolveOptions, solve

    case = fuzz_case(16950)
    reg = parse_regularizer(case["reg"])
    problem = GraphAdapter(Graph.from_dict(case["graph"])).problem(reg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = solve(problem, reg, case["method"], SolveOptions(max_sweeps=1000, seed=0))
    assert res.sweeps < 50 and np.isnan(res.history[-1].regularizer)
    assert run_case(case)[0] == "typed"
