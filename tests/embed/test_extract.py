"""extract_embeddings: input order, skip/raise on bad files, memmap output, resize modes,
shape batching, multi-scale power mean, the settings object."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from retrieval_kit.backbones import EmbeddingModel, GeM
from retrieval_kit.data import (
    ImageListDataset,
    ImageLoadError,
    build_eval_transform,
    load_image,
)
from retrieval_kit.embed import ExtractionConfig, Extractor, extract_embeddings, meta_path


def _hand_shape(width, height, size):
    """(H, W) with the long side at ``size`` and the short side rounded: worked out by hand."""
    if width >= height:
        return round(height * size / width), size
    return size, round(width * size / height)


def _pixels(model, path, size=None, resize="long_side"):
    """The normalised (1, 3, H, W) tensor of one image, built step by step with torchvision."""
    cfg = model.data_config
    size = size or cfg["image_size"]
    img = load_image(path)
    shape = (size, size) if resize == "squash" else _hand_shape(*img.size, size)
    x = TF.resize(TF.to_image(img), list(shape), antialias=True)  # uint8, as the pipeline does
    x = TF.to_dtype(x, torch.float32, scale=True).as_subclass(torch.Tensor)
    mean, std = torch.tensor(cfg["mean"]), torch.tensor(cfg["std"])
    return ((x - mean[:, None, None]) / std[:, None, None]).unsqueeze(0)


def _reference(model, paths, size=None, resize="long_side"):
    """One image at a time, by hand: the answer extraction must reproduce row for row."""
    with torch.no_grad():
        rows = [model(_pixels(model, p, size, resize))[0].numpy() for p in paths]
    return np.stack(rows).astype(np.float32)


def _multiscale_reference(model, paths, scales, p):
    """cirtorch's formula in numpy: x = normalize((mean_s x_s ** p) ** (1 / p))."""
    rows = []
    with torch.no_grad():
        for path in paths:
            x = _pixels(model, path)
            per_scale = [
                model(F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))[0]
                .double()
                .numpy()
                for s in scales
            ]
            v = np.mean(np.stack(per_scale) ** p, axis=0) ** (1.0 / p)
            rows.append(v / np.linalg.norm(v))
    return np.stack(rows)


