"""Whitening: learned on training-side embeddings, applied to queries and database before indexing.

Two ways to learn it, both from Radenović et al., "Fine-tuning CNN Image Retrieval with No Human
Annotation" (TPAMI 2018) and their code (filipradenovic/cnnimageretrieval-pytorch,
``cirtorch/utils/whiten.py``), written again here in numpy because no maintained library ships them:

* **PCA whitening** (``fit(x)``): centre, then ``P = diag(lambda) ** -1/2 @ E.T`` from the
  eigen-decomposition of the covariance, so the training data comes out with identity covariance.
  ``shrinkage`` mixes the covariance with a multiple of the identity first
  (``(1 - s) C + s tr(C) / D I``), which keeps small-sample fits from blowing up noise directions.
* **Learned whitening, Lw** (``fit(x, pairs=...)`` or ``fit(x, labels=...)``): whiten by the
  covariance of matching pairs' differences (``P1 = chol(S) ** -1``, so those differences come
  out with identity covariance), then rotate onto the principal directions of the projected data
  (``P = E.T @ P1``); reducing dimensions keeps the directions where non-matching images differ
  most relative to matching ones.

``transform`` centres, projects onto the first ``dim`` rows and L2-normalises.
"""

from __future__ import annotations

import io
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval_kit._checks import positive_int
from retrieval_kit.io import atomic_write

__all__ = ["Whitening"]

logger = logging.getLogger(__name__)

_FORMAT = "retrieval_kit.Whitening"
_VERSION = 1


