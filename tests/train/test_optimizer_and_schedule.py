"""build_optimizer / param_groups and the warm-up + cosine schedule against its formula."""

from __future__ import annotations

import math

import pytest
import torch

import retrieval_kit as rk


def test_param_groups_put_the_loss_at_its_own_rate():
    model, head = torch.nn.Linear(4, 3), rk.losses.SubCenterArcFaceLoss(5, 3)
    model.bias.requires_grad_(False)
    groups = rk.train.param_groups(model, head, lr=0.02, loss_lr_mult=10)
    assert [g["name"] for g in groups] == ["model", "loss"]
    assert groups[0]["params"] == [model.weight] and groups[0]["lr"] == 0.02
    assert groups[1]["params"] == [head.W] and groups[1]["lr"] == pytest.approx(0.2)
    # No loss, or a loss without parameters: one group.
    assert len(rk.train.param_groups(model, rk.losses.TripletLoss(), lr=0.1)) == 1
    assert len(rk.train.param_groups(model, None, lr=0.1)) == 1
    # A parameter shared by model and loss is listed once, with the model.
    shared = torch.nn.Module()
    shared.inner = model
    assert len(rk.train.param_groups(model, shared, lr=0.1)) == 1
    with pytest.raises(ValueError, match="lr"):
        rk.train.param_groups(model, head, lr=0)


def test_build_optimizer_by_name_and_its_errors():
    model, head = torch.nn.Linear(4, 3), rk.losses.SubCenterArcFaceLoss(5, 3)
    opt = rk.train.build_optimizer(model, head, name="adamw", lr=1e-3, weight_decay=0.01)
    assert type(opt) is torch.optim.AdamW
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]
    opt = rk.train.build_optimizer(model, head, name="RMSprop", lr=0.1, loss_lr_mult=0.5)
    assert type(opt) is torch.optim.RMSprop and opt.param_groups[1]["lr"] == 0.05
    with pytest.raises(ValueError, match="did you mean 'adamw'"):
        rk.train.build_optimizer(model, head, name="adamww", lr=0.1)
    with pytest.raises(TypeError, match="SGD rejected its arguments.*'momentom'"):
        rk.train.build_optimizer(model, head, lr=0.1, momentom=0.9)


def test_the_loss_head_learns_at_its_multiplied_rate():
    torch.manual_seed(0)
    model, head = torch.nn.Linear(4, 3), rk.losses.SubCenterArcFaceLoss(5, 3, scale=8)
    w0, m0 = head.W.detach().clone(), model.weight.detach().clone()
    opt = rk.train.build_optimizer(model, head, lr=0.1, loss_lr_mult=3.0)
    emb = model(torch.randn(6, 4))
    head(emb, torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    grads = head.W.grad.clone(), model.weight.grad.clone()
    opt.step()
    torch.testing.assert_close(head.W.detach(), w0 - 0.3 * grads[0])
    torch.testing.assert_close(model.weight.detach(), m0 - 0.1 * grads[1])


@pytest.mark.parametrize(("warmup", "total", "floor"), [(5, 20, 0.0), (0, 7, 0.1), (3, 3, 0.0)])
def test_schedule_follows_the_formula_per_step(warmup, total, floor):
    model, head = torch.nn.Linear(2, 2), rk.losses.SubCenterArcFaceLoss(3, 2)
    opt = rk.train.build_optimizer(model, head, lr=0.4, loss_lr_mult=10)
    sched = rk.train.warmup_cosine_schedule(opt, warmup, total, min_lr_ratio=floor)
    for step in range(total + 3):
        if step < warmup:
            expected = 0.4 * step / warmup
        else:
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            expected = 0.4 * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        assert opt.param_groups[1]["lr"] == pytest.approx(10 * expected, abs=1e-11), step
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * floor, abs=1e-12)


def test_schedule_peak_state_and_errors():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched = rk.train.warmup_cosine_schedule(opt, 4, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[4] == 1.0 and max(lrs) == 1.0 and lrs[:5] == sorted(lrs[:5])
    assert lrs[4:] == sorted(lrs[4:], reverse=True)
    opt2 = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    sched2 = rk.train.warmup_cosine_schedule(opt2, 4, 10)
    sched2.load_state_dict(sched.state_dict())
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match="total_steps"):
        rk.train.warmup_cosine_schedule(opt, 5, 4)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        rk.train.warmup_cosine_schedule(opt, 1, 4, min_lr_ratio=2)
