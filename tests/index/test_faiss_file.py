"""Plain faiss files: Index.to_faiss, from_faiss (read or memory-mapped), load_index's hint."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from pathlib import Path

import faiss
import numpy as np
import pytest

from retrieval_kit.index import build_index, from_faiss, load_index


def unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


DB = unit(3000)
QUERIES = unit(40, seed=1)  # held out: not database rows


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(
    ("factory", "metric", "ids"),
    [
        ("Flat", "ip", "str"),
        ("Flat", "l2", "int"),
        ("IVF16,Flat", "ip", "str"),
        ("IVF16,PQ4np", "l2", "int"),
        ("HNSW8", "ip", "none"),
        ("PCA8,IVF16,Flat", "ip", "int"),
    ],
)
def test_to_faiss_then_from_faiss_searches_identically(tmp_path, factory, metric, ids, mmap):
    id_list = {"str": [f"{i:016x}" for i in range(3000)], "int": [7 * i for i in range(3000)]}
    index = build_index(DB, id_list.get(ids), factory=factory, metric=metric, gpu=False)
    path = tmp_path / "db.faiss"
    index.to_faiss(path)
    assert [p.name for p in tmp_path.iterdir()] == ["db.faiss"]  # no temporary file left

    raw = faiss.read_index(str(path))  # a plain faiss file: faiss opens it by itself
    assert raw.ntotal == 3000 and raw.metric_type == index.faiss_index.metric_type
    raw_d, raw_i = raw.search(QUERIES, 10)

    wrapped = from_faiss(path, index.ids, metric=metric, mmap=mmap)
    assert wrapped.mmapped is mmap and wrapped.info["source"] == str(path)
    assert (len(wrapped), wrapped.dim, wrapped.metric) == (3000, 16, metric)
    assert wrapped.search_params == index.search_params  # nprobe / efSearch travel in the file
    a, b = index.search(QUERIES, 10), wrapped.search(QUERIES, 10)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.ids.dtype == b.ids.dtype and (a.ids == b.ids).all()
    # and both agree with faiss itself once rows are mapped to ids
    np.testing.assert_array_equal(b.scores, raw_d if metric == "ip" else -raw_d)
    assert (b.ids == index.ids_of_rows(raw_i)).all()


def test_reconstruct_and_save_after_from_faiss(tmp_path):
    index = build_index(DB, [f"x{i}" for i in range(3000)], factory="IVF16,Flat", gpu=False)
    index.to_faiss(tmp_path / "db.faiss")
    for mmap in (False, True):
        wrapped = from_faiss(tmp_path / "db.faiss", index.ids, mmap=mmap)
        np.testing.assert_array_equal(wrapped.reconstruct(["x5", "x2999"]), DB[[5, 2999]])
        wrapped.save(tmp_path / f"copy{mmap}.npz")  # the mapped lists are written out in full
        again = load_index(tmp_path / f"copy{mmap}.npz")
        assert (again.search(QUERIES, 5).ids == index.search(QUERIES, 5).ids).all()
        wrapped.to_faiss(tmp_path / f"copy{mmap}.faiss")
        assert faiss.read_index(str(tmp_path / f"copy{mmap}.faiss")).ntotal == 3000


def test_from_faiss_wraps_an_in_memory_index():
    flat = faiss.IndexFlatL2(16)
    flat.add(DB[:100])
    wrapped = from_faiss(flat, [f"img{i}" for i in range(100)], metric="l2")
    d, i = flat.search(QUERIES, 3)
    result = wrapped.search(QUERIES, 3)
    np.testing.assert_array_equal(result.scores, -d)
    assert result.ids.tolist() == [[f"img{r}" for r in row] for row in i]
    assert wrapped.factory == "Flat" and wrapped.info["mmap"] is False
    with pytest.raises(ValueError, match="mmap=True needs a file path"):
        from_faiss(flat, None, metric="l2", mmap=True)
    with pytest.raises(TypeError, match="binary indexes are not supported"):
        from_faiss(faiss.IndexBinaryFlat(16), None)


def test_wrong_metric_and_ids_are_named(tmp_path):
    path = tmp_path / "ip.faiss"
    build_index(DB, gpu=False).to_faiss(path)
    with pytest.raises(ValueError, match=r"ip\.faiss was built with metric 'ip' but metric='l2'"):
        from_faiss(path, None, metric="l2")
    with pytest.raises(ValueError, match=r"2999 ids given but .*ip\.faiss holds 3000 vectors"):
        from_faiss(path, list(range(2999)))
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        from_faiss(path, ["a"] * 3000)
    with pytest.raises(ValueError, match="metric must be"):
        from_faiss(path, None, metric="cosine")
    with pytest.raises(ValueError, match="cannot move to a GPU"):
        from_faiss(path, None, mmap=True, gpu=True)


def test_indexes_holding_their_own_labels_are_refused(tmp_path):
    idmap = faiss.IndexIDMap(faiss.IndexFlatIP(16))
    idmap.add_with_ids(DB[:10], np.arange(100, 110))
    faiss.write_index(idmap, str(tmp_path / "idmap.faiss"))
    with pytest.raises(ValueError, match=r"idmap\.faiss is an IndexIDMap"):
        from_faiss(tmp_path / "idmap.faiss", None)

    ivf = faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.train(DB)
    ivf.add_with_ids(DB[:10], np.arange(1000, 1010))  # labels that are not row numbers
    faiss.write_index(ivf, str(tmp_path / "labels.faiss"))
    with pytest.raises(ValueError, match=r"labels\.faiss: .*not row numbers"):
        from_faiss(tmp_path / "labels.faiss", None)


@pytest.mark.parametrize("mmap", [False, True])
def test_garbage_truncated_and_foreign_files_fail_cleanly(tmp_path, mmap):
    with pytest.raises(FileNotFoundError, match="nothing.faiss"):
        from_faiss(tmp_path / "nothing.faiss", None, mmap=mmap)
    junk = tmp_path / "junk.faiss"
    junk.write_bytes(b"IxFI but then nothing that faiss wrote")
    with pytest.raises(ValueError, match=r"junk\.faiss is not a faiss index file"):
        from_faiss(junk, None, mmap=mmap)
    saved = tmp_path / "saved.npz"
    index = build_index(DB, factory="IVF16,Flat", gpu=False)
    index.save(saved)
    with pytest.raises(ValueError, match=r"saved\.npz is not a plain faiss.*load_index"):
        from_faiss(saved, None, mmap=mmap)

    good = tmp_path / "good.faiss"
    index.to_faiss(good)
    raw = good.read_bytes()
    for cut in (10, 40, 100, len(raw) // 2, len(raw) - 100):
        bad = tmp_path / f"cut{cut}.faiss"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.faiss"):
            from_faiss(bad, None, mmap=mmap)


def test_load_index_on_a_plain_faiss_file_says_what_to_call(tmp_path):
    path = tmp_path / "plain.faiss"
    build_index(DB, factory="HNSW8", gpu=False).to_faiss(path)
    with pytest.raises(ValueError, match=r"plain\.faiss is a plain faiss index file.*from_faiss"):
        load_index(path)


def test_mapped_index_is_read_only_and_unmappable_types_warn(tmp_path, caplog):
    path = tmp_path / "db.faiss"
    build_index(DB, factory="IVF16,Flat", gpu=False).to_faiss(path)
    mapped = from_faiss(path, None, mmap=True)
    before = mapped.search(QUERIES, 5)
    with pytest.raises(RuntimeError, match=r"memory-mapped from .*db\.faiss.*mmap=False"):
        mapped.add(unit(3, seed=9))
    assert len(mapped) == 3000 and len(mapped.ids) == 3000
    after = mapped.search(QUERIES, 5)
    assert (before.ids == after.ids).all()

    fast = tmp_path / "fastscan.faiss"
    build_index(DB, factory="IVF16,PQ4x4fs", gpu=False, target_recall=None).to_faiss(fast)
    with caplog.at_level(logging.WARNING, logger="retrieval_kit.index.faiss_file"):
        fallback = from_faiss(fast, None, mmap=True)
    assert "cannot memory-map a IndexIVFPQFastScan; reading" in caplog.text
    assert not fallback.mmapped and fallback.info["mmap"] is False
    if Path("/proc/self/maps").exists():
        assert str(fast) not in Path("/proc/self/maps").read_text()  # read, not mapped
    fallback.add(unit(3, seed=9))  # an ordinary in-memory index
    assert len(fallback) == 3003
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="retrieval_kit.index.faiss_file"):
        from_faiss(path, None, mmap=True)
    assert caplog.text == ""


def test_failed_to_faiss_leaves_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "db.faiss"
    build_index(DB[:10], gpu=False).to_faiss(path)
    before = path.read_bytes()

    def boom(index, writer):
        writer.write(b"partial")  # not how faiss calls it, but any partial write will do
        raise RuntimeError("disk full")

    class Writer:
        def __init__(self, callback):
            self.write = callback

    monkeypatch.setattr(faiss, "PyCallbackIOWriter", Writer)
    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_index(DB, gpu=False).to_faiss(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["db.faiss"]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "IVF16,PQ4np", "HNSW8"])
def test_mmap_maps_the_file_instead_of_reading_it(tmp_path, factory):
    path = tmp_path / f"{factory.replace(',', '_')}.faiss"
    build_index(DB, factory=factory, gpu=False, target_recall=None).to_faiss(path)

    def mapped():
        return str(path) in Path("/proc/self/maps").read_text()

    read = from_faiss(path, None)
    assert not mapped()
    index = from_faiss(path, None, mmap=True)
    assert mapped()
    assert (index.search(QUERIES, 3).ids == read.search(QUERIES, 3).ids).all()
    del index
    gc.collect()
    assert not mapped()  # the mapping goes with the index


def test_lists_stored_in_another_file_are_never_saved_nor_loaded(tmp_path):
    """faiss' IO_FLAG_MMAP makes IVF lists references to a file; saving would drop the vectors."""
    path = tmp_path / "db.faiss"
    build_index(DB, factory="IVF16,Flat", gpu=False).to_faiss(path)
    on_disk = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
    wrapped = from_faiss(on_disk, None)
    assert (wrapped.search(QUERIES, 3).ids == from_faiss(path, None).search(QUERIES, 3).ids).all()
    assert wrapped.mmapped  # read-only: faiss would refuse to add, so Index.add does first
    with pytest.raises(RuntimeError, match="memory-mapped from"):
        wrapped.add(DB[:2])
    for write in (wrapped.save, wrapped.to_faiss):
        with pytest.raises(RuntimeError, match="lists live in .*mmap=False"):
            write(tmp_path / "copy")

    # a crafted .npz whose index part refers to some other file, checksums and all
    good = tmp_path / "good.npz"
    build_index(DB, factory="IVF16,Flat", gpu=False).save(good)
    blob = faiss.serialize_index(on_disk)
    with np.load(good, allow_pickle=False) as z:
        parts = {k: z[k] for k in z.files}
    meta = json.loads(str(parts["meta"]))
    meta["index_sha256"] = hashlib.sha256(blob.data).hexdigest()
    parts["index"], parts["meta"] = blob, np.array(json.dumps(meta))
    np.savez(tmp_path / "crafted.npz", **parts)
    with pytest.raises(ValueError, match=r"crafted\.npz: "):
        load_index(tmp_path / "crafted.npz")  # faiss cannot open '' (no file named)
    # now pointing at a real file: opened read-only by faiss, then refused
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"\0" * 1_000_000)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(on_disk).invlists)
    lists.filename = str(victim)
    blob = faiss.serialize_index(on_disk)
    meta["index_sha256"] = hashlib.sha256(blob.data).hexdigest()
    parts["index"], parts["meta"] = blob, np.array(json.dumps(meta))
    np.savez(tmp_path / "crafted2.npz", **parts)
    with pytest.raises(ValueError, match=r"crafted2\.npz: the index refers to inverted lists"):
        load_index(tmp_path / "crafted2.npz")
    assert victim.read_bytes() == b"\0" * 1_000_000


def test_faiss_on_disk_ivf_opens_mapped_and_read_only(tmp_path):
    """An IVF index whose lists faiss keeps in a separate file (OnDiskInvertedLists)."""
    reference = build_index(DB, factory="IVF16,Flat", gpu=False)
    ivf = faiss.index_factory(16, "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    ivf.quantizer.add(faiss.extract_index_ivf(reference.faiss_index).quantizer.reconstruct_n())
    ivf.is_trained = True
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(tmp_path / "lists.ivfdata"))
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns the lists now
    ivf.add(DB)
    ivf.nprobe = reference.search_params["nprobe"]
    faiss.write_index(ivf, str(tmp_path / "db.faiss"))
    del ivf

    index = from_faiss(tmp_path / "db.faiss", reference.ids)
    assert index.mmapped and index.info["lists_file"] == str(tmp_path / "lists.ivfdata")
    a, b = index.search(QUERIES, 10), reference.search(QUERIES, 10)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert (a.ids == b.ids).all()
    with pytest.raises(RuntimeError, match=r"memory-mapped from .*lists\.ivfdata"):
        index.add(DB[:2])
