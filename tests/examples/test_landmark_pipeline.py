"""The landmark example end to end on tiny data: each stage, skip, force, resume, configs."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "landmark"
sys.path.insert(0, str(EXAMPLE))

from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline.runner import STAGES, run_stages  # noqa: E402
from landmark_pipeline.state import StageMarker  # noqa: E402
from landmark_pipeline.table import read_table  # noqa: E402

torch.set_num_threads(2)

pytestmark = pytest.mark.slow


def tiny_config(**sections) -> cfgmod.Config:
    data = {
        "seed": 0,
        "device": "cpu",
        "data": {
            "format": "synthetic",
            "synthetic": {
                "num_landmarks": 6,
                "train_images_per_landmark": 5,
                "index_images_per_landmark": 1,
                "num_index_non_landmark": 4,
                "num_test_landmark_queries": 8,
                "num_test_non_landmark": 12,
                "family_size": 2,
                "image_size": 80,
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
            "embedding_dim": 32,
            "image_size": 48,
            "resize_size": 56,
        },
        "train": {
            "epochs": 1,
            "classes_per_batch": 2,
            "samples_per_class": 3,
            "accumulate": 2,
            "sampler": "cluster",
            "num_clusters": 2,
            "cluster_backbone": "resnet18",
            "cluster_pretrained": False,
            "max_batches_per_epoch": 3,
        },
        "embed": {"batch_size": 16},
        "visualize": {"rows": 2, "neighbours": 2, "thumb_size": 48},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return cfgmod.config_from_dict(data)


def _run(config, out, stages=tuple(STAGES), **kw):
    if config.data.root is None:
        config.data.root = str(out / "data")
    return run_stages(config, out, list(stages), progress=False, **kw)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = tiny_config()
    report = _run(config, out)
    return config, out, report


# ------------------------------------------------------------------------------ the whole pipeline
def test_every_stage_runs_and_writes_its_outputs(demo_run):
    config, out, report = demo_run
    assert [s for s, r in report.items() if r["status"] == "ran"] == list(STAGES)
    for stage in STAGES:
        assert StageMarker(out, stage).read()["outputs"], stage
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("gap", "gap_without_rerank", "baseline_gap", "top1_accuracy", "map_at_100"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["protocol"] == "test"
    assert set(metrics["stage_seconds"]) >= {"prepare", "train", "embed", "evaluate"}
    assert sorted(p.name for p in (out / "viz").glob("*.png"))  # at least one grid
    for png in (out / "viz").glob("*.png"):
        assert Image.open(png).size[0] > 48


def test_clean_reports_skipped_outdoor_rule(demo_run):
    _, out, _ = demo_run
    report = json.loads((out / "clean" / "report.json").read_text())
    assert report["outdoor"]["skipped"] is True
    assert "no Places365 checkpoint" in report["outdoor"]["reason"]
    assert report["kept_images"] == 30


def test_split_roles_are_disjoint_and_distractors_never_scored(demo_run):
    _, out, _ = demo_run
    rows = read_table(out / "split" / "images.csv")
    assert len({r.id for r in rows}) == len(rows)  # one role per image
    roles = {r.role for r in rows}
    assert {"train", "val_query", "val_db", "distractor", "test_query"} <= roles
    queries = [r for r in rows if r.role == "test_query"]
    distractors = [r for r in rows if r.role == "distractor"]
    assert all(r.usage == "Private" for r in queries)
    assert all(r.usage == "Public" and r.label == "" for r in distractors)
    train_classes = {r.label for r in rows if r.role == "train"}
    val_classes = {r.label for r in rows if r.role.startswith("val_")}
    assert len(val_classes) == 2 and not (train_classes & val_classes)


def _copy_stages(src: Path, dst: Path, stages) -> None:
    # Reuse finished stages of another run folder (outputs + markers) to save time.
    for stage in stages:
        (dst / stage).mkdir(parents=True)
        for f in (src / stage).iterdir():
            (dst / stage / f.name).write_bytes(f.read_bytes())
        (dst / "stages").mkdir(exist_ok=True)
        (dst / "stages" / f"{stage}.done.json").write_bytes(
            (src / "stages" / f"{stage}.done.json").read_bytes()
        )


def test_split_is_reproducible(demo_run, tmp_path):
    config, out, _ = demo_run
    _copy_stages(out, tmp_path, ("prepare", "clean"))
    _run(config, tmp_path, ["split"])
    assert (tmp_path / "split" / "images.csv").read_bytes() == (
        out / "split" / "images.csv"
    ).read_bytes()


def test_default_distractor_pool_is_chosen_without_test_labels(demo_run, tmp_path):
    # The default pool is index.csv: no test image (whose labels decide other_usage's pool).
    config, out, _ = demo_run
    _copy_stages(out, tmp_path, ("prepare", "clean"))
    default = cfgmod.SplitConfig().distractor_source
    config = tiny_config(split={"distractor_source": default})
    _run(config, tmp_path, ["split"])
    rows = read_table(tmp_path / "split" / "images.csv")
    distractors = [r for r in rows if r.role == "distractor"]
    assert default == "index" and distractors
    assert all(r.source == "index" for r in distractors)
    demo = cfgmod.load_config(EXAMPLE / "configs" / "demo.yaml")
    assert demo.split.distractor_source == "index"


def test_baseline_is_the_pretrained_backbone_without_head(demo_run):
    # baseline_gap compares with the backbone's pooled features, not a random Linear+BN head.
    config, out, _ = demo_run
    trained = np.load(out / "embed" / "trained" / "embeddings.npy", mmap_mode="r")
    baseline = np.load(out / "embed" / "baseline" / "embeddings.npy", mmap_mode="r")
    assert trained.shape[1] == config.model.embedding_dim == 32
    assert baseline.shape[1] == 512  # resnet18's pooled features
    state = torch.load(out / "train" / "model_init.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("head.") for k in state["model"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["baseline"]["gap"] == metrics["baseline_gap"]
    assert "no embedding head" in metrics["baseline"]["description"]


def test_submission_format(demo_run):
    _, out, _ = demo_run
    with open(out / "submission.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    test_ids = [r.id for r in read_table(out / "split" / "images.csv") if r.source == "test"]
    assert [r["id"] for r in rows] == test_ids
    for r in rows:
        label, score = r["landmarks"].split(" ")
        assert int(label) >= 0 and np.isfinite(float(score))


def test_metrics_match_a_recomputation(demo_run):
    # GAP recomputed here by a plain loop over the predictions file.
    _, out, _ = demo_run
    rows = read_table(out / "split" / "images.csv")
    truth = {r.id: r.labels for r in rows if r.role == "test_query"}
    with open(out / "predict" / "trained" / "test.csv", newline="") as f:
        preds = [p for p in csv.DictReader(f) if p["id"] in truth]
    preds.sort(key=lambda p: (-float(p["score_reranked"]), p["id"]))
    hits = total = 0.0
    for n, p in enumerate(preds, 1):
        if int(p["label_reranked"]) in truth[p["id"]]:
            hits += 1
            total += hits / n
    expected = total / sum(1 for v in truth.values() if v)
    assert json.loads((out / "metrics.json").read_text())["gap"] == pytest.approx(expected)


# ------------------------------------------------------------------------- skip, force, incomplete
def test_complete_stages_are_skipped_and_force_redoes(demo_run):
    config, out, _ = demo_run
    report = _run(config, out, ["index", "predict", "evaluate"])
    assert {r["status"] for r in report.values()} == {"skipped"}
    report = _run(config, out, ["evaluate"], force=True)
    assert report["evaluate"]["status"] == "ran"


def test_stage_interrupted_half_way_is_redone(demo_run):
    config, out, _ = demo_run
    # A half-written output (size/hash no longer match the marker) makes the stage incomplete.
    pred = out / "predict" / "trained" / "test.csv"
    pred.write_text(pred.read_text()[:40])
    report = _run(config, out, ["predict", "evaluate"])
    assert report["predict"]["status"] == "ran"
    assert json.loads((out / "metrics.json").read_text())["gap"] >= 0
    # A stage killed before writing its marker has none: redone, and what depends on it too.
    StageMarker(out, "index").invalidate()
    with pytest.raises(RuntimeError, match="needs stage 'index'"):
        _run(config, out, ["predict"])
    report = _run(config, out, ["index", "predict", "evaluate"])
    assert report["index"]["status"] == "ran"
    # Same outputs again, so the later stages stay valid.
    assert report["predict"]["status"] == "skipped"


def test_config_change_makes_stage_and_downstream_stale(demo_run):
    config, out, _ = demo_run
    config.predict.rerank_alpha = 0.5
    try:
        report = _run(config, out, ["predict", "evaluate"])
        assert report["predict"]["status"] == "ran" and report["evaluate"]["status"] == "ran"
    finally:
        config.predict.rerank_alpha = 1.0
        _run(config, out, ["predict", "evaluate"])


def crash_in_epoch(monkeypatch, epoch: int):
    """``rk.train.train_one_epoch`` raises KeyboardInterrupt on call ``epoch`` (1-based): a run
    killed in that epoch. Returns the real function, to put back before resuming."""
    import retrieval_kit as rk

    real = rk.train.train_one_epoch
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(rk.train, "train_one_epoch", crashing)
    return real


def test_train_resumes_from_last_checkpoint(demo_run, tmp_path, monkeypatch):
    import retrieval_kit as rk

    _, out, _ = demo_run
    config = tiny_config(train={"epochs": 2, "sampler": "pk", "max_batches_per_epoch": 2})
    config.data.root = str(out / "data")
    _copy_stages(out, tmp_path, ("prepare", "clean", "split"))
    real = crash_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(config, tmp_path, ["train"])
    assert StageMarker(tmp_path, "train").read() is None  # not mistaken for done
    ckpt = torch.load(tmp_path / "train" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    calls = []  # the resumed run's epochs
    monkeypatch.setattr(
        rk.train, "train_one_epoch", lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    )
    report = _run(config, tmp_path, ["train"])
    assert report["train"]["status"] == "ran" and len(calls) == 1  # only the second epoch
    history = json.loads((tmp_path / "train" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


# ---------------------------------------------------------------------------------------- prepare
def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)


def test_prepare_reads_gldv2_fixture_csvs(tmp_path):
    root = tmp_path / "gldv2"
    train = {"aaa111": 5, "aab222": 5, "abc333": 9, "bcd444": 9}
    (root).mkdir()
    (root / "train.csv").write_text(
        "id,url,landmark_id\n" + "".join(f"{i},http://x/{i},{lab}\n" for i, lab in train.items())
    )
    (root / "train_clean.csv").write_text("landmark_id,images\n5,aaa111 aab222\n9,abc333\n")
    (root / "test.csv").write_text("id\nfff001\nfff002\n")
    (root / "recognition_solution_v2.1.csv").write_text(
        "id,landmarks,Usage\nfff001,5,Private\nfff002,,Public\n"
    )
    (root / "index.csv").write_text("id\neee001\n")
    for n, i in enumerate([*train, "fff001", "fff002", "eee001"]):
        split = "train" if i in train else ("test" if i.startswith("f") else "index")
        _jpeg(root / split / i[0] / i[1] / i[2] / f"{i}.jpg", n)
    config = cfgmod.config_from_dict({"data": {"format": "gldv2", "root": str(root)}})
    _run(config, tmp_path / "out", ["prepare"])
    rows = read_table(tmp_path / "out" / "prepare" / "images.csv")
    got = {(r.id, r.label, r.role, r.usage) for r in rows}
    assert got == {
        ("aaa111", "5", "train", ""),
        ("aab222", "5", "train", ""),
        ("abc333", "9", "train", ""),  # bcd444 is not in train_clean.csv
        ("fff001", "5", "test", "Private"),
        ("fff002", "", "test", "Public"),
        ("eee001", "", "index", ""),
    }
    assert all(Path(r.path).is_file() for r in rows)
    # A missing image is reported, not silently dropped.
    (root / "train" / "a" / "a" / "b" / "aab222.jpg").unlink()
    _run(config, tmp_path / "out2", ["prepare"])
    missing = read_table(tmp_path / "out2" / "prepare" / "missing.csv")
    assert [r.id for r in missing] == ["aab222"]


def test_prepare_reads_folder_per_class(tmp_path):
    for c, n in (("castle", 3), ("bridge", 2)):
        for k in range(n):
            _jpeg(tmp_path / "photos" / c / f"{k}.jpg", k)
    config = cfgmod.config_from_dict(
        {"data": {"format": "folders", "root": str(tmp_path / "photos")}}
    )
    _run(config, tmp_path / "out", ["prepare"])
    rows = read_table(tmp_path / "out" / "prepare" / "images.csv")
    assert sorted((Path(r.path).parent.name, r.label) for r in rows) == [
        ("bridge", "0"),
        ("bridge", "0"),
        ("castle", "1"),
        ("castle", "1"),
        ("castle", "1"),
    ]
    assert len({r.id for r in rows}) == 5 and all(r.role == "train" for r in rows)


# ------------------------------------------------------------------------------------------ clean
def test_clean_with_places365_model(demo_run, tmp_path):
    config, out, _ = demo_run
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=365)
    with torch.no_grad():  # every image's top-5 = categories 0..4
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[:5] = torch.arange(5, 0, -1, dtype=torch.float32)
    ckpt = tmp_path / "resnet18_places365.pth.tar"
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "arch": "resnet18", "state_dict": state}, ckpt)
    io = tmp_path / "IO_places365.txt"
    io.write_text("".join(f"/c/cat{i} {2 if i < 2 else 1}\n" for i in range(365)))  # 2 outdoor
    work = tmp_path / "run"
    (work / "stages").mkdir(parents=True)
    (work / "prepare").mkdir()
    (work / "prepare" / "images.csv").write_bytes((out / "prepare" / "images.csv").read_bytes())
    (work / "stages" / "prepare.done.json").write_bytes(
        (out / "stages" / "prepare.done.json").read_bytes()
    )
    for votes, expect_removed in ((3, 30), (2, 0)):
        config.clean.places365_checkpoint = str(ckpt)
        config.clean.places365_io = str(io)
        config.clean.places365_arch = "resnet18"
        config.clean.min_outdoor_votes = votes
        try:
            if expect_removed == 30:
                with pytest.raises(ValueError, match="removed every training image"):
                    _run(config, work, ["clean"])
                continue
            _run(config, work, ["clean"])
        finally:
            config.clean.places365_checkpoint = None
            config.clean.places365_io = None
    report = json.loads((work / "clean" / "report.json").read_text())
    assert report["outdoor"]["skipped"] is False and report["outdoor"]["removed_images"] == 0
    # The per-image predictions were cached: one line per training image plus the header.
    cache = next((work / "clean").glob("places365_top5_*.csv"))
    assert len(cache.read_text().splitlines()) == 31


def test_clean_removes_small_classes_with_reasons(demo_run, tmp_path):
    config, out, _ = demo_run
    work = tmp_path
    (work / "stages").mkdir()
    (work / "prepare").mkdir()
    rows = (out / "prepare" / "images.csv").read_text().splitlines()
    # Drop 3 images of one class so it falls under the minimum.
    victim = rows[1].split(",")[2]
    kept, dropped = [rows[0]], 0
    for line in rows[1:]:
        if line.split(",")[2] == victim and line.split(",")[3] == "train" and dropped < 3:
            dropped += 1
            continue
        kept.append(line)
    (work / "prepare" / "images.csv").write_text("\n".join(kept) + "\n")
    StageMarker(work, "prepare").write("x", [work / "prepare" / "images.csv"], seconds=0)
    config.clean.min_images_per_class = 3
    from landmark_pipeline.context import Context
    from landmark_pipeline.data_stages import stage_clean

    outputs, report = stage_clean(Context(config, work, torch.device("cpu"), progress=False))
    assert report["min_images"] == {
        "rule": ">= 3 images per class",
        "removed_images": 2,
        "removed_classes": 1,
    }
    with open(work / "clean" / "removed.csv", newline="") as f:
        removed = list(csv.DictReader(f))
    assert [r["label"] for r in removed] == [victim, victim]
    assert removed[0]["reason"] == f"class {victim} has 2 images, fewer than 3"


# ----------------------------------------------------------------------------------------- config
def test_shipped_configs_load():
    demo = cfgmod.load_config(EXAMPLE / "configs" / "demo.yaml")
    assert demo.model.backbone == "efficientnet_lite0" and demo.data.format == "synthetic"
    gld = cfgmod.load_config(EXAMPLE / "configs" / "gldv2.yaml")
    assert gld.model.backbone == "resnet101" and gld.train.accumulate == 15
    assert gld.train.classes_per_batch * gld.train.samples_per_class == 96


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  lrr: 0.1\n", "unknown key train.lrr"),
        ("tran:\n  lr: 0.1\n", "unknown key tran"),
        ("train:\n  epochs: two\n", "train.epochs: expected int, got str 'two'"),
        ("train:\n  epochs: true\n", "train.epochs: expected int, got bool"),
        ("train:\n  lr: fast\n", "train.lr: expected float"),
        ("train:\n  amp: 1\n", "train.amp: expected bool, got int"),
        ("train:\n  distance: manhattan\n", "train.distance: expected one of"),
        ("split:\n  scored_usage: Private\n", "split.scored_usage: expected a list"),
        ("model: 3\n", "model: expected a mapping"),
        ("train:\n  epochs: -1\n", "train.epochs: must be >= 0"),
        ("model:\n  image_size: 256\n  resize_size: 224\n", "model.resize_size"),
        ("x: !!python/object/apply:os.system ['echo hi']\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(cfgmod.ConfigError) as err:
        cfgmod.load_config(path)
    assert message in str(err.value) and "bad.yaml" in str(err.value)


def test_config_accepts_exponent_floats_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")
    config = cfgmod.load_config(path, {"train.epochs": 2})
    assert config.train.lr == 0.001 and config.train.epochs == 2


def test_cli_reports_config_error(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("landmark_run_cli", EXAMPLE / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  format: synthetic\ntrain:\n  epochz: 1\n")
    assert run.main(["prepare", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key train.epochz" in capsys.readouterr().err
