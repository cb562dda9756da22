"""Array checks shared by index building, searching and the rerankers.

Vectors may be huge (a float32 memmap of millions of rows), so nothing here copies a whole array:
checks and conversions run on the chunk about to be used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "IdLookup",
    "as_matrix",
    "check_finite",
    "float32_chunk",
    "float32_rows",
    "normalize_ids",
    "unit_rows",
]


def as_matrix(x: Any, what: str) -> np.ndarray:
    """Return ``x`` as a 2-D numpy array (a memmap stays a memmap), checking shape and kind."""
    if not isinstance(x, np.ndarray):
        # a torch tensor has .detach(); never import torch just to check
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if x.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D array (rows, dimension), got shape {x.shape}"
            + ("; use x.reshape(1, -1) for a single vector" if x.ndim == 1 else "")
        )
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{what} must hold real numbers, got dtype {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{what} has dimension 0")
    return x


def float32_chunk(x: np.ndarray, start: int, stop: int, what: str) -> np.ndarray:
    """Rows ``start:stop`` of ``x`` as C-contiguous float32, refusing NaN/inf (the row is named)."""
    chunk = _as_float32(x[start:stop])
    check_finite(chunk, start, what)
    return chunk


def float32_rows(x: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    """Rows ``rows`` of ``x`` as :func:`float32_chunk` does (a memmap reads only these)."""
    out = _as_float32(x[rows])
    bad = _first_nonfinite(out)
    if bad is not None:
        raise _nonfinite(what, int(rows[bad]))
    return out


def check_finite(chunk: np.ndarray, offset: int, what: str) -> None:
    """Raise ``ValueError`` naming the first row (plus ``offset``) of ``chunk`` with NaN/inf."""
    bad = _first_nonfinite(chunk)
    if bad is not None:
        raise _nonfinite(what, offset + bad)


def _as_float32(part: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # overflow gives inf, refused by the caller
        return np.ascontiguousarray(part, dtype=np.float32)


def _first_nonfinite(chunk: np.ndarray) -> int | None:
    ok = np.isfinite(chunk).all(axis=1)
    return None if ok.all() else int(np.flatnonzero(~ok)[0])


def _nonfinite(what: str, row: int) -> ValueError:
    return ValueError(
        f"{what} row {row} contains NaN or inf (after conversion to float32); "
        "fix or drop it before indexing"
    )


def unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32); all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def normalize_ids(ids: Sequence[Any] | np.ndarray | None, n: int, what: str = "ids") -> np.ndarray:
    """Turn user ids into an int64 array or a numpy unicode array of length ``n``.

    ``None`` gives the row numbers ``0 .. n-1``. Mixed int/str, other types, a length that differs
    from the number of vectors and duplicates are errors naming the offending id.
    """
    if ids is None:
        return np.arange(n, dtype=np.int64)
    arr = ids if isinstance(ids, np.ndarray) else None
    if arr is None or arr.dtype == object:
        seq = list(ids)
        if len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries but there are {n} vectors")
        if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in seq):
            out = np.array(seq, dtype=np.int64) if seq else np.zeros(0, np.int64)
        elif all(isinstance(i, str) for i in seq):
            out = np.array(seq, dtype=str) if seq else np.zeros(0, dtype="<U1")
        else:
            bad = next(
                (p, i)
                for p, i in enumerate(seq)
                if not isinstance(i, type(seq[0])) or isinstance(i, bool)
            )
            raise TypeError(
                f"{what} must be all integers or all strings; entry {bad[0]} is {bad[1]!r} "
                f"({type(bad[1]).__name__}) while entry 0 is {seq[0]!r}"
            )
    else:
        if arr.ndim != 1:
            raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
        if len(arr) != n:
            raise ValueError(f"{what} has {len(arr)} entries but there are {n} vectors")
        if arr.dtype.kind in "iu":
            if arr.dtype == np.uint64 and len(arr) and arr.max() > np.iinfo(np.int64).max:
                raise ValueError(f"{what} holds values that do not fit in int64")
            out = arr.astype(np.int64)
        elif arr.dtype.kind == "U":
            out = arr
        else:
            raise TypeError(f"{what} must hold integers or strings, got dtype {arr.dtype}")
    if len(out) > 1:
        order = np.argsort(out, kind="stable")
        srt = out[order]
        dup = np.flatnonzero(srt[1:] == srt[:-1])
        if len(dup):
            first = srt[dup[0]].item()
            rows = sorted(order[srt == first][:2].tolist())
            raise ValueError(
                f"{what} contains duplicate id {first!r} (rows {rows[0]} and {rows[1]})"
            )
    return out


class IdLookup:
    """Map ids (int64 or unicode array) back to their rows with a sorted copy and binary search.

    A dict would cost ~100 bytes per id; this costs one sorted copy plus an int64 per id.
    """

    def __init__(self, ids: np.ndarray) -> None:
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    def rows(self, ids: Any, what: str = "the index") -> np.ndarray:
        """Rows of ``ids`` (same shape). An unknown id is a ``KeyError`` naming it."""
        want = np.asarray(ids)
        if want.dtype == object or want.dtype.kind != self._sorted.dtype.kind:
            try:
                want = want.astype(str if self._sorted.dtype.kind == "U" else np.int64)
            except (TypeError, ValueError) as e:
                raise KeyError(f"ids {ids!r} are not of the kind stored in {what}") from e
        if len(self._sorted) == 0:
            if want.size:
                raise KeyError(f"id {want.reshape(-1)[0]!r} is not in {what}")
            return np.zeros(want.shape, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, want), len(self._sorted) - 1)
        found = self._sorted[pos] == want
        if not np.all(found):
            bad = want.reshape(-1)[np.flatnonzero(~np.asarray(found).reshape(-1))[0]].item()
            raise KeyError(f"id {bad!r} is not in {what}")
        return self._order[pos]

    def first_known(self, ids: np.ndarray) -> tuple[int, int] | None:
        """``(position in ids, row)`` of the first of ``ids`` (same kind) already held, or None."""
        if len(self._sorted) == 0 or len(ids) == 0:
            return None
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        hit = np.flatnonzero(self._sorted[pos] == ids)
        if len(hit) == 0:
            return None
        return int(hit[0]), int(self._order[pos[hit[0]]])
