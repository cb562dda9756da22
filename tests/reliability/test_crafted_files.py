"""Issue 6, security: a crafted file given to any of the library's loaders cannot run code.

Every loader of a saved state (training checkpoints, backbone weights, the Places365 cleaning
model, indexes, embedding files and their shard sidecars) gets a file whose pickle payload would
create a marker file when unpickled. Each must refuse it with an error naming the file, and the
marker must not appear. A control shows the payload is real: an unsafe ``pickle.load`` runs it.
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

import retrieval_kit as rk


class Payload:
    """Unpickling this creates (opens for writing) the marker file: stands in for any code."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a loader executed the crafted payload"


def test_payload_runs_under_an_unsafe_loader(tmp_path):
    path = tmp_path / "control"
    pickle.loads(pickle.dumps(Payload(path)))
    assert path.exists()


def _torch_file(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_checkpoint(tmp_path, marker):
    from retrieval_kit.train.checkpoint import CHECKPOINT_FORMAT

    bad = _torch_file(
        tmp_path, "ckpt.pt", {"format": CHECKPOINT_FORMAT, "epoch": 0, "model": Payload(marker)}
    )
    with pytest.raises(ValueError, match="ckpt.pt"):
        rk.train.load_checkpoint(bad, model=torch.nn.Linear(2, 2))
    assert rk.train.latest_checkpoint(tmp_path) == bad  # found, but still never unpickled unsafely
    with pytest.raises(ValueError, match="ckpt.pt"):
        rk.train.load_checkpoint(rk.train.latest_checkpoint(tmp_path))


def test_backbone_weights(tmp_path, marker):
    bad = _torch_file(tmp_path, "w.pth", {"fc.weight": torch.zeros(1), "x": Payload(marker)})
    with pytest.raises(ValueError, match="w.pth"):
        rk.backbones.load_state_dict_file(bad)
    with pytest.raises(ValueError, match="w.pth"):
        rk.backbones.create_backbone("resnet18", pretrained=bad, embedding_dim=8)


def test_places365_model(tmp_path, marker):
    from retrieval_kit.data import cleaning

    bad = _torch_file(tmp_path, "places.pth.tar", {"state_dict": {}, "arch": Payload(marker)})
    with pytest.raises(ValueError, match="places.pth.tar"):
        cleaning.load_places365_model(bad, arch="resnet18")


def _npz_with_pickled(path, **arrays):
    """An .npz whose members may be object arrays (pickled inside the .npy)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=True)
            z.writestr(f"{name}.npy", buf.getvalue())


def test_index_file(tmp_path, marker):
    good = tmp_path / "good.npz"
    rk.index.build_index(np.eye(4, dtype=np.float32), gpu=False).save(good)
    with np.load(good, allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    for part in ("ids", "meta", "index"):
        bad = tmp_path / f"bad_{part}.npz"
        _npz_with_pickled(bad, **{**parts, part: np.array([Payload(marker)], dtype=object)})
        with pytest.raises(ValueError, match=f"bad_{part}.npz"):
            rk.index.load_index(bad)


def test_embedding_shards_and_sidecars(tmp_path, marker):
    out = tmp_path / "emb.npy"
    shard = rk.embed.shard_path(out, 0, 1)
    np.save(shard, np.array([[Payload(marker)]], dtype=object), allow_pickle=True)
    sidecar = {"num_rows_total": 1, "start": 0, "stop": 1, "dim": 1, "failed": []}
    rk.embed.meta_path(shard).write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match="emb.rank00000-of-00001.npy"):
        rk.embed.merge_shards(out, world_size=1)
    assert not out.exists()
    # Sidecars are JSON: a YAML/pickle-looking sidecar is just bad JSON, never code.
    rk.embed.meta_path(shard).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="not a valid shard sidecar"):
        rk.embed.merge_shards(out, world_size=1)


def _stage_marker(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "landmark"))
    from landmark_pipeline.state import StageMarker

    stage = StageMarker(tmp_path, "train")
    stage.path.parent.mkdir(parents=True)
    return stage


def test_torn_stage_marker_of_the_landmark_example_means_not_done(tmp_path, marker):
    stage = _stage_marker(tmp_path)
    stage.path.write_text('{"config_hash": "abc", "outp')  # torn (a write outside atomic_write)
    assert stage.read() is None  # ignored: the stage counts as not done and is redone
    assert stage.why_incomplete("abc") == "no completion marker"


@pytest.mark.parametrize("content", ["pickle", b"[1, 2]"], ids=["pickle", "json-list"])
def test_garbage_stage_marker_means_not_done(tmp_path, marker, content):
    stage = _stage_marker(tmp_path)
    stage.path.write_bytes(pickle.dumps(Payload(marker)) if content == "pickle" else content)
    assert stage.read() is None
    assert stage.why_incomplete("abc") == "no completion marker"
