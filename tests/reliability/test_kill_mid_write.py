"""Issue 6, faults: a process SIGKILLed while writing a file leaves the previous file intact.

A real subprocess (``kill_writer.py``) overwrites a large file in a loop through the library's own
save function; the test kills it (SIGKILL, no clean-up possible) while the temporary file is
being written, then checks that the destination is a complete, loadable earlier version and
that the unfinished temporary file was left beside it, hidden, rather than in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import retrieval_kit as rk

WORKER = Path(__file__).with_name("kill_writer.py")
sys.path.insert(0, str(WORKER.parent))
import kill_writer as kw  # noqa: E402


def _start(kind: str, folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), kind, str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_mid_write(proc: subprocess.Popen, folder: Path) -> None:
    """Wait for the writer's first version, then SIGKILL it once a temporary file is growing."""
    try:
        line = proc.stdout.readline().strip()
        assert line == "ready", proc.stderr.read()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tmps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
            with contextlib.suppress(FileNotFoundError):
                if any(p.stat().st_size > 0 for p in tmps):
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.001)
        else:
            raise AssertionError(f"{folder}: no temporary file seen being written")
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def killed_writers(tmp_path_factory):
    """All kinds at once (a subprocess start costs seconds on a busy machine): {kind: folder}.

    A kill can (rarely) land between finishing one version and starting the next, leaving no
    unfinished temporary file; such a kind is retried so each kill happens during a write.
    """
    root = tmp_path_factory.mktemp("kill")
    pending = {kind: 0 for kind in kw.FILES}
    done: dict[str, Path] = {}
    while pending:
        procs = {kind: _start(kind, root / f"{kind}{n}") for kind, n in pending.items()}
        for kind, proc in procs.items():
            folder = root / f"{kind}{pending[kind]}"
            _kill_mid_write(proc, folder)
            if any(p.name.endswith(".tmp") for p in folder.iterdir()) or pending[kind] == 4:
                done[kind] = folder
        pending = {kind: n + 1 for kind, n in pending.items() if kind not in done}
    return done


def _check(kind: str, target: Path) -> int:
    """Load the destination the way a user would and return which version it holds."""
    if kind == "atomic_write":
        data = target.read_bytes()
        version = int.from_bytes(data[:8], "little")
        assert len(data) == 8 + kw.BYTES
        assert data[8:] == bytes([version % 251]) * kw.BYTES
    elif kind == "json":
        obj = json.loads(target.read_text(encoding="utf-8"))
        version = obj["version"]
        assert obj["rows"] == [version] * kw.JSON_ROWS
    elif kind == "index":
        index = rk.index.load_index(target)  # also verifies the stored checksum
        assert len(index) == kw.INDEX_ROWS
        row0 = index.reconstruct_rows(np.array([0]))[0]
        version = next(v for v in (0, 1) if np.array_equal(row0, kw.index_vectors(v)[0]))
    elif kind == "checkpoint":
        model = torch.nn.Linear(kw.LINEAR, kw.LINEAR, bias=False)
        state = rk.train.load_checkpoint(target, model=model, restore_rng=False)
        version = state["epoch"]
        assert torch.equal(model.weight, torch.full_like(model.weight, float(version)))
    elif kind == "embeddings":
        emb = np.load(target, mmap_mode="r")
        version = int(emb[0, 0])
        assert emb.shape == (kw.EMB_ROWS, int(np.prod(kw.EMB_SHAPE)))
        assert (np.asarray(emb) == version).all()
        meta = json.loads(rk.embed.meta_path(target).read_text())
        assert meta["dim"] == emb.shape[1] and meta["stop"] == kw.EMB_ROWS
    return version


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(kw.FILES))
def test_sigkill_mid_write_leaves_previous_file_intact(killed_writers, kind):
    folder = killed_writers[kind]
    target = folder / kw.FILES[kind]
    stray = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert stray, "never caught the writer mid-write"
    _check(kind, target)
    # The unfinished file is hidden (dot-prefixed) and never took the destination's name.
    assert all(p.name.startswith(".") for p in stray)
    visible = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
    assert visible == {target.name} | ({target.name + ".json"} if kind == "embeddings" else set())


def test_checker_detects_a_torn_file(tmp_path):
    """The checks above would fail on a file written in place and cut short by the kill."""
    folder = tmp_path / "torn"
    folder.mkdir()
    blob = folder / kw.FILES["atomic_write"]
    blob.write_bytes((3).to_bytes(8, "little") + bytes([3]) * 1000)
    with pytest.raises(AssertionError):
        _check("atomic_write", blob)
    marker = folder / kw.FILES["json"]
    marker.write_text('{"version": 3, "rows": [3, 3')
    with pytest.raises(json.JSONDecodeError):
        _check("json", marker)


def test_embeddings_and_their_sidecar_never_disagree(tmp_path, monkeypatch):
    import retrieval_kit.embed.extractor as extract_module

    model, Constant = kw._embedding_objects()
    out = tmp_path / "emb.npy"
    rk.embed.extract_embeddings(model, Constant(1), out=out)

    def killed(*args, **kwargs):  # the process dies after the rename, before the sidecar
        raise KeyboardInterrupt

    monkeypatch.setattr(extract_module, "write_meta", killed)
    with pytest.raises(KeyboardInterrupt):
        rk.embed.extract_embeddings(model, Constant(2), out=out, overwrite=True)
    sidecar = rk.embed.meta_path(out)
    if (np.load(out) == 2).all():
        # New data: its sidecar must not be the old run's (absent = "incomplete" is fine).
        assert not sidecar.exists(), "new embeddings carry the previous run's sidecar"
