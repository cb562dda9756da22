"""rk.train.distributed: single-process defaults and a 2-process gloo run equal to 1 process."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import retrieval_kit as rk
from retrieval_kit.train import distributed as rkd

WORKER = Path(__file__).with_name("ddp_worker.py")


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_single_process_defaults(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = rkd.init_distributed(device="cpu")
    assert info == rkd.DistInfo(0, 1, 0, torch.device("cpu"))
    assert (rkd.get_rank(), rkd.get_world_size(), rkd.is_main_process()) == (0, 1, True)
    assert not rkd.is_distributed()
    rkd.barrier()  # no-op, must not hang
    x = torch.randn(3, 4, requires_grad=True)
    e, y = rkd.gather_embeddings(x, torch.arange(3))
    assert e is x and y.tolist() == [0, 1, 2]
    net = torch.nn.Linear(2, 2)
    assert rkd.unwrap_model(net) is net


def test_bad_environment_is_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        rkd.init_distributed(device="cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        rkd.init_distributed(device="cpu")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_match_one_process(tmp_path):
    """2 ranks x 8 rows with gather-for-mining == 1 process x 16 rows (accumulation, resume)."""
    single = tmp_path / "single.pt"
    load_worker().run(str(single))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # picks a free port on localhost
        "--nproc_per_node=2",
        str(WORKER),
        str(tmp_path / "ddp.pt"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(single, weights_only=True)
    two = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2)
    assert float(two["spread"]) == 0.0, "ranks ended with different weights"
    # Tolerance: float32 sums in another order (gradients averaged by all-reduce), 5 steps.
    assert len(one["losses"]) == len(two["losses"]) == 3  # batches 1-2: 1 step; 3-5: 2 steps (4, 5)
    torch.testing.assert_close(
        torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["emb"], one["emb"], rtol=1e-5, atol=1e-5)
    # And training did something: the weights moved away from their initial values.
    torch.manual_seed(1)
    init = torch.cat([p.detach().flatten() for p in torch.nn.Linear(8, 6).parameters()])
    assert (one["weights"] - init).abs().max() > 1e-3


def test_gather_without_rank_halves_would_differ():
    """Sanity check of the test's premise: mining on half batches differs from the full batch."""
    worker = load_worker()
    x, y = worker.data()[0]
    miner = rk.miners.BatchHardMiner()
    full = miner(x, y)
    half = miner(x[:8], y[:8])
    assert len(half[0]) < len(full[0]) / 2 or not torch.equal(full[2][: len(half[2])], half[2])
