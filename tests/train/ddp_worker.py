"""Worker for test_distributed.py: the same tiny training run on 1 process or under torchrun.

Not a test module (no ``test_`` prefix). ``run(out)`` trains a Linear model with gather-for-mining
on a fixed global batch split evenly across ranks, checkpoints after 2 batches, perturbs the
weights on every rank, resumes every rank from rank 0's checkpoint and finishes the epoch. Rank 0
writes ``out`` with the per-step running losses, final weights and embeddings of all inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import retrieval_kit as rk
from retrieval_kit.train import distributed as rkd

GLOBAL_BATCHES, CLASSES, PER_CLASS, DIM, OUT = 5, 4, 4, 8, 6


def data():
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(GLOBAL_BATCHES):
        labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
        # Shuffle so that each rank's half misses some positives: only gathering finds them.
        perm = torch.randperm(len(labels), generator=g)
        labels = labels[perm]
        x = torch.randn(CLASSES, DIM, generator=g)[labels] + torch.randn(
            len(labels), DIM, generator=g
        )
        batches.append((x, labels))
    return batches


def run(out: str) -> None:
    torch.set_num_threads(1)
    info = rkd.init_distributed(device="cpu")
    rank, world = info.rank, info.world_size
    per_rank = CLASSES * PER_CLASS // world
    shards = [
        (x[rank * per_rank : (rank + 1) * per_rank], y[rank * per_rank : (rank + 1) * per_rank])
        for x, y in data()
    ]
    torch.manual_seed(1)
    model = torch.nn.Linear(DIM, OUT)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    loss_fn, miner = rk.losses.TripletLoss(margin=0.2), rk.miners.BatchHardMiner()
    losses = []
    kw = dict(accumulate=2, gather_for_mining=True, on_step=lambda s, st: losses.append(st["loss"]))
    rk.train.train_one_epoch(model, shards[:2], loss_fn, miner, opt, **kw)
    ckpt = Path(out).with_suffix(".ckpt.pt")
    if rkd.is_main_process():
        rk.train.save_checkpoint(ckpt, model=model, optimizer=opt, epoch=0, step=2)
    rkd.barrier()
    with torch.no_grad():  # every rank forgets its weights; the checkpoint must bring them back
        for p in model.parameters():
            p.add_(rank + 1.0)
    state = rk.train.load_checkpoint(ckpt, model=model, optimizer=opt)
    rk.train.train_one_epoch(
        model, shards[state["step"] :], loss_fn, miner, opt, start_step=state["step"], **kw
    )
    net = rkd.unwrap_model(model)
    weights = torch.cat([p.detach().flatten() for p in net.parameters()])
    # Every rank must hold the same weights at the end.
    spread = weights.clone()
    if world > 1:
        lo = weights.clone()
        torch.distributed.all_reduce(spread, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        spread = spread - lo
    else:
        spread = torch.zeros_like(weights)
    if rkd.is_main_process():
        all_x = torch.cat([x for x, _ in data()])
        with torch.no_grad():
            emb = net(all_x)
        torch.save(
            {
                "losses": losses,
                "weights": weights,
                "emb": emb,
                "spread": spread.abs().max(),
                "world": world,
            },
            out,
        )
    rkd.destroy_distributed()


if __name__ == "__main__":
    run(sys.argv[1])
