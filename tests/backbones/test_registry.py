from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import retrieval_kit as rk
from retrieval_kit.backbones import EmbeddingModel, _registry, create_backbone, list_backbones

# Trunk channels as published (ResNet, ConvNeXt and RegNet papers; torchvision's model docs).
EXPECTED_CHANNELS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "efficientnet_lite0": 1280,
    "efficientnet_lite1": 1280,
    "efficientnet_lite2": 1280,
    "convnext_tiny": 768,
    "convnext_small": 768,
    "convnext_base": 1024,
    "convnext_large": 1536,
    "efficientnet_v2_s": 1280,
    "efficientnet_v2_m": 1280,
    "efficientnet_v2_l": 1280,
    "regnet_x_400mf": 400,
    "regnet_x_800mf": 672,
    "regnet_x_1_6gf": 912,
    "regnet_x_3_2gf": 1008,
    "regnet_x_8gf": 1920,
    "regnet_x_16gf": 2048,
    "regnet_x_32gf": 2520,
    "regnet_y_400mf": 440,
    "regnet_y_800mf": 784,
    "regnet_y_1_6gf": 888,
    "regnet_y_3_2gf": 1512,
    "regnet_y_8gf": 2016,
    "regnet_y_16gf": 3024,
    "regnet_y_32gf": 3712,
}
NEEDS_TIMM = {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
# Larger members of a family: checked on the meta device only (shapes, no compute), to keep the
# suite fast on small CI machines; the smallest of each family also runs forward and backward.
BIG = {
    "resnet152",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    *(f"regnet_{k}_{s}" for k in "xy" for s in ("800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
}
RUN_FOR_REAL = [name for name in list_backbones() if name not in BIG]


def test_registry_has_the_contracted_backbones():
    assert set(EXPECTED_CHANNELS) <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())
    assert list_backbones("resnet5*") == ["resnet50"]
    assert set(list_backbones()) > BIG


@pytest.fixture
def regnet_on_meta(monkeypatch):
    """torchvision's RegNet computes its stage widths with tensors: do that on the CPU."""
    from torchvision.models.regnet import BlockParams

    compute = BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return compute(cls, *args, **kwargs)

    monkeypatch.setattr(BlockParams, "from_init_params", classmethod(on_cpu))


@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_shapes_on_the_meta_device(name, regnet_on_meta):
    if name in NEEDS_TIMM:
        pytest.importorskip("timm")
    with torch.device("meta"):
        model = create_backbone(name, pretrained=False, embedding_dim=32)
        x = torch.empty(2, 3, 64, 96)
        features = model.forward_features(x)
        emb = model(x)
    assert model.num_features == EXPECTED_CHANNELS.get(name, model.num_features)
    assert features.shape[:2] == (2, model.num_features) and features.ndim == 4
    assert emb.shape == (2, 32)
    cfg = model.data_config
    assert {"mean", "std", "image_size", "resize_size", "interpolation"} <= set(cfg)
    assert cfg["resize_size"] >= cfg["image_size"] and cfg["interpolation"] in (
        "bilinear",
        "bicubic",
    )


@pytest.mark.parametrize("name", RUN_FOR_REAL)
def test_every_backbone_forward_backward(name):
    if name in NEEDS_TIMM:
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = create_backbone(name, pretrained=False, embedding_dim=32)
    assert isinstance(model, EmbeddingModel)
    assert model.embedding_dim == 32
    assert {"mean", "std", "image_size", "resize_size"} <= set(model.data_config)
    assert len(model.data_config["mean"]) == 3 and len(model.data_config["std"]) == 3
    model.train()
    x = torch.randn(2, 3, 64, 64)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[:2] == (2, model.num_features)
    emb = model(x)
    assert emb.shape == (2, 32)
    assert torch.isfinite(emb).all()
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # A non-constant loss: the sum of a unit vector's entries has a gradient.
    (emb * torch.randn(2, 32)).sum().backward()
    first = next(p for p in model.trunk.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all()
    assert first.grad.abs().sum() > 0, f"no gradient reached the first trunk layer of {name}"
    assert model.pooling.p.grad is not None  # GeM by default, learnable
    for param in model.parameters():
        if param.grad is not None:
            assert torch.isfinite(param.grad).all()


@pytest.mark.parametrize("name", RUN_FOR_REAL)
def test_every_backbone_without_head(name):
    if name in NEEDS_TIMM:
        pytest.importorskip("timm")
    model = create_backbone(name, embedding_dim=None, pooling="spoc", normalize=False).eval()
    if name in EXPECTED_CHANNELS:
        assert model.num_features == EXPECTED_CHANNELS[name]
    assert model.embedding_dim == model.num_features
    assert isinstance(model.head, nn.Identity)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        emb = model(x)
        pooled = model.forward_features(x).mean(dim=(2, 3))
    assert emb.shape == (1, model.num_features)
    assert torch.allclose(
        emb, pooled, atol=1e-5
    )  # no head, no normalisation: plain average pooling


def test_head_is_linear_then_batchnorm_and_normalize_switch():
    model = create_backbone("resnet18", embedding_dim=16)
    assert isinstance(model.head[0], nn.Linear) and model.head[0].in_features == 512
    assert isinstance(model.head[1], nn.BatchNorm1d) and model.head[1].num_features == 16
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        unit = model(x)
        model.normalize = False  # the trainer's switch for Euclidean training on raw embeddings
        raw = model(x)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    assert torch.allclose(unit, raw / raw.norm(dim=1, keepdim=True), atol=1e-6)


def test_unknown_name_lists_known_names():
    with pytest.raises(
        ValueError, match=r"unknown backbone 'resnet19'.*efficientnet_lite0.*resnet18.*timm/"
    ):
        create_backbone("resnet19")


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("resnt18", "'resnet18'"),
        ("convnxt_tiny", "'convnext_tiny'"),
        ("regnet_y_400_mf", "'regnet_y_400mf'"),
        ("timm/resnt18", "'timm/resnet18'"),
        ("timm/vit_tiny_patch16_22", "'timm/vit_tiny_patch16_224'"),
        ("vit_tiny_patch16_224", "'timm/vit_tiny_patch16_224'"),  # forgot the prefix
    ],
)
def test_misspelt_names_get_did_you_mean(name, suggested):
    if "vit" in name or name.startswith("timm/"):
        pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"did you mean [^)]*" + suggested):
        create_backbone(name)


