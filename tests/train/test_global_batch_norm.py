"""GlobalBatchNorm: a 2-rank gloo step with global statistics is the 1-process BatchNorm step."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import retrieval_kit as rk

WORKER = Path(__file__).with_name("global_batch_norm_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("global_batch_norm_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _torchrun(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"two{'_'.join(args)}.pt"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(out),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out, weights_only=True)


def test_convert_keeps_parameters_buffers_and_state_dict_keys():
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm2d(2)))
    net[1].train(False)
    params = {k: p for k, p in net.named_parameters()}
    buffers = {k: b for k, b in net.named_buffers()}
    keys = list(net.state_dict())
    converted = rk.train.GlobalBatchNorm.convert(net)
    assert converted is net
    assert isinstance(net[1], rk.train.GlobalBatchNorm)
    assert isinstance(net[2][0], rk.train.GlobalBatchNorm)
    assert not net[1].training and net[2][0].training
    # The same tensors: an optimizer built before the conversion still updates the model.
    assert all(p is params[k] for k, p in net.named_parameters())
    assert all(b is buffers[k] for k, b in net.named_buffers())
    assert list(net.state_dict()) == keys
    plain = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm2d(2)))
    plain.load_state_dict(net.state_dict())


def test_convert_leaves_batchnorm_subclasses():
    class BatchNormAct(nn.BatchNorm2d):  # a subclass's forward does more (timm's BatchNormAct2d)
        pass

    net = nn.Sequential(BatchNormAct(3))
    assert type(rk.train.GlobalBatchNorm.convert(net)[0]) is BatchNormAct
    bn = nn.BatchNorm1d(3)
    assert isinstance(rk.train.GlobalBatchNorm.convert(bn), rk.train.GlobalBatchNorm)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_one_process_is_torch_batchnorm(momentum):
    torch.manual_seed(0)
    ref = nn.BatchNorm1d(5, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    bn = rk.train.GlobalBatchNorm.convert(nn.BatchNorm1d(5, momentum=momentum))
    bn.load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(7, 5) * 3 + 2
        torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.state_dict(), ref.state_dict())


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_take_the_one_process_batchnorm_step(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    worker = _worker()
    path = tmp_path / "one.pt"
    worker.run(str(path))
    one = torch.load(path, weights_only=True)
    two = _torchrun(tmp_path)
    assert (one["world"], two["world"]) == (1, 2)
    for mode in worker.SPLITS:
        ref, got = one[mode], two[mode]
        # Float32 sums in another order only: outputs, every gradient (the BatchNorm affine
        # parameters and the layers below them; those of the biases before a BatchNorm are 0 up
        # to rounding, ~5e-6 here), and after two steps the weights and the running statistics
        # (unbiased variance over the 16 rows) on each rank.
        torch.testing.assert_close(got["out"], ref["out"], rtol=1e-5, atol=1e-6)
        for name, grad in ref["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=2e-5, msg=name)
        for state in got["states"]:
            for name, value in ref["states"][0].items():
                torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-5, msg=name)
    # Plain BatchNorm on the two ranks' shares (each normalised alone) is another step.
    per_rank = _torchrun(tmp_path, "plain")
    for mode in worker.SPLITS:
        assert (per_rank[mode]["out"] - one[mode]["out"]).abs().max() > 1e-2
