"""train_one_epoch against hand-written loops on a tiny linear model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import TripletMarginLoss
from pytorch_metric_learning.miners import BatchHardMiner as PMLBatchHardMiner

import retrieval_kit as rk

torch.set_num_threads(1)


def make_batches(n_batches=5, per_class=4, classes=4, dim=8, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        labels = torch.arange(classes).repeat_interleave(per_class)
        centers = spread * torch.randn(classes, dim, generator=g)
        x = centers[labels] + 0.8 * torch.randn(len(labels), dim, generator=g)
        batches.append((x, labels))
    return batches


def make_model(seed=1, dim=8, out=6):
    torch.manual_seed(seed)
    return torch.nn.Linear(dim, out)


def reference_loop(model, batches, loss_fn, miner, optimizer, accumulate=1):
    """The plain loop train_one_epoch must reproduce (loss / accumulate, step per group)."""
    losses = []
    optimizer.zero_grad()
    for i, (x, y) in enumerate(batches):
        emb = model(x)
        loss = loss_fn(emb, y, miner(emb, y))
        (loss / accumulate).backward()
        losses.append(loss.item())
        if (i + 1) % accumulate == 0 or i + 1 == len(batches):
            optimizer.step()
            optimizer.zero_grad()
    return losses


@pytest.mark.parametrize("accumulate", [1, 2, 3])
def test_matches_reference_loop_with_accumulation(accumulate):
    batches = make_batches(n_batches=5)
    model_a, model_b = make_model(), make_model()
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9)
    loss_fn, miner = rk.losses.TripletLoss(margin=0.2), rk.miners.BatchHardMiner()
    steps_seen = []
    stats = rk.train.train_one_epoch(
        model_a,
        batches,
        loss_fn,
        miner,
        opt_a,
        accumulate=accumulate,
        on_step=lambda step, s: steps_seen.append(step),
    )
    losses = reference_loop(model_b, batches, loss_fn, miner, opt_b, accumulate)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-6)
    assert stats["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    expected_steps = math.ceil(5 / accumulate)
    assert stats["steps"] == expected_steps and stats["batches"] == 5
    # on_step fires after every optimizer step with the number of batches done.
    assert steps_seen == [min(5, accumulate * (k + 1)) for k in range(expected_steps)]
    assert stats["images_per_s"] > 0 and stats["triplets"] == 16


def test_active_fraction_counts_positive_hinges_like_a_loop():
    batches = make_batches(n_batches=3, seed=3, spread=1.5)
    model = make_model()
    with torch.no_grad():
        model.weight.copy_(torch.eye(8)[:6])  # a model that already separates some classes
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # frozen: the count is on the same model
    loss_fn, miner = TripletMarginLoss(margin=0.3), PMLBatchHardMiner()
    stats = rk.train.train_one_epoch(model, batches, loss_fn, miner, opt)
    active = total = 0
    with torch.no_grad():
        for x, y in batches:
            emb = F.normalize(model(x), dim=1)
            for a, p, n in zip(*miner(emb, y)):
                d_ap = (emb[a] - emb[p]).norm()
                d_an = (emb[a] - emb[n]).norm()
                active += int(d_ap - d_an + 0.3 > 0)
                total += 1
    assert total > 0 and 0 < active < total, "the data must give a non-trivial fraction"
    assert stats["active_fraction"] == pytest.approx(active / total)


def test_no_triplet_statistics_without_a_miner():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = rk.train.train_one_epoch(
        model, make_batches(2), rk.losses.TripletLoss(margin=0.1), None, opt
    )
    assert "active_fraction" not in stats and "triplets" not in stats
    assert all(math.isfinite(v) for v in stats.values()), stats


def test_subspace_mines_on_the_normalised_chunk():
    seen = []

    class RecordingMiner(rk.miners.BatchHardMiner):
        def forward(self, embeddings, labels, ref_emb=None, ref_labels=None):
            seen.append(embeddings.detach().clone())
            return super().forward(embeddings, labels, ref_emb, ref_labels)

    batches = make_batches(2)
    model = make_model(out=12)
    ref_model = copy.deepcopy(model)
    loss_fn = rk.losses.SubspaceTripletLoss(3, margin=0.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rk.train.train_one_epoch(model, batches, loss_fn, RecordingMiner(), opt, subspace=1)
    # The first batch's chunk is what the untouched model gives on columns 4..8, normalised.
    expected = F.normalize(ref_model(batches[0][0])[:, 4:8], dim=1).detach()
    torch.testing.assert_close(seen[0], expected)
    with pytest.raises(ValueError, match="subspace"):
        rk.train.train_one_epoch(model, batches, rk.losses.TripletLoss(), None, opt, subspace=0)


def test_dict_batches_max_steps_and_start_step():
    batches = [{"image": x, "label": y} for x, y in make_batches(4)]
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    stats = rk.train.train_one_epoch(
        model,
        batches,
        rk.losses.TripletLoss(),
        rk.miners.BatchHardMiner(),
        opt,
        max_steps=3,
        start_step=10,
        on_step=lambda step, s: steps.append(step),
    )
    assert stats["batches"] == 3 and steps == [11, 12, 13]


def test_bad_input_is_refused_clearly():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = rk.losses.TripletLoss()
    with pytest.raises(TypeError, match="optimizer"):
        rk.train.train_one_epoch(model, make_batches(1), loss_fn)
    with pytest.raises(ValueError, match="accumulate"):
        rk.train.train_one_epoch(model, make_batches(1), loss_fn, None, opt, accumulate=0)
    with pytest.raises(KeyError, match="batch 0"):
        rk.train.train_one_epoch(model, [{"x": 1}], loss_fn, None, opt)
    with pytest.raises(TypeError, match="batch 0"):
        rk.train.train_one_epoch(model, [torch.zeros(2)], loss_fn, None, opt)


def test_amp_runs_forward_under_autocast_and_steps_through_the_scaler():
    dtypes = []

    class Probe(torch.nn.Linear):
        def forward(self, x):
            out = super().forward(x)
            dtypes.append(out.dtype)
            return out

    torch.manual_seed(0)
    model = Probe(8, 6)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    stats = rk.train.train_one_epoch(
        model,
        make_batches(3),
        rk.losses.TripletLoss(margin=0.2),
        rk.miners.BatchHardMiner(),
        opt,
        scaler=scaler,
        max_grad_norm=1.0,
    )
    assert dtypes == [torch.bfloat16] * 3  # autocast on the CPU uses bfloat16
    assert math.isfinite(stats["loss"]) and stats["steps"] == 3
    assert not torch.equal(before, model.weight.detach())


@pytest.mark.parametrize("progress", [False, True])
def test_loader_is_iterated_once_per_epoch(progress):
    """tqdm.auto would call iter(loader) twice: DataLoader workers start twice and a resumed
    sampler's one-shot resume point is spent on the discarded iterator."""

    class CountingLoader:
        def __init__(self, batches):
            self.batches, self.iters = batches, 0

        def __len__(self):
            return len(self.batches)

        def __iter__(self):
            self.iters += 1
            return iter(self.batches)

    loader = CountingLoader(make_batches(2))
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rk.train.train_one_epoch(model, loader, rk.losses.TripletLoss(), None, opt, progress=progress)
    assert loader.iters == 1


