"""Data-parallel training of the MNIST MLP with balancing every epoch: single process, DDP and FSDP2.

Run on CPU with the gloo backend::

    torchrun --standalone --nproc-per-node 2 examples/distributed_train.py --check

Each rank trains on its slice of every minibatch (the loss is scaled so that the ranks'
averaged gradient is the full minibatch's mean gradient), and after every epoch the model is
balanced in place with one layer sweep of ``l2`` balancing
(:class:`synbal.training.ModelBalance`), the optimizer's momentum following the new weights:

* ``DistributedDataParallel``: rank 0 solves, every rank applies the broadcast scales;
* FSDP2 (``fully_shard`` on every Linear and the model): each rank sums IN/OUT costs over its
  own shards, one all-reduce per balancing step, scales applied to the local shards only.

The same training runs once more without any process group (rank 0 only) as the reference.
``--check`` exits 0 only when both distributed runs equal it: every parameter within 1e-10
relative (float64) and the same per-epoch training losses (within 1e-10 relative). Without
``torchrun`` the script runs the single-process training only. Data: the MNIST subset embedded
in synbal, or ``--data DIR`` with the four IDX ``.gz`` files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from synbal.data import load_mnist
from synbal.errors import SynbalError
from synbal.training import ModelBalance

Tensors = tuple[torch.Tensor, torch.Tensor]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 unless DDP and FSDP2 equal the single process")
    ap.add_argument("--data", default=None, help="directory with the MNIST IDX .gz files (default: embedded subset)")
    ap.add_argument("--train", type=int, default=2000, help="training examples used (first N)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--widths", default="784-256-128-10", help="the MLP's layer widths")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.train < 1 or args.epochs < 1 or args.batch_size < 1:
        ap.error("--train, --epochs and --batch-size must be >= 1")
    return args


def load(args: argparse.Namespace) -> Tensors:
    x, y = load_mnist(args.data).tensors("train", dtype=torch.float64)
    return x[: args.train], y[: args.train]


def mlp(widths: list[int], seed: int) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (PyTorch's default initialisation)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for k in range(len(widths) - 1):
        layers += [nn.Linear(widths[k], widths[k + 1])] + ([nn.ReLU()] if k < len(widths) - 2 else [])
    return nn.Sequential(*layers)


def ddp(model: nn.Module) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def fsdp(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for m in model.modules():
        if isinstance(m, nn.Linear):
            fully_shard(m)
    fully_shard(model)
    return model


def train(args: argparse.Namespace, data: Tensors, wrap: Callable[[nn.Module], nn.Module] | None,
          rank: int, world: int) -> tuple[nn.Module, list[float]]:
    """SGD with momentum, each rank on ``batch[rank::world]``; one layer sweep of balancing per epoch."""
    widths = [int(w) for w in args.widths.split("-")]
    model = mlp(widths, args.seed).double()
    model = wrap(model) if wrap is not None else model
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    balancer = ModelBalance(model)
    x, y = data
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    for _ in range(args.epochs):
        perm = torch.randperm(x.shape[0], generator=generator)
        total = torch.zeros(2, dtype=torch.float64)  # loss sum, examples
        for start in range(0, x.shape[0], args.batch_size):
            batch = perm[start : start + args.batch_size]
            mine = batch[rank::world]
            out = model(x[mine])
            loss_sum = nn.functional.cross_entropy(out, y[mine], reduction="sum")
            opt.zero_grad(set_to_none=True)
            (loss_sum * (world / batch.numel())).backward()  # averaged over ranks: the batch's mean
            opt.step()
            total += torch.tensor([float(loss_sum.detach()), float(mine.numel())], dtype=torch.float64)
        if wrap is not None:
            dist.all_reduce(total)
        losses.append(float(total[0] / total[1]))
        balancer.balance("l2", "layer", optimizer=opt, max_sweeps=1)
    return model, losses


def full_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter in full (FSDP shards are gathered here, for the comparison only)."""
    out = {}
    for name, p in model.named_parameters():
        gather = getattr(p, "full_tensor", None)
        out[name.removeprefix("module.")] = (gather() if callable(gather) else p).detach().clone()
    return out


def compare(name: str, got: tuple[dict[str, torch.Tensor], list[float]],
            want: tuple[dict[str, torch.Tensor], list[float]]) -> bool:
    params, losses = got
    worst = max(float((params[k] - v).abs().max() / v.abs().max()) for k, v in want[0].items())
    loss_rel = max(abs(a - b) / abs(b) for a, b in zip(losses, want[1], strict=True))
    ok = worst <= 1e-10 and loss_rel <= 1e-10
    print(f"{name}: max relative parameter difference {worst:.3g}, max relative loss difference "
          f"{loss_rel:.3g} -> {'equal' if ok else 'DIFFERENT'}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    data = load(args)
    if "WORLD_SIZE" not in os.environ:  # not under torchrun: the single-process run only
        _, losses = train(args, data, None, 0, 1)
        print("single process, per-epoch losses:", " ".join(f"{v:.6f}" for v in losses))
        return 0
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    results = {}
    for name, wrap in (("DDP", ddp), ("FSDP2", fsdp)):
        start = time.perf_counter()
        model, losses = train(args, data, wrap, rank, world)
        results[name] = (full_parameters(model), losses)
        if rank == 0:
            print(f"{name} on {world} ranks: {time.perf_counter() - start:.1f} s, per-epoch losses "
                  + " ".join(f"{v:.6f}" for v in losses), flush=True)
    verdict = torch.ones(1, dtype=torch.int64)
    if rank == 0:
        model, losses = train(args, data, None, 0, 1)
        reference = (full_parameters(model), losses)
        print("single process, per-epoch losses " + " ".join(f"{v:.6f}" for v in losses), flush=True)
        verdict[0] = int(all(compare(name, got, reference) for name, got in results.items()))
    dist.broadcast(verdict, src=0)
    dist.destroy_process_group()
    return 0 if int(verdict[0]) == 1 or not args.check else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SynbalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
