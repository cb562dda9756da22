"""PKSampler(split_batches=True) + gather-for-mining under DDP: the one-process training step."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("split_batches_worker.py")


def _worker():
    spec = importlib.util.spec_from_file_location("split_batches_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_take_the_one_process_steps(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _worker().run(str(tmp_path / "one.pt"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(WORKER),
        str(tmp_path / "two.pt"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2)
    ref, split = one["split"], two["split"]
    # 10 classes, P=4: 3 batches of 16, so 3 optimizer steps on one process and on two.
    assert ref["steps"] == ref["len"] == split["steps"] == split["len"] == 3
    # One 2-process step (8 rows per rank, loss over the gathered 16, DDP's mean of the
    # world-scaled gradients) is the 1-process step on the same 16 rows; float32 sums in
    # another order only.
    torch.testing.assert_close(split["first"], ref["first"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split["losses"], ref["losses"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(split["final"], ref["final"], rtol=1e-5, atol=1e-5)
    # The steps moved the weights; whole batches dealt to ranks (the default) take another path:
    # 2 steps of 2 averaged batches, one of them a padding batch.
    assert (ref["final"] - ref["first"]).abs().max() > 1e-3
    assert two["whole"]["steps"] == 2
    assert (two["whole"]["first"] - ref["first"]).abs().max() > 1e-3
