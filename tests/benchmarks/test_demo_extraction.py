"""benchmarks/demo_extraction.py: the example's scoring checked by hand; a tiny end-to-end run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import retrieval_kit as rk
from retrieval_kit.data.synthetic import synthetic_landmarks

CONFIG = {
    "data": {"format": "synthetic", "synthetic": {"image_size": 64}},
    "model": {"backbone": "efficientnet_lite0", "embedding_dim": 8, "pooling": "gem"},
    "embed": {"image_size": 48, "whitening": "none"},
    "index": {"factory": "auto"},
    "predict": {"k": 10, "method": "nn", "rerank_k": 1, "rerank_alpha": 1.0},
    "evaluate": {"map_k": 100},
}
COLUMNS = ["id", "path", "label", "role", "usage", "source"]


def _write_run(folder: Path, rows: list[list[str]], config: dict) -> Path:
    (folder / "split").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with open(folder / "split" / "images.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return folder


def _unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_scores_match_a_hand_computed_example(load_benchmark, tmp_path):
    bench = load_benchmark("demo_extraction")
    vectors = {
        "a0": ("0", "train", "", _unit(1, 0, 0)),
        "a1": ("0", "val_db", "", _unit(0.8, 0.6, 0)),
        "b0": ("1", "train", "", _unit(0, 1, 0)),
        "b1": ("1", "val_query", "", _unit(0, 0.6, 0.8)),
        "d0": ("", "distractor", "", _unit(0, 0, 1)),
        "q1": ("0", "test_query", "Private", _unit(1, 0.1, 0)),
        "q2": ("1", "test_query", "Private", _unit(0, 0.6, 0.8)),
        "q3": ("", "test_query", "Private", _unit(0.6, 0, 0.8)),
        "q4": ("1", "test_query", "Private", _unit(0.6, 0.8, 0)),
        "o1": ("0", "test_other", "", _unit(1, 0, 0)),  # neither scored nor in the database
        "u1": ("1", "unused", "", _unit(0, 1, 0)),
    }
    rows = [
        [i, f"/x/{i}.jpg", lab, role, usage, ""] for i, (lab, role, usage, _) in vectors.items()
    ]
    scorer = bench.Scorer(bench.DemoRun(_write_run(tmp_path / "run", rows, CONFIG)))
    assert [r.id for r in scorer.embedded] == ["a0", "a1", "b0", "b1", "d0", "q1", "q2", "q3", "q4"]
    emb = np.stack([vectors[r.id][3] for r in scorer.embedded])
    got = scorer.score(emb, np.ones(len(emb), dtype=bool))
    # Nearest neighbour and cosine: q1 -> a0 (0.995, right), q2 -> b1 (1.0, right),
    # q3 -> b1 (0.64; a non-landmark), q4 -> a1 (0.96, wrong). Penalty (k=1): cosine to d0:
    # 0, 0.8, 0.8, 0. Reranked order: q1 right, q4 wrong, q2 right, q3 wrong; 3 landmark queries.
    assert got["gap"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-6)
    # Before reranking: q2 right, q1 right, q4 wrong, q3 wrong.
    assert got["gap_without_rerank"] == pytest.approx(2 / 3, abs=1e-6)
    assert got["top1"] == pytest.approx(2 / 3)
    # AP@100: q1 and q2 find both images of their landmark first; q4 (b0, b1) at ranks 2 and 4.
    assert got["map"] == pytest.approx((1 + 1 + (1 / 2 + 2 / 4) / 2) / 3, abs=1e-6)

    # A failed row (here q1's) leaves the query out, as the example's embed stage does.
    ok = np.ones(len(emb), dtype=bool)
    ok[5] = False
    assert scorer.score(emb, ok)["top1"] == pytest.approx(1 / 3)


def test_setting_parsing(load_benchmark):
    bench = load_benchmark("demo_extraction")
    assert bench.Setting.parse("long_side:112:multi") == bench.Setting("long_side", 112, True)
    assert bench.Setting.parse("squash:default") == bench.Setting("squash", None, False)
    for bad in ("long_side", "stretch:112", "squash:0", "squash:112:many", "squash:abc"):
        with pytest.raises(ValueError, match="setting"):
            bench.Setting.parse(bad)


def test_tiny_end_to_end_run(load_benchmark, tmp_path):
    """Tiny framed synthetic data, two random-weight models, the doc section and the JSON rows."""
    bench = load_benchmark("demo_extraction")
    ds = synthetic_landmarks(
        tmp_path / "data",
        num_landmarks=3,
        train_images_per_landmark=3,
        train_clutter_per_landmark=0,
        index_images_per_landmark=0,
        num_index_non_landmark=3,
        num_test_landmark_queries=4,
        num_test_non_landmark=3,
        image_size=64,
        aspect_ratios=(4 / 3, 3 / 4),
    )
    rows = []
    with open(ds.train_csv, newline="") as f:
        for r in csv.DictReader(f):
            rows.append([r["id"], str(ds.image_path("train", r["id"])), r["landmark_id"], "train"])
    with open(ds.index_csv, newline="") as f:
        for r in csv.DictReader(f):  # the index holds only non-landmarks here
            rows.append([r["id"], str(ds.image_path("index", r["id"])), "", "distractor"])
    with open(ds.solution_csv, newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                [r["id"], str(ds.image_path("test", r["id"])), r["landmarks"], "test_query"]
            )
    rows = [r + ["Private" if r[3] == "test_query" else "", ""] for r in rows]
    config = {**CONFIG, "data": {"format": "synthetic", "root": str(ds.root)}}
    run = _write_run(tmp_path / "run", rows, config)
    torch.manual_seed(0)
    (run / "train").mkdir()
    for file, dim in (("model.pt", 8), ("model_init.pt", None)):
        model = rk.backbones.create_backbone(
            "efficientnet_lite0", pretrained=False, embedding_dim=dim
        )
        rk.train.save_checkpoint(run / "train" / file, model=model, epoch=0)

    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nkept\n", encoding="utf-8")
    out = tmp_path / "rows.json"
    settings = ["squash:224", "long_side:48", "long_side:48:multi"]
    bench.main([str(run), "--settings", *settings, "--write", str(doc), "--json", str(out)])

    got = json.loads(out.read_text())
    assert [(r["model"], r["mode"], r["size"], r["multi"]) for r in got] == [
        (m, mode, size, multi)
        for m in ("trained", "baseline")
        for mode, size, multi in (
            ("squash", 224, False),
            ("long_side", 48, False),
            ("long_side", 48, True),
        )
    ]
    for r in got:
        assert 0 <= r["gap"] <= 1 and 0 <= r["map"] <= 1 and 0 <= r["top1"] <= 1
        assert r["failed"] == 0 and r["s_per_image"] > 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nkept\n")
    assert "<!-- demo_extraction:begin -->" in text and "<!-- demo_extraction:end -->" in text
    assert "python benchmarks/demo_extraction.py run --settings" in text  # no machine path
    assert str(run) not in text and str(ds.root) not in text
    # The generated verdict quotes the table's own numbers.
    old = got[0]
    new = got[1]
    assert f"GAP {new['gap']:.3f} vs {old['gap']:.3f}" in text
    assert "aspect ratios drawn from 1.33, 0.75" in text