class Whitening:
    """PCA whitening with shrinkage, or cirtorch's learned whitening from matching pairs.

    Args:
        dim: output dimension (the leading components); ``None``: the input dimension (PCA
            whitening keeps at most the number of independent directions of the data).
        shrinkage: in [0, 1]; mixes the covariance being inverted with a scaled identity.

    Attributes (after ``fit``):
        method: ``"pca"`` or ``"learned"``.
        mean_: ``(D,)`` float64 centre.
        projection_: ``(dim, D)`` float64 matrix.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> train = rng.normal(size=(200, 8))
        >>> w = Whitening(dim=4).fit(train)
        >>> w.transform(train[:3]).shape
        (3, 4)
        >>> w_lw = Whitening().fit(train, labels=np.arange(200) // 4)  # pairs within each label
    """

    def __init__(self, dim: int | None = None, *, shrinkage: float = 0.0) -> None:
        dim = positive_int(dim, "dim", allow_none=True)
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}")
        self.dim = dim
        self.shrinkage = float(shrinkage)
        self.method: str | None = None
        self.mean_: np.ndarray | None = None
        self.projection_: np.ndarray | None = None

    def __repr__(self) -> str:
        shape = None if self.projection_ is None else self.projection_.shape
        return (
            f"Whitening(method={self.method!r}, dim={self.dim}, shrinkage={self.shrinkage}, "
            f"projection={shape})"
        )

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        embeddings: Any,
        *,
        pairs: Any = None,
        labels: Sequence[Any] | None = None,
        max_pairs: int = 1_000_000,
        seed: int = 0,
    ) -> Whitening:
        """Learn the whitening from ``embeddings`` (rows); returns ``self``.

        Args:
            embeddings: ``(N, D)`` training-side embeddings (never the queries you evaluate).
            pairs: ``(P, 2)`` row indices of matching images: learned whitening (Lw).
            labels: one label per row: Lw from every ordered pair of rows with the same label
                (at most ``max_pairs``, drawn with ``seed``). Give ``pairs`` or ``labels``, or
                neither for PCA whitening.
            max_pairs: cap on the pairs drawn from ``labels``.
            seed: for that draw.

        Raises:
            ValueError: bad shapes, non-finite values, bad pair indices, no pair to learn from,
                or (PCA) fewer independent directions than ``dim`` with ``shrinkage=0``.

        Example:
            >>> w = Whitening(dim=2).fit(np.random.default_rng(0).normal(size=(50, 3)))
        """
        x = _as_matrix(embeddings, "embeddings")
        if pairs is not None and labels is not None:
            raise ValueError("give pairs or labels, not both")
        if self.dim is not None and self.dim > x.shape[1]:
            raise ValueError(f"dim={self.dim} exceeds the embedding dimension {x.shape[1]}")
        if labels is not None:
            pairs = pairs_from_labels(labels, len(x), max_pairs=max_pairs, seed=seed)
        if pairs is None:
            self.mean_, self.projection_ = self._fit_pca(x)
            self.method = "pca"
        else:
            self.mean_, self.projection_ = self._fit_learned(x, _check_pairs(pairs, len(x)))
            self.method = "learned"
        logger.info(
            "fitted %s whitening: %d -> %d dims on %d embeddings",
            self.method,
            x.shape[1],
            self.projection_.shape[0],
            len(x),
        )
        return self

    def _shrink(self, cov: np.ndarray) -> np.ndarray:
        if self.shrinkage == 0.0:
            return cov
        d = cov.shape[0]
        return (1.0 - self.shrinkage) * cov + self.shrinkage * np.trace(cov) / d * np.eye(d)

    def _fit_pca(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(x) < 2:
            raise ValueError(f"PCA whitening needs at least 2 embeddings, got {len(x)}")
        mean = x.mean(axis=0)
        centred = x - mean
        dim = self.dim or x.shape[1]
        if dim < len(x) < x.shape[1]:
            # Fewer samples than dimensions: the leading eigenvectors come from a thin SVD
            # (O(N^2 D) instead of O(D^3)); shrinkage only shifts the eigenvalues.
            _, sing, vt = np.linalg.svd(centred, full_matrices=False)
            eigval = sing**2 / len(x)
            if self.shrinkage:
                trace_over_d = eigval.sum() / x.shape[1]
                eigval = (1.0 - self.shrinkage) * eigval + self.shrinkage * trace_over_d
            eigvec = vt.T
        else:
            eigval, eigvec = _eigh_descending(self._shrink(centred.T @ centred / len(x)))
        kept = eigval[:dim]
        if kept[-1] <= 1e-12 * max(eigval[0], 1e-300):
            rank = int((eigval > 1e-12 * max(eigval[0], 1e-300)).sum())
            raise ValueError(
                f"the embeddings span only {rank} independent directions (N={len(x)}, "
                f"D={x.shape[1]}): use dim <= {rank} or shrinkage > 0"
            )
        return mean, eigvec[:, :dim].T / np.sqrt(kept)[:, None]

    def _fit_learned(self, x: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # cirtorch's whitenlearn: centre on the pairs' first images, whiten the differences.
        mean = x[pairs[:, 0]].mean(axis=0)
        diff = x[pairs[:, 0]] - x[pairs[:, 1]]
        cov = self._shrink(diff.T @ diff / len(diff))
        p1 = np.linalg.inv(_cholesky(cov))
        projected = (x - mean) @ p1.T
        _, eigvec = _eigh_descending(projected.T @ projected)
        dim = self.dim or x.shape[1]
        return mean, (eigvec.T @ p1)[:dim]

    # -- applying --------------------------------------------------------------------------
    def transform(self, x: Any) -> np.ndarray:
        """Centre, project and L2-normalise rows: ``(N, D)`` -> ``(N, dim)`` float32.

        Example:
            >>> w = Whitening().fit(np.random.default_rng(0).normal(size=(20, 3)))
            >>> np.linalg.norm(w.transform(np.ones((1, 3))), axis=1).round(6)
            array([1.], dtype=float32)
        """
        if self.projection_ is None or self.mean_ is None:
            raise RuntimeError("Whitening is not fitted: call fit() or Whitening.load() first")
        x = _as_matrix(x, "x")
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"x has dimension {x.shape[1]}, the whitening was fitted on {self.mean_.shape[0]}"
            )
        y = (x - self.mean_) @ self.projection_.T
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norms, 1e-12)).astype(np.float32)

    # -- saving ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` (no pickled objects) atomically: the arrays and a JSON header.

        Example:
            >>> w.save("whitening.npz")  # doctest: +SKIP
        """
        if self.projection_ is None or self.mean_ is None:
            raise RuntimeError("Whitening is not fitted: nothing to save")
        header = {
            "format": _FORMAT,
            "version": _VERSION,
            "method": self.method,
            "dim": self.dim,
            "shrinkage": self.shrinkage,
            "input_dim": int(self.mean_.shape[0]),
            "output_dim": int(self.projection_.shape[0]),
        }
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                header=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8),
                mean=self.mean_,
                projection=self.projection_,
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Whitening:
        """Read what :meth:`save` wrote, checking every field; never unpickles.

        Raises:
            ValueError: not such a file, or inconsistent content; the message names the file.

        Example:
            >>> w = Whitening.load("whitening.npz")  # doctest: +SKIP
        """
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                raw = f.read()
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except FileNotFoundError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a Whitening file ({exc})") from None
        missing = {"header", "mean", "projection"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a Whitening file (missing {sorted(missing)})")
        try:
            header = json.loads(arrays["header"].astype(np.uint8).tobytes().decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: unreadable Whitening header ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a Whitening file (format {header!r})")
        if header.get("version") != _VERSION:
            raise ValueError(f"{path}: Whitening format version {header.get('version')!r}")
        mean, projection = arrays["mean"], arrays["projection"]
        for name, arr, ndim in (("mean", mean, 1), ("projection", projection, 2)):
            if arr.dtype.kind != "f" or arr.ndim != ndim or not np.isfinite(arr).all():
                raise ValueError(
                    f"{path}: {name} must be a finite float array with {ndim} dimension(s), got "
                    f"{arr.dtype} {arr.shape}"
                )
        if (
            projection.shape[1] != mean.shape[0]
            or header.get("input_dim") != mean.shape[0]
            or header.get("output_dim") != projection.shape[0]
            or header.get("method") not in ("pca", "learned")
        ):
            raise ValueError(
                f"{path}: inconsistent Whitening file (mean {mean.shape}, projection "
                f"{projection.shape}, header {header})"
            )
        w = cls(header.get("dim"), shrinkage=float(header.get("shrinkage", 0.0)))
        w.method = header["method"]
        w.mean_, w.projection_ = mean.astype(np.float64), projection.astype(np.float64)
        return w


def pairs_from_labels(
    labels: Sequence[Any], n: int, *, max_pairs: int = 1_000_000, seed: int = 0
) -> np.ndarray:
    """Every ordered pair ``(i, j)``, ``i != j``, of rows with the same label (capped, seeded).

    Example:
        >>> pairs_from_labels(["a", "b", "a"], 3).tolist()
        [[0, 2], [2, 0]]
    """
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but embeddings has {n} rows")
    groups: dict[Any, list[int]] = {}
    for row, label in enumerate(labels):
        groups.setdefault(label, []).append(row)
    pairs = [(i, j) for rows in groups.values() for i in rows for j in rows if i != j]
    if not pairs:
        raise ValueError("no label occurs twice: learned whitening needs matching pairs")
    out = np.asarray(pairs, dtype=np.int64)
    if len(out) > max_pairs:
        keep = np.random.default_rng(seed).choice(len(out), size=max_pairs, replace=False)
        out = out[np.sort(keep)]
    return out


def _as_matrix(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got shape {arr.shape}")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} row {int(np.argmax(bad))} is not finite")
    return arr


def _check_pairs(pairs: Any, n: int) -> np.ndarray:
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"pairs must be a non-empty (P, 2) integer array, got {arr.dtype} {arr.shape}"
        )
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise ValueError(f"pairs row {row} = {arr[row].tolist()} is out of range for {n} rows")
    return arr.astype(np.int64)


def _eigh_descending(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eigval, eigvec = np.linalg.eigh((sym + sym.T) / 2)
    return eigval[::-1], eigvec[:, ::-1]


def _cholesky(cov: np.ndarray) -> np.ndarray:
    # As cirtorch: add a growing ridge until the matrix is positive definite.
    alpha = 0.0
    eye = np.eye(cov.shape[0])
    while True:
        try:
            return np.linalg.cholesky(cov + alpha * eye)
        except np.linalg.LinAlgError:
            alpha = 1e-10 if alpha == 0.0 else alpha * 10
            if alpha > 1e6:
                raise ValueError(
                    "the matching pairs' difference covariance is degenerate"
                ) from None
            logger.warning(
                "pair covariance not positive definite: adding %.0e on the diagonal", alpha
            )
