"""A faiss index that knows its ids, metric and search parameters, and saves itself safely."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval_kit._io import atomic_write
from retrieval_kit._version import __version__
from retrieval_kit.index._arrays import IdLookup, as_matrix, check_finite
from retrieval_kit.index.search_result import SearchResult

__all__ = ["Index", "load_index"]

logger = logging.getLogger(__name__)

_FORMAT = "retrieval_kit.index"
_FORMAT_VERSION = 1
_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
# faiss GPU indexes refuse k above this.
_GPU_MAX_K = 2048


class Index:
    """Nearest-neighbour search over a set of vectors with user ids. Build with ``build_index``.

    Attributes:
        dim: vector dimension.
        metric: ``"ip"`` (inner product; cosine on unit vectors) or ``"l2"``.
        factory: the faiss factory string the index was built from.
        search_params: tuned search parameters, e.g. ``{"nprobe": 24}``.
        info: build facts (tuned recall, train size, ...), saved with the index.

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
    ) -> None:
        if metric not in _METRICS:
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
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
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
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
            "info": self.info,
            "library_version": __version__,
            "faiss_version": faiss.__version__,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write index, ids and metadata to one ``.npz`` file, atomically (no pickle inside).

        Example:
            >>> index.save("db.rkindex.npz")  # doctest: +SKIP
        """
        cpu = faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index
        blob = faiss.serialize_index(cpu)
        meta = self.metadata()
        meta["index_sha256"] = hashlib.sha256(blob.data).hexdigest()
        meta["ids_sha256"] = hashlib.sha256(np.ascontiguousarray(self._ids).data).hexdigest()
        with atomic_write(path, "wb") as f:
            np.savez(f, index=blob, ids=self._ids, meta=np.array(json.dumps(meta)))
        logger.info("saved %r to %s", self, path)


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
        index = faiss.deserialize_index(blob)
    except RuntimeError as e:
        raise ValueError(f"{path}: faiss cannot read the index: {e}") from e
    checks = {
        "dim": (index.d, meta.get("dim")),
        "ntotal": (index.ntotal, meta.get("ntotal")),
        "number of ids": (len(ids), meta.get("ntotal")),
        "metric": (index.metric_type, _METRICS.get(meta.get("metric"))),
    }
    for what, (got, want) in checks.items():
        if got != want:
            raise ValueError(f"{path}: {what} is {got} in the data but {want} in the metadata")
    kind = "str" if ids.dtype.kind == "U" else "int" if ids.dtype == np.int64 else str(ids.dtype)
    if kind != meta.get("ids_kind"):
        raise ValueError(f"{path}: ids are {kind} but the metadata says {meta.get('ids_kind')}")
    from retrieval_kit.index.build import _maybe_to_gpu  # local: build imports this module

    index, res = _maybe_to_gpu(index, gpu)
    return Index(
        index,
        ids,
        metric=meta["metric"],
        factory=meta["factory"],
        search_params=meta.get("search_params") or None,
        info=meta.get("info"),
        gpu_resources=res,
    )
