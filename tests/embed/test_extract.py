"""extract_embeddings: input order, skip/raise on bad files, memmap output, multi-scale."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from retrieval_kit.data import (
    ImageListDataset,
    ImageLoadError,
    build_eval_transform,
    load_image,
)
from retrieval_kit.embed import extract_embeddings, meta_path


def _reference(model, paths, size=None, scales=(1.0,)):
    """One image at a time, by hand: the answer extraction must reproduce row for row."""
    t = build_eval_transform(model.data_config, size)
    rows = []
    with torch.no_grad():
        for p in paths:
            x = t(load_image(p)).unsqueeze(0)
            vs = [
                model(x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear"))
                for s in scales
            ]
            v = vs[0] if len(scales) == 1 else F.normalize(sum(vs) / len(vs), dim=1)
            rows.append(v[0].numpy())
    return np.stack(rows).astype(np.float32)


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


def test_multiscale_matches_cirtorch_average(model, image_paths):
    scales = (1.0, 0.5, 1.5)
    emb, _ = extract_embeddings(model, image_paths, scales=scales, batch_size=4)
    np.testing.assert_allclose(emb, _reference(model, image_paths, scales=scales), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    single, _ = extract_embeddings(model, image_paths)
    assert not np.allclose(emb, single, atol=1e-3)


def test_image_size_and_dataset_input(model, image_paths):
    emb, _ = extract_embeddings(model, image_paths, image_size=24)
    np.testing.assert_allclose(emb, _reference(model, image_paths, size=24), atol=1e-5)
    ds = ImageListDataset(
        image_paths, labels=list("abcdefghi"), transform=build_eval_transform(model.data_config)
    )
    emb_ds, _ = extract_embeddings(model, ds, batch_size=5, num_workers=2)
    np.testing.assert_allclose(emb_ds, _reference(model, image_paths), atol=1e-5)


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
