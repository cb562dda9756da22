"""ImageListDataset, collate_images and the transforms built from a data_config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from retrieval_kit.data import (
    FailedItem,
    ImageListDataset,
    ImageLoadError,
    build_eval_transform,
    build_train_transform,
    collate_images,
)

CFG = {"mean": (0.5, 0.25, 0.0), "std": (0.5, 0.25, 1.0), "image_size": 8, "resize_size": 10}


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (12 + i, 9), (40 * i, 100, 7)).save(p)
        paths.append(str(p))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    paths.insert(2, str(bad))
    return paths


def test_default_item_is_unit_float_tensor_and_index(files):
    ds = ImageListDataset(files[:2])
    image, target = ds[1]
    assert image.dtype == torch.float32 and image.shape == (3, 9, 13)
    assert target == 1
    assert torch.allclose(image[:, 0, 0], torch.tensor([40, 100, 7]) / 255)


def test_labels_and_row(files):
    ds = ImageListDataset(files[:2], labels=["x", "y"], return_row=True)
    assert ds[1][1:] == ("y", 1)
    with pytest.raises(ValueError, match="labels has 1 entries but paths has 2"):
        ImageListDataset(files[:2], labels=[0])


def test_raise_mode_names_file(files):
    ds = ImageListDataset(files)
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        ds[2]


def test_skip_mode_marker_and_collate(files):
    ds = ImageListDataset(
        files,
        labels=[10, 11, 12, 13, 14],
        on_error="skip",
        transform=build_eval_transform(CFG),
        return_row=True,
    )
    marker = ds[2]
    assert isinstance(marker, FailedItem) and marker.row == 2 and marker.path == files[2]
    batch = next(iter(DataLoader(ds, batch_size=5, collate_fn=collate_images)))
    assert batch.images.shape == (4, 3, 8, 8)
    assert batch.rows.tolist() == [0, 1, 3, 4]
    assert batch.targets.tolist() == [10, 11, 13, 14]
    assert batch.failures == [(2, files[2], "not an image (format not recognised)")]


def test_transform_bug_is_not_swallowed_by_skip(files):
    def broken(img):
        raise RuntimeError("bug in my transform")

    with pytest.raises(RuntimeError, match="bug in my transform"):
        ImageListDataset(files, transform=broken, on_error="skip")[0]


def test_bad_arguments(files):
    with pytest.raises(ValueError, match="on_error"):
        ImageListDataset(files, on_error="ignore")
    with pytest.raises(TypeError, match="single path"):
        ImageListDataset(files[0])


def test_eval_transform_squashes_and_normalises():
    t = build_eval_transform(CFG)
    out = t(Image.new("RGB", (30, 11), (255, 64, 0)))
    assert out.shape == (3, 8, 8)
    expected = (torch.tensor([255, 64, 0]) / 255 - torch.tensor(CFG["mean"])) / torch.tensor(
        CFG["std"]
    )
    assert torch.allclose(out[:, 4, 4], expected, atol=1e-6)
    assert build_eval_transform(CFG, image_size=5)(Image.new("RGB", (9, 9))).shape == (3, 5, 5)


def test_train_transform_is_a_crop_of_the_squashed_image():
    # The train output must be an 8x8 window (maybe flipped) of the 10x10 squashed image.
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (13, 17, 3), dtype=np.uint8))
    squashed = build_eval_transform(CFG, image_size=10)(img)
    train = build_train_transform(CFG)
    torch.manual_seed(0)
    for _ in range(5):
        out = train(img)
        assert out.shape == (3, 8, 8)
        windows = [
            w
            for y in range(3)
            for x in range(3)
            for w in (squashed[:, y : y + 8, x : x + 8], squashed[:, y : y + 8, x : x + 8].flip(-1))
        ]
        assert any(torch.allclose(out, w, atol=1e-5) for w in windows)


def test_train_transform_options():
    img = Image.new("RGB", (40, 30))
    assert build_train_transform(CFG, random_resized_crop=True)(img).shape == (3, 8, 8)
    # a larger crop scales the squash size with it: 16 * 10 / 8 = 20
    t = build_train_transform(CFG, image_size=16)
    assert t(img).shape == (3, 16, 16)
    assert any(getattr(s, "size", None) == [20, 20] for s in t.transforms)


def test_config_errors():
    with pytest.raises(KeyError, match="resize_size"):
        build_eval_transform({"mean": (0,) * 3, "std": (1,) * 3, "image_size": 8})
    with pytest.raises(ValueError, match="image_size"):
        build_eval_transform(CFG, image_size=0)
    with pytest.raises(ValueError, match="std"):
        build_eval_transform({**CFG, "std": (1, 0, 1)})
    with pytest.raises(TypeError, match="mapping"):
        build_eval_transform(42)


def test_config_from_model_attribute():
    class M:
        data_config = CFG

    assert build_eval_transform(M())(Image.new("RGB", (3, 3))).shape == (3, 8, 8)


@pytest.fixture
def noise_files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        p = tmp_path / f"noise{i}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths + paths[:1]  # rows 0 and 3: the same file


def _seeded(files, seed=5):
    t = build_train_transform(CFG, random_resized_crop=True, scale=(0.1, 0.5))
    return ImageListDataset(files, transform=t, seed=seed)


def test_seeded_augmentation_depends_on_seed_epoch_and_row_only(noise_files):
    ds = _seeded(noise_files)
    ds.set_epoch(2)
    torch.manual_seed(0)
    first = [ds[i][0] for i in range(4)]
    torch.manual_seed(123)  # another global RNG state, another order, loader workers
    again = {i: ds[i][0] for i in (3, 1, 0, 2)}
    assert all(torch.equal(first[i], again[i]) for i in range(4))
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    assert torch.equal(torch.cat([x for x, _ in loader]), torch.stack(first))
    assert torch.equal(_seeded(noise_files)[1][0], _seeded(noise_files)[1][0])  # epoch 0
    # Another row of the same file, another epoch or seed: another crop.
    assert not torch.equal(first[0], first[3])
    ds.set_epoch(3)
    assert not torch.equal(ds[0][0], first[0])
    other = _seeded(noise_files, seed=6)
    other.set_epoch(2)
    assert not torch.equal(other[0][0], first[0])


def test_seeded_augmentation_leaves_the_global_rng(noise_files):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _seeded(noise_files)[0]
    assert torch.equal(torch.rand(3), expected)
    # Unseeded, the transform draws from the global RNG (the default).
    unseeded = _seeded(noise_files, seed=None)
    torch.manual_seed(0)
    unseeded[0]
    assert not torch.equal(torch.rand(3), expected)


def test_seed_and_epoch_errors(noise_files):
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            _seeded(noise_files, seed=bad)
    with pytest.raises(ValueError, match="epoch must be a non-negative int, got -1"):
        _seeded(noise_files).set_epoch(-1)
