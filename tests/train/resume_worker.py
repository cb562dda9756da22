"""Worker for test_resume.py: a tiny deterministic training run that checkpoints and resumes.

Not a test module. ``python resume_worker.py OUT [--hang-after N]`` trains for EPOCHS epochs,
saving ``OUT/last.pt`` every 2 optimizer steps mid-epoch and at each epoch end; it resumes from
``OUT/last.pt`` when one exists. With ``--hang-after N`` it prints ``hanging`` after its N-th
optimizer step (this process's count) and sleeps, to be killed. At the end it writes
``OUT/final.pt`` (a checkpoint of the final weights, with per-epoch stats in ``extra``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import retrieval_kit as rk

EPOCHS, CKPT_EVERY = 3, 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--hang-after", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)
    rk.train.seed_everything(0, deterministic=True)

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(5)  # 6 classes x 5 images
    x = torch.randn(6, 10, generator=g)[labels] + 0.7 * torch.randn(len(labels), 10, generator=g)
    dataset = torch.utils.data.TensorDataset(x, labels)
    sampler = rk.samplers.PKSampler(labels.tolist(), classes_per_batch=2, samples_per_class=3)
    # The loader gets its own generator: otherwise creating its iterator draws from the global
    # torch RNG, at a different point in a resumed epoch than in an uninterrupted one.
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(0),
    )
    # Dropout draws from the global torch RNG, so the RNG state must be restored exactly.
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 8)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    loss_fn, miner = rk.losses.TripletLoss(margin=None), rk.miners.BatchHardMiner()

    start_epoch, start_step, history = 0, 0, []
    ckpt = out / "last.pt"
    if ckpt.exists():
        state = rk.train.load_checkpoint(
            ckpt, model=model, optimizer=opt, scheduler=sched, sampler=sampler
        )
        start_epoch, start_step = state["epoch"], state["step"]
        history = state["extra"]["history"]
        print(f"resumed epoch {start_epoch} step {start_step}", flush=True)

    done_steps = 0
    for epoch in range(start_epoch, EPOCHS):
        sampler.set_epoch(epoch)
        step0 = start_step if epoch == start_epoch else 0

        def on_step(step: int, stats: dict, epoch: int = epoch) -> None:
            nonlocal done_steps
            done_steps += 1
            if step % CKPT_EVERY == 0 and step < len(sampler):
                rk.train.save_checkpoint(
                    ckpt,
                    model=model,
                    optimizer=opt,
                    scheduler=sched,
                    sampler=sampler,
                    epoch=epoch,
                    step=step,
                    extra={"history": history},
                )
            if done_steps == args.hang_after:
                print("hanging", flush=True)
                time.sleep(120)

        stats = rk.train.train_one_epoch(
            model, loader, loss_fn, miner, opt, start_step=step0, on_step=on_step
        )
        sched.step()
        history.append(stats["loss"] if step0 == 0 else None)  # a resumed epoch's mean is partial
        rk.train.save_checkpoint(
            ckpt,
            model=model,
            optimizer=opt,
            scheduler=sched,
            sampler=sampler,
            epoch=epoch + 1,
            extra={"history": history},
        )
    model.eval()
    with torch.no_grad():
        emb = model(x)
    rk.train.save_checkpoint(
        out / "final.pt", model=model, epoch=EPOCHS, extra={"history": history, "emb": emb}
    )


if __name__ == "__main__":
    main()
