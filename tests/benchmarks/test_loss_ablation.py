"""benchmarks/loss_ablation.py: its runs at a tiny size, and its table's arithmetic."""

from __future__ import annotations

import json
import statistics

import pytest

# The tiny pipeline of tests/examples/test_landmark_pipeline.py, as overrides of every run.
TINY = [
    "data.synthetic={num_landmarks: 6, train_images_per_landmark: 5, index_images_per_landmark: 1,"
    " num_index_non_landmark: 4, num_test_landmark_queries: 8, num_test_non_landmark: 12,"
    " family_size: 2, image_size: 80, seed: 0}",
    "clean.min_images_per_class=3",
    "split.num_val_classes=2",
    "split.val_queries_per_class=1",
    "model.backbone=resnet18",
    "model.pretrained=false",
    "model.embedding_dim=32",
    "model.image_size=48",
    "model.resize_size=56",
    "train.epochs=1",
    "train.classes_per_batch=2",
    "train.samples_per_class=3",
    "train.num_clusters=2",
    "train.cluster_backbone=resnet18",
    "train.cluster_pretrained=false",
    "train.max_batches_per_epoch=2",
    "embed.batch_size=16",
    "visualize.rows=2",
    "visualize.neighbours=2",
    "visualize.thumb_size=48",
    "threads=1",
]


def _metrics(gap: float, train_s: float) -> dict:
    return {
        "gap": gap,
        "baseline_gap": 0.1,
        "gap_without_rerank": gap / 2,
        "baseline_gap_without_rerank": 0.05,
        "map_at_100": gap + 0.1,
        "baseline_map_at_100": 0.2,
        "top1_accuracy": 0.5,
        "baseline_top1_accuracy": 0.4,
        "scored_queries": 12,
        "scored_landmark_queries": 4,
        "stage_seconds": {"train": train_s},
    }


def test_table_rows_are_the_mean_and_spread_over_seeds(load_benchmark):
    la = load_benchmark("loss_ablation")
    variants = [la.VARIANTS["triplet"], la.VARIANTS["subcenter_arcface"]]
    records = [
        {"variant": "triplet", "seed": s, "metrics": _metrics(g, t)}
        for s, g, t in ((0, 0.2, 10.0), (1, 0.4, 30.0))
    ] + [{"variant": "subcenter_arcface", "seed": 0, "metrics": _metrics(0.6, 5.0)}]
    text = la.table(records, variants)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()}
    sd = statistics.stdev([0.2, 0.4])
    assert rows["triplet (the demo's default)"].startswith(
        f"| triplet (the demo's default) | 2 | 0.300 ± {sd:.3f} | 0.150 ± {sd / 2:.3f} "
    )
    assert rows["triplet (the demo's default)"].endswith(" | 20 ± 14 |")
    assert rows["sub-center ArcFace, dynamic margins"].startswith(
        "| sub-center ArcFace, dynamic margins | 1 | 0.600 | 0.300 | 0.700 | 0.500 | 5 |"
    )
    assert rows["none (pretrained, no head)"].startswith(
        "| none (pretrained, no head) | — | 0.100 ±"
    )
    assert "`--config configs/demo_arcface.yaml`" in text


@pytest.mark.slow
def test_runs_write_the_section_and_reuse_the_shared_stages(load_benchmark, tmp_path):
    la = load_benchmark("loss_ablation")
    doc = tmp_path / "landmark.md"
    doc.write_text("# Landmark\n\nprose\n", encoding="utf-8")
    argv = ["--seeds", "0", "--variants", "triplet", "arcface_triplet", "--out", str(doc)]
    argv += ["--workdir", str(tmp_path / "work")]
    for value in TINY:
        argv += ["--set", value]
    records = la.main(argv)
    assert [(r["variant"], r["seed"]) for r in records] == [("triplet", 0), ("arcface_triplet", 0)]
    # run_one raised if a run had redone a shared stage; the combined loss really trained.
    config = (tmp_path / "work" / "arcface_triplet_seed0" / "config.yaml").read_text()
    assert "loss: combined" in config
    history = json.loads(
        (tmp_path / "work" / "arcface_triplet_seed0" / "train" / "history.json").read_text()
    )
    assert "arcface/accuracy" in history[0] and "loss/triplet" in history[0]
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Landmark\n\nprose\n\n<!-- loss_ablation.demo:begin -->\n")
    assert "| sub-center ArcFace + triplet | 1 |" in text and "--set train.epochs=1" in text
    # A second invocation reuses the finished runs (their records) instead of training again.
    (tmp_path / "work" / "triplet_seed0" / "metrics.json").unlink()
    assert la.main(argv) == records


def test_a_second_invocation_on_the_same_work_folder_is_refused(load_benchmark, tmp_path, capsys):
    la = load_benchmark("loss_ablation")
    (tmp_path / "loss_ablation.lock").touch()
    with pytest.raises(SystemExit):
        la.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "doc.md")])
    assert "another loss_ablation.py uses" in capsys.readouterr().err
    assert not (tmp_path / "shared").exists() and not (tmp_path / "doc.md").exists()
