"""What a newcomer meets first in examples/landmark/run.py: --help, config paths, input errors."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "landmark"
sys.path.insert(0, str(EXAMPLE))

from landmark_pipeline import config as cfgmod  # noqa: E402


@pytest.fixture(scope="module")
def run():
    spec = importlib.util.spec_from_file_location("landmark_run_cli_newcomer", EXAMPLE / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------- --help
HELP_PROBE = """
import runpy, sys
sys.path.insert(0, {example!r})
sys.argv = ["run.py", "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
heavy = sorted(m for m in ("torch", "torchvision", "numpy", "faiss", "PIL") if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def test_help_imports_no_torch():
    # torch + torchvision take seconds to import: --help must not pay for them.
    code = HELP_PROBE.format(example=str(EXAMPLE), script=str(EXAMPLE / "run.py"))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "Stages: prepare, clean, split, train" in done.stdout  # the help itself
    assert done.stdout.strip().splitlines()[-1] == "HEAVY:"


# ---------------------------------------------------------------------------------- config paths
def test_help_examples_work_from_the_repository_root(run):
    configs = re.findall(r"--config (\S+\.yaml)", run.__doc__)
    assert configs
    for c in configs:
        assert (ROOT / c).is_file(), c


@pytest.mark.parametrize("cwd", ["root", "example"])
def test_config_found_from_cwd_then_example_folder(run, tmp_path, monkeypatch, capsys, cwd):
    monkeypatch.chdir(ROOT if cwd == "root" else EXAMPLE)
    out = tmp_path / "out"
    # evaluate needs earlier stages: it stops right after the config is read and saved.
    with pytest.raises(RuntimeError, match="needs stage 'split'"):
        run.main(["evaluate", "--config", "configs/demo.yaml", "--out", str(out), "--no-progress"])
    assert "efficientnet_lite0" in (out / "config.yaml").read_text()


def test_config_in_cwd_wins_over_example_folder(run, tmp_path, monkeypatch):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text(
        "data:\n  format: synthetic\nmodel:\n  backbone: resnet18\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError, match="needs stage"):
        run.main(["evaluate", "--config", "configs/demo.yaml", "--out", "o", "--no-progress"])
    assert "backbone: resnet18" in (tmp_path / "o" / "config.yaml").read_text()


def test_missing_config_is_one_line(run, tmp_path, capsys):
    out = tmp_path / "o"
    assert run.main(["prepare", "--config", "configs/nope.yaml", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: config file not found: configs/nope.yaml"]
    assert not out.exists()


# ----------------------------------------------------------------------------- missing data folder
@pytest.mark.parametrize("make_root", [False, True])
def test_missing_data_is_one_line_naming_data_root_and_writes_nothing(
    run, tmp_path, capsys, make_root
):
    root = tmp_path / "gldv2"
    if make_root:
        root.mkdir()  # exists, but holds no Kaggle CSVs
    out = tmp_path / "out"
    argv = ["all", "--config", str(EXAMPLE / "configs" / "gldv2.yaml"), "--out", str(out)]
    assert run.main([*argv, "--set", f"data.root={root}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: data.root: ") and str(root) in err[0]
    assert ("no train_clean.csv or train.csv" in err[0]) == make_root
    assert not out.exists()


def test_missing_places365_weights_named_before_anything_runs(run, tmp_path, capsys):
    root = tmp_path / "gldv2"
    root.mkdir()
    (root / "train.csv").write_text("id,url,landmark_id\n")
    out = tmp_path / "out"
    config = str(EXAMPLE / "configs" / "gldv2.yaml")
    argv = ["all", "--config", config, "--out", str(out), "--set", f"data.root={root}"]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert "clean.places365_checkpoint: file not found" in err and "null skips" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------ --set errors
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=two", "--set train.epochs=two: train.epochs: expected int, got str 'two'"),
        ("tran.lr=0.1", "--set tran.lr=0.1: unknown key tran"),
        ("train.epochs.x=1", "--set train.epochs.x=1: train.epochs.x: epochs is not a mapping"),
        ("model.image_size=300", "--set model.image_size=300: model.resize_size: must be >="),
        ("train.amp=1", "--set train.amp=1: train.amp: expected bool, got int"),
    ],
)
def test_set_errors_name_the_option_not_the_file(run, tmp_path, capsys, override, message):
    out = tmp_path / "o"
    argv = ["demo", "--out", str(out), "--set", "train.lr=0.01", "--set", override]
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "demo.yaml" not in err and "train.lr=0.01" not in err
    assert not out.exists()


def test_set_value_that_is_not_yaml(run, capsys):
    with pytest.raises(SystemExit) as exit_:
        run.main(["prepare", "--out", "o", "--set", "train.crop_scale=[0.5,"])
    assert exit_.value.code == 2
    assert "--set train.crop_scale=[0.5,:" in capsys.readouterr().err


def test_file_errors_still_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: two\n")
    with pytest.raises(cfgmod.ConfigError, match=r"bad\.yaml: train\.epochs: expected int"):
        cfgmod.load_config(bad, {"train.lr": 0.5})
    # an override that repairs the file is fine
    assert cfgmod.load_config(bad, {"train.epochs": 3}).train.epochs == 3
    # an empty section in the file takes overrides
    bad.write_text("train:\n")
    assert cfgmod.load_config(bad, {"train.epochs": 4}).train.epochs == 4


def test_base_overlay_merges_key_by_key_with_paths_from_each_file(tmp_path):
    (tmp_path / "sub").mkdir()
    base = tmp_path / "sub" / "base.yaml"
    base.write_text(
        "seed: 3\ndata:\n  format: folders\n  root: images\n"
        "train:\n  epochs: 2\n  lr: 0.5\n  loss_kwargs: {scale: 16.0, sub_centers: 2}\n"
    )
    top = tmp_path / "top.yaml"
    top.write_text("base: sub/base.yaml\ntrain:\n  lr: 0.001\n  loss_kwargs: {scale: 30.0}\n")
    config = cfgmod.load_config(top, {"train.epochs": 5})
    assert config.seed == 3 and config.train.lr == 0.001 and config.train.epochs == 5
    assert config.train.loss_kwargs == {"scale": 30.0, "sub_centers": 2}
    # The base's relative path is relative to the base's folder, not the overlay's.
    assert config.data.root == str((tmp_path / "sub" / "images").resolve())
    top.write_text("base: sub/base.yaml\ndata:\n  root: mine\n")
    assert cfgmod.load_config(top).data.root == str((tmp_path / "mine").resolve())


def test_base_overlay_errors_name_the_file(tmp_path):
    top = tmp_path / "top.yaml"
    top.write_text("base: nowhere.yaml\n")
    with pytest.raises(cfgmod.ConfigError, match=r"top\.yaml: base: file not found"):
        cfgmod.load_config(top)
    (tmp_path / "a.yaml").write_text("base: top.yaml\n")
    top.write_text("base: a.yaml\n")
    with pytest.raises(cfgmod.ConfigError, match="includes itself"):
        cfgmod.load_config(top)
    top.write_text("base: [demo.yaml]\n")
    with pytest.raises(cfgmod.ConfigError, match="base: expected a config file name"):
        cfgmod.load_config(top)