def test_subspace_callable_picks_the_chunk_per_batch():
    calls = []

    class RecordingLoss(rk.losses.SubspaceTripletLoss):
        def forward(self, embeddings, labels=None, indices_tuple=None, *args, subspace=None):
            calls.append(subspace)
            return super().forward(embeddings, labels, indices_tuple, subspace=subspace)

    batches = make_batches(3)
    model = make_model(out=12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    picks = iter([2, None, 0])
    rk.train.train_one_epoch(
        model,
        batches,
        RecordingLoss(3),
        rk.miners.BatchHardMiner(),
        opt,
        subspace=lambda y: next(picks),
    )
    assert calls == [2, None, 0]


def test_freeze_bn_keeps_running_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.BatchNorm1d(6))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model[1].running_mean.clone()
    args = (model, make_batches(2), rk.losses.TripletLoss(), rk.miners.BatchHardMiner(), opt)
    rk.train.train_one_epoch(*args, freeze_bn=True)
    assert torch.equal(model[1].running_mean, before)
    assert not torch.equal(model[1].weight, torch.ones(6))  # the affine part still trains
    rk.train.train_one_epoch(*args)
    assert not torch.equal(model[1].running_mean, before)


def test_a_loss_with_parameters_must_be_in_the_optimizer():
    model, head = make_model(), rk.losses.SubCenterArcFaceLoss(4, 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not in the optimizer.*build_optimizer"):
        rk.train.train_one_epoch(model, make_batches(1), head, None, opt)
    with pytest.raises(TypeError):
        rk.train.train_one_epoch(model, make_batches(1), head, None)  # optimizer is required


def test_arcface_trains_with_meaningful_statistics_and_matches_a_plain_loop():
    batches = make_batches(n_batches=4)
    model_a, model_b = make_model(), make_model()
    torch.manual_seed(5)
    head_a = rk.losses.SubCenterArcFaceLoss(4, 6, sub_centers=2, scale=8, margin=0.2)
    head_b = copy.deepcopy(head_a)
    opt_a = rk.train.build_optimizer(model_a, head_a, lr=0.1, loss_lr_mult=5, momentum=0.9)
    opt_b = rk.train.build_optimizer(model_b, head_b, lr=0.1, loss_lr_mult=5, momentum=0.9)
    stats = rk.train.train_one_epoch(model_a, batches, head_a, None, opt_a)
    losses, accuracy = [], []
    for x, y in batches:
        opt_b.zero_grad()
        loss = head_b(model_b(x), y)
        loss.backward()
        opt_b.step()
        losses.append(loss.item())
        accuracy.append(head_b.last_stats["accuracy"])
    torch.testing.assert_close(head_a.W, head_b.W)
    torch.testing.assert_close(model_a.weight, model_b.weight)
    assert stats["loss"] == pytest.approx(sum(losses) / len(losses))
    assert stats["accuracy"] == pytest.approx(sum(accuracy) / len(accuracy))
    assert 0 < stats["mean_angle"] < 180
    assert "active_fraction" not in stats and "triplets" not in stats
    assert all(math.isfinite(v) for v in stats.values()), stats


def test_pair_miner_statistics_count_pairs():
    from pytorch_metric_learning.losses import ContrastiveLoss
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    batches = make_batches(n_batches=2)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    miner = MultiSimilarityMiner(epsilon=0.1)
    expected = [miner(F.normalize(model(x)).detach(), y) for x, y in batches[:1]]
    stats = rk.train.train_one_epoch(model, batches[:1], ContrastiveLoss(), miner, opt)
    assert stats["pos_pairs"] == len(expected[0][0]) and stats["neg_pairs"] == len(expected[0][2])
    assert "active_fraction" not in stats
    assert all(math.isfinite(v) for v in stats.values()), stats


def test_scheduler_steps_after_every_optimizer_step_and_clipping_covers_the_loss():
    model, head = make_model(), rk.losses.SubCenterArcFaceLoss(4, 6, scale=30)
    opt = rk.train.build_optimizer(model, head, lr=1.0)
    sched = rk.train.warmup_cosine_schedule(opt, 0, 100)
    before = [p.detach().clone() for p in [*model.parameters(), head.W]]
    stats = rk.train.train_one_epoch(
        model,
        make_batches(5),
        head,
        None,
        opt,
        scheduler=sched,
        accumulate=2,
        max_grad_norm=1e-3,
        max_steps=1,
    )
    assert stats["steps"] == 1 and sched.last_epoch == 1
    # One SGD step with lr 1 moves every parameter, head included, by at most the clip norm.
    moved = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip([*model.parameters(), head.W], before)]
    )
    assert 0 < moved.norm() <= 1e-3 * (1 + 1e-5)
    rk.train.train_one_epoch(model, make_batches(5), head, None, opt, scheduler=sched, accumulate=2)
    assert sched.last_epoch == 4  # 5 batches in groups of 2: 3 more steps
