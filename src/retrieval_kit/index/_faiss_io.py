"""faiss helpers of the index subpackage (a leaf: it imports no other module of the package but io).

Plain faiss index files (recognising them, writing them atomically, opening them memory-mapped),
the metric names, the IVF part of an index and the optional move to GPU. faiss stores no checksum
and no ids; these helpers only add what the library needs around ``faiss.write_index`` /
``faiss.read_index``.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import Any

import faiss

from retrieval_kit.io import atomic_write

__all__ = [
    "METRICS",
    "external_lists",
    "file_kind",
    "ivf_of",
    "maybe_to_gpu",
    "mmap_flags",
    "mmapped_part",
    "write_faiss_atomic",
]

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

_ZIP_MAGIC = b"PK\x03\x04"
# Every float index file faiss writes starts with a four-character code ("IxFI" IndexFlatIP,
# "IwFl" IndexIVFFlat, "IHNf" IndexHNSWFlat, "IxPT" IndexPreTransform ...) followed by the common
# header: d (int32), ntotal (int64) and two int64 placeholders that are always 1 << 20.
_FOURCC = re.compile(rb"I[A-Za-z0-9]{3}")
_HEADER = struct.Struct("<iqqq")
_DUMMY = 1 << 20


def file_kind(path: str | os.PathLike) -> str:
    """``"faiss"`` (a plain faiss index file), ``"zip"`` (e.g. ``Index.save``), or ``"other"``."""
    with open(path, "rb") as f:
        head = f.read(4 + _HEADER.size)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if len(head) == 4 + _HEADER.size and _FOURCC.fullmatch(head[:4]):
        d, ntotal, dummy1, dummy2 = _HEADER.unpack(head[4:])
        if d > 0 and ntotal >= 0 and dummy1 == dummy2 == _DUMMY:
            return "faiss"
    return "other"


def write_faiss_atomic(index: faiss.Index, path: str | os.PathLike) -> None:
    """``faiss.write_index`` through a temporary file renamed over ``path`` (streamed, no copy)."""
    with atomic_write(Path(path), "wb") as f:
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def mmap_flags() -> int:
    """Flags for ``faiss.read_index`` that map the bulk of an index instead of reading it.

    With ``IO_FLAG_MMAP_IFC`` (recent faiss, e.g. 1.15) the codes of flat indexes, HNSW's vectors
    and graph and IVF inverted lists become views of the mapped file (read-only: adding aborts,
    so ``Index.add`` refuses mapped indexes). Without it, faiss maps only IVF lists
    (``IO_FLAG_MMAP``).
    """
    ifc = getattr(faiss, "IO_FLAG_MMAP_IFC", None)
    if ifc is not None:
        return ifc | faiss.IO_FLAG_READ_ONLY
    return faiss.IO_FLAG_MMAP


def _unwrap(index: faiss.Index) -> faiss.Index:
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index inside ``index`` (behind any transform), or ``None`` for other kinds."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def maybe_to_gpu(index: faiss.Index, gpu: bool | str) -> tuple[faiss.Index, Any]:
    """Move ``index`` to GPU 0 when asked (``True``) or possible (``"auto"``).

    Returns the index and the GPU resources that must live as long as it (``None`` on CPU).
    """
    if gpu not in (True, False, "auto"):
        raise ValueError(f"gpu must be True, False or 'auto', got {gpu!r}")
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpu is True and n_gpus == 0:
        raise RuntimeError("gpu=True but faiss sees no GPU (is faiss-gpu installed?)")
    if gpu is False or n_gpus == 0:
        return index, None
    # faiss's standard recipe; the test suite runs on CPU-only faiss, so this line is untested.
    res = faiss.StandardGpuResources()
    return faiss.index_cpu_to_gpu(res, 0, index), res


def mmapped_part(index: faiss.Index) -> str | None:
    """What of ``index`` a memory-mapped open leaves on disk, or ``None`` when faiss reads it all.

    From measurements with faiss-cpu 1.15 (``benchmarks/bench_index_mmap.py``): IVF inverted lists
    (flat, PQ and SQ codes, also behind a PCA/OPQ transform), the codes of Flat/PQ/SQ indexes and
    HNSW's vectors and neighbour lists. Fast-scan IVF lists are read into memory.
    """
    ivf = ivf_of(index)
    if ivf is not None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if isinstance(lists, (faiss.ArrayInvertedLists, faiss.OnDiskInvertedLists)):
            return "inverted lists"
        return None
    inner = _unwrap(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
        return "vector storage" if isinstance(inner, faiss.IndexFlatCodes) else None
    if isinstance(inner, faiss.IndexFlatCodes):
        return "codes"
    return None


def external_lists(index: faiss.Index) -> bool:
    """Whether the IVF lists of ``index`` live in another file (``OnDiskInvertedLists``).

    Serialising such an index writes only a reference to that file, never the vectors.
    """
    ivf = ivf_of(index)
    if ivf is None:
        return False
    return isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.OnDiskInvertedLists)
