"""Grid backends (issue 16): runs recorded as they finish, resumed, and the same on Ray as in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synbal._cli.main import main
from synbal.errors import SynbalError
from synbal.experiments import ExperimentContext, run_experiment
from synbal.experiments.backend import GridError, InProcess, RunSpec, make_backend, run_grid
from synbal.experiments.cache import RunCache

REDUCED_SPEED = {"seeds": 1, "epochs": 1, "epochs_1pct": 2, "train_size": 500, "nets": ["784-256-10"],
                 "datasets": ["MNIST"]}


def _record(path: Path) -> dict[str, object]:
    return {json.loads(line)["key"]: json.loads(line)["value"] for line in path.read_text().splitlines()}


class Failing(InProcess):
    """In-process, but run ``bad`` fails (reported, not raised, as a remote backend reports it)."""

    name = "failing"

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def map(self, fn, specs):
        for i, spec in enumerate(specs):
            yield i, (RuntimeError("worker lost") if spec.args[0] == self.bad else fn(*spec.args))


def test_run_grid_records_resumes_and_keeps_order(tmp_path):
    cache = RunCache(tmp_path / "g-runs.jsonl")
    specs = [RunSpec({"x": x}, (x,)) for x in range(6)]
    with pytest.raises(GridError, match=r"1 of 6 runs failed .* the 5 finished runs are recorded"):
        run_grid(lambda x: x * x, specs, cache, Failing(bad=3), progress=False)
    assert sorted(json.loads(k)["x"] for k in _record(cache.path)) == [0, 1, 2, 4, 5]
    done = []

    def square(x):
        done.append(x)
        return x * x

    assert run_grid(square, specs, RunCache(cache.path), progress=False) == [0, 1, 4, 9, 16, 25]
    assert done == [3]  # only the failed run was done again


def test_backend_options_are_checked(tmp_path, capsys):
    assert make_backend("inprocess") is None
    with pytest.raises(SynbalError, match="--address needs --backend ray"):
        make_backend("inprocess", "auto")
    with pytest.raises(SynbalError, match="unknown backend"):
        make_backend("dask")
    assert main(["reproduce", "fig7", "--address", "auto", "--out", str(tmp_path)]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err


def test_a_non_grid_experiment_refuses_a_backend(tmp_path):
    with pytest.raises(SynbalError, match=r"lnn does not run on the failing backend .* grids that do: fig7, fig7-lc, "
                                          r"fig8, fig8-lc, fig9, fig9-lc, quant, speed"):
        run_experiment("lnn", ExperimentContext(out_dir=tmp_path, backend=Failing(bad=-1)))


def test_local_ray_with_two_workers_gives_the_in_process_numbers(tmp_path, ray_local):
    from synbal.experiments.backend import RayBackend

    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    run_experiment("speed", ExperimentContext(out_dir=ray_out, quick=True, progress=False, extra=REDUCED_SPEED,
                                              backend=RayBackend(num_cpus=2)))
    run_experiment("speed", ExperimentContext(out_dir=local_out, quick=True, progress=False, extra=REDUCED_SPEED))
    ray_runs, local_runs = _record(ray_out / "speed-runs.jsonl"), _record(local_out / "speed-runs.jsonl")
    assert len(ray_runs) == 2 * 3 * 4 and ray_runs == local_runs  # every run's curve, exactly
    assert json.loads((ray_out / "speed.json").read_text())["results"]["table"] == \
        json.loads((local_out / "speed.json").read_text())["results"]["table"]


def test_killing_a_ray_worker_mid_grid_loses_no_finished_run(tmp_path, ray_local):
    from ray_tasks import square_or_die
    from synbal.experiments.backend import RayBackend

    folder = tmp_path / "marks"
    folder.mkdir()
    (folder / "die-4").touch()
    specs = [RunSpec({"x": x}, (x, str(folder))) for x in range(8)]
    cache = RunCache(tmp_path / "grid-runs.jsonl")
    with pytest.raises(GridError, match=r"1 of 8 runs failed on the ray backend .*\{'x': 4\}"):
        run_grid(square_or_die, specs, cache, RayBackend(num_cpus=2, retries=0), progress=False)
    assert sorted(json.loads(k)["x"] for k in _record(cache.path)) == [0, 1, 2, 3, 5, 6, 7]
    values = run_grid(square_or_die, specs, RunCache(cache.path), RayBackend(num_cpus=2), progress=False)
    assert values == [x * x for x in range(8)]
    runs = sorted(p.name.split("-")[1] for p in folder.glob("ran-*"))
    assert runs == ["0", "1", "2", "3", "4", "4", "5", "6", "7"]  # only the killed run ran twice
    import builtins

    assert builtins.print.__module__ == "builtins"  # Ray relayed the death here but did not patch print
