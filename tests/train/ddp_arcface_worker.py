"""Worker for test_distributed_loss.py: an ArcFace run on 1 process or under torchrun.

Not a test module. ``run(out, gather)`` trains a Linear model and a ``SubCenterArcFaceLoss``
head (its own parameters, outside DDP) on a fixed global batch split evenly across ranks. With
a per-sample mean loss, both the per-rank loss (``gather=0``) and the gathered one (``gather=1``)
must take the same steps as one process on the whole batch. Rank 0 writes ``out``.
"""

from __future__ import annotations

import sys

import torch

import retrieval_kit as rk
from retrieval_kit.train import distributed as rkd

BATCHES, ROWS, CLASSES, DIM, OUT = 4, 16, 5, 8, 6


def data():
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(ROWS, DIM, generator=g), torch.randint(0, CLASSES, (ROWS,), generator=g))
        for _ in range(BATCHES)
    ]


def run(out: str, gather: bool) -> None:
    torch.set_num_threads(1)
    info = rkd.init_distributed(device="cpu")
    rank, world = info.rank, info.world_size
    per_rank = ROWS // world
    shards = [(x[rank * per_rank :][:per_rank], y[rank * per_rank :][:per_rank]) for x, y in data()]
    torch.manual_seed(1)
    model = torch.nn.Linear(DIM, OUT)
    loss_fn = rk.losses.SubCenterArcFaceLoss(CLASSES, OUT, sub_centers=2, scale=8, margin=0.3)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = rk.train.build_optimizer(model, loss_fn, lr=0.1, loss_lr_mult=5.0, momentum=0.9)
    rk.train.train_one_epoch(
        model, shards, loss_fn, None, opt, gather_for_mining=gather, max_grad_norm=10.0
    )
    weights = torch.cat([p.detach().flatten() for p in rkd.unwrap_model(model).parameters()])
    head = loss_fn.W.detach().clone()
    spread = torch.zeros(())
    if world > 1:  # every rank must hold the same head
        hi, lo = head.clone(), head.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        spread = (hi - lo).abs().max()
    if rkd.is_main_process():
        torch.save({"weights": weights, "head": head, "spread": spread, "world": world}, out)
    rkd.destroy_distributed()


if __name__ == "__main__":
    run(sys.argv[1], bool(int(sys.argv[2])))
