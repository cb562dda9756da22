"""A faiss index that knows its ids, metric and search parameters, and saves itself safely."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval_kit._arrays import (
    IdLookup,
    as_matrix,
    check_finite,
    float32_chunk,
    normalize_ids,
)
from retrieval_kit._checks import check_metric, positive_int
from retrieval_kit._progress import progress_bar
from retrieval_kit._version import __version__
from retrieval_kit.index._faiss_io import (
    METRICS,
    external_lists,
    file_kind,
    maybe_to_gpu,
    write_faiss_atomic,
)
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.io import atomic_write

__all__ = ["Index", "load_index"]

logger = logging.getLogger(__name__)

_FORMAT = "retrieval_kit.index"
_FORMAT_VERSION = 1
# faiss GPU indexes refuse k above this.
_GPU_MAX_K = 2048


class Index:
    """Nearest-neighbour search over a set of vectors with user ids. Build with ``build_index``.

    Attributes:
        dim: vector dimension.
        metric: ``"ip"`` (inner product; cosine on unit vectors) or ``"l2"``.
        factory: the faiss factory string the index was built from.
        search_params: tuned search parameters, e.g. ``{"nprobe": 24}``.
        info: build facts (tuned recall, train size, ...), saved with the index; timings
            (keys ending in ``_seconds``) stay in memory only.

    Example:
        >>> import numpy as np, retrieval_kit as rk
        >>> index = rk.index.build_index(np.eye(3, dtype="float32"), ids=["a", "b", "c"])
        >>> index.search(np.eye(3, dtype="float32")[:1], k=2).ids.tolist()
        [['a', 'b']]
    """

    def __init__(
        self,
        faiss_index: faiss.Index,
        ids: np.ndarray,
        *,
        metric: str,
        factory: str,
        search_params: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
        gpu_resources: Any = None,
        mmap_path: str | os.PathLike | None = None,
    ) -> None:
        check_metric(metric)
        if len(ids) != faiss_index.ntotal:
            raise ValueError(f"{len(ids)} ids for an index of {faiss_index.ntotal} vectors")
        self._index = faiss_index
        self._ids = ids
        self.metric = metric
        self.factory = factory
        self.search_params: dict[str, Any] = {}
        self.info: dict[str, Any] = dict(info or {})
        self._gpu_resources = gpu_resources  # keeps GPU memory alive as long as the index
        self._lookup: IdLookup | None = None
        self._mmap_path = None if mmap_path is None else Path(mmap_path)
        if search_params:
            self.set_search_params(**search_params)

    # -- basic facts ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self._index.d)

    @property
    def ids(self) -> np.ndarray:
        """The ids in row order (int64 or numpy unicode array). A read-only view."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def faiss_index(self) -> faiss.Index:
        """The underlying faiss index (advanced use)."""
        return self._index

    @property
    def on_gpu(self) -> bool:
        """Whether the index lives on a GPU."""
        return self._gpu_resources is not None

    @property
    def mmapped(self) -> bool:
        """Whether the index was opened memory-mapped (``from_faiss(..., mmap=True)``)."""
        return self._mmap_path is not None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return (
            f"Index(n={len(self)}, dim={self.dim}, metric={self.metric!r}, "
            f"factory={self.factory!r}, search_params={self.search_params})"
        )

    def set_search_params(self, **params: Any) -> None:
        """Set faiss search parameters by name, e.g. ``index.set_search_params(nprobe=32)``."""
        space = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
        for name, value in params.items():
            try:
                space.set_index_parameter(self._index, name, value)
            except RuntimeError as e:
                raise ValueError(
                    f"search parameter {name}={value!r} does not apply to {self.factory!r}: {e}"
                ) from e
            self.search_params[name] = value

    # -- search -----------------------------------------------------------------------------------
    def search_rows(
        self, queries: Any, k: int, *, batch_size: int = 16384
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like ``search`` but returns internal row numbers (int64, ``-1`` when missing)."""
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(
                f"queries have dimension {q.shape[1]} but the index holds dimension "
                f"{self.dim} vectors"
            )
        k = positive_int(k, "k")
        batch_size = positive_int(batch_size, "batch_size")
        k = int(k)
        nq = q.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        rows = np.full((nq, k), -1, dtype=np.int64)
        # faiss pads k > ntotal itself, but with +-FLT_MAX; ask for what exists and pad ourselves.
        k_eff = min(k, len(self), _GPU_MAX_K if self.on_gpu else k)
        if k_eff < k and len(self) > k_eff:
            logger.warning("k=%d above the GPU limit; returning the top %d", k, k_eff)
        for start in range(0, nq, batch_size):
            chunk = np.ascontiguousarray(q[start : start + batch_size], dtype=np.float32)
            check_finite(chunk, start, "queries")
            d, i = self._index.search(chunk, k_eff)
            if self.metric == "l2":
                d = -d  # higher is better for every metric
            d[i < 0] = -np.inf
            scores[start : start + len(chunk), :k_eff] = d
            rows[start : start + len(chunk), :k_eff] = i
        return scores, rows

    def search(self, queries: Any, k: int, *, batch_size: int = 16384) -> SearchResult:
        """Find the ``k`` best database vectors for each query.

        Args:
            queries: ``(Q, dim)`` array (any real dtype; converted to float32 batch by batch).
            k: neighbours per query. Above ``len(self)`` the extra slots are missing neighbours.
            batch_size: queries per faiss call (bounds the memory of one call).

        Returns:
            ``SearchResult(scores, ids)``, best first; see ``SearchResult`` for the conventions.

        Example:
            >>> import numpy as np, retrieval_kit as rk
            >>> index = rk.index.build_index(np.eye(2, dtype="float32"), ids=[10, 20])
            >>> index.search(np.array([[0.0, 1.0]]), k=3).ids.tolist()
            [[20, 10, -1]]
        """
        scores, rows = self.search_rows(queries, k, batch_size=batch_size)
        return SearchResult(scores, self.ids_of_rows(rows))

    def ids_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Map internal rows to ids: int64 with -1, or object with ``None``, for rows ``< 0``."""
        rows = np.asarray(rows)
        missing = rows < 0
        picked = self._ids[np.where(missing, 0, rows)]
        if self._ids.dtype.kind == "U":
            out = picked.astype(object)
            out[missing] = None
            return out
        picked[missing] = -1
        return picked

    def rows_of(self, ids: Any) -> np.ndarray:
        """Map ids back to internal rows (int64). An unknown id is a ``KeyError`` naming it."""
        if self._lookup is None:
            self._lookup = IdLookup(self._ids)
        return self._lookup.rows(ids, "the index")

    def reconstruct(self, ids: Any) -> np.ndarray:
        """Stored vectors of ``ids`` as ``(n, dim)`` float32 (approximate when compressed)."""
        rows = np.asarray(self.rows_of(ids)).reshape(-1)
        return self.reconstruct_rows(rows)

    def reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of internal ``rows`` as ``(n, dim)`` float32."""
        rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) == 0:
            return np.zeros((0, self.dim), np.float32)
        try:
            return self._index.reconstruct_batch(rows)
        except RuntimeError as e:
            raise RuntimeError(f"index {self.factory!r} cannot give back its vectors: {e}") from e

    # -- adding -----------------------------------------------------------------------------------
    def add(
        self,
        vectors: Any,
        ids: Sequence[Any] | np.ndarray | None = None,
        *,
        chunk_size: int = 65536,
        progress: bool = False,
    ) -> None:
        """Add vectors to the built index (Flat, IVF, IVF-PQ, HNSW ...), with their ids.

        Vectors are stored as given, as ``build_index`` stores them: nothing is normalised, so for
        ``metric="ip"`` pass unit vectors if you want cosine similarity. An IVF index keeps its
        trained centroids (and tuned ``nprobe``): new vectors go to the nearest existing lists.

        Args:
            vectors: ``(n, dim)`` array of any real dtype (a memmap is read chunk by chunk).
            ids: one new id per row, of the kind the index holds (ints or strings), none of them
                already in the index. ``None``: the next row numbers (int-id indexes only).
            chunk_size: rows converted, checked and added per step.
            progress: show a tqdm bar.

        Raises:
            ValueError: wrong dimension, NaN/inf (row named), ids of the other kind, repeated or
                already present (id and rows named). Nothing is added then.
            RuntimeError: the index was opened memory-mapped (read-only) or is not trained.

        Example:
            >>> import numpy as np, retrieval_kit as rk
            >>> index = rk.index.build_index(np.eye(3, dtype="float32")[:2], ids=["a", "b"])
            >>> index.add(np.eye(3, dtype="float32")[2:], ids=["c"])
            >>> index.search(np.eye(3, dtype="float32")[2:], k=1).ids.tolist()
            [['c']]
        """
        x = as_matrix(vectors, "vectors")
        n, d = x.shape
        if d != self.dim:
            raise ValueError(
                f"vectors have dimension {d} but the index holds dimension {self.dim} vectors"
            )
        chunk_size = positive_int(chunk_size, "chunk_size")
        if self.mmapped:
            raise RuntimeError(
                f"the index was opened memory-mapped from {self._mmap_path}, which is read-only; "
                "open the file with mmap=False to add vectors"
            )
        if not self._index.is_trained:
            raise RuntimeError(f"the faiss index {self.factory!r} is not trained; train it first")
        new_ids = self._new_ids(ids, n)
        if n == 0:
            return
        if n > chunk_size:  # refuse bad rows before the first chunk goes in
            for start in range(0, n, chunk_size):
                float32_chunk(x, start, start + chunk_size, "vectors")
        chunks = progress_bar(
            range(0, n, chunk_size), enabled=progress, desc="adding", unit="chunk"
        )
        before = len(self)
        try:
            for start in chunks:
                self._index.add(float32_chunk(x, start, start + chunk_size, "vectors"))
        finally:
            # Whatever faiss took (all of it, or the chunks before a failure) gets its ids.
            added = len(self) - before
            self._ids = np.concatenate([self._ids, new_ids[:added]])
            self._lookup = None
            self.info["added"] = int(self.info.get("added", 0)) + added
        logger.info("added %d vectors to %r", added, self)

    def _new_ids(self, ids: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
        """``n`` new ids as an array of the index's kind, none repeated nor already held."""
        str_ids = self._ids.dtype.kind == "U"
        if ids is None:
            if str_ids:
                raise ValueError("the index holds string ids: pass one new id per vector")
            new_ids = np.arange(len(self), len(self) + n, dtype=np.int64)
        else:
            new_ids = normalize_ids(ids, n, "ids")
        if n and (new_ids.dtype.kind == "U") != str_ids:
            held, got = ("string", "integer") if str_ids else ("integer", "string")
            raise ValueError(
                f"the index holds {held} ids but {got} ids were given "
                f"(first: {new_ids[0].item()!r})"
            )
        if self._lookup is None:
            self._lookup = IdLookup(self._ids)
        known = self._lookup.first_known(new_ids)
        if known is not None:
            raise ValueError(
                f"id {new_ids[known[0]].item()!r} (row {known[0]} of the new vectors) is already "
                f"in the index (row {known[1]})"
            )
        return new_ids

    # -- persistence ------------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """What ``save`` writes beside the index bytes (without the checksum)."""
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "dim": self.dim,
            "ntotal": len(self),
            "metric": self.metric,
            "factory": self.factory,
            "search_params": self.search_params,
            "ids_kind": "str" if self._ids.dtype.kind == "U" else "int",
            # Timings describe one run, not the index: saving them would make the same index
            # built twice differ byte for byte (and invalidate whatever hashed the file).
            "info": {k: v for k, v in self.info.items() if not k.endswith("_seconds")},
            "library_version": __version__,
            "faiss_version": faiss.__version__,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write index, ids and metadata to one ``.npz`` file, atomically (no pickle inside).

        Example:
            >>> index.save("db.rkindex.npz")  # doctest: +SKIP
        """
        blob = faiss.serialize_index(self._cpu_index())
        meta = self.metadata()
        meta["index_sha256"] = hashlib.sha256(blob.data).hexdigest()
        meta["ids_sha256"] = hashlib.sha256(np.ascontiguousarray(self._ids).data).hexdigest()
        with atomic_write(path, "wb") as f:
            np.savez(f, index=blob, ids=self._ids, meta=np.array(json.dumps(meta)))
        logger.info("saved %r to %s", self, path)

    def to_faiss(self, path: str | os.PathLike) -> None:
        """Write a plain faiss index file that ``faiss.read_index`` opens, atomically.

        The file holds what faiss stores: the vectors or codes, the metric and search parameters
        such as ``nprobe`` / ``efSearch``. It holds **no ids** (faiss has no string ids; its result
        rows are the row numbers): keep ``index.ids`` yourself and pass them to
        ``rk.index.from_faiss(path, ids)``. Nor does it hold ``factory`` or ``info``, nor a
        checksum; ``save`` keeps all of these in one file.

        Example:
            >>> index.to_faiss("db.faiss")  # doctest: +SKIP
            >>> np.save("db_ids.npy", index.ids)  # doctest: +SKIP
            >>> same = rk.index.from_faiss("db.faiss", np.load("db_ids.npy"))  # doctest: +SKIP
        """
        write_faiss_atomic(self._cpu_index(), path)
        logger.info("wrote %r as a plain faiss file to %s", self, path)

    def _cpu_index(self) -> faiss.Index:
        index = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        if external_lists(index):  # serialising would write a file reference, not the vectors
            raise RuntimeError(
                f"the index lists live in {self._mmap_path or 'another file'} (memory-mapped); "
                "open it with mmap=False to write it out"
            )
        return index


def load_index(path: str | os.PathLike, *, gpu: bool | str = False) -> Index:
    """Load an index written by ``Index.save``, checking it is whole and self-consistent.

    Args:
        path: the file ``Index.save`` wrote.
        gpu: ``False`` (default), ``True`` or ``"auto"``: move the index to a GPU.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an index file, truncated or corrupted, or its parts disagree.

    Example:
        >>> index = rk.index.load_index("db.rkindex.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no index file at {path}")
    if file_kind(path) == "faiss":
        raise ValueError(
            f"{path} is a plain faiss index file, not one written by Index.save; use "
            "rk.index.from_faiss(path, ids) with the ids of its rows"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"index", "ids", "meta"} - set(z.files)
            if missing:
                raise ValueError(f"missing parts {sorted(missing)}")
            meta = json.loads(str(z["meta"]))
            blob = z["index"]
            ids = z["ids"]
    except Exception as e:  # zip, CRC, npy header, JSON errors: all mean "not a good index file"
        raise ValueError(
            f"{path} is not a readable retrieval_kit index (corrupt or truncated?): {e}"
        ) from e
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a retrieval_kit index file")
    if meta.get("format_version") != _FORMAT_VERSION:
        raise ValueError(
            f"{path} has index format version {meta.get('format_version')}; this retrieval_kit "
            f"({__version__}) reads version {_FORMAT_VERSION}"
        )
    if hashlib.sha256(blob.data).hexdigest() != meta.get("index_sha256"):
        raise ValueError(f"{path}: index bytes do not match their checksum (corrupt file)")
    if hashlib.sha256(np.ascontiguousarray(ids).data).hexdigest() != meta.get("ids_sha256"):
        raise ValueError(f"{path}: ids do not match their checksum (corrupt file)")
    try:
        # READ_ONLY: lists that refer to another file (refused below) are never opened writable
        index = faiss.deserialize_index(blob, faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as e:
        raise ValueError(f"{path}: faiss cannot read the index: {e}") from e
    if external_lists(index):  # a reference to some other file instead of the vectors
        raise ValueError(f"{path}: the index refers to inverted lists stored in another file")
    checks = {
        "dim": (index.d, meta.get("dim")),
        "ntotal": (index.ntotal, meta.get("ntotal")),
        "number of ids": (len(ids), meta.get("ntotal")),
        "metric": (index.metric_type, METRICS.get(meta.get("metric"))),
    }
    for what, (got, want) in checks.items():
        if got != want:
            raise ValueError(f"{path}: {what} is {got} in the data but {want} in the metadata")
    kind = "str" if ids.dtype.kind == "U" else "int" if ids.dtype == np.int64 else str(ids.dtype)
    if kind != meta.get("ids_kind"):
        raise ValueError(f"{path}: ids are {kind} but the metadata says {meta.get('ids_kind')}")
    index, res = maybe_to_gpu(index, gpu)
    return Index(
        index,
        ids,
        metric=meta["metric"],
        factory=meta["factory"],
        search_params=meta.get("search_params") or None,
        info=meta.get("info"),
        gpu_resources=res,
    )
