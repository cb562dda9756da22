"""The landmark example's evaluation: the ablation, learned confidence, whitening, verify."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import retrieval_kit as rk

# The tiny config and runner helper of the pipeline tests (it also puts the example on sys.path).
_spec = importlib.util.spec_from_file_location(
    "_landmark_pipeline_tests", Path(__file__).with_name("test_landmark_pipeline.py")
)
_pipeline_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pipeline_tests)
_run, tiny_config = _pipeline_tests._run, _pipeline_tests.tiny_config

from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline.table import read_table  # noqa: E402

pytestmark = pytest.mark.slow

DEFAULT_STEPS = ["nearest neighbour", "label aggregation (nn)", "distractor penalty"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run")
    config = tiny_config()
    _run(config, out)
    return config, out


def _variant(base_run, tmp_path, **changes):
    """A copy of the finished run with some config fields changed (``section.key=value``)."""
    config, out = base_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    data = cfgmod.config_to_dict(config)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return cfgmod.config_from_dict(data), copy


def _metrics(out):
    return json.loads((out / "metrics.json").read_text())


def _gap_by_hand(preds, truth):
    preds = sorted(preds.items(), key=lambda kv: (-kv[1][1], kv[0]))
    hits = total = 0.0
    for n, (q, (lab, _)) in enumerate(preds, 1):
        if lab in truth[q]:
            hits += 1
            total += hits / n
    return total / sum(1 for v in truth.values() if v)


def test_ablation_lists_steps_in_order_and_ends_at_gap(base_run):
    _, out = base_run
    metrics = _metrics(out)
    ablation = metrics["ablation"]
    assert [a["step"] for a in ablation] == DEFAULT_STEPS
    assert set(ablation[0]) == {"step", "gap", "map_at_100", "top1_accuracy"}
    assert ablation[-1]["gap"] == pytest.approx(metrics["gap"])
    assert ablation[1]["gap"] == pytest.approx(metrics["gap_without_rerank"])
    assert ablation[-1]["top1_accuracy"] == pytest.approx(metrics["top1_accuracy"])
    # The nearest-neighbour step recomputed by hand from the saved neighbours.
    rows = read_table(out / "split" / "images.csv")
    truth = {r.id: r.labels for r in rows if r.role == "test_query"}
    label = {r.id: int(r.label) for r in rows if r.role in ("train", "val_query", "val_db")}
    data = np.load(out / "predict" / "trained" / "test_neighbours.npz")
    preds = {
        q: (label[ids[0]], float(scores[0]))
        for q, ids, scores in zip(data["query_ids"], data["ids"], data["scores"])
        if q in truth
    }
    assert ablation[0]["gap"] == pytest.approx(_gap_by_hand(preds, truth), abs=1e-5)


def test_learned_confidence_is_fitted_saved_and_reported(base_run, tmp_path):
    config, out = _variant(base_run, tmp_path, predict__confidence="learned")
    report = _run(config, out, ["predict", "evaluate"])
    assert report["predict"]["status"] == "ran"
    # The tiny run's validation split has 2 queries: a model may get them all wrong, and then
    # nothing can be learned (the fallback has its own test below). The untrained baseline
    # gets right and wrong ones on this data.
    cm = rk.predict.ConfidenceModel.load(out / "predict" / "baseline" / "confidence.json")
    assert "distractor_penalty" in cm.feature_names
    steps = json.loads((out / "predict" / "baseline" / "test_steps.json").read_text())
    assert [s["step"] for s in steps["steps"]] == DEFAULT_STEPS + ["learned confidence"]
    with open(out / "predict" / "baseline" / "test.csv", newline="") as f:
        reported = {p["id"]: float(p["score_reranked"]) for p in csv.DictReader(f)}
    learned = dict(zip(steps["ids"], steps["steps"][-1]["scores"]))
    formula = dict(zip(steps["ids"], steps["steps"][-2]["scores"]))
    assert reported == pytest.approx(learned, abs=2e-6)  # the submission gets the learned one
    assert learned != pytest.approx(formula, abs=1e-3)
    assert all(0.0 <= s <= 1.0 for s in learned.values())  # probabilities, not cosines
    metrics = _metrics(out)
    trained_fitted = (out / "predict" / "trained" / "confidence.json").is_file()
    expected = DEFAULT_STEPS + (["learned confidence"] if trained_fitted else [])
    assert [a["step"] for a in metrics["ablation"]] == expected
    assert metrics["ablation"][-1]["gap"] == pytest.approx(metrics["gap"])


def test_learned_confidence_falls_back_when_validation_is_all_wrong(
    base_run, tmp_path, monkeypatch, caplog
):
    from landmark_pipeline import eval_stages

    features = eval_stages._Predictor.features

    def no_label(self, out):  # every validation prediction wrong: nothing to learn from
        feats = features(self, out)
        return feats._replace(labels=[None] * len(feats.labels))

    config, out = _variant(base_run, tmp_path, predict__confidence="learned")
    monkeypatch.setattr(eval_stages._Predictor, "features", no_label)
    with caplog.at_level("WARNING"):
        _run(config, out, ["predict"])
    assert "learned confidence not fitted: 0 of" in caplog.text
    for name in ("trained", "baseline"):
        assert not (out / "predict" / name / "confidence.json").exists()
        steps = json.loads((out / "predict" / name / "test_steps.json").read_text())
        assert [s["step"] for s in steps["steps"]] == DEFAULT_STEPS


def test_whitening_is_fitted_on_train_and_applied(base_run, tmp_path):
    config, out = _variant(base_run, tmp_path, embed__whitening="pca", embed__whitening_dim=16)
    report = _run(config, out, ["train", "embed", "index", "predict", "evaluate"])
    assert report["train"]["status"] == "skipped" and report["embed"]["status"] == "ran"
    rows = [r for r in read_table(out / "split" / "images.csv") if r.role != "unused"]
    train = [i for i, r in enumerate(rows) if r.role == "train"]
    for name in ("trained", "baseline"):
        w = rk.embed.Whitening.load(out / "embed" / name / "whitening.npz")
        # Fitted on the train split's (unwhitened) embeddings only: the base run's.
        raw = np.load(base_run[1] / "embed" / name / "embeddings.npy")
        assert np.allclose(w.mean_, raw[train].mean(axis=0), atol=1e-5)
        x = np.load(out / "embed" / name / "embeddings.npy")
        assert x.shape[1] == 16 == w.projection_.shape[0]
        assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    metrics = _metrics(out)
    assert metrics["ablation"][-1]["gap"] == pytest.approx(metrics["gap"])


def test_verify_without_opencv_names_the_extra(base_run, tmp_path, monkeypatch):
    config, out = _variant(base_run, tmp_path, predict__verify=True)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(ImportError, match=r"predict\.verify.*retrieval_kit\[verify\]"):
        _run(config, out, ["predict"])


def test_verify_adds_its_step(base_run, tmp_path):
    pytest.importorskip("cv2")
    config, out = _variant(
        base_run, tmp_path, predict__verify=True, predict__verify_k=3, predict__min_inliers=4
    )
    _run(config, out, ["predict", "evaluate"])
    metrics = _metrics(out)
    assert [a["step"] for a in metrics["ablation"]] == DEFAULT_STEPS + ["spatial verification"]
    assert metrics["ablation"][-1]["gap"] == pytest.approx(metrics["gap"])
    assert (out / "predict" / "trained" / "test_verified_neighbours.npz").is_file()


def test_learned_confidence_refuses_sum():
    with pytest.raises(cfgmod.ConfigError, match="predict.confidence"):
        cfgmod.config_from_dict({"predict": {"confidence": "learned", "method": "sum"}})


def _load_report():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "landmark_report.py"
    spec = importlib.util.spec_from_file_location("_landmark_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_writes_the_ablation_table_between_its_markers(tmp_path):
    report = _load_report()
    steps = DEFAULT_STEPS + ["learned confidence"]
    runs = [
        {
            "seed": seed,
            "learned": {
                "ablation": [
                    {
                        "step": s,
                        "gap": 0.1 * i + seed / 100,
                        "map_at_100": 0.5,
                        "top1_accuracy": 0.7,
                    }
                    for i, s in enumerate(steps)
                ]
            },
        }
        for seed in (0, 1)
    ]
    table = report.ablation_table(runs)
    assert "| 1 | learned confidence | 0.310 | 0.500 | 0.700 |" in table
    assert (
        "- learned confidence vs distractor penalty: GAP +0.100 ± 0.000 (min +0.100, max +0.100)"
        in table
    )
    doc = tmp_path / "landmark.md"
    text = "# T\n\nbefore\n<!-- landmark_report.ablation:begin -->\nold\n"
    doc.write_text(text + "<!-- landmark_report.ablation:end -->\nafter\n")
    report._write(doc, "ablation", table)
    new = doc.read_text()
    assert new.startswith("# T\n\nbefore\n<!-- landmark_report.ablation:begin -->\n<!-- generated")
    assert new.endswith(table + "\n<!-- landmark_report.ablation:end -->\nafter\n")
    assert "old" not in new