def test_hopeless_names_get_no_suggestion():
    with pytest.raises(ValueError) as info:
        create_backbone("qqqqqqqq")
    assert "did you mean" not in str(info.value)


# torchvision's eval transforms for these weights, as its model docs list them.
@pytest.mark.parametrize(
    ("name", "kwargs", "resize", "crop", "interpolation", "mean"),
    [
        ("resnet18", {}, 256, 224, "bilinear", (0.485, 0.456, 0.406)),
        ("resnet50", {}, 232, 224, "bilinear", (0.485, 0.456, 0.406)),  # IMAGENET1K_V2
        ("resnet101", {"weights": "IMAGENET1K_V2"}, 232, 224, "bilinear", (0.485, 0.456, 0.406)),
        ("resnet152", {"weights": "IMAGENET1K_V1"}, 256, 224, "bilinear", (0.485, 0.456, 0.406)),
        ("convnext_tiny", {}, 236, 224, "bilinear", (0.485, 0.456, 0.406)),
        ("convnext_small", {}, 230, 224, "bilinear", (0.485, 0.456, 0.406)),
        ("efficientnet_v2_s", {}, 384, 384, "bilinear", (0.485, 0.456, 0.406)),
        ("efficientnet_v2_l", {}, 480, 480, "bicubic", (0.5, 0.5, 0.5)),
        ("regnet_y_400mf", {}, 232, 224, "bilinear", (0.485, 0.456, 0.406)),
        (
            "regnet_x_800mf",
            {"weights": "IMAGENET1K_V1"},
            256,
            224,
            "bilinear",
            (0.485, 0.456, 0.406),
        ),
        (
            "regnet_y_16gf",
            {"weights": "IMAGENET1K_SWAG_E2E_V1"},
            384,
            384,
            "bicubic",
            (0.485, 0.456, 0.406),
        ),
    ],
)
def test_torchvision_data_config_follows_the_weights(
    name, kwargs, resize, crop, interpolation, mean, regnet_on_meta
):
    with torch.device("meta"):
        cfg = create_backbone(name, **kwargs).data_config
    assert (cfg["resize_size"], cfg["image_size"]) == (resize, crop)
    assert cfg["interpolation"] == interpolation and cfg["mean"] == mean
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET9K'.*IMAGENET1K_V1"):
        create_backbone("resnet18", weights="IMAGENET9K")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="embedding_dim"):
        create_backbone("resnet18", embedding_dim=0)
    with pytest.raises(TypeError, match="pretrained"):
        create_backbone("resnet18", pretrained=3)
    with pytest.raises(ValueError, match="unknown pooling"):
        create_backbone("resnet18", pooling="median")


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def test_register_own_backbone(clean_registry):
    @rk.backbones.register_backbone("tiny_cnn")
    def tiny_cnn(pretrained: bool = False, width: int = 8) -> nn.Module:
        trunk = nn.Sequential(nn.Conv2d(3, width, 3, stride=2), nn.ReLU())
        trunk.num_features = width
        trunk.data_config = {
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "image_size": 32,
            "resize_size": 36,
        }
        return trunk

    assert "tiny_cnn" in list_backbones()
    model = create_backbone("tiny_cnn", embedding_dim=4, pooling="mac", width=6)
    assert model.num_features == 6 and model.embedding_dim == 4
    assert model.data_config["image_size"] == 32
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 4)
    with pytest.raises(ValueError, match="already registered"):
        rk.backbones.register_backbone("tiny_cnn")(tiny_cnn)
    with pytest.raises(ValueError, match="reserved"):
        rk.backbones.register_backbone("timm/foo")(tiny_cnn)


