"""Worker for test_recalibrate.py: ``recalibrate_batchnorm`` on each rank's shard under torchrun.

Not a test module (no ``test_`` prefix). Rank r feeds rows ``r::2`` of ``rows()`` (uneven batch
sizes) and rank 0 saves the recalibrated statistics of every rank to ``argv[1]``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

import retrieval_kit as rk


def rows() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(23, 5, generator=g) * 2 + 1


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = net()
    shard = rows()[rank::world]
    rk.train.recalibrate_batchnorm(model, list(shard.split(4)), modules=model[1])
    stats = torch.stack([model[1].running_mean, model[1].running_var])
    gathered = [torch.zeros_like(stats) for _ in range(world)]
    dist.all_gather(gathered, stats)
    if rank == 0:
        torch.save(torch.stack(gathered), out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
