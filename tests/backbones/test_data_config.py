"""DataConfig: validated once when made, a read-only mapping for code written for dicts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import retrieval_kit as rk
from retrieval_kit.backbones import IMAGENET_MEAN, IMAGENET_STD, DataConfig
from retrieval_kit.data import build_eval_transform

CFG = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "image_size": 8, "resize_size": 10}


def test_defaults_and_mapping_access():
    cfg = DataConfig()
    assert (cfg.mean, cfg.std, cfg.image_size, cfg.resize_size) == (
        IMAGENET_MEAN,
        IMAGENET_STD,
        224,
        256,
    )
    assert cfg["interpolation"] == "bilinear" and cfg.get("retrieval_size") is None
    # optional fields are keys only when set, so old dicts and saved files compare equal
    assert list(cfg) == ["mean", "std", "image_size", "resize_size", "interpolation"]
    assert cfg == dict(cfg) and {**cfg, "image_size": 224} == cfg
    bigger = cfg.replace(retrieval_size=512, fixed_input_size=True)
    assert bigger["retrieval_size"] == 512 and "fixed_input_size" in bigger
    with pytest.raises(KeyError):
        cfg["retrieval_size"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.image_size = 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"std": (1.0, 0.0, 1.0)}, "std'\\] must be positive"),
        ({"mean": (0.5, 0.5)}, "mean'\\] must have 3"),
        ({"mean": "abc"}, "mean'\\] must"),
        ({"image_size": 0}, "image_size'\\] must be a positive integer"),
        ({"resize_size": 2.5}, "resize_size'\\] must be a positive integer"),
        ({"retrieval_size": -1}, "retrieval_size"),
        ({"fixed_input_size": "yes"}, "fixed_input_size"),
        ({"retrival_size": 3}, "unknown keys \\['retrival_size'\\]"),
    ],
)
def test_bad_values_are_refused_in_one_place(change, match):
    bad = {**CFG, **change}
    with pytest.raises(ValueError, match=match):
        DataConfig.from_mapping(bad)
    # the transforms and the model check through the same code, with the same message
    with pytest.raises(ValueError, match=match):
        build_eval_transform(bad)
    model = rk.backbones.create_backbone("resnet18", embedding_dim=None)
    with pytest.raises(ValueError, match=match):
        model.data_config = bad


def test_missing_keys_are_a_key_error_and_a_value_error():
    with pytest.raises(KeyError, match="resize_size") as info:
        DataConfig.from_mapping({"mean": (0,) * 3, "std": (1,) * 3, "image_size": 8})
    assert isinstance(info.value, ValueError)
    assert "lacks keys ['resize_size']" in str(info.value)


def test_model_assignment_validates_and_keeps_a_data_config():
    model = rk.backbones.create_backbone("resnet18", embedding_dim=None)
    model.data_config = dict(model.data_config, image_size=200, resize_size=210)
    assert isinstance(model.data_config, DataConfig)
    assert model.data_config.image_size == 200


def test_from_timm_matches_timm_eval_resize():
    cfg = DataConfig.from_timm({"input_size": (3, 384, 384), "crop_pct": 1.0, "mean": (0,) * 3})
    assert (cfg.image_size, cfg.resize_size, cfg.mean) == (384, 384, (0.0, 0.0, 0.0))


def test_save_and_load_keep_the_optional_fields(tmp_path):
    model = rk.backbones.create_backbone("resnet18", embedding_dim=4)
    model.data_config = model.data_config.replace(retrieval_size=96, fixed_input_size=True)
    rk.backbones.save_model(model, tmp_path / "m.safetensors")
    loaded = rk.backbones.load_model(tmp_path / "m.safetensors")
    assert loaded.data_config == model.data_config
    assert loaded.data_config.retrieval_size == 96 and loaded.data_config.fixed_input_size
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
