"""quant and fig9 on the Ray backend (issue 16): the in-process numbers exactly, per run; a peer
arm the workers cannot import is refused, not dropped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import synbal.experiments._quant as quant
from problem_factory import layered_problem
from synbal.errors import SynbalError
from synbal.experiments import ExperimentContext, run_experiment
from synbal.experiments._fig9 import Fig9Settings, WeightSpace, reproduce, stochastic_ensemble

QUANT = {"models": ["mlp"], "seeds": 2, "epochs": 1, "train_size": 200, "test_size": 100, "bits": [8, 4],
         "arms": ["none", "torch-equalize", "brevitas", "synbal-linf", "synbal-l2"], "datasets": ["MNIST"]}


def _runs(path: Path) -> dict[str, object]:
    """Key → value of every recorded run, without its timings (the only part allowed to differ)."""
    out = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        out[entry["key"]] = {k: v for k, v in entry["value"].items() if "seconds" not in k}
    return out


def test_quant_on_ray_gives_the_in_process_numbers(tmp_path, ray_local):
    from synbal.experiments.backend import RayBackend

    ray_ctx = ExperimentContext(out_dir=tmp_path / "ray", quick=True, progress=False, extra=QUANT,
                                backend=RayBackend())
    on_ray = run_experiment("quant", ray_ctx)
    here = run_experiment("quant", ExperimentContext(out_dir=tmp_path / "here", quick=True, progress=False,
                                                     extra=QUANT))
    ray_runs, local_runs = _runs(tmp_path / "ray" / "quant-runs.jsonl"), _runs(tmp_path / "here" / "quant-runs.jsonl")
    assert len(ray_runs) == 2 and ray_runs == local_runs  # per run: every row, exactly
    assert on_ray["rows"] == here["rows"] and on_ray["goals"] == here["goals"]
    arms = [a for a in QUANT["arms"] if quant.peer_status((a,)).get(a) is None]  # brevitas where installed
    assert {r["seed"] for r in on_ray["rows"]} == {0, 1} and len(on_ray["rows"]) == 2 * 2 * 2 * len(arms) * 2
    assert not on_ray["failures"]  # every arm ran on the workers
    rerun = run_experiment("quant", ray_ctx)  # resume: everything is in the record, nothing runs
    assert rerun["rows"] == on_ray["rows"]


def test_quant_refuses_an_arm_the_workers_cannot_import(tmp_path, ray_local, monkeypatch):
    from synbal.experiments.backend import RayBackend

    # as under scripts/synbal_tolerant_torchvision.py: AIMET imports here, the workers run the plain package
    # (where aimet-torch fails to import, or is not installed at all, as in CI's `.[dev,hf]`)
    monkeypatch.setattr(quant, "peer_status", lambda arms: {p: None for p in quant.PEERS if p in arms})
    ctx = ExperimentContext(out_dir=tmp_path, quick=True, progress=False, backend=RayBackend(),
                            extra={**QUANT, "arms": ["none", "aimet", "synbal-linf"]})
    with pytest.raises(SynbalError, match=r"arm\(s\) aimet run here but not on the ray workers \(aimet: aimet-torch "
                                          r"(failed to import|is not installed).*arms=\[\"none\", \"synbal-linf\"\]"):
        run_experiment("quant", ctx)
    assert not (tmp_path / "quant-runs.jsonl").exists()  # refused before any run


def test_fig9_ensemble_on_ray_gives_the_in_process_numbers(tmp_path, ray_local):
    from synbal.experiments.backend import RayBackend

    problem = layered_problem(np.random.default_rng(3), [5, 4, 3, 4, 2])
    space = WeightSpace(problem, np.zeros(problem.n))
    here = stochastic_ensemble(problem, space, runs=7, seed=5, grid_points=10)
    on_ray = stochastic_ensemble(problem, space, runs=7, seed=5, grid_points=10, record=tmp_path / "runs",
                                 backend=RayBackend())
    for name in ("distance", "norm", "endpoints", "sweeps_used"):
        np.testing.assert_array_equal(getattr(on_ray, name), getattr(here, name))
    assert len(list((tmp_path / "runs").glob("runs-*.npz"))) == 7  # one task per run, each recorded
    again = stochastic_ensemble(problem, space, runs=7, seed=5, grid_points=10, record=tmp_path / "runs",
                                backend=RayBackend())
    assert again.resumed == 7
    np.testing.assert_array_equal(again.endpoints, here.endpoints)


def test_fig9_reproduction_on_ray(tmp_path, ray_local):
    from synbal.experiments.backend import RayBackend

    settings = Fig9Settings(runs=4, train_epochs=1, train_size=300, eval_size=200, grid_points=20)
    ray_ctx = ExperimentContext(out_dir=tmp_path / "ray", quick=True, progress=False, backend=RayBackend())
    on_ray = reproduce(ray_ctx, "fig9", settings)
    here = reproduce(ExperimentContext(out_dir=tmp_path / "here", quick=True, progress=False), "fig9", settings)
    assert on_ray["final"] == here["final"] and on_ray["supports_claim"] is True
    for curve, values in here["curves"].items():
        np.testing.assert_array_equal(on_ray["curves"][curve], values)
    assert len(list((tmp_path / "ray" / "fig9-runs").glob("runs-*.npz"))) == 4


class TwoMachines:
    """A backend whose second machine lacks aimet-torch (what a mixed cluster looks like to the probe)."""

    name = "ray"

    def on_each_node(self, fn, *args):
        here = {arm: None for arm in args[0]}
        there = {arm: "aimet-torch is not installed" if arm == "aimet" else None for arm in args[0]}
        return {"node-a": here, "node-b": there}


def test_quant_refuses_an_arm_that_one_worker_machine_lacks():
    with pytest.raises(SynbalError, match=r"arm\(s\) aimet run here but not on the ray workers \(aimet: aimet-torch "
                                          r"is not installed \(on 1 of 2 worker machines\)\)"):
        quant.check_workers(TwoMachines(), ["none", "brevitas", "aimet", "synbal-linf"])
    quant.check_workers(TwoMachines(), ["none", "brevitas", "synbal-linf"])  # every machine has brevitas


def test_a_probe_that_fails_on_a_machine_refuses_every_peer():
    class Broken(TwoMachines):
        def on_each_node(self, fn, *args):
            return {"node-a": {arm: None for arm in args[0]}, "node-b": ImportError("no module named synbal")}

    with pytest.raises(SynbalError, match=r"arm\(s\) brevitas run here.*the probe failed: ImportError: no module "
                                          r"named synbal \(on 1 of 2"):
        quant.check_workers(Broken(), ["none", "brevitas"])


def test_the_ray_probe_runs_once_on_the_local_node(ray_local):
    from synbal.experiments.backend import RayBackend

    out = RayBackend().on_each_node(_node_and_sum, 2, 3)
    assert out == {ray_local.get_runtime_context().get_node_id(): (ray_local.get_runtime_context().get_node_id(), 5)}


def _node_and_sum(a, b):
    import ray

    return ray.get_runtime_context().get_node_id(), a + b


CLUSTER_PROBE = """
import json, ray
from ray.cluster_utils import Cluster
from synbal.experiments.backend import RayBackend
from probe_node import node_id

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
print(json.dumps({"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                  "probe": RayBackend().on_each_node(node_id)}))
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.slow
def test_the_ray_probe_reaches_every_machine_of_a_two_node_cluster(tmp_path):
    import os
    import subprocess
    import sys

    pytest.importorskip("ray")
    (tmp_path / "probe_node.py").write_text("import ray\n\ndef node_id():\n"
                                            "    return ray.get_runtime_context().get_node_id()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CLUSTER_PROBE], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(out["nodes"]) == 2
    assert out["probe"] == {node: node for node in out["nodes"]}  # one task on each, pinned there
