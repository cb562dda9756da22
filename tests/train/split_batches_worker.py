"""Worker for test_split_batches_ddp.py: a PKSampler-fed epoch on 1 process or under torchrun.

Not a test module (no ``test_`` prefix). ``run(out)`` trains a small MLP for one epoch with
gather-for-mining, once with ``PKSampler(split_batches=True)`` and once with the default
whole-batch sharding, from the same initial weights. Rank 0 writes ``out`` with, per mode, the
weights after the first optimizer step and at the end, the optimizer steps and the batch losses.
"""

from __future__ import annotations

import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

import retrieval_kit as rk
from retrieval_kit.train import distributed as rkd

CLASSES, PER_CLASS, DIM = 10, 6, 8
P, K = 4, 4  # global batch 16: 8 rows per rank with 2 ranks


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    x = torch.randn(CLASSES, DIM, generator=g)[labels] + torch.randn(len(labels), DIM, generator=g)
    return TensorDataset(x, labels)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in rkd.unwrap_model(model).parameters()])


def train(split_batches: bool) -> dict:
    data = dataset()
    torch.manual_seed(1)
    model: torch.nn.Module = torch.nn.Sequential(
        torch.nn.Linear(DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, 6)
    )
    if rkd.is_distributed():
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = rk.samplers.PKSampler(data.tensors[1], P, K, seed=3, split_batches=split_batches)
    sampler.set_epoch(0)
    after_first: list[torch.Tensor] = []
    losses: list[float] = []

    def on_step(step: int, stats: dict[str, float]) -> None:
        losses.append(stats["loss"])
        if not after_first:
            after_first.append(_flat(model))

    stats = rk.train.train_one_epoch(
        model,
        DataLoader(data, batch_sampler=sampler),
        rk.losses.TripletLoss(margin=0.2),
        rk.miners.BatchHardMiner(),
        opt,
        gather_for_mining=True,
        on_step=on_step,
    )
    return {
        "first": after_first[0],
        "final": _flat(model),
        "steps": int(stats["steps"]),
        "losses": torch.tensor(losses),
        "len": len(sampler),
    }


def run(out: str) -> None:
    torch.set_num_threads(1)
    info = rkd.init_distributed(device="cpu")
    result = {"world": info.world_size, "split": train(True), "whole": train(False)}
    if rkd.is_main_process():
        torch.save(result, out)
    rkd.destroy_distributed()


if __name__ == "__main__":
    run(sys.argv[1])
