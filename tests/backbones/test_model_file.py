"""save_model / load_model: one safetensors file, identical outputs, nothing executed from it."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from retrieval_kit.backbones import (
    GeM,
    ModelFileError,
    create_backbone,
    load_model,
    save_model,
)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Non-default values everywhere a lost tensor would show: BN statistics, GeM p, weights."""
    torch.manual_seed(123)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
        if hasattr(model.pooling, "p"):
            model.pooling.p.fill_(2.5)
    return model


def _roundtrip(model, tmp_path, x):
    path = save_model(model, tmp_path / "model.safetensors")
    loaded = load_model(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert loaded.data_config == model.data_config
    assert loaded.normalize == model.normalize and loaded.embedding_dim == model.embedding_dim
    return loaded


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet18", {"embedding_dim": 16}),
        ("resnet18", {"embedding_dim": None, "pooling": "mac", "normalize": False}),
        ("resnet50", {"embedding_dim": 8, "weights": "IMAGENET1K_V1"}),
        ("efficientnet_lite0", {"embedding_dim": 16}),
        ("efficientnet_lite0", {"embedding_dim": None, "pooling": GeM(p=2.0, learnable=False)}),
    ],
)
def test_cnn_roundtrip_gives_identical_outputs(tmp_path, name, kwargs):
    if name.startswith("efficientnet"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = _randomise(create_backbone(name, **kwargs))
    model.data_config = dict(model.data_config, image_size=200, resize_size=210)  # user-tuned
    loaded = _roundtrip(model, tmp_path, torch.randn(2, 3, 64, 64))
    if "weights" in kwargs:  # V1 weights resize to 256, and that travels with the file
        assert loaded.data_config["resize_size"] == 210
        assert create_backbone(name, weights="IMAGENET1K_V1").data_config["resize_size"] == 256
    if isinstance(kwargs.get("pooling"), GeM):
        assert "p" in dict(loaded.pooling.named_buffers()) and loaded.pooling.p.item() == 2.5


@pytest.mark.parametrize("pooling", ["cls", "mean", "gem"])
@pytest.mark.parametrize("embedding_dim", [8, None])
def test_timm_vit_roundtrip_each_pooling_with_and_without_head(tmp_path, pooling, embedding_dim):
    pytest.importorskip("timm")
    torch.manual_seed(1)
    model = _randomise(
        create_backbone("timm/vit_tiny_patch16_224", embedding_dim=embedding_dim, pooling=pooling)
    )
    x = torch.randn(2, 3, 48, 64)
    loaded = _roundtrip(model, tmp_path, x)
    assert loaded.num_prefix_tokens == 1 and loaded.pooling.__class__ is model.pooling.__class__
    again = load_model(
        save_model(loaded, tmp_path / "again.safetensors")
    )  # a loaded model re-saves
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_the_file_is_one_safetensors_file_with_json_architecture(tmp_path):
    from safetensors import safe_open

    model = create_backbone("resnet18", embedding_dim=16, pooling="spoc", weights="IMAGENET1K_V1")
    path = save_model(model, tmp_path / "sub" / "m.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as f:
        arch = json.loads(f.metadata()["retrieval_kit"])
        assert set(f.keys()) == set(model.state_dict())
    assert arch["name"] == "resnet18" and arch["kwargs"] == {"weights": "IMAGENET1K_V1"}
    assert arch["embedding_dim"] == 16 and arch["pooling"] == {"name": "spoc"}
    assert arch["data_config"]["resize_size"] == 256


def test_models_save_model_cannot_describe_are_refused(tmp_path):
    model = create_backbone("resnet18", embedding_dim=8, pooling=torch.nn.Identity())
    with pytest.raises(TypeError, match="built-in poolings.*Identity"):
        save_model(model, tmp_path / "m.safetensors")
    from retrieval_kit.backbones import EmbeddingModel

    hand_made = EmbeddingModel(torch.nn.Conv2d(3, 4, 3), num_features=4, embedding_dim=None)
    with pytest.raises(TypeError, match="made by create_backbone"):
        save_model(hand_made, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def _saved(tmp_path):
    model = create_backbone("resnet18", embedding_dim=8)
    path = save_model(model, tmp_path / "good.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        arch = json.loads(f.metadata()["retrieval_kit"])
    return tensors, arch


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_garbage_and_pickles_fail_cleanly_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01 not a model at all" * 10)
    (tmp_path / "pickle.safetensors").write_bytes(pickle.dumps(_Boom()))
    torch.save({"w": _Boom()}, tmp_path / "torch.safetensors")  # a crafted torch.save zip
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("garbage", "pickle", "torch", "empty"):
        with pytest.raises(
            ModelFileError, match=rf"{name}\.safetensors.*not a readable safetensors"
        ):
            load_model(tmp_path / f"{name}.safetensors")
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_file_fails_cleanly(tmp_path):
    path = save_model(create_backbone("resnet18", embedding_dim=8), tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"m\.safetensors"):
        load_model(path)


def test_tampered_files_fail_cleanly(tmp_path):
    tensors, arch = _saved(tmp_path)

    def write(name, tensors=tensors, arch=arch, raw_metadata=None):
        metadata = {"retrieval_kit": json.dumps(arch)} if raw_metadata is None else raw_metadata
        save_file(tensors, tmp_path / name, metadata=metadata)
        return tmp_path / name

    cases = [
        (write("plain.safetensors", raw_metadata={}), "not written by rk.backbones.save_model"),
        (write("notjson.safetensors", raw_metadata={"retrieval_kit": "{oops"}), "not JSON"),
        (write("deep.safetensors", raw_metadata={"retrieval_kit": "[" * 100_000}), "not JSON"),
        (write("fmt.safetensors", arch={**arch, "format": "x"}), "not a retrieval_kit"),
        (write("ver.safetensors", arch={**arch, "format_version": 99}), "format_version 99"),
        (write("name.safetensors", arch={**arch, "name": "resnt18"}), "'resnt18' is not avail"),
        (write("dim.safetensors", arch={**arch, "embedding_dim": "8"}), "'embedding_dim' is '8'"),
        (write("bool.safetensors", arch={**arch, "num_features": True}), "'num_features' is True"),
        (
            write("ckpt.safetensors", arch={**arch, "kwargs": {"checkpoint_path": "/etc/x"}}),
            r"\['checkpoint_path'\] are not accepted",
        ),
        (write("kw.safetensors", arch={**arch, "kwargs": {"bogus": 1}}), "cannot rebuild.*bogus"),
        (write("pool.safetensors", arch={**arch, "pooling": {"name": "x"}}), "unknown pooling"),
        (write("cfg.safetensors", arch={**arch, "data_config": {}}), "lacks keys"),
        (
            write(
                "missing.safetensors",
                tensors={k: v for k, v in tensors.items() if k != "head.0.bias"},
            ),
            r"missing keys \(1\): head\.0\.bias",
        ),
        (
            write("shape.safetensors", tensors={**tensors, "head.0.bias": torch.zeros(9)}),
            r"head\.0\.bias \(9,\) vs \(8,\)",
        ),
        (
            write("dtype.safetensors", tensors={**tensors, "head.0.bias": torch.zeros(8).double()}),
            r"another dtype.*head\.0\.bias",
        ),
    ]
    for path, message in cases:
        with pytest.raises(ModelFileError, match=rf"{path.name}.*{message}"):
            load_model(path)
