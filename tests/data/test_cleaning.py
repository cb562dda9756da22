"""Places365 outdoor rule and minimum-images rule, with a random model saved in the CSAIL format."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from retrieval_kit.data import cleaning

torch.set_num_threads(2)


def _save_csail(path, model):
    # The official resnet50_places365.pth.tar layout: DataParallel-prefixed keys inside a dict.
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state, "best_prec1": 54.7}, path)


def _io_file(path, outdoor_indices):
    lines = [
        f"/x/category_{i} {2 if i in outdoor_indices else 1}"
        for i in range(cleaning.PLACES365_NUM_CLASSES)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        p = folder / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=365).eval()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_places365.pth.tar"
    _save_csail(path, model)
    return model, path


def _reference_top(model, paths, k, size=32, resize=36):
    # Plain per-image loop: squash, centre crop, ImageNet normalisation, top-k of the logits.
    from torchvision.transforms import functional as F

    out = []
    for p in paths:
        im = Image.open(p).convert("RGB").resize((resize, resize), Image.BILINEAR)
        t = F.center_crop(F.to_tensor(im), [size, size])
        t = F.normalize(t, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        with torch.no_grad():
            out.append(model(t[None])[0].topk(k).indices.tolist())
    return out


def test_load_model_matches_saved_weights(random_model):
    model, path = random_model
    loaded = cleaning.load_places365_model(path, arch="resnet18")
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert not loaded.training


def test_load_model_errors(tmp_path, random_model):
    _, path = random_model
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        cleaning.load_places365_model(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="resnet34"):  # wrong architecture named
        cleaning.load_places365_model(path, arch="resnet34")
    # A pickle that would run code is refused by weights_only loading.
    evil = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, evil)
    with pytest.raises(ValueError, match="weights-only"):
        cleaning.load_places365_model(evil, arch="resnet18")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_read_io(tmp_path):
    path = _io_file(tmp_path / "IO_places365.txt", {0, 5, 364})
    outdoor = cleaning.read_places365_io(path)
    assert outdoor.shape == (365,) and set(np.flatnonzero(outdoor)) == {0, 5, 364}
    bad = tmp_path / "bad.txt"
    bad.write_text("/a/airfield 2\n/a/alcove 3\n")
    with pytest.raises(ValueError, match="line 2"):
        cleaning.read_places365_io(bad)
    short = tmp_path / "short.txt"
    short.write_text("/a/airfield 2\n")
    with pytest.raises(ValueError, match="expected 365"):
        cleaning.read_places365_io(short)


def test_top_categories_match_reference_and_cache(tmp_path, images, random_model):
    model, path = random_model
    loaded = cleaning.load_places365_model(path, arch="resnet18")
    ids = [f"id{i}" for i in range(len(images))]
    cache = tmp_path / "cache.csv"
    kwargs = dict(ids=ids, top_k=5, batch_size=3, image_size=32, resize_size=36, cache_path=cache)
    top = cleaning.places365_top_categories(loaded, images, **kwargs)
    assert top == _reference_top(model, images, 5)

    # A rerun reads everything from the cache: the model is never called.
    calls = []
    loaded.register_forward_hook(lambda *a: calls.append(1))
    assert cleaning.places365_top_categories(loaded, images, **kwargs) == top
    assert calls == []

    # Interrupted run: a torn last line and a missing tail are recomputed, the rest is reused.
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:3]) + lines[3][:5])
    assert cleaning.places365_top_categories(loaded, images, **kwargs) == top
    assert len(calls) == 2  # 5 images left -> batches of 3 + 2
    assert len(cache.read_text().splitlines()) == 1 + len(images)

    # A cache made with another model is refused, not silently mixed.
    other = torchvision.models.resnet18(num_classes=365).eval()
    with pytest.raises(ValueError, match="another model"):
        cleaning.places365_top_categories(other, images, **kwargs)


def test_outdoor_filter_votes(tmp_path, images, random_model):
    # Known answer: zero weights + a bias make every image's top-5 = categories 10..14.
    _, _ = random_model
    model = torchvision.models.resnet18(num_classes=365).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[10:15] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    top = cleaning.places365_top_categories(model, images[:2], top_k=5, image_size=32)
    assert top == [[10, 11, 12, 13, 14]] * 2
    outdoor = np.zeros(365, bool)
    outdoor[[10, 12]] = True  # 2 votes: removed at min_votes=3, kept at 2
    keep, removed = cleaning.outdoor_filter(["a", "b"], top, outdoor, min_votes=3, labels=[1, 2])
    assert keep.tolist() == [False, False]
    assert removed[0] == {
        "id": "a",
        "label": 1,
        "reason": "indoor: 2 of top-5 Places365 categories outdoor, 3 needed",
    }
    keep, removed = cleaning.outdoor_filter(["a", "b"], top, outdoor, min_votes=2)
    assert keep.tolist() == [True, True] and removed == []
    # Hand-made votes, including an unreadable image (None).
    cats = [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], None]
    outdoor = np.zeros(365, bool)
    outdoor[[0, 1, 2, 5]] = True
    assert cleaning.outdoor_votes(cats, outdoor).tolist() == [3, 2, -1]
    keep, removed = cleaning.outdoor_filter(["x", "y", "z"], cats, outdoor, min_votes=3)
    assert keep.tolist() == [True, False, False]
    assert "unreadable" in removed[1]["reason"]


def test_unreadable_image(tmp_path, images, random_model):
    _, path = random_model
    model = cleaning.load_places365_model(path, arch="resnet18")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    paths = [images[0], broken]
    with pytest.raises(ValueError, match="broken.jpg"):
        cleaning.places365_top_categories(model, paths, image_size=32)
    top = cleaning.places365_top_categories(model, paths, image_size=32, on_error="skip")
    assert top[0] is not None and top[1] is None


def test_min_images_filter_and_csv(tmp_path):
    ids = ["a", "b", "c", "d", "e", "f"]
    labels = [7, 7, 7, 8, 8, 9]
    keep, removed = cleaning.min_images_filter(ids, labels, min_images=2)
    assert keep.tolist() == [True, True, True, True, True, False]
    assert removed == [{"id": "f", "label": 9, "reason": "class 9 has 1 images, fewer than 2"}]
    keep, removed = cleaning.min_images_filter(ids, labels, min_images=3)
    assert [r["id"] for r in removed] == ["d", "e", "f"]
    out = tmp_path / "removed.csv"
    cleaning.write_removed_csv(out, removed)
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == ["d", "e", "f"]
    assert rows[0]["reason"] == "class 8 has 2 images, fewer than 3"