def _break(paths, tmp_path):
    """Rows 2 (missing), 5 (corrupt) and 7 (empty) become unreadable."""
    paths = list(paths)
    paths[2] = str(tmp_path / "missing.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths[5] = str(tmp_path / "corrupt.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    paths[7] = str(tmp_path / "empty.png")
    return paths


@pytest.mark.parametrize("num_workers, batch_size", [(0, 4), (2, 2)])
def test_one_row_per_input_in_order(model, image_paths, num_workers, batch_size):
    # 9 images in batches of 4 (or 2): the last, shorter batch must land in the last rows.
    emb, failed = extract_embeddings(
        model, image_paths, batch_size=batch_size, num_workers=num_workers
    )
    assert emb.dtype == np.float32 and emb.shape == (9, 6) and failed == []
    np.testing.assert_allclose(emb, _reference(model, image_paths), atol=1e-5)
    # reordering the inputs reorders the rows
    perm = [8, 0, 7, 1, 6, 2, 5, 3, 4]
    emb_perm, _ = extract_embeddings(model, [image_paths[i] for i in perm], batch_size=batch_size)
    np.testing.assert_allclose(emb_perm, emb[perm], atol=1e-6)


def test_skip_reports_every_bad_file_and_zero_rows(model, image_paths, tmp_path):
    paths = _break(image_paths, tmp_path)
    emb, failed = extract_embeddings(model, paths, batch_size=3, on_error="skip", num_workers=2)
    assert [(r, p) for r, p, _ in failed] == [(2, paths[2]), (5, paths[5]), (7, paths[7])]
    assert failed[0][2] == "no such file" and "empty file" in failed[2][2]
    assert not emb[[2, 5, 7]].any()
    good = [0, 1, 3, 4, 6, 8]
    np.testing.assert_allclose(emb[good], _reference(model, [paths[i] for i in good]), atol=1e-5)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_raise_names_first_unreadable_file(model, image_paths, tmp_path, num_workers):
    paths = _break(image_paths, tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        extract_embeddings(model, paths, batch_size=4, num_workers=num_workers)
    paths[2] = image_paths[2]
    with pytest.raises(ImageLoadError, match="corrupt.jpg"):
        extract_embeddings(model, paths, batch_size=4, num_workers=num_workers)


def test_memmap_output_equals_in_memory(model, image_paths, tmp_path):
    paths = _break(image_paths, tmp_path)
    ref, ref_failed = extract_embeddings(model, paths, batch_size=4, on_error="skip")
    out = tmp_path / "emb" / "all.npy"
    emb, failed = extract_embeddings(
        model, paths, batch_size=4, on_error="skip", out=out, chunk_size=3
    )
    assert isinstance(emb, np.memmap) and not emb.flags.writeable
    np.testing.assert_array_equal(emb, ref)
    np.testing.assert_array_equal(np.load(out), ref)
    assert failed == ref_failed
    meta = json.loads(meta_path(out).read_text())
    assert meta["dim"] == 6 and meta["num_rows_total"] == 9
    assert [tuple(f) for f in meta["failed"]] == failed
    assert sorted(os.listdir(out.parent)) == ["all.npy", "all.npy.json"]  # no temporary left
    with pytest.raises(FileExistsError, match="all.npy"):
        extract_embeddings(model, paths, out=out)
    with pytest.raises(ValueError, match=".npy"):
        extract_embeddings(model, paths, out=tmp_path / "emb.bin")


def test_failed_run_leaves_previous_output_intact(model, image_paths, tmp_path):
    out = tmp_path / "emb.npy"
    first, _ = extract_embeddings(model, image_paths, out=out)
    first = np.array(first)
    broken = _break(image_paths, tmp_path)
    with pytest.raises(FileNotFoundError):
        extract_embeddings(model, broken, out=out, overwrite=True, batch_size=2)
    np.testing.assert_array_equal(np.load(out), first)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["emb.npy", "emb.npy.json", "corrupt.jpg", "empty.png"]
        + [os.path.basename(p) for p in image_paths]
    )


def test_multiscale_is_cirtorch_power_mean_with_gem_p(model, image_paths):
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    gem_model = EmbeddingModel(
        trunk, embedding_dim=None, pooling=GeM(p=2.5), num_features=8, data_config=model.data_config
    )
    scales = (1.0, 2**-0.5, 2**0.5)
    assert Extractor(gem_model).power == 2.5  # no head: the output is the GeM-pooled features
    emb, _ = extract_embeddings(gem_model, image_paths, scales=scales, batch_size=4)
    ref = _multiscale_reference(gem_model, image_paths, scales, p=2.5)
    np.testing.assert_allclose(emb, ref, atol=1e-5)
    # the arithmetic mean (p=1) is a different answer: the test can tell them apart
    assert not np.allclose(ref, _multiscale_reference(gem_model, image_paths, scales, 1.0), 1e-4)
    single, _ = extract_embeddings(gem_model, image_paths)
    assert not np.allclose(emb, single, atol=1e-3)


def test_multiscale_without_gem_is_the_mean_and_power_is_configurable(model, image_paths):
    scales = (1.0, 0.5, 1.5)
    assert Extractor(model).power == 1.0
    emb, _ = extract_embeddings(model, image_paths, scales=scales, batch_size=4)
    np.testing.assert_allclose(emb, _multiscale_reference(model, image_paths, scales, 1.0), 5e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # TinyNet's output has negative entries: a power mean with p != 1 is refused by name
    with pytest.raises(ValueError, match="non-negative"):
        extract_embeddings(model, image_paths, scales=scales, scale_power=3.0)


def test_image_size_resize_modes_and_dataset_input(model, image_paths):
    emb, _ = extract_embeddings(model, image_paths, image_size=24, shape_step=1)
    np.testing.assert_allclose(emb, _reference(model, image_paths, size=24), atol=1e-5)
    squash, _ = extract_embeddings(model, image_paths, image_size=24, resize="squash")
    np.testing.assert_allclose(
        squash, _reference(model, image_paths, size=24, resize="squash"), atol=1e-5
    )
    assert not np.allclose(emb, squash, atol=1e-3)
    ds = ImageListDataset(
        image_paths, labels=list("abcdefghi"), transform=build_eval_transform(model.data_config)
    )
    emb_ds, _ = extract_embeddings(model, ds, batch_size=5, num_workers=2)
    np.testing.assert_allclose(emb_ds, _reference(model, image_paths, resize="squash"), atol=1e-5)
    # a Dataset whose items differ in shape is batched shape by shape too
    ds_long = ImageListDataset(
        image_paths, transform=build_eval_transform(model.data_config, resize="long_side")
    )
    emb_long, _ = extract_embeddings(model, ds_long, batch_size=3)
    np.testing.assert_allclose(emb_long, _reference(model, image_paths), atol=1e-5)


def test_square_images_long_side_equals_squash_exactly(model, image_paths):
    squares = [image_paths[2], image_paths[5]]  # 16x16 and 20x20
    for size in (16, 24, 37):
        long, _ = extract_embeddings(model, squares, image_size=size)
        squash, _ = extract_embeddings(model, squares, image_size=size, resize="squash")
        np.testing.assert_array_equal(long, squash)


class _Recorder(nn.Module):
    """Wraps a model and records the shape of every batch it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.shapes = inner, []
        self.data_config, self.embedding_dim = inner.data_config, inner.embedding_dim

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_are_full_and_one_shape_each(model, image_paths, num_workers):
    # 3 shapes interleaved, 7 images each: batches of 3 fill up across load batches
    paths = [image_paths[i] for i in (0, 1, 2) * 7]
    rec = _Recorder(model)
    emb, _ = extract_embeddings(rec, paths, batch_size=3, num_workers=num_workers, shape_step=1)
    sizes = {}
    for shape in rec.shapes:
        sizes.setdefault(shape[1:], []).append(shape[0])
    assert len(sizes) == 3
    assert all(s == [3, 3, 1] for s in sizes.values()), sizes
    np.testing.assert_allclose(emb, _reference(model, paths), atol=1e-5)


def test_default_size_is_the_measured_retrieval_size(model, image_paths, monkeypatch):
    from retrieval_kit.embed import retrieval_size

    assert Extractor(model).image_size == 16  # not measured: the classification size
    model.name = "tiny_measured"
    monkeypatch.setitem(retrieval_size.RETRIEVAL_IMAGE_SIZES, "tiny_measured", 24)
    assert Extractor(model).image_size == 24
    assert Extractor(model, ExtractionConfig(resize="squash")).image_size == 16
    emb, _ = extract_embeddings(model, image_paths[:3], shape_step=1)
    np.testing.assert_allclose(emb, _reference(model, image_paths[:3], size=24), atol=1e-5)
    model.data_config = dict(model.data_config, retrieval_size=20)
    assert Extractor(model).image_size == 20


def test_fixed_input_size_models_are_squashed(model, image_paths):
    model.data_config = dict(model.data_config, fixed_input_size=True)
    assert Extractor(model).resize == "squash"
    emb, _ = extract_embeddings(model, image_paths)
    np.testing.assert_allclose(emb, _reference(model, image_paths, resize="squash"), atol=1e-5)


def test_config_object_and_keyword_overrides(model, image_paths):
    cfg = ExtractionConfig(image_size=24, batch_size=2, shape_step=1)
    a, _ = extract_embeddings(model, image_paths, config=cfg)
    b, _ = extract_embeddings(model, image_paths, image_size=24, batch_size=2, shape_step=1)
    np.testing.assert_array_equal(a, b)
    c, _ = extract_embeddings(model, image_paths, config=cfg, resize="squash")
    np.testing.assert_allclose(
        c, _reference(model, image_paths, size=24, resize="squash"), atol=1e-5
    )
    with pytest.raises(TypeError, match="imagesize"):
        extract_embeddings(model, image_paths, imagesize=24)
    with pytest.raises(ValueError, match="resize"):
        ExtractionConfig(resize="crop")
    assert ExtractionConfig.from_dict({"scales": [1, 0.5]}).scales == (1.0, 0.5)


def test_plain_tensor_dataset_and_its_errors(model):
    class Tensors(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            if i == 3:
                raise OSError("disk on fire")
            return torch.full((3, 16, 16), float(i))

    emb, failed = extract_embeddings(model, Tensors(), on_error="skip", batch_size=2)
    assert failed == [(3, "<item 3>", "OSError: disk on fire")]
    with torch.no_grad():
        expected = model(torch.stack([torch.full((3, 16, 16), float(i)) for i in range(5)]))
    expected[3] = 0
    np.testing.assert_allclose(emb, expected.numpy(), atol=1e-5)
    with pytest.raises(OSError, match="disk on fire"):
        extract_embeddings(model, Tensors())


def test_all_failed_still_gives_shape(model, tmp_path):
    paths = [str(tmp_path / f"gone{i}.jpg") for i in range(3)]
    emb, failed = extract_embeddings(model, paths, on_error="skip")
    assert emb.shape == (3, 6) and not emb.any() and len(failed) == 3
    emb, _ = extract_embeddings(model, [], on_error="skip")
    assert emb.shape == (0, 6)


def test_model_mode_restored_and_progress(model, image_paths, capsys):
    model.train()
    extract_embeddings(model, image_paths[:2], progress=True)
    assert model.training
    assert "extract" in capsys.readouterr().err
    model.eval()
    extract_embeddings(model, image_paths[:2])
    assert not model.training
    assert capsys.readouterr().err == ""  # no bar, no prints unless asked


def test_argument_errors(model, image_paths):
    with pytest.raises(ValueError, match="on_error"):
        extract_embeddings(model, image_paths, on_error="ignore")
    with pytest.raises(ValueError, match="scales"):
        extract_embeddings(model, image_paths, scales=(1.0, 0))
    with pytest.raises(ValueError, match="batch_size"):
        extract_embeddings(model, image_paths, batch_size=0)
    with pytest.raises(TypeError, match="single path"):
        extract_embeddings(model, image_paths[0])
    with pytest.raises(ValueError, match="both rank and world_size"):
        extract_embeddings(model, image_paths, rank=0)
    with pytest.raises(ValueError, match="rank"):
        extract_embeddings(model, image_paths, rank=2, world_size=2)
    del model.data_config
    with pytest.raises(ValueError, match="data_config"):
        extract_embeddings(model, image_paths)


def test_bomb_limit_passes_through(model, image_paths):
    emb, failed = extract_embeddings(model, image_paths, max_pixels=300, on_error="skip")
    big = [i for i, p in enumerate(image_paths) if np.prod(load_image(p).size) > 300]
    assert [r for r, _, _ in failed] == big and big
    assert all("decompression bomb" in why for _, _, why in failed)


def test_real_backbone_if_available(image_paths):
    backbones = pytest.importorskip("retrieval_kit.backbones")
    if not hasattr(backbones, "create_backbone"):
        pytest.skip("rk.backbones.create_backbone not available yet")
    torch.manual_seed(0)
    model = backbones.create_backbone("resnet18", pretrained=False, embedding_dim=16)
    emb, failed = extract_embeddings(model, image_paths[:3], image_size=32, batch_size=2)
    assert emb.shape == (3, 16) and failed == [] and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
