"""``timm/hf-hub:org/name``: works offline from the local Hugging Face cache, else a clear error."""

from __future__ import annotations

import json

import pytest
import torch

from retrieval_kit.backbones import create_backbone, is_backbone, load_model, save_model

timm = pytest.importorskip("timm")
hf_constants = pytest.importorskip("huggingface_hub.constants")
safetensors_torch = pytest.importorskip("safetensors.torch")

REPO = "rkorg/tiny-vit"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
MODEL_ARGS = {"depth": 2, "img_size": 32, "embed_dim": 48, "num_heads": 3}


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, offline mode on: nothing can download."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def _seed_cache(cache) -> dict[str, torch.Tensor]:
    """Lay out a timm model as `huggingface-cli download` leaves it in the cache."""
    torch.manual_seed(7)
    net = timm.create_model("vit_tiny_patch16_224", num_classes=10, **MODEL_ARGS)
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    config = {
        "architecture": "vit_tiny_patch16_224",
        "num_classes": 10,
        "model_args": MODEL_ARGS,
        "pretrained_cfg": {
            "input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "crop_pct": 1.0,
            "interpolation": "bicubic",
            "classifier": "head",
            "first_conv": "patch_embed.proj",
        },
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    safetensors_torch.save_file(state, snapshot / "model.safetensors")
    return state


def test_hf_hub_name_loads_offline_from_the_cache(hf_cache, tmp_path):
    state = _seed_cache(hf_cache)
    name = f"timm/hf-hub:{REPO}"
    assert is_backbone(name)
    model = create_backbone(name, pretrained=True, embedding_dim=8, pooling="cls").eval()
    assert torch.equal(model.trunk.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert torch.equal(model.trunk.blocks[1].mlp.fc2.bias, state["blocks.1.mlp.fc2.bias"])
    assert model.num_features == 48 and model.num_prefix_tokens == 1
    cfg = model.data_config
    assert (cfg["image_size"], cfg["resize_size"], cfg["mean"]) == (32, 32, (0.5, 0.5, 0.5))
    # The architecture alone (pretrained=False) also comes from the cached config.json ...
    fresh = create_backbone(name, pretrained=False, embedding_dim=None)
    assert fresh.num_features == 48
    # ... and a saved model rebuilds from the cache too.
    x = torch.randn(2, 3, 32, 48)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_hf_hub_name_not_in_the_cache_says_what_to_do(hf_cache):
    for pretrained in (True, False):
        with pytest.raises(OSError) as info:
            create_backbone("timm/hf-hub:rkorg/not-cached", pretrained=pretrained)
        message = str(info.value)
        assert "timm/hf-hub:rkorg/not-cached" in message
        assert "hf download rkorg/not-cached" in message
        assert str(hf_cache) in message and "HF_HUB_OFFLINE=1" in message


def test_malformed_hf_hub_name():
    with pytest.raises(ValueError, match="'timm/hf-hub:<org>/<repo>'"):
        create_backbone("timm/hf-hub:no-org")
    assert not is_backbone("timm/hf-hub:no-org")
