"""Worker processes of tests/test_distributed.py (forked; results saved as plain tensors).

Every case builds the same seeded MLP, trains or balances it under ``torch.distributed`` (gloo
on 127.0.0.1) and saves what the tests compare: parameters, optimizer state, losses, log-scales,
measurements, the type and text of any error. Most cases run unchanged without a process group
(``wrap=plain``): that is the single-process reference.
"""

from __future__ import annotations

import datetime
import itertools
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

Result = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlp(widths: tuple[int, ...] = (6, 7, 9, 5, 3), dtypes: tuple[torch.dtype, ...] = (torch.float64,)) -> nn.Sequential:
    """A seeded ReLU MLP; layer ``k`` gets ``dtypes[k % len(dtypes)]`` (mixed dtypes when several)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b).to(dtypes[k % len(dtypes)]))
        if k < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def data(n: int = 48, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def plain(model: nn.Sequential) -> nn.Module:
    return model


def ddp(model: nn.Sequential) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def fsdp(model: nn.Sequential, **options: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m, **options)
    fully_shard(model, **options)
    return model


def fsdp_bf16_compute(model: nn.Sequential) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return fsdp(model, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))


WRAPS: dict[str, Callable[[nn.Sequential], nn.Module]] = {
    "plain": plain, "ddp": ddp, "fsdp": fsdp, "fsdp_bf16_compute": fsdp_bf16_compute}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> Result:
    """Full parameters and optimizer state (gathered here, after balancing, only to compare them)."""

    def full(t: torch.Tensor) -> torch.Tensor:
        gather = getattr(t, "full_tensor", None)
        return (gather() if callable(gather) else t).detach().clone()

    names = {id(p): n.removeprefix("module.") for n, p in model.named_parameters()}
    out: Result = {f"param/{names[id(p)]}": full(p) for p in model.parameters()}
    for p, state in (optimizer.state.items() if optimizer is not None else []):
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                out[f"state/{names[id(p)]}/{k}"] = full(v)
    return out


def case_train(wrap: str, dtype: str = "float64") -> Result:
    """train() with a balancing schedule; every rank sees the same data stream (comparable runs)."""
    from synbal.training import BalanceSchedule, TrainConfig, train

    model = WRAPS[wrap](mlp(dtypes=(getattr(torch, dtype),)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data()
    hist = train(model, opt, (x.to(getattr(torch, dtype)), y),
                 TrainConfig(epochs=3, batch_size=16, progress=False),
                 balance=BalanceSchedule(at_start="layer", every=1, method="layer", max_sweeps=1))
    out = full_state(model, opt)
    out["losses"] = torch.tensor([r["train_loss"] for r in hist.epochs()], dtype=torch.float64)
    out["deficits"] = torch.tensor([r["max_relative_deficit"] for r in hist.epochs()], dtype=torch.float64)
    return out


def case_ddp_loop(wrap: str = "ddp") -> Result:
    """synbal.balance(model, inplace=True) in a hand-written SGD loop; counts solver calls per rank."""
    import synbal
    import synbal._adapters.torch.replicated as replicated
    from synbal.training import ModelBalance, rescale_optimizer_state

    calls = [0]
    original = replicated.solve

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    replicated.solve = counting
    model = WRAPS[wrap](mlp())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = data()
    for _ in range(4):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        res = synbal.balance(model, "l2", "exact", inplace=True)
        assert res.net is model
        rescale_optimizer_state(opt, ModelBalance(model).parameter_factors(res.log_scales))
    replicated.solve = original
    return {**full_state(model, opt), "solves": torch.tensor([calls[0]])}


def case_balance(wrap: str, widths: tuple[int, ...], dtypes: tuple[str, ...], sweeps: int) -> Result:
    """One sharded balance, watched: the largest tensor any torch op produces, the numpy peak
    (tracemalloc), the number of all-reduces; gathering a parameter raises."""
    import tracemalloc

    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    import synbal

    kinds = tuple(getattr(torch, d) for d in dtypes)
    # first calls import modules and load compiled kernels: done on a small model before measuring
    synbal.balance(WRAPS[wrap](mlp((3, 4, 4, 2), kinds)), "l2", "layer", max_sweeps=1, inplace=True, verify=False)
    model = WRAPS[wrap](mlp(widths, kinds))
    largest, reduces = [0], [0]

    class Largest(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device.type != "meta":  # meta: shapes only, no memory
                    largest[0] = max(largest[0], t.numel() * t.element_size())
            return out

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("balancing gathered a parameter")

    saved = (DTensor.full_tensor, DTensor.redistribute, FSDPModule.unshard, dist.all_gather_into_tensor,
             dist.all_reduce)

    def counting_all_reduce(*args: Any, **kwargs: Any) -> Any:
        reduces[0] += 1
        return saved[4](*args, **kwargs)

    DTensor.full_tensor = DTensor.redistribute = FSDPModule.unshard = refuse  # type: ignore[method-assign]
    dist.all_gather_into_tensor, dist.all_reduce = refuse, counting_all_reduce
    tracemalloc.start()
    try:
        with Largest():
            res = synbal.balance(model, "l2", "layer", max_sweeps=sweeps, tol=1e-300, inplace=True, verify=False)
        numpy_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        DTensor.full_tensor, DTensor.redistribute, FSDPModule.unshard = saved[:3]  # type: ignore[method-assign]
        dist.all_gather_into_tensor, dist.all_reduce = saved[3], saved[4]
    local = [getattr(p, "to_local", lambda p=p: p)() for p in model.parameters()]
    return {**full_state(model), "log_scales": torch.from_numpy(res.log_scales),
            "largest_tensor_bytes": torch.tensor([largest[0]]), "numpy_peak_bytes": torch.tensor([numpy_peak]),
            "largest_shard_bytes": torch.tensor([max(t.numel() * t.element_size() for t in local)]),
            "all_reduces": torch.tensor([reduces[0]]), "sweeps": torch.tensor([res.history[-1].sweep])}


def case_fail(kind: str, timeout: float) -> Result:
    """Rank 1 fails in the middle of balancing and stays alive without joining (or rank 0 fails
    before broadcasting, ``kind="ddp_root"``); the others must raise DistributedError in time."""
    import synbal
    import synbal._adapters.torch.replicated as replicated
    import synbal._adapters.torch.sharded as sharded

    model = WRAPS["fsdp" if kind == "fsdp" else "ddp"](mlp())
    rank = dist.get_rank()
    if kind == "fsdp" and rank == 1:
        original, seen = sharded.ShardedProblem._reduced, [0]

        def failing(self: Any, u: Any) -> Any:
            seen[0] += 1
            if seen[0] == 3:  # mid-sweep
                time.sleep(2 * timeout)  # alive, but never joins the all-reduce
                raise RuntimeError("simulated failure on rank 1")
            return original(self, u)

        sharded.ShardedProblem._reduced = failing  # type: ignore[method-assign]
    if kind == "ddp" and rank == 1:
        time.sleep(2 * timeout)
        raise RuntimeError("simulated failure on rank 1 (never joined)")
    if kind == "ddp_root" and rank == 0:
        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("simulated solver failure on rank 0")

        replicated.solve = broken
    start = time.perf_counter()
    try:
        synbal.balance(model, "l2", "layer", max_sweeps=20, inplace=True, timeout=timeout)
    finally:
        Path(os.environ["SYNBAL_TEST_OUT"], f"seconds{rank}.txt").write_text(str(time.perf_counter() - start))
    return {}


CASES: dict[str, Callable[..., Result]] = {
    "train": case_train, "ddp_loop": case_ddp_loop, "balance": case_balance, "fail": case_fail}


def worker(rank: int, world: int, port: int, outdir: str, case: str, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    os.environ["SYNBAL_TEST_OUT"] = outdir
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        result = CASES[case](*args)
    except Exception as exc:
        Path(outdir, f"error{rank}.txt").write_text(f"{type(exc).__name__}\n{exc}\n{traceback.format_exc()}")
        os._exit(0)  # a failed group cannot be torn down cleanly; the error is saved
    torch.save(result, os.path.join(outdir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def spawn(case: str, *args: Any, world: int = 2, outdir: str | Path) -> list[Result]:
    """Run ``case`` on ``world`` ranks; each rank's saved result, or ``{"error": text, "seconds": s}``."""
    import torch.multiprocessing as mp

    # forked: the children start with torch and synbal imported (a second, not tens of seconds)
    mp.start_processes(worker, args=(world, free_port(), str(outdir), case, args), nprocs=world, join=True,
                       start_method="fork")
    results: list[Result] = []
    for rank in range(world):
        error, seconds = Path(outdir, f"error{rank}.txt"), Path(outdir, f"seconds{rank}.txt")
        if error.exists():
            results.append({"error": error.read_text(),
                            "seconds": float(seconds.read_text()) if seconds.exists() else None})
        else:
            results.append(torch.load(Path(outdir, f"rank{rank}.pt"), weights_only=True))
    return results
