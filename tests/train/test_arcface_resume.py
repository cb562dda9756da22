"""An interrupted ArcFace run (head, partial FC, schedule, momentum) resumes to the same weights."""

from __future__ import annotations

import torch

import retrieval_kit as rk

EPOCHS, CLASSES, DIM, OUT = 3, 12, 8, 6


def data(epoch):
    # Per-epoch batches with noise from torch's global RNG, so the RNG state must be restored.
    g = torch.Generator().manual_seed(epoch)
    batches = []
    for _ in range(3):
        y = torch.randint(0, CLASSES, (10,), generator=g)
        x = torch.randn(CLASSES, DIM, generator=g)[y] + 0.1 * torch.randn(10, DIM)
        batches.append((x, y))
    return batches


def build(seed):
    # What a fresh process builds before loading the checkpoint; `seed` differs between runs
    # so that only the checkpoint can make them agree.
    rk.train.seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(DIM, 16), torch.nn.ReLU(), torch.nn.Linear(16, OUT))
    head = rk.losses.SubCenterArcFaceLoss(
        CLASSES,
        OUT,
        sub_centers=2,
        scale=16,
        partial_fc=0.5,
        margin=rk.losses.dynamic_margins(torch.arange(1, CLASSES + 1)),
    )
    opt = rk.train.build_optimizer(model, head, lr=0.05, loss_lr_mult=10, momentum=0.9)
    sched = rk.train.warmup_cosine_schedule(opt, warmup_steps=2, total_steps=EPOCHS * 3)
    return model, head, opt, sched


def train(model, head, opt, sched, epochs):
    for epoch in epochs:
        rk.train.train_one_epoch(model, data(epoch), head, None, opt, scheduler=sched)


def test_resumed_arcface_run_equals_the_uninterrupted_one(tmp_path):
    model, head, opt, sched = build(0)
    train(model, head, opt, sched, range(EPOCHS))

    model1, head1, opt1, sched1 = build(0)
    train(model1, head1, opt1, sched1, range(1))
    path = rk.train.save_checkpoint(
        tmp_path / "epoch1.pt", model=model1, optimizer=opt1, scheduler=sched1, loss=head1, epoch=1
    )
    del model1, head1, opt1, sched1

    model2, head2, opt2, sched2 = build(123)
    state = rk.train.load_checkpoint(
        path, model=model2, optimizer=opt2, scheduler=sched2, loss=head2
    )
    train(model2, head2, opt2, sched2, range(state["epoch"], EPOCHS))

    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(head.W, head2.W)
    assert opt.param_groups[1]["lr"] == opt2.param_groups[1]["lr"]
    assert torch.equal(head.sampled_classes, head2.sampled_classes)
    # The run really trained the head and changed the learning rate.
    assert not torch.equal(head.W, build(0)[1].W)
