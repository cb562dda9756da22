"""A loss with parameters under torch.distributed: its gradients are averaged like the model's."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_arcface_worker.py")


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("gather", [0, 1])
def test_two_gloo_processes_match_one_process_with_an_arcface_head(tmp_path, gather):
    spec = importlib.util.spec_from_file_location("ddp_arcface_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.run(str(tmp_path / "one.pt"), bool(gather))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(WORKER), str(tmp_path / "two.pt"), str(gather)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert (one["world"], two["world"]) == (1, 2) and float(two["spread"]) == 0.0
    torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(two["head"], one["head"], rtol=1e-5, atol=1e-6)
