"""The landmark example's ``train.non_landmarks``: pools, batches, ArcFace, resume, errors."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "landmark"
sys.path.insert(0, str(EXAMPLE))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pipeline = _load(
    "landmark_pipeline_tests_nl", Path(__file__).with_name("test_landmark_pipeline.py")
)

from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline import non_landmarks  # noqa: E402
from landmark_pipeline.context import Context  # noqa: E402
from landmark_pipeline.table import read_table  # noqa: E402

import retrieval_kit as rk  # noqa: E402

NL = {"non_landmarks": "index", "non_landmarks_per_batch": 2}


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("split_nl")
    pipeline._run(pipeline.tiny_config(), out, ["prepare", "clean", "split"])
    return out


def _config(split_run: Path, **train) -> cfgmod.Config:
    config = pipeline.tiny_config(train=train)
    config.data.root = str(split_run / "data")
    return config


def _train(split_run: Path, out: Path, **train) -> dict:
    pipeline._copy_stages(split_run, out, ("prepare", "clean", "split"))
    return pipeline._run(_config(split_run, **train), out, ["train"])


def test_index_pool_is_index_csv_only_never_a_test_image(split_run):
    ctx = Context(_config(split_run, **NL), split_run, torch.device("cpu"), progress=False)
    rows = read_table(split_run / "split" / "images.csv")
    index = {r.path for r in rows if r.source == "index"}
    pool = non_landmarks.pool_paths(ctx)
    # The tiny config's distractors are test images (other_usage): the pool must not follow them.
    assert set(pool) == index and len(pool) == 10
    assert not set(pool) & {r.path for r in rows if r.source == "test"}


def test_folder_and_rejects_pools(split_run, tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "sub/a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    ctx = Context(
        _config(split_run, non_landmarks=str(tmp_path)), split_run, torch.device("cpu"), False
    )
    assert non_landmarks.pool_paths(ctx) == [str(tmp_path / "b.jpg"), str(tmp_path / "sub/a.PNG")]
    # The tiny data keeps every training image: an empty pool is an error naming the key.
    ctx.config.train.non_landmarks = "rejects"
    with pytest.raises(ValueError, match="train.non_landmarks 'rejects': no images"):
        non_landmarks.pool_paths(ctx)
    # One removed image: the pool is its path from the prepare table.
    removed = split_run / "clean" / "removed.csv"
    saved = removed.read_bytes()
    first = read_table(split_run / "prepare" / "images.csv")[0]
    try:
        removed.write_text(f"id,label,reason\n{first.id},{first.label},test\n")
        assert non_landmarks.pool_paths(ctx) == [first.path]
    finally:
        removed.write_bytes(saved)


@pytest.mark.slow
def test_hard_index_negatives_train_and_are_in_every_batch(split_run, tmp_path, monkeypatch):
    seen = []
    real = rk.train.train_one_epoch

    def spy(model, loader, *args, **kwargs):
        seen.extend(b[1].tolist() for b in loader)
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(rk.train, "train_one_epoch", spy)
    report = _train(split_run, tmp_path, **NL, non_landmark_mining="hard")
    assert report["train"]["status"] == "ran"
    assert report["train"]["info"]["non_landmarks"] == 10
    (epoch,) = json.loads((tmp_path / "train" / "history.json").read_text())
    assert np.isfinite(epoch["loss"])
    # P x K = 6 landmark rows (labels 0..C-1), then 2 non-landmark rows (distinct, negative).
    assert seen and all(len(b) == 8 for b in seen)
    assert all(min(b[:6]) >= 0 and max(b[6:]) < 0 for b in seen)
    ck = torch.load(tmp_path / "train" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["sampler"]["non_landmark_hard"] is True
    assert ck["sampler"]["non_landmarks_per_batch"] == 2


@pytest.mark.slow
def test_arcface_with_non_landmarks_resumes_exactly(split_run, tmp_path, monkeypatch):
    train = {
        **NL,
        "loss": "subcenter_arcface",
        "loss_kwargs": {"scale": 16.0, "non_landmark_margin": 0.2},
        "loss_lr_mult": 10.0,
        "epochs": 2,
        "sampler": "pk",
        "max_batches_per_epoch": 2,
        "deterministic": True,
    }
    _train(split_run, tmp_path / "whole", **train)
    whole = torch.load(tmp_path / "whole" / "train" / "checkpoints" / "last.pt", weights_only=True)
    assert whole["sampler"]["non_landmark_pool"] == 10

    real = pipeline.crash_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _train(split_run, tmp_path / "resumed", **train)
    monkeypatch.setattr(rk.train, "train_one_epoch", real)
    pipeline._run(_config(split_run, **train), tmp_path / "resumed", ["train"])
    resumed = torch.load(
        tmp_path / "resumed" / "train" / "checkpoints" / "last.pt", weights_only=True
    )
    torch.testing.assert_close(resumed["loss"]["W"], whole["loss"]["W"], rtol=0, atol=0)
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0)


def test_config_errors_name_the_key(tmp_path):
    def make(**train):
        return cfgmod.config_from_dict({"train": train})

    assert make().train.non_landmarks == "none"  # off by default
    with pytest.raises(cfgmod.ConfigError, match="train.loss_kwargs.non_landmark_margin"):
        make(non_landmarks="index", loss="subcenter_arcface")
    with pytest.raises(cfgmod.ConfigError, match="needs a triplet loss or the ArcFace family"):
        make(non_landmarks="index", loss="MultiSimilarityLoss")
    with pytest.raises(cfgmod.ConfigError, match="train.non_landmarks_per_batch: must be >= 1"):
        make(non_landmarks_per_batch=0)
    with pytest.raises(cfgmod.ConfigError, match="train.non_landmark_mining: expected one of"):
        make(non_landmark_mining="hardest")
    missing = make(non_landmarks=str(tmp_path / "nowhere"))
    missing.data.format = "synthetic"
    with pytest.raises(cfgmod.ConfigError, match="train.non_landmarks: folder not found"):
        cfgmod.check_inputs(missing)
    # A relative folder in a config file is relative to the file, like data.root.
    (tmp_path / "pool").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: synthetic}\ntrain: {non_landmarks: pool}\n")
    assert cfgmod.load_config(path).train.non_landmarks == str((tmp_path / "pool").resolve())
    assert cfgmod.load_config(path, {"train.non_landmarks": "index"}).train.non_landmarks == "index"
