from __future__ import annotations

import json

import numpy as np
import pytest

from retrieval_kit.index import build_index, load_index


def data(n=3000, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(
    ("factory", "ids", "metric"),
    [
        ("Flat", None, "ip"),
        ("Flat", "str", "l2"),
        ("IVF16,Flat", "int", "ip"),
        ("HNSW8", "str", "ip"),
    ],
)
def test_roundtrip_gives_identical_results(tmp_path, factory, ids, metric):
    x = data()
    id_list = {None: None, "int": list(range(5, 3005)), "str": [f"{i:x}z" for i in range(3000)]}[
        ids
    ]
    index = build_index(x, id_list, factory=factory, metric=metric, gpu=False)
    path = tmp_path / "sub" / "db.npz"
    index.save(path)
    loaded = load_index(path)
    assert (loaded.dim, loaded.metric, loaded.factory, len(loaded)) == (16, metric, factory, 3000)
    assert loaded.search_params == index.search_params
    assert loaded.info == {k: v for k, v in index.info.items() if not k.endswith("_seconds")}
    # The same index built again saves to the same bytes (run timings are not saved).
    again = build_index(x, id_list, factory=factory, metric=metric, gpu=False)
    again.info = {k: (v + 1 if k.endswith("_seconds") else v) for k, v in again.info.items()}
    again.save(tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == path.read_bytes()
    a, b = index.search(x[:50], 7), loaded.search(x[:50], 7)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert (a.ids == b.ids).all() and a.ids.dtype == b.ids.dtype
    if factory.startswith("IVF"):  # the direct map survives, so vectors come back by id
        np.testing.assert_allclose(loaded.reconstruct([5]), x[:1], atol=1e-6)
    # nothing left behind but the file itself
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["db.npz"]
    with np.load(path, allow_pickle=False) as z:  # no pickle inside
        assert json.loads(str(z["meta"]))["faiss_version"]


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        load_index(tmp_path / "nothing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an index at all")
    with pytest.raises(ValueError, match="junk.npz is not a readable"):
        load_index(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.arange(3))
    with pytest.raises(ValueError, match="missing parts"):
        load_index(other)


def test_truncated_and_corrupted_files_are_detected(tmp_path):
    path = tmp_path / "db.npz"
    build_index(data(), gpu=False).save(path)
    raw = path.read_bytes()
    for cut in (10, len(raw) // 2, len(raw) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.npz"):
            load_index(bad)
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside the index vectors
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.npz"):
        load_index(bad)


def rewrite(path, out, **changes):
    with np.load(path, allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    meta = json.loads(str(parts["meta"]))
    for key, value in changes.items():
        if key in meta:
            meta[key] = value
        else:
            parts[key] = value
    parts["meta"] = np.array(json.dumps(meta))
    np.savez(out, **parts)


def test_inconsistent_parts_are_refused(tmp_path):
    path = tmp_path / "db.npz"
    index = build_index(data(), [f"x{i}" for i in range(3000)], gpu=False)
    index.save(path)
    meta = index.metadata()
    for key, value, message in [
        ("dim", 32, "dim is 16 in the data but 32"),
        ("ntotal", 10, "ntotal is 3000 in the data but 10"),
        ("metric", "l2", "metric"),
        ("ids_kind", "int", "ids are str"),
        ("format_version", 99, "format version 99"),
        ("format", "something", "not a retrieval_kit index"),
        ("index_sha256", "0" * 64, "checksum"),
    ]:
        out = tmp_path / f"bad_{key}.npz"
        rewrite(path, out, **{key: value})
        with pytest.raises(ValueError, match=message):
            load_index(out)
    assert meta["library_version"]


def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "db.npz"
    old = build_index(data(seed=1), gpu=False)
    old.save(path)
    before = path.read_bytes()

    def boom(f, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        build_index(data(seed=2), gpu=False).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["db.npz"]
    monkeypatch.undo()
    assert (load_index(path).search(data(seed=1)[:3], 1).ids[:, 0] == [0, 1, 2]).all()
