"""Issue 6: a run killed with SIGKILL mid-epoch ends like an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import retrieval_kit as rk

WORKER = Path(__file__).with_name("resume_worker.py")


def start(out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(out), *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_identical_weights(tmp_path):
    # 3 epochs x 3 batches; checkpoints at step 2 of each epoch and at each epoch end. The run is
    # killed after its 6th step (epoch 1, step 3): that step is lost and must be redone.
    # The killed run uses a DataLoader worker that draws batches ahead of the loop.
    full = start(tmp_path / "full")
    killed = start(tmp_path / "killed", "--hang-after", "6", "--num-workers", "1")
    try:
        assert killed.stdout.readline().strip() == "hanging", killed.stderr.read()
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
    finally:
        killed.kill()
    last = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"]) == (1, 2)
    assert last["sampler"]["batches_yielded"] == 2  # the loader had drawn ahead: not 3
    assert not (tmp_path / "killed" / "final.pt").exists()

    resumed = start(tmp_path / "killed", "--num-workers", "1")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert out.splitlines()[0] == "resumed epoch 1 step 2"
    assert full.wait(timeout=120) == 0, full.stderr.read()

    a = rk.train.load_checkpoint(tmp_path / "full" / "final.pt", restore_rng=False)
    b = rk.train.load_checkpoint(tmp_path / "killed" / "final.pt", restore_rng=False)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["extra"]["emb"], b["extra"]["emb"])
    # Epoch means of the epochs that ran whole in both (epoch 1 was split by the kill).
    ha, hb = a["extra"]["history"], b["extra"]["history"]
    assert ha[0] == hb[0] and ha[2] == hb[2] and hb[1] is None
