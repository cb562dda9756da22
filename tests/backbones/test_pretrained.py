from __future__ import annotations

import os
import urllib.error

import pytest
import torch
import torchvision

import retrieval_kit.backbones as rk_backbones
from retrieval_kit.backbones import create_backbone, load_state_dict_file


def _randomise_running_stats(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)


@pytest.fixture
def x():
    torch.manual_seed(0)
    return torch.randn(2, 3, 64, 64)


def test_roundtrip_of_an_embedding_model_state_dict(tmp_path, x):
    torch.manual_seed(1)
    model = create_backbone("resnet18", embedding_dim=16)
    with torch.no_grad():
        model.pooling.p.fill_(2.5)
        _randomise_running_stats(model)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    torch.manual_seed(2)  # a different random init, overwritten by the file
    loaded = create_backbone("resnet18", pretrained=str(path), embedding_dim=16)
    assert loaded.pooling.p.item() == 2.5
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))
    # The same weights can also be passed as an in-memory state dict.
    again = create_backbone("resnet18", pretrained=model.state_dict(), embedding_dim=16).eval()
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_full_torchvision_classifier_dict_drops_fc(tmp_path, x):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        _randomise_running_stats(reference)
    torch.save(reference.state_dict(), tmp_path / "resnet18_full.pth")
    model = create_backbone(
        "resnet18",
        pretrained=tmp_path / "resnet18_full.pth",
        embedding_dim=None,
        pooling="spoc",
        normalize=False,
    ).eval()
    reference.fc = torch.nn.Identity()  # torchvision's own avgpool features
    with torch.no_grad():
        assert torch.allclose(model(x), reference.eval()(x), atol=1e-6)


