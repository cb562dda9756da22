"""Worker for test_global_batch_norm.py: BatchNorm steps on 1 process or under torchrun.

Not a test module (no ``test_`` prefix). ``run(out)`` trains a small conv + BatchNorm2d + linear +
BatchNorm1d model for two SGD steps on fixed batches of 16 rows, twice:

- ``"gathered"``: 8 rows per rank, a loss over the gathered batch (pairwise distances, rows
  interacting as in metric learning) times the world size, as ``train_one_epoch`` does;
- ``"uneven"``: 5 rows on rank 0, 11 on rank 1, a per-row loss summed over the global batch.

On one process the model keeps torch's BatchNorm layers and sees the whole batch; under torchrun
they are converted to ``rk.train.GlobalBatchNorm`` (``plain=True``: left as they are). Rank 0
writes ``out``: per mode the first step's outputs (all rows, in order) and gradients, and the
final weights and buffers of every rank.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch import nn

import retrieval_kit as rk
from retrieval_kit.train import distributed as rkd

ROWS = 16
SPLITS = {"gathered": (8, 8), "uneven": (5, 11)}


def model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4, momentum=0.3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.BatchNorm1d(6),
    )
    with torch.no_grad():  # affine parameters away from (1, 0), so their gradients matter
        for bn in (net[1], net[6]):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return net


def batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(ROWS, 3, 6, 6, generator=g) * 2 + 1 for _ in range(2)]


def loss_of(mode: str, out: torch.Tensor) -> torch.Tensor:
    if mode == "gathered":
        return torch.cdist(out, out).mean() + out[:, 0].sin().mean()
    return (out * torch.linspace(-1, 1, out.shape[1])).square().sum() / ROWS


def train(mode: str, plain: bool = False) -> dict:
    rank, world = rkd.get_rank(), rkd.get_world_size()
    net = model()
    if world > 1 and not plain:
        net = rk.train.GlobalBatchNorm.convert(net)
    train_model = net
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    counts = SPLITS[mode] if world > 1 else (ROWS,)
    lo = sum(counts[:rank])
    result: dict = {}
    for step, x in enumerate(batches()):
        out = train_model(x[lo : lo + counts[rank]])
        if mode == "gathered":
            loss = loss_of(mode, rkd.all_gather_with_grad(out)) * world
        else:
            loss = loss_of(mode, out) * world
        opt.zero_grad()
        loss.backward()
        if step == 0:
            parts = [None] * world
            if world > 1:
                dist.all_gather_object(parts, out.detach())
            else:
                parts = [out.detach()]
            result["out"] = torch.cat(parts)
            result["grads"] = {k: p.grad.clone() for k, p in net.named_parameters()}
        opt.step()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    states = [None] * world
    if world > 1:
        dist.all_gather_object(states, state)
    else:
        states = [state]
    result["states"] = states
    return result


def run(out: str, plain: bool = False) -> None:
    torch.set_num_threads(1)
    info = rkd.init_distributed(device="cpu")
    result = {"world": info.world_size, **{mode: train(mode, plain) for mode in SPLITS}}
    if rkd.is_main_process():
        torch.save(result, out)
    rkd.destroy_distributed()


if __name__ == "__main__":
    run(sys.argv[1], plain=len(sys.argv) > 2 and sys.argv[2] == "plain")
