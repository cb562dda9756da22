"""The landmark example's train stage with losses and miners chosen by name in the config."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
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


# The tiny config and helpers of the pipeline's own tests (one source for "tiny").
pipeline = _load("landmark_pipeline_tests", Path(__file__).with_name("test_landmark_pipeline.py"))

from landmark_pipeline import config as cfgmod  # noqa: E402
from landmark_pipeline import train_stage  # noqa: E402
from landmark_pipeline.state import StageMarker  # noqa: E402
from landmark_pipeline.table import read_table  # noqa: E402

import retrieval_kit as rk  # noqa: E402

ARCFACE = {
    "loss": "subcenter_arcface",
    "dynamic_margins": True,
    "loss_kwargs": {"scale": 16.0},
    "loss_lr_mult": 10.0,
}
MULTI_SIMILARITY = {"loss": "MultiSimilarityLoss", "miner": "MultiSimilarityMiner"}


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    """prepare, clean and split of the tiny config, done once."""
    out = tmp_path_factory.mktemp("split")
    config = pipeline.tiny_config()
    pipeline._run(config, out, ["prepare", "clean", "split"])
    return out


def _train(split_run: Path, out: Path, **train) -> tuple[cfgmod.Config, dict]:
    pipeline._copy_stages(split_run, out, ("prepare", "clean", "split"))
    config = pipeline.tiny_config(train=train)
    config.data.root = str(split_run / "data")
    report = pipeline._run(config, out, ["train"])
    return config, report


def _train_labels(out: Path) -> np.ndarray:
    rows = read_table(out / "split" / "images.csv")
    return np.array([int(r.label) for r in rows if r.role == "train"])


@pytest.mark.slow
def test_subcenter_arcface_with_dynamic_margins_trains(split_run, tmp_path):
    _, report = _train(split_run, tmp_path, **ARCFACE, schedule="warmup_cosine", warmup_steps=1)
    assert report["train"]["status"] == "ran"
    (epoch,) = json.loads((tmp_path / "train" / "history.json").read_text())
    assert math.isfinite(epoch["loss"]) and epoch["loss"] > 0
    assert 0 <= epoch["accuracy"] <= 1 and math.isfinite(epoch["mean_angle"])
    ck = torch.load(tmp_path / "train" / "checkpoints" / "last.pt", weights_only=True)
    # The head: one column per sub-centre of every training class, margins from class counts.
    labels = _train_labels(tmp_path)
    counts = np.unique(labels, return_counts=True)[1]
    assert ck["loss"]["W"].shape == (32, 3 * len(counts))
    expected = rk.losses.dynamic_margins(counts)
    assert torch.allclose(ck["loss"]["margins"], expected.to(ck["loss"]["margins"]))
    # The head is optimised, at lr x loss_lr_mult, and the schedule is saved with it.
    groups = ck["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["initial_lr"] == pytest.approx(
        10 * groups[0]["initial_lr"]
    )
    assert "scheduler" in ck
    steps = list(csv.DictReader((tmp_path / "train" / "steps.csv").open()))
    assert len(steps) == epoch["steps"]
    assert all(math.isfinite(float(s["loss"])) and "accuracy" in s for s in steps)
    assert float(steps[0]["lr"]) == 0.0  # warm-up starts from 0
    assert (tmp_path / "train" / "loss.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_multi_similarity_loss_and_miner_by_name(split_run, tmp_path):
    _, report = _train(split_run, tmp_path, **MULTI_SIMILARITY)
    assert report["train"]["status"] == "ran"
    (epoch,) = json.loads((tmp_path / "train" / "history.json").read_text())
    assert math.isfinite(epoch["loss"])
    assert epoch["pos_pairs"] > 0 and epoch["neg_pairs"] > 0  # the pair miner ran


@pytest.mark.slow
@pytest.mark.parametrize("head_init", ["random", "class_means"])
def test_arcface_resume_restores_the_head(split_run, tmp_path, monkeypatch, head_init):
    # With class_means the resumed run must take the head from the checkpoint, not imprint anew.
    train = {**ARCFACE, "epochs": 2, "sampler": "pk", "max_batches_per_epoch": 2}
    train["head_init"] = head_init
    train["deterministic"] = True
    _train(split_run, tmp_path / "whole", **train)
    whole = torch.load(tmp_path / "whole" / "train" / "checkpoints" / "last.pt", weights_only=True)

    real = pipeline.crash_in_epoch(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _train(split_run, tmp_path / "resumed", **train)
    assert StageMarker(tmp_path / "resumed", "train").read() is None
    monkeypatch.setattr(rk.train, "train_one_epoch", real)
    config = pipeline.tiny_config(train=train)
    config.data.root = str(split_run / "data")
    pipeline._run(config, tmp_path / "resumed", ["train"])
    resumed = torch.load(
        tmp_path / "resumed" / "train" / "checkpoints" / "last.pt", weights_only=True
    )
    torch.testing.assert_close(resumed["loss"]["W"], whole["loss"]["W"], rtol=0, atol=0)
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_class_means_head_starts_at_the_class_means(split_run, tmp_path, monkeypatch):
    # What the first optimizer step sees: every class's sub-centres at its mean embedding (a
    # random head's sub-centres are unrelated), and a head BatchNorm fitted to the training
    # crops (at init: mean 0, variance 1).
    train = {**ARCFACE, "head_init": "class_means", "sampler": "pk", "max_batches_per_epoch": 1}
    seen = {}
    real = rk.train.train_one_epoch

    def capture(model, loader, loss_fn, *args, **kwargs):
        seen["W"] = loss_fn.W.detach().clone()
        seen["bn"] = {k: v.clone() for k, v in model.head[1].state_dict().items()}
        seen["model"] = {k: v.clone() for k, v in model.state_dict().items()}
        return real(model, loader, loss_fn, *args, **kwargs)

    monkeypatch.setattr(rk.train, "train_one_epoch", capture)
    _train(split_run, tmp_path, **train)
    w = torch.nn.functional.normalize(seen["W"].t(), dim=1).reshape(-1, 3, 32)
    same_class = torch.einsum("ckd,cjd->ckj", w, w)
    assert same_class.min() > 0.99  # sub-centres of one class: the mean plus a little jitter
    assert seen["bn"]["running_var"].sub(1).abs().max() > 1e-3
    assert seen["bn"]["running_mean"].abs().max() > 1e-3

    # The class means, by hand: the model at that point, the images as embedded for it.
    model = train_stage.build_model(pipeline.tiny_config(train=train))
    model.load_state_dict(seen["model"])
    model.normalize = True
    rows = [r for r in read_table(tmp_path / "split" / "images.csv") if r.role == "train"]
    emb, _ = rk.embed.extract_embeddings(
        model, [r.path for r in rows], image_size=pipeline.tiny_config().model.image_size
    )
    labels = _train_labels(tmp_path)
    targets = np.unique(labels, return_inverse=True)[1]
    for c in range(len(np.unique(labels))):
        mean = torch.nn.functional.normalize(torch.as_tensor(emb[targets == c].sum(0)), dim=0)
        assert float(w[c, 0] @ mean) > 0.99, c


@pytest.mark.parametrize(
    ("loss", "ok"),
    [("subcenter_arcface", True), ("ArcFaceLoss", True), ("CosFaceLoss", True),
     ("triplet", False), ("MultiSimilarityLoss", False), ("ProxyAnchorLoss", False)],
)  # fmt: skip
def test_head_init_needs_a_loss_with_class_weights(loss, ok):
    config = cfgmod.config_from_dict({"train": {"loss": loss, "head_init": "class_means"}})
    if ok:
        cfgmod.check_components(config)
    else:
        with pytest.raises(cfgmod.ConfigError, match="train.head_init: class_means needs"):
            cfgmod.check_components(config)
    parts = {"a": {"name": "triplet"}, "b": {"name": "arcface"}}
    combined = {"loss": "combined", "loss_kwargs": {"losses": parts}, "head_init": "class_means"}
    cfgmod.check_components(cfgmod.config_from_dict({"train": combined}))


def test_unknown_loss_is_one_error_line_naming_the_key(tmp_path, capsys):
    run = _load("landmark_run_cli_losses", EXAMPLE / "run.py")
    out = tmp_path / "o"
    argv = ["train", "--config", str(EXAMPLE / "configs" / "demo.yaml"), "--out", str(out)]
    assert run.main([*argv, "--set", "train.loss=tripplet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: train.loss: unknown loss 'tripplet'") and "'triplet'" in err
    assert not out.exists()  # nothing written
    assert run.main([*argv, "--set", "train.miner=BatchHard"]) == 2
    assert "train.miner: unknown miner 'BatchHard'" in capsys.readouterr().err
    assert not out.exists()


def test_miner_auto_none_and_names():
    def miner(**train):
        return train_stage.build_miner(cfgmod.config_from_dict({"train": train}))

    assert isinstance(miner(), rk.miners.BatchHardMiner)  # triplet: the reproduced pipeline
    assert miner(loss="subcenter_arcface") is None
    assert miner(miner="none") is None and miner(miner=None) is None
    semi = miner(miner="semi_hard", miner_kwargs={"margin": 0.3})
    assert isinstance(semi, rk.miners.SemiHardMiner) and semi.margin == 0.3
    with pytest.raises(cfgmod.ConfigError, match="train.miner_kwargs"):
        miner(miner="semi_hard", miner_kwargs={"margn": 0.3})


def test_loss_gets_sizes_from_data_and_kwargs_from_config():
    def loss(counts=(3, 5, 4), **train):
        config = cfgmod.config_from_dict({"train": train})
        return train_stage.build_loss(config, np.array(counts), 16)

    arc = loss(loss="arcface", loss_kwargs={"margin": 0.2})
    assert arc.W.shape == (16, 3) and torch.allclose(arc.margins, torch.tensor(0.2))
    proxy = loss(loss="ProxyAnchorLoss")  # a PML loss that needs the sizes too
    assert proxy.proxies.shape == (3, 16)
    ms = loss(loss="MultiSimilarityLoss", loss_kwargs={"alpha": 3.0})
    assert ms.alpha == 3.0
    triplet = loss(margin=0.1)
    assert isinstance(triplet, rk.losses.TripletLoss) and triplet.margin == 0.1
    with pytest.raises(cfgmod.ConfigError, match="train.loss_kwargs"):
        loss(loss="MultiSimilarityLoss", loss_kwargs={"alpah": 3.0})
    with pytest.raises(cfgmod.ConfigError, match="train.dynamic_margins"):
        cfgmod.config_from_dict({"train": {"loss": "triplet", "dynamic_margins": True}})


def test_recipe_config_loads():
    config = cfgmod.load_config(EXAMPLE / "configs" / "gldv2_arcface.yaml")
    tc = config.train
    assert tc.loss == "subcenter_arcface" and tc.dynamic_margins and tc.miner == "none"
    assert tc.loss_kwargs == {"sub_centers": 3, "scale": 80.0}
    assert tc.classes_per_batch * tc.samples_per_class * tc.accumulate == 256
    assert tc.optimizer == "adam" and tc.schedule == "warmup_cosine"
    cfgmod.check_components(config)


def test_combined_loss_from_the_config_completes_each_part():
    parts = {
        "arcface": {"name": "subcenter_arcface", "scale": 30.0, "weight": 2.0},
        "triplet": {"name": "triplet", "miner": "batch_hard"},
    }
    train = {"loss": "combined", "loss_kwargs": {"losses": parts}, "dynamic_margins": True}
    train |= {"distance": "euclidean", "margin": 0.1}  # not the miner's default distance
    config = cfgmod.config_from_dict({"train": train})
    cfgmod.check_components(config)
    counts = np.array([1, 16, 10000])
    loss = train_stage.build_loss(config, counts, 16)
    assert isinstance(loss, rk.losses.CombinedLoss)
    assert loss.weights == {"arcface": 2.0, "triplet": 1.0}
    arc, triplet = loss.losses["arcface"], loss.losses["triplet"]
    # Sizes from the data and the model, dynamic margins for the ArcFace part only.
    assert arc.W.shape == (16, 3 * 3) and arc.scale == 30.0
    assert torch.allclose(arc.margins, rk.losses.dynamic_margins(counts))
    assert triplet.margin == 0.1 and not triplet.distance.normalize_embeddings
    assert isinstance(loss.miners["triplet"], rk.miners.BatchHardMiner)
    assert not loss.miners["triplet"].distance.normalize_embeddings
    assert train_stage.build_miner(config) is None  # the parts mine for themselves
    value = loss(torch.randn(6, 16), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert value.ndim == 0 and set(loss.last_stats) >= {"loss/arcface", "arcface/accuracy"}


@pytest.mark.parametrize(
    ("loss_kwargs", "message"),
    [
        ({}, "train.loss_kwargs.losses: train.loss combined needs"),
        ({"losses": {"a": "triplet"}}, "train.loss_kwargs.losses.a: expected a mapping"),
        ({"losses": {"a": {"name": "triplet", "weight": "x"}}}, "losses.a.weight"),
        ({"losses": {"a": {"name": "triplet", "margn": 1}}}, "train.loss_kwargs.losses.a: "),
        ({"losses": {"a": {"name": "triplet", "miner": "bad_miner"}}}, "losses.a.miner: "),
    ],
)
def test_combined_loss_config_errors_name_the_key(loss_kwargs, message):
    config = cfgmod.config_from_dict({"train": {"loss": "combined", "loss_kwargs": loss_kwargs}})
    with pytest.raises(cfgmod.ConfigError, match=message):
        train_stage.build_loss(config, np.array([3, 4]), 8)


def test_unknown_part_of_a_combined_loss_is_refused_before_training():
    parts = {"arc": {"name": "subcenter_arcfase"}}
    config = cfgmod.config_from_dict(
        {"train": {"loss": "combined", "loss_kwargs": {"losses": parts}}}
    )
    with pytest.raises(cfgmod.ConfigError, match="train.loss_kwargs.losses.arc: unknown loss"):
        cfgmod.check_components(config)
    # dynamic margins need an ArcFace part
    with pytest.raises(cfgmod.ConfigError, match="train.dynamic_margins"):
        cfgmod.config_from_dict(
            {"train": {"loss": "combined", "dynamic_margins": True,
                       "loss_kwargs": {"losses": {"t": {"name": "triplet"}}}}}
        )  # fmt: skip


def test_demo_arcface_overlay_changes_only_training():
    demo = cfgmod.load_config(EXAMPLE / "configs" / "demo.yaml")
    arc = cfgmod.load_config(EXAMPLE / "configs" / "demo_arcface.yaml")
    a, b = cfgmod.config_to_dict(demo), cfgmod.config_to_dict(arc)
    assert {k for k in a if a[k] != b[k]} == {"train"}
    assert arc.train.loss == "subcenter_arcface" and arc.train.dynamic_margins
    assert arc.train.epochs == demo.train.epochs  # the same budget as the triplet demo
    cfgmod.check_components(arc)


def test_set_loss_alone_takes_the_configs_loss_overrides():
    # `--set train.loss=subcenter_arcface` on demo.yaml trains exactly as demo_arcface.yaml:
    # the same resolved config, hence the same train stage (its hash is the config's).
    demo = EXAMPLE / "configs" / "demo.yaml"
    bare = cfgmod.load_config(demo, {"train.loss": "subcenter_arcface"})
    arc = cfgmod.load_config(EXAMPLE / "configs" / "demo_arcface.yaml")
    assert cfgmod.config_to_dict(bare) == cfgmod.config_to_dict(arc)
    assert (bare.train.optimizer, bare.train.lr, bare.train.loss_lr_mult) == ("adam", 3e-4, 30.0)
    # The table only applies to its loss; --set keys still win over it.
    assert cfgmod.load_config(demo).train.optimizer == "sgd"
    assert cfgmod.load_config(demo, {"train.loss": "MultiSimilarityLoss"}).train.lr == 0.003
    mine = cfgmod.load_config(demo, {"train.loss": "arcface", "train.lr": 1e-3})
    assert (mine.train.optimizer, mine.train.lr) == ("adam", 1e-3)


def test_loss_overrides_merge_and_refuse_bad_tables(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "train:\n  loss: subcenter_arcface\n  lr: 0.01\n"
        "  loss_kwargs: {scale: 64.0, sub_centers: 2}\n"
        "  loss_overrides:\n    subcenter_arcface: {lr: 0.001, loss_kwargs: {scale: 30.0}}\n"
    )
    cfg = cfgmod.load_config(path)
    assert cfg.train.lr == 0.001
    assert cfg.train.loss_kwargs == {"scale": 30.0, "sub_centers": 2}  # merged key by key
    assert "loss_overrides" not in cfgmod.config_to_dict(cfg)["train"]  # resolved, not kept
    for table in ("[1, 2]", "{subcenter_arcface: 3}", "{subcenter_arcface: {loss: triplet}}"):
        path.write_text(f"train:\n  loss: subcenter_arcface\n  loss_overrides: {table}\n")
        with pytest.raises(cfgmod.ConfigError, match=r"c\.yaml: train\.loss_overrides"):
            cfgmod.load_config(path)


def test_progressive_image_size_per_epoch_and_on_resume(split_run, tmp_path, monkeypatch):
    train = {"epochs": 3, "sampler": "pk", "image_sizes": [[0, 32], [2, 40]]}
    sizes: list[int] = []

    def record_size(model, loader, *args, **kwargs):
        images, _ = next(iter(loader))
        sizes.append(images.shape[-1])
        assert images.shape[-2] == images.shape[-1]
        if kwargs.pop("crash", False):
            raise KeyboardInterrupt("killed")
        return {"loss": 1.0, "batches": 1.0}

    monkeypatch.setattr(rk.train, "train_one_epoch", record_size)
    _train(split_run, tmp_path / "whole", **train)
    assert sizes == [32, 32, 40]  # the model's image_size (48) is never used

    def crash_in_third_epoch(*args, **kwargs):
        return record_size(*args, **kwargs, crash=len(sizes) == 2)

    sizes.clear()
    monkeypatch.setattr(rk.train, "train_one_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        _train(split_run, tmp_path / "resumed", **train)
    sizes.clear()
    monkeypatch.setattr(rk.train, "train_one_epoch", record_size)
    config = pipeline.tiny_config(train=train)
    config.data.root = str(split_run / "data")
    pipeline._run(config, tmp_path / "resumed", ["train"])
    assert sizes == [40]  # the resumed epoch trains at its own size


@pytest.mark.parametrize("sizes", [[[1, 32]], [[0, 32], [0, 40]], [[0, 0]], [[0, 32, 1]]])
def test_image_sizes_errors(sizes):
    with pytest.raises(cfgmod.ConfigError, match="train.image_sizes"):
        cfgmod.config_from_dict({"train": {"image_sizes": sizes}})


@pytest.mark.slow
def test_validation_per_epoch_matches_the_evaluate_stage_and_leaves_training_alone(
    split_run, tmp_path
):
    train = {"epochs": 2, "sampler": "pk", "max_batches_per_epoch": 2, "deterministic": True}
    pipeline._copy_stages(split_run, tmp_path / "val", ("prepare", "clean", "split"))
    config = pipeline.tiny_config(train={**train, "val_every": 1})
    config.data.root = str(split_run / "data")
    pipeline._run(config, tmp_path / "val")
    history = json.loads((tmp_path / "val" / "train" / "history.json").read_text())
    assert [("val_gap" in h, "val_map_at_100" in h) for h in history] == [(True, True)] * 2
    # The last epoch's model is the trained model: the evaluate stage's validation figures,
    # computed through the index and predict stages, are the same numbers.
    val = json.loads((tmp_path / "val" / "metrics.json").read_text())["val"]
    assert history[-1]["val_gap"] == pytest.approx(val["gap"], abs=1e-6)
    assert history[-1]["val_map_at_100"] == pytest.approx(val["map_at_100"], abs=1e-6)
    assert (tmp_path / "val" / "train" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # Validating draws nothing from the training's random stream: the same weights as without.
    _train(split_run, tmp_path / "plain", **train)
    with_val = torch.load(tmp_path / "val" / "train" / "model.pt", weights_only=True)["model"]
    plain = torch.load(tmp_path / "plain" / "train" / "model.pt", weights_only=True)["model"]
    for key, value in plain.items():
        torch.testing.assert_close(with_val[key], value, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("accuracy", "warned"), [(0.031, True), (0.099, True), (0.101, False), (0.77, False)]
)
def test_a_head_left_at_chance_is_reported(caplog, accuracy, warned):
    # 30 classes: chance is 0.033; below 3x chance the head did not learn (the bare
    # `--set train.loss=subcenter_arcface` demo ended at 0.031, the ArcFace overlay at 0.77).
    history = [{"epoch": 1, "loss": 38.6, "accuracy": 0.02}, {"epoch": 2, "accuracy": accuracy}]
    with caplog.at_level("WARNING"):
        train_stage._warn_if_head_did_not_learn(history, 30)
    assert ("about chance for 30 classes" in caplog.text) is warned
    caplog.clear()
    with caplog.at_level("WARNING"):  # pair losses report no accuracy: nothing to say
        train_stage._warn_if_head_did_not_learn([{"epoch": 1, "loss": 0.1}], 30)
    assert caplog.text == ""
