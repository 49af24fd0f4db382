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


def cnn(widths: tuple[int, ...] = (2, 5, 7, 3, 4), dtypes: tuple[torch.dtype, ...] = (torch.float64,)
        ) -> nn.Sequential:
    """A seeded small CNN in eval mode: Conv2d + BatchNorm + ReLU, two Conv2d + ReLU, global average
    pooling, a Linear head (channels ``widths[:4]``, ``widths[4]`` outputs; inputs ``(N, widths[0], 7, 7)``).
    BatchNorm has non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    c0, c1, c2, c3, k = widths
    model = nn.Sequential(nn.Conv2d(c0, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.Conv2d(c1, c2, 3),
                          nn.ReLU(), nn.Conv2d(c2, c3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(c3, k))
    with torch.no_grad():
        bn = model[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.to(dtypes[0]).eval()


class Residual(nn.Module):
    """A ReLU MLP with one residual block: ``x → relu(inp x) → h + f2 relu(f1 h) → relu → out``."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        d_in, d, h, k = widths
        self.inp, self.f1, self.f2, self.out = nn.Linear(d_in, d), nn.Linear(d, h), nn.Linear(h, d), nn.Linear(d, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        return self.out(torch.relu(x + self.f2(torch.relu(self.f1(x)))))


def residual(widths: tuple[int, ...] = (4, 6, 11, 3), dtypes: tuple[torch.dtype, ...] = (torch.float64,)
             ) -> Residual:
    """A seeded :class:`Residual` (not an ``nn.Sequential``: discovered by tracing)."""
    torch.manual_seed(0)
    return Residual(widths).to(dtypes[0])


NETS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": cnn, "residual": residual}


def example(net: str, widths: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
    """The example inputs a net needs for discovery (``None`` for MLPs: their fast path needs none)."""
    if net == "cnn":
        return torch.zeros(1, widths[0], 7, 7, dtype=dtype)
    return torch.zeros(1, widths[0], dtype=dtype) if net == "residual" else None


def data(n: int = 48, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()


def plain(model: nn.Module) -> nn.Module:
    return model


def ddp(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def fsdp(model: nn.Module, **options: Any) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model.children():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            fully_shard(m, **options)
    fully_shard(model, **options)
    return model


def fsdp_bf16_compute(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return fsdp(model, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))


WRAPS: dict[str, Callable[[nn.Module], nn.Module]] = {
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


def case_train(wrap: str, dtype: str = "float64", net: str = "mlp") -> Result:
    """train() with a balancing schedule; every rank sees the same data stream (comparable runs).
    ``net="residual"`` (traced, not the MLP fast path) balances with ``exact`` at every epoch."""
    from synbal.training import BalanceSchedule, TrainConfig, train

    torch_dtype = getattr(torch, dtype)
    model = WRAPS[wrap](mlp(dtypes=(torch_dtype,)) if net == "mlp" else residual((6, 8, 11, 3), (torch_dtype,)))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = data()
    method, sweeps = ("layer", 1) if net == "mlp" else ("exact", 100)
    hist = train(model, opt, (x.to(torch_dtype), y),
                 TrainConfig(epochs=3, batch_size=16, progress=False),
                 balance=BalanceSchedule(at_start=method, every=1, method=method, max_sweeps=sweeps),
                 example_inputs=None if net == "mlp" else (x[:1].to(torch_dtype),))
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


def case_balance(wrap: str, widths: tuple[int, ...], dtypes: tuple[str, ...], sweeps: int, method: str = "layer",
                 tol: float = 1e-300, net: str = "mlp") -> Result:
    """One sharded balance of ``net`` (``mlp`` or ``cnn``) by ``method``, watched: the largest tensor any
    torch op produces, the numpy peak (tracemalloc), the number of all-reduces; gathering a parameter raises."""
    import tracemalloc

    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    import synbal

    kinds = tuple(getattr(torch, d) for d in dtypes)
    build, small = NETS[net], {"mlp": (3, 4, 4, 2), "cnn": (2, 3, 3, 2, 2), "residual": (2, 3, 3, 2)}[net]
    # first calls import modules and load compiled kernels: done on a small model before measuring
    synbal.balance(WRAPS[wrap](build(small, kinds)), "l2", method, max_sweeps=1, inplace=True, verify=False,
                   example_inputs=example(net, small, kinds[0]))
    model, inputs = WRAPS[wrap](build(widths, kinds)), example(net, widths, kinds[0])
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
            res = synbal.balance(model, "l2", method, max_sweeps=sweeps, tol=tol, inplace=True, verify=False,
                                 example_inputs=inputs)
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


def case_refusals() -> Result:
    """A sharded CNN that cannot be balanced as it is: each attempt's error (type and text)."""
    import synbal

    out: Result = {}
    attempts = {"train_mode": lambda m: synbal.balance(m.train(), "l2", "exact", inplace=True,
                                                       example_inputs=example("cnn", (2,), torch.float64)),
                "no_inputs": lambda m: synbal.balance(m, "l2", "exact", inplace=True),
                "cyclic": lambda m: synbal.balance(m, "l2", "cyclic", inplace=True,
                                                   example_inputs=example("cnn", (2,), torch.float64))}
    for name, attempt in attempts.items():
        try:
            attempt(fsdp(cnn()))
            out[name] = "balanced"
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def case_hessian_product(net: str, widths: tuple[int, ...]) -> Result:
    """The sharded Hessian product at random ``u`` for random ``z``, and the product with the
    single-process Hessian of the same (unsharded) model."""
    from synbal._adapters.protocol import adapter_for
    from synbal._adapters.torch.sharded import ShardedAdapter
    from synbal._adapters.torch.sharded_exact import hessian_product
    from synbal._problem.regularizers import parse_regularizer
    from synbal._solvers.exact import hessian

    inputs = example(net, widths, torch.float64)
    reg = parse_regularizer("1*l2+0.5*l1")  # two powers: two blocks per parameter
    sharded = ShardedAdapter(fsdp(NETS[net](widths)), example_inputs=inputs).problem(reg)
    whole = adapter_for(NETS[net](widths), example_inputs=inputs).problem(reg)
    g = torch.Generator().manual_seed(7)
    u, z = (torch.randn(whole.n, generator=g, dtype=torch.float64).numpy() * 0.3 for _ in range(2))
    assert sharded.collective is not None
    return {"sharded": torch.from_numpy(hessian_product(sharded, sharded.collective, u, z)),
            "single": torch.from_numpy(hessian(whole, u) @ z)}


CASES: dict[str, Callable[..., Result]] = {
    "hessian_product": case_hessian_product,
    "train": case_train, "ddp_loop": case_ddp_loop, "balance": case_balance, "fail": case_fail,
    "refusals": case_refusals}


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
