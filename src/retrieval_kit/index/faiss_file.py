"""``from_faiss``: wrap a plain faiss index (a file or an in-memory ``faiss.Index``) with ids."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval_kit._arrays import normalize_ids
from retrieval_kit._checks import check_metric
from retrieval_kit.index._faiss_io import (
    METRICS,
    external_lists,
    file_kind,
    ivf_of,
    maybe_to_gpu,
    mmap_flags,
    mmapped_part,
)
from retrieval_kit.index.index import Index

__all__ = ["from_faiss"]

logger = logging.getLogger(__name__)

_METRIC_NAMES = {v: k for k, v in METRICS.items()}


def from_faiss(
    path: str | os.PathLike | faiss.Index,
    ids: Sequence[Any] | np.ndarray | None,
    *,
    metric: str = "ip",
    mmap: bool = False,
    gpu: bool | str = False,
) -> Index:
    """Wrap a plain faiss index (e.g. written by ``Index.to_faiss`` or ``faiss.write_index``).

    Searches give the same results as the faiss index itself, with ``ids[row]`` in place of row
    numbers; ``nprobe`` / ``efSearch`` stored in the index are kept.

    Args:
        path: a faiss index file, or an in-memory CPU ``faiss.Index`` (wrapped, not copied).
        ids: one int or str per stored vector, in row order (``None``: the row numbers).
        metric: ``"ip"`` or ``"l2"``; must be the metric the faiss index was built with.
        mmap: map the file instead of reading it, so a multi-GB index opens without taking its
            size in memory (pages are read on demand and can be dropped by the OS). faiss maps
            IVF lists, Flat/PQ/SQ codes and HNSW's vectors; other types (fast-scan IVF ...) are
            read as usual (``mmapped`` is then False), with a warning. A mapped index is
            read-only (``add`` refuses).
        gpu: ``False`` (default), ``True`` or ``"auto"``: move the index to a GPU.

    Returns:
        An ``Index`` whose ``factory`` describes the faiss index and ``info["source"]`` names
        the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a faiss index file (or one written by ``Index.save``), unreadable,
            ids of the wrong length or repeated, a metric other than the index's, or an index
            that holds its own ids (``IndexIDMap``, IVF lists filled with ``add_with_ids``).

    Example:
        >>> index.to_faiss("db.faiss")  # doctest: +SKIP
        >>> same = rk.index.from_faiss("db.faiss", index.ids, mmap=True)  # doctest: +SKIP
    """
    check_metric(metric)
    if mmap and gpu is not False:
        raise ValueError("mmap=True keeps the index on disk; it cannot move to a GPU (gpu=False)")
    index, where, mmap = _open(path, mmap)
    _check(index, where, metric)
    info: dict[str, Any] = {"source": where}
    ntotal = int(index.ntotal)
    if ids is not None and len(ids) != ntotal:
        raise ValueError(f"{len(ids)} ids given but {where} holds {ntotal} vectors")
    id_arr = normalize_ids(ids, ntotal)
    _make_direct_map(index, where)
    mapped_from = path if mmap else None
    if external_lists(index):  # faiss' on-disk IVF lists: mapped (read-only) from their own file
        lists = faiss.downcast_InvertedLists(ivf_of(index).invlists)
        mapped_from = info["lists_file"] = lists.filename or where
    params = _stored_search_params(index)
    factory = _describe(index)
    index, res = maybe_to_gpu(index, gpu)
    if res is not None:  # copied to the GPU: nothing stays mapped
        mapped_from = None
    return Index(
        index,
        id_arr,
        metric=metric,
        factory=factory,
        search_params=params or None,
        info=info | {"mmap": mapped_from is not None},
        gpu_resources=res,
        mmap_path=mapped_from,
    )


def _open(path: str | os.PathLike | faiss.Index, mmap: bool) -> tuple[faiss.Index, str, bool]:
    """(index, how to name it in messages, whether it is mapped)."""
    if isinstance(path, faiss.Index):
        if mmap:
            raise ValueError("mmap=True needs a file path, not an in-memory faiss index")
        return path, "the faiss index", False
    if not isinstance(path, (str, os.PathLike)):
        binary = isinstance(path, faiss.IndexBinary)
        raise TypeError(
            f"path must be a file path or a faiss.Index, got {type(path).__name__}"
            + ("; binary indexes are not supported" if binary else "")
        )
    index = _read(Path(path), mmap)
    if mmap and mmapped_part(index) is None:
        logger.warning(
            "faiss cannot memory-map a %s; reading %s into memory instead",
            type(index).__name__,
            path,
        )
        del index  # drop the mapping before reading the file again
        index, mmap = _read(Path(path), False), False
    return index, str(path), mmap


def _read(path: Path, mmap: bool) -> faiss.Index:
    if not path.is_file():
        raise FileNotFoundError(f"no faiss index file at {path}")
    kind = file_kind(path)
    if kind == "zip":
        raise ValueError(
            f"{path} is not a plain faiss index file; if Index.save wrote it, open it with "
            "rk.index.load_index(path)"
        )
    if kind != "faiss":
        raise ValueError(f"{path} is not a faiss index file (no faiss header)")
    try:
        # READ_ONLY: lists kept in a separate file (faiss' OnDiskInvertedLists) are opened "r"
        index = faiss.read_index(str(path), mmap_flags() if mmap else faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as e:  # truncated, corrupted or an unknown index type
        first = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
        raise ValueError(
            f"{path}: faiss cannot read the index (corrupt or truncated?): {first}"
        ) from e
    return index  # already the concrete type, and owning: a downcast_index copy would not own it


def _check(index: faiss.Index, where: str, metric: str) -> None:
    if index.metric_type not in _METRIC_NAMES:
        raise ValueError(
            f"{where} uses faiss metric type {index.metric_type}; only inner product ('ip') and "
            "L2 ('l2') are supported"
        )
    stored = _METRIC_NAMES[index.metric_type]
    if stored != metric:
        raise ValueError(
            f"{where} was built with metric {stored!r} but metric={metric!r} was given; "
            f"pass metric={stored!r}"
        )
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        raise ValueError(
            f"{where} is an IndexIDMap, which returns its own int64 labels; wrap its inner "
            "index (faiss.downcast_index(idx.index)) with ids=faiss.vector_to_array(idx.id_map)"
        )


def _make_direct_map(index: faiss.Index, where: str) -> None:
    """Give IVF indexes the row -> list position map ``reconstruct`` needs, as build_index does.

    faiss builds it only when every stored label is a row number, which is also what makes
    ``ids[row]`` right: lists filled with ``add_with_ids`` are refused here.
    """
    ivf = ivf_of(index)
    if ivf is None or ivf.direct_map.type == faiss.DirectMap.Array:
        return
    if ivf.direct_map.type != faiss.DirectMap.NoMap:
        raise ValueError(f"{where} holds its own ids (hash-table direct map); not supported")
    try:
        ivf.make_direct_map()
    except RuntimeError as e:
        raise ValueError(
            f"{where}: its inverted lists hold labels that are not row numbers 0..{ivf.ntotal - 1} "
            "(added with add_with_ids?); from_faiss needs row numbers to map rows to ids"
        ) from e


def _stored_search_params(index: faiss.Index) -> dict[str, Any]:
    ivf = ivf_of(index)
    if ivf is not None:
        return {"nprobe": int(ivf.nprobe)}
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, faiss.IndexHNSW):
        return {"efSearch": int(inner.hnsw.efSearch)}
    return {}


def _describe(index: Any) -> str:
    """A factory string for ``index`` when faiss can derive one, else its class name."""
    try:
        from faiss.contrib.factory_tools import reverse_index_factory

        return str(reverse_index_factory(index))
    except Exception:  # NotImplementedError for some types; missing in old faiss
        return type(faiss.downcast_index(index)).__name__
