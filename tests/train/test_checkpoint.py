"""save_checkpoint / load_checkpoint: round trip, RNG, DDP unwrap, safety, atomicity."""

from __future__ import annotations

import builtins
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist

import retrieval_kit as rk
import retrieval_kit.train.checkpoint as checkpoint_module


class CountingSampler:
    """Stand-in for rk.samplers' state_dict/load_state_dict contract."""

    def __init__(self):
        self.epoch, self.yielded = 0, 0

    def state_dict(self):
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, d):
        self.epoch, self.yielded = d["epoch"], d["yielded"]


def fresh_scaler():
    return torch.amp.GradScaler("cpu", init_scale=128.0, growth_interval=3)


def trained_objects(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = fresh_scaler()
    for step in range(3):
        loss = model(torch.randn(5, 4)).square().mean()
        if step == 1:
            loss = loss * float("inf")  # non-finite gradients: the scaler skips and backs off
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        sched.step()
    sampler = CountingSampler()
    sampler.epoch, sampler.yielded = 2, 7
    return model, opt, sched, scaler, sampler


def test_round_trip_restores_every_state(tmp_path):
    model, opt, sched, scaler, sampler = trained_objects(0)
    path = rk.train.save_checkpoint(
        tmp_path / "ckpt.pt",
        model=model,
        optimizer=opt,
        scheduler=sched,
        sampler=sampler,
        scaler=scaler,
        epoch=2,
        step=7,
        config={"lr": 0.01, "layers": [4, 8, 3], "name": "demo"},
        extra={"best": 0.5},
    )
    model2, opt2, sched2, _, sampler2 = trained_objects(1)
    sampler2.epoch = sampler2.yielded = 0
    scaler2 = fresh_scaler()
    # finite step, back-off (128 -> 64), finite step: one step towards the next growth
    assert scaler.state_dict()["scale"] == 64.0 and scaler.state_dict()["_growth_tracker"] == 1
    state = rk.train.load_checkpoint(
        path, model=model2, optimizer=opt2, scheduler=sched2, sampler=sampler2, scaler=scaler2
    )
    for (k, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), k
    for pid, s in opt.state_dict()["state"].items():
        assert torch.equal(s["exp_avg"], opt2.state_dict()["state"][pid]["exp_avg"])
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.state_dict() == scaler.state_dict()
    assert sampler2.state_dict() == {"epoch": 2, "yielded": 7}
    assert (state["epoch"], state["step"]) == (2, 7)
    assert state["config"] == {"lr": 0.01, "layers": [4, 8, 3], "name": "demo"}
    assert state["extra"] == {"best": 0.5} and state["version"] == rk.__version__


def test_rng_states_are_restored(tmp_path):
    model = torch.nn.Linear(2, 2)
    rk.train.seed_everything(123)
    random.random(), np.random.rand(), torch.rand(1), np.random.randn()  # gauss cache in use
    rk.train.save_checkpoint(tmp_path / "c.pt", model=model, epoch=0)
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    rk.train.seed_everything(999)
    rk.train.load_checkpoint(tmp_path / "c.pt", model=model)
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
    rk.train.seed_everything(999)
    rk.train.load_checkpoint(tmp_path / "c.pt", model=model, restore_rng=False)
    assert random.random() != expected[0]


def test_ddp_model_is_saved_unwrapped(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        net = torch.nn.Linear(3, 2)
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        rk.train.save_checkpoint(tmp_path / "c.pt", model=ddp, epoch=1)
        state = torch.load(tmp_path / "c.pt", weights_only=True)
        assert sorted(state["model"]) == ["bias", "weight"]  # no "module." prefix
        plain = torch.nn.Linear(3, 2)
        rk.train.load_checkpoint(tmp_path / "c.pt", model=plain)
        assert torch.equal(plain.weight, net.weight)
        other = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        rk.train.load_checkpoint(tmp_path / "c.pt", model=other)  # loads into a wrapped model
        assert torch.equal(other.module.weight, net.weight)
    finally:
        dist.destroy_process_group()


class Exploit:
    """A pickle payload that creates a file when unpickled: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_crafted_checkpoint_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"format": checkpoint_module.CHECKPOINT_FORMAT, "model": Exploit(marker)}, bad)
    with pytest.raises(ValueError, match="refusing to load .*bad.pt"):
        rk.train.load_checkpoint(bad, model=torch.nn.Linear(2, 2))
    assert not marker.exists(), "loading the crafted checkpoint ran its payload"
    # The payload is real: an unsafe loader does run it (so the test above can fail).
    with open(bad, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()


def test_bad_files_and_requests_raise_clear_errors(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        rk.train.load_checkpoint(tmp_path / "missing.pt", model=model)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match="not a retrieval_kit checkpoint"):
        rk.train.load_checkpoint(tmp_path / "tensor.pt", model=model)
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="junk.pt"):
        rk.train.load_checkpoint(tmp_path / "junk.pt", model=model)
    rk.train.save_checkpoint(tmp_path / "c.pt", model=model, epoch=0)
    with pytest.raises(KeyError, match="optimizer"):
        rk.train.load_checkpoint(
            tmp_path / "c.pt", model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1)
        )
    with pytest.raises(TypeError, match=r"config\['lr'\].*numpy"):
        rk.train.save_checkpoint(
            tmp_path / "d.pt", model=model, epoch=0, config={"lr": np.float32(1)}
        )
    with pytest.raises(ValueError, match="epoch"):
        rk.train.save_checkpoint(tmp_path / "d.pt", model=model, epoch=-1)
    assert not (tmp_path / "d.pt").exists()


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    model = torch.nn.Linear(2, 2)
    rk.train.save_checkpoint(path, model=model, epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        rk.train.save_checkpoint(path, model=torch.nn.Linear(2, 2), epoch=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left
    monkeypatch.undo()
    assert rk.train.load_checkpoint(path, model=model)["epoch"] == 1


@pytest.mark.slow
def test_process_killed_mid_write_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "last.pt"
    script = textwrap.dedent(
        f"""
        import sys, time, torch
        import retrieval_kit as rk
        import retrieval_kit.train.checkpoint as cm
        model = torch.nn.Linear(2, 2)
        rk.train.save_checkpoint({str(path)!r}, model=model, epoch=1)
        def slow_save(obj, f):
            f.write(b"x" * 1000)
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        cm.torch.save = slow_save
        rk.train.save_checkpoint({str(path)!r}, model=model, epoch=2)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # caught mid-write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    state = rk.train.load_checkpoint(path, model=torch.nn.Linear(2, 2))
    assert state["epoch"] == 1
    # The stray temporary file is hidden and never taken for a checkpoint.
    assert rk.train.latest_checkpoint(tmp_path) == path


def test_latest_checkpoint(tmp_path):
    assert rk.train.latest_checkpoint(tmp_path / "nope") is None
    assert rk.train.latest_checkpoint(tmp_path) is None
    model = torch.nn.Linear(2, 2)
    rk.train.save_checkpoint(tmp_path / "b.pt", model=model, epoch=0)
    time.sleep(0.01)
    rk.train.save_checkpoint(tmp_path / "a.pt", model=model, epoch=1)
    (tmp_path / ".a.pt.123.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("x")
    assert rk.train.latest_checkpoint(tmp_path).name == "a.pt"


def test_checkpoint_is_plain_pickle_free_of_custom_classes(tmp_path):
    model, opt, sched, scaler, sampler = trained_objects(0)
    rk.train.save_checkpoint(
        tmp_path / "c.pt", model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=0
    )
    # weights_only succeeds without any allow-listed globals.
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    with pytest.raises(pickle.UnpicklingError):
        torch.save({"x": np.zeros(2)}, tmp_path / "np.pt")
        torch.load(tmp_path / "np.pt", weights_only=True)


def test_loss_state_round_trip(tmp_path):
    head = rk.losses.SubCenterArcFaceLoss(6, 4, partial_fc=0.5, seed=3)
    head.sample_classes(torch.tensor([0]))  # advance the generator
    rk.train.save_checkpoint(tmp_path / "c.pt", model=torch.nn.Linear(2, 2), loss=head, epoch=1)
    other = rk.losses.SubCenterArcFaceLoss(6, 4, partial_fc=0.5, seed=4)
    rk.train.load_checkpoint(tmp_path / "c.pt", loss=other, restore_rng=False)
    assert torch.equal(other.W, head.W) and torch.equal(other.margins, head.margins)
    assert torch.equal(
        other.sample_classes(torch.tensor([1])), head.sample_classes(torch.tensor([1]))
    )
    # A checkpoint without a loss state cannot restore one.
    rk.train.save_checkpoint(tmp_path / "d.pt", model=torch.nn.Linear(2, 2), epoch=1)
    with pytest.raises(KeyError, match="no loss state"):
        rk.train.load_checkpoint(tmp_path / "d.pt", loss=other)
