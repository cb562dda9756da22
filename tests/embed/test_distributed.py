"""Sharded extraction: each rank embeds a contiguous share; merge_shards restores input order."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval_kit.embed import extract_embeddings, merge_shards, meta_path, shard_path, shard_range


def test_shard_range_tiles_rows():
    for n in (0, 1, 2, 7, 10):
        for world in (1, 2, 3, 4):
            ranges = [shard_range(n, r, world) for r in range(world)]
            covered = [i for a, b in ranges for i in range(a, b)]
            assert covered == list(range(n))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_in_one_process_merge_to_single_run(model, image_paths, tmp_path, world):
    paths = list(image_paths)
    paths[4] = str(tmp_path / "missing.jpg")
    single, single_failed = extract_embeddings(model, paths, on_error="skip", batch_size=2)
    out = tmp_path / "emb.npy"
    parts = {}
    # ranks run in reverse to show the merge does not depend on finishing order
    for rank in reversed(range(world)):
        part, part_failed = extract_embeddings(
            model, paths, on_error="skip", batch_size=2, out=out, rank=rank, world_size=world
        )
        start, stop = shard_range(len(paths), rank, world)
        # other batch boundaries than the single run: equal up to float rounding
        np.testing.assert_allclose(part, single[start:stop], atol=1e-6)
        parts[rank] = np.array(part)
        assert part_failed == [f for f in single_failed if start <= f[0] < stop]
        assert shard_path(out, rank, world).exists()
    assert not out.exists()
    merged, failed = merge_shards(out, remove_shards=True)
    np.testing.assert_array_equal(merged, np.concatenate([parts[r] for r in range(world)]))
    np.testing.assert_allclose(merged, single, atol=1e-6)
    assert failed == single_failed == [(4, paths[4], "no such file")]
    assert sorted(p.name for p in tmp_path.glob("emb*")) == ["emb.npy", "emb.npy.json"]
    assert json.loads(meta_path(out).read_text())["num_rows_total"] == len(paths)


def test_in_memory_share(model, image_paths):
    full, _ = extract_embeddings(model, image_paths)
    part, _ = extract_embeddings(model, image_paths, rank=1, world_size=2)
    np.testing.assert_allclose(part, full[4:9], atol=1e-6)


def test_merge_refuses_incomplete_or_inconsistent(model, image_paths, tmp_path):
    out = tmp_path / "emb.npy"
    extract_embeddings(model, image_paths, out=out, rank=0, world_size=2)
    with pytest.raises(FileNotFoundError, match="shard 1 of 2"):
        merge_shards(out, world_size=2)
    # a shard whose sidecar (written last) is missing counts as unfinished
    extract_embeddings(model, image_paths, out=out, rank=1, world_size=2)
    meta_path(shard_path(out, 1, 2)).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        merge_shards(out, world_size=2)
    # shards of a different input size
    extract_embeddings(model, image_paths[:5], out=out, rank=1, world_size=2, overwrite=True)
    with pytest.raises(ValueError, match="num_rows_total=5"):
        merge_shards(out, world_size=2)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="no finished shards"):
        merge_shards(tmp_path / "other.npy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {tests!r})
from conftest import TinyNet
from retrieval_kit.embed import extract_embeddings
torch.set_num_threads(1)
dist.init_process_group("gloo")
paths = {paths!r}
emb, failed = extract_embeddings(TinyNet(), paths, out={out!r}, on_error="skip", batch_size=2)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_gloo_extraction(model, image_paths, tmp_path):
    paths = list(image_paths)
    paths[6] = str(tmp_path / "missing.jpg")
    out = tmp_path / "dist.npy"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), paths=paths, out=str(out)))
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            RANK=str(rank),
            WORLD_SIZE="2",
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    for p in procs:
        output, _ = p.communicate(timeout=120)
        assert p.returncode == 0, output.decode()
    merged, failed = merge_shards(out, world_size=2)
    single, single_failed = extract_embeddings(model, paths, on_error="skip")
    np.testing.assert_allclose(merged, single, atol=1e-6)
    assert failed == single_failed == [(6, paths[6], "no such file")]
