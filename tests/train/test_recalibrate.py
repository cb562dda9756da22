"""recalibrate_batchnorm: exact moments by hand, only the chosen BatchNorms move, 2 gloo ranks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import retrieval_kit as rk

torch.set_num_threads(1)
WORKER = Path(__file__).with_name("recalibrate_worker.py")


def trunk_and_head():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6))
    return nn.Sequential(trunk, head)


def batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(5, 3, 6, 6, generator=g) + 1, torch.zeros(5)) for _ in range(n)]


def test_head_statistics_are_the_exact_moments_and_the_trunk_is_untouched():
    model = trunk_and_head()
    model.train()
    trunk_state = {k: v.clone() for k, v in model[0].state_dict().items()}
    tracked = model[1][2].num_batches_tracked.clone()
    data = batches()
    assert rk.train.recalibrate_batchnorm(model, data, modules=model[1]) == 15
    # By hand: the head BatchNorm's inputs with the trunk in eval mode, over all 15 rows.
    model.eval()
    with torch.no_grad():
        x = torch.cat([model[1][:2](model[0](b[0])) for b in data]).double().numpy()
    bn = model[1][2]
    np.testing.assert_allclose(bn.running_mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), x.var(0, ddof=1), rtol=1e-5, atol=1e-6)
    for key, value in model[0].state_dict().items():
        torch.testing.assert_close(value, trunk_state[key], msg=key)
    assert torch.equal(bn.num_batches_tracked, tracked)


def test_batchnorm2d_moments_and_training_mode_restored():
    model = trunk_and_head()
    model.train()
    data = [b[0] for b in batches(2)]
    dicts = [{"image": data[0]}, {"images": data[1]}]  # the batch forms train_one_epoch takes
    rk.train.recalibrate_batchnorm(model, dicts, modules=[model[0][1]])
    assert model.training and model[0][1].training
    with torch.no_grad():
        x = torch.cat([model[0][0](b) for b in data]).double()
    flat = x.transpose(0, 1).reshape(4, -1).numpy()
    bn = model[0][1]
    np.testing.assert_allclose(bn.running_mean.numpy(), flat.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), flat.var(1, ddof=1), rtol=1e-5, atol=1e-6)


def test_eval_outputs_match_full_batch_training_outputs_after_recalibration():
    # What it is for: after the pass, eval mode normalises as one batch of all rows would.
    model = trunk_and_head()
    data = batches(4)
    rk.train.recalibrate_batchnorm(model, data, modules=model[1])
    images = torch.cat([b[0] for b in data])
    with torch.no_grad():
        model.eval()
        got = model(images)
        model[1].train()
        full = model(images)
    # Training mode uses the biased variance: equal up to the n / (n - 1) factor's effect.
    n = len(images)
    bn = model[1][2]
    pre = (full - bn.bias) / bn.weight
    torch.testing.assert_close(
        (got - bn.bias) / bn.weight, pre * ((n - 1) / n) ** 0.5, atol=2e-4, rtol=1e-3
    )


def test_bad_input_is_named():
    model = trunk_and_head()
    with pytest.raises(ValueError, match="no BatchNorm"):
        rk.train.recalibrate_batchnorm(model, batches(), modules=nn.Linear(2, 2))
    with pytest.raises(ValueError, match="saw no input"):
        rk.train.recalibrate_batchnorm(model, [], modules=model[1])
    with pytest.raises(KeyError, match="one of the keys"):
        rk.train.recalibrate_batchnorm(model, [{"x": torch.randn(4, 3, 6, 6)}], modules=model[1])
    with pytest.raises(ValueError, match="1 row"):
        rk.train.recalibrate_batchnorm(model, [torch.randn(1, 3, 6, 6)], modules=model[1])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_sum_their_shards(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    spec = importlib.util.spec_from_file_location("recalibrate_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    one = worker.net()
    rk.train.recalibrate_batchnorm(one, [worker.rows()], modules=one[1])
    out = tmp_path / "two.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    ref = torch.stack([one[1].running_mean, one[1].running_var])
    for rank_stats in two:  # both ranks hold the statistics of all 23 rows
        torch.testing.assert_close(rank_stats, ref, rtol=1e-5, atol=1e-6)