def test_register_bare_decorator_and_num_features_inferred(clean_registry):
    @rk.backbones.register_backbone
    def no_channels(pretrained: bool = False) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))

    model = create_backbone("no_channels", embedding_dim=None)
    assert model.num_features == 5  # found with one dummy forward
    bn = model.trunk[1]
    assert bn.num_batches_tracked.item() == 0  # the dummy forward ran in eval mode
    assert model.training


def test_trunk_must_give_feature_maps():
    model = EmbeddingModel(nn.Flatten(), num_features=12, embedding_dim=None)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.rand(2, 3, 2, 2))


def test_timm_prefix_builds_any_timm_model():
    timm = pytest.importorskip("timm")
    model = create_backbone("timm/resnet10t", embedding_dim=8)
    cfg = timm.create_model("resnet10t").pretrained_cfg
    assert model.data_config["mean"] == tuple(cfg["mean"])
    assert model.data_config["image_size"] == cfg["input_size"][-1]
    assert model.num_features == 512
    emb = model(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 8) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert rk.backbones.is_backbone("timm/resnet10t")
    with pytest.raises(ValueError, match="timm has no model 'resnet10zz'"):
        create_backbone("timm/resnet10zz")


def test_timm_prefix_without_timm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install retrieval_kit\[timm\]"):
        create_backbone("timm/resnet10t")
    with pytest.raises(ImportError, match=r"pip install retrieval_kit\[timm\]"):
        create_backbone("efficientnet_lite0")
    assert not rk.backbones.is_backbone("timm/resnet10t")
