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


def reference_training(model, batches, accumulate, lr=0.1, momentum=0.9, margin=0.2):
    """What train_one_epoch must do, written independently of it: PML's batch-hard miner and
    triplet loss on each batch, gradients from autograd.grad, summed over a group of
    ``accumulate`` batches and divided by ``accumulate`` (a short last group too, as with
    ``loss / accumulate`` per batch), then SGD with momentum by hand (v = m v + g; w -= lr v).
    Returns the final (weight, bias) and the per-batch losses."""
    loss_fn, miner = TripletMarginLoss(margin=margin), PMLBatchHardMiner()
    params = [p.detach().clone() for p in model.parameters()]
    velocity = [torch.zeros_like(p) for p in params]
    losses = []
    for start in range(0, len(batches), accumulate):
        grads = [torch.zeros_like(p) for p in params]
        for x, y in batches[start : start + accumulate]:
            w, b = (p.clone().requires_grad_() for p in params)
            emb = x @ w.T + b
            loss = loss_fn(emb, y, miner(emb, y))
            for g, dg in zip(grads, torch.autograd.grad(loss, (w, b))):
                g += dg / accumulate
            losses.append(loss.item())
        for p, v, g in zip(params, velocity, grads):
            v.mul_(momentum).add_(g)
            p.sub_(lr * v)
    return params, losses


@pytest.mark.parametrize("accumulate", [1, 2, 3])
def test_matches_reference_training_with_accumulation(accumulate):
    batches = make_batches(n_batches=5)
    model = make_model()
    expected, losses = reference_training(make_model(), batches, accumulate)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn, miner = rk.losses.TripletLoss(margin=0.2), rk.miners.BatchHardMiner()
    steps_seen = []
    stats = rk.train.train_one_epoch(
        model,
        batches,
        loss_fn,
        miner,
        opt,
        accumulate=accumulate,
        on_step=lambda step, s: steps_seen.append(step),
    )
    assert not torch.allclose(expected[0], make_model().weight)  # the reference did train
    for got, want in zip(model.parameters(), expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert stats["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
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


def on_bf16_grid(t):
    """Round to {-1, -0.5, 0, 0.5, 1}: such inputs and weights make every product and sum of an
    8-d dot product exact in bfloat16, so an autocast forward equals the float32 one and both
    mine the same triplets; only the backward's bfloat16 rounding differs."""
    return (2 * t).round().clamp(-2, 2) / 2


@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
def test_amp_step_matches_a_float32_step(max_grad_norm):
    dtypes = []

    class Probe(torch.nn.Linear):
        def forward(self, x):
            out = super().forward(x)
            dtypes.append(out.dtype)
            return out

    batches = [(on_bf16_grid(x), y) for x, y in make_batches(1)]

    def one_step(scaler):
        torch.manual_seed(0)
        model = Probe(8, 6)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(on_bf16_grid(4 * p))
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn, miner = rk.losses.TripletLoss(margin=0.2), rk.miners.BatchHardMiner()
        stats = rk.train.train_one_epoch(
            model, batches, loss_fn, miner, opt, scaler=scaler, max_grad_norm=max_grad_norm
        )
        assert stats["steps"] == 1 and math.isfinite(stats["loss"])
        return [p.detach() - b for p, b in zip(model.parameters(), before)]

    reference = one_step(None)
    assert dtypes == [torch.float32]
    # A large scale makes stepping on (or clipping) the scaled gradients visibly wrong.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    updates = one_step(scaler)
    assert dtypes[1:] == [torch.bfloat16]  # autocast on the CPU uses bfloat16
    assert scaler.get_scale() == 2.0**16  # finite gradients: the step was taken, no back-off
    if max_grad_norm is not None:  # the clip binds on the true gradients
        grad_norm = torch.cat([u.flatten() for u in reference]).norm() / 0.1
        assert grad_norm == pytest.approx(max_grad_norm, rel=1e-4)
    for got, want in zip(updates, reference):
        assert want.abs().max() > 0
        torch.testing.assert_close(got, want, rtol=0.02, atol=0.02 * want.abs().max().item())


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