def test_trunk_only_dict_and_wrapped_ddp_checkpoint(tmp_path, x):
    torch.manual_seed(4)
    source = create_backbone("resnet18", embedding_dim=None)
    torch.save(source.trunk.state_dict(), tmp_path / "trunk.pth")
    wrapped = {
        "model": {f"module.{k}": v for k, v in source.trunk.state_dict().items()},
        "epoch": 3,
    }
    torch.save(wrapped, tmp_path / "ckpt.pth")
    for name in ("trunk.pth", "ckpt.pth"):
        model = create_backbone("resnet18", pretrained=tmp_path / name, embedding_dim=None).eval()
        with torch.no_grad():
            assert torch.equal(model.forward_features(x), source.eval().forward_features(x))


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match=r"r34\.pth.*unexpected keys.*layer1\.2\.conv1\.weight"):
        create_backbone("resnet18", pretrained=tmp_path / "r34.pth")
    small = create_backbone("resnet18", embedding_dim=16)
    torch.save(small.state_dict(), tmp_path / "d16.pth")
    with pytest.raises(
        ValueError, match=r"shape mismatches.*head\.0\.weight \(16, 512\) vs \(32, 512\)"
    ):
        create_backbone("resnet18", pretrained=tmp_path / "d16.pth", embedding_dim=32)
    with pytest.raises(ValueError, match=r"unexpected keys.*head\.0\.weight"):
        create_backbone("resnet18", pretrained=tmp_path / "d16.pth", embedding_dim=None)
    trunk_sd = dict(small.trunk.state_dict())
    del trunk_sd["layer4.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"missing keys \(1\): layer4\.1\.bn2\.running_var"):
        create_backbone("resnet18", pretrained=trunk_sd)


def test_unreadable_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("resnet18", pretrained=tmp_path / "nope.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(TypeError, match="tensor.pth"):
        load_state_dict_file(tmp_path / "tensor.pth")
    torch.save({"fc.weight": torch.zeros(1), "note": "text"}, tmp_path / "mixed.pth")
    with pytest.raises(TypeError, match=r"mixed\.pth.*note"):
        load_state_dict_file(tmp_path / "mixed.pth")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pth")  # needs unpickling code
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict_file(tmp_path / "pickled_module.pth")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache in tmp_path and a network that fails the way urllib does offline."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return calls


def test_pretrained_true_offline_names_the_alternatives(offline_hub):
    filename = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)
    with pytest.raises(OSError) as info:
        create_backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert offline_hub == [torchvision.models.ResNet18_Weights.DEFAULT.url]  # it did try the hub
    assert "offline" in message
    assert f"pretrained='/path/to/{filename}'" in message
    assert "efficientnet_lite0" in message and "retrieval_kit[timm]" in message
    assert os.path.join(torch.hub.get_dir(), "checkpoints") in message and filename in message


def test_pretrained_true_uses_a_pre_seeded_hub_cache(offline_hub, x):
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    torch.manual_seed(5)
    seeded = torchvision.models.resnet18()
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache)
    torch.save(seeded.state_dict(), os.path.join(cache, os.path.basename(weights.url)))
    model = create_backbone("resnet18", pretrained=True, embedding_dim=None, pooling="spoc")
    assert offline_hub == []  # nothing downloaded
    assert torch.equal(model.trunk.conv1.weight, seeded.conv1.weight)
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, seeded.layer4[1].bn2.running_var)


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("convnext_tiny", torchvision.models.ConvNeXt_Tiny_Weights.DEFAULT),
        ("efficientnet_v2_s", torchvision.models.EfficientNet_V2_S_Weights.DEFAULT),
        ("regnet_y_400mf", torchvision.models.RegNet_Y_400MF_Weights.DEFAULT),
        ("regnet_x_400mf", torchvision.models.RegNet_X_400MF_Weights.IMAGENET1K_V1),
    ],
)
def test_new_torchvision_families_offline_error_and_seeded_cache(offline_hub, name, weights, x):
    kwargs = {"weights": weights.name}
    with pytest.raises(OSError, match="offline") as info:
        create_backbone(name, pretrained=True, **kwargs)
    filename = os.path.basename(weights.url)
    assert f"pretrained='/path/to/{filename}'" in str(info.value)
    assert offline_hub == [weights.url]
    # A full torchvision classifier dict in the hub cache loads with no download.
    torch.manual_seed(6)
    seeded = getattr(torchvision.models, name)()
    with torch.no_grad():
        _randomise_running_stats(seeded)
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache, exist_ok=True)  # the failed attempt made it
    torch.save(seeded.state_dict(), os.path.join(cache, filename))
    model = create_backbone(
        name, pretrained=True, embedding_dim=None, pooling="spoc", normalize=False, **kwargs
    )
    assert offline_hub == [weights.url]  # no second attempt
    model.eval()
    seeded.eval()
    with torch.no_grad():
        # torchvision's own pooled features: everything before its classifier's last Linear.
        if name.startswith("regnet"):
            reference = seeded.avgpool(seeded.trunk_output(seeded.stem(x))).flatten(1)
        else:
            reference = seeded.avgpool(seeded.features(x)).flatten(1)
        assert torch.allclose(model(x), reference, atol=1e-5)


def test_safetensors_files_as_pretrained(tmp_path, x):
    from safetensors.torch import save_file

    torch.manual_seed(8)
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        _randomise_running_stats(reference)
    # A classifier dict as timm / Hugging Face publish it (model.safetensors): fc.* dropped.
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    model = create_backbone(
        "resnet18", pretrained=tmp_path / "model.safetensors", embedding_dim=None, normalize=False
    )
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    # A save_model file restores the whole EmbeddingModel (head and GeM p too).
    trained = create_backbone("resnet18", embedding_dim=8)
    with torch.no_grad():
        trained.pooling.p.fill_(2.25)
    rk_file = rk_backbones.save_model(trained, tmp_path / "trained.safetensors")
    again = create_backbone("resnet18", pretrained=rk_file, embedding_dim=8).eval()
    with torch.no_grad():
        assert torch.equal(again(x), trained.eval()(x))
    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 5)
    with pytest.raises(ValueError, match=r"bad\.safetensors as a safetensors file"):
        create_backbone("resnet18", pretrained=tmp_path / "bad.safetensors")
