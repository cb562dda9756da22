"""Issue 6, faults: the landmark example's train stage killed by SIGKILL mid-epoch resumes exactly.

A real subprocess runs the train stage of the example (deterministic mode, a checkpoint after
every optimizer step) and SIGKILLs itself between an optimizer step and its checkpoint, so one
step of work is lost. Then:

- the stage is not mistaken for done (no completion marker; a downstream stage refuses to run),
- the checkpoint left holds the previous step (same epoch, step, sampler position),
- rerunning the stage resumes from it and ends with weights bit-identical to an uninterrupted run
  (so every later metric is identical too).

The stages before train and the uninterrupted run execute in this process; only the killed run is
a subprocess (a start costs seconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "landmark"))

from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline.runner import run_stages  # noqa: E402
from landmark_pipeline.state import StageMarker  # noqa: E402

WORKER = Path(__file__).with_name("pipeline_worker.py")

pytestmark = pytest.mark.slow


def config_dict(data_root: Path) -> dict:
    # 8 training classes, P=2: 4 batches an epoch; a checkpoint after each optimizer step.
    return {
        "seed": 0,
        "device": "cpu",
        "threads": 1,
        "data": {
            "format": "synthetic",
            "root": str(data_root),
            "synthetic": {
                "num_landmarks": 10,
                "train_images_per_landmark": 5,
                "index_images_per_landmark": 1,
                "num_index_non_landmark": 4,
                "num_test_landmark_queries": 8,
                "num_test_non_landmark": 12,
                "family_size": 2,
                "image_size": 64,
                "seed": 0,
            },
        },
        "clean": {"min_images_per_class": 3},
        "split": {
            "num_val_classes": 2,
            "val_queries_per_class": 1,
            "distractor_source": "other_usage",
            "scored_usage": ["Private"],
        },
        "model": {
            "backbone": "resnet18",
            "pretrained": False,
            "embedding_dim": 16,
            "image_size": 32,
            "resize_size": 36,
        },
        "train": {
            "epochs": 2,
            "classes_per_batch": 2,
            "samples_per_class": 3,
            "accumulate": 1,
            "sampler": "pk",
            "checkpoint_every_steps": 1,
            "deterministic": True,
            "num_workers": 0,
        },
    }


@pytest.fixture
def restore_torch_globals():
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "train" / "model.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """(config, base, killed): stages before train done in ``base``; ``killed`` is a copy whose
    train stage was SIGKILLed in epoch 1 after optimizer step 2, before saving it."""
    tmp = tmp_path_factory.mktemp("faults")
    data = config_dict(tmp / "data")
    config = cfgmod.config_from_dict(data)
    base = tmp / "base"
    threads = torch.get_num_threads()
    try:
        run_stages(config, base, ["prepare", "clean", "split"], progress=False)
    finally:
        torch.set_num_threads(threads)
    killed = tmp / "killed"
    shutil.copytree(base, killed)
    cfg_file = tmp / "config.json"
    cfg_file.write_text(json.dumps(data))
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(cfg_file), str(killed), "train", "--kill-at", "1", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9 and "killing" in proc.stdout, proc.stderr[-3000:]
    return config, base, killed


def test_killed_stage_is_incomplete_and_checkpoint_holds_the_last_saved_step(
    killed_run, restore_torch_globals
):
    config, _, killed = killed_run
    # Not mistaken for done, and what depends on it will not run on a half-trained model.
    assert StageMarker(killed, "train").read() is None
    assert not (killed / "train" / "model.pt").exists()
    with pytest.raises(RuntimeError, match="train"):
        run_stages(config, killed, ["embed"], progress=False)
    # The checkpoint is whole (weights_only load) and holds the last saved step, not the lost one.
    last = torch.load(killed / "train" / "checkpoints" / "last.pt", weights_only=True)
    assert (last["epoch"], last["step"]) == (1, 1)
    assert last["sampler"]["epoch"] == 1 and last["sampler"]["batches_yielded"] == 1
    assert {"python", "numpy", "torch"} <= set(last["rng"])


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    killed_run, tmp_path, restore_torch_globals
):
    config, base, killed = killed_run
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    shutil.copytree(killed, resumed)
    shutil.copytree(base, whole)
    report = run_stages(config, resumed, ["train"], progress=False)
    assert report["train"]["status"] == "ran"
    history = json.loads((resumed / "train" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    run_stages(config, whole, ["train"], progress=False)
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs from the uninterrupted one in {different[:5]}"
