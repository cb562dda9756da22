"""Split an extraction across ranks and merge the per-rank shard files back into input order.

Each rank embeds a contiguous share of the rows (``shard_range``), so merging is a concatenation
in rank order; the JSON sidecar each shard writes records its rows, so a merge checks that the
shards cover every row exactly once before writing anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from retrieval_kit.io import atomic_write_json, fsync_dir

__all__ = ["merge_shards", "meta_path", "shard_path", "shard_range"]

logger = logging.getLogger(__name__)

_SHARD_RE = r"\.rank(\d{5})-of-(\d{5})\.npy\.json"


def shard_range(num_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous rows ``[start, stop)`` that ``rank`` of ``world_size`` embeds.

    Shares differ in size by at most one row; a rank may get no rows when there are fewer rows than
    ranks.

    Example:
        >>> [shard_range(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    return rank * num_rows // world_size, (rank + 1) * num_rows // world_size


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """The file ``rank`` writes for output ``out``: ``emb.npy`` -> ``emb.rank00001-of-00004.npy``.

    Example:
        >>> shard_path("emb.npy", 1, 4).name
        'emb.rank00001-of-00004.npy'
    """
    out = _npy_path(out)
    return out.with_name(f"{out.stem}.rank{rank:05d}-of-{world_size:05d}.npy")


def meta_path(npy_path: str | os.PathLike) -> Path:
    """The JSON sidecar written (last, as a completion marker) beside an embedding file.

    Example:
        >>> meta_path("emb.npy").name
        'emb.npy.json'
    """
    npy_path = Path(npy_path)
    return npy_path.with_name(npy_path.name + ".json")


def merge_shards(
    out: str | os.PathLike,
    world_size: int | None = None,
    *,
    remove_shards: bool = False,
    overwrite: bool = False,
    chunk_size: int = 65536,
) -> tuple[np.memmap, list[tuple[int, str, str]]]:
    """Merge the shards written by a distributed ``extract_embeddings(..., out=out)``.

    Args:
        out: the ``out`` path given to ``extract_embeddings`` (the merged ``.npy`` goes there).
        world_size: how many shards; ``None`` finds them from the files next to ``out``.
        remove_shards: delete the shard files after a successful merge.
        overwrite: replace an existing ``out``.
        chunk_size: rows copied at a time (memory stays at ``chunk_size x D`` floats).

    Returns:
        ``(emb, failed)``: a read-only ``(N, D)`` float32 memmap of ``out`` in input order and every
        rank's ``(row, path, reason)`` failures, sorted by row.

    Raises:
        FileNotFoundError: a shard (or its sidecar, written last) is missing: that rank has not
            finished.
        ValueError: shards disagree on the row count or dimension, or do not tile the rows.
        FileExistsError: ``out`` exists and ``overwrite`` is False.

    Example:
        >>> emb, failed = merge_shards("emb.npy", world_size=2)  # doctest: +SKIP
    """
    out = _npy_path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to replace it")
    if world_size is None:
        world_size = _discover_world_size(out)
    metas = []
    for rank in range(world_size):
        shard = shard_path(out, rank, world_size)
        meta_file = meta_path(shard)
        if not shard.exists() or not meta_file.exists():
            raise FileNotFoundError(
                f"shard {rank} of {world_size} is incomplete or missing: {meta_file} "
                "(has that rank finished?)"
            )
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            for key in ("num_rows_total", "dim", "start", "stop", "failed"):
                meta[key]  # noqa: B018 - presence check
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{meta_file}: not a valid shard sidecar ({err!r})") from err
        metas.append((shard, meta))
    total = metas[0][1]["num_rows_total"]
    dim = metas[0][1]["dim"]
    expected_start = 0
    for shard, meta in metas:
        if meta["num_rows_total"] != total or meta["dim"] != dim:
            raise ValueError(
                f"{shard}: num_rows_total={meta['num_rows_total']}, dim={meta['dim']} differ from "
                f"shard 0 (num_rows_total={total}, dim={dim})"
            )
        if meta["start"] != expected_start:
            raise ValueError(f"{shard}: starts at row {meta['start']}, expected {expected_start}")
        expected_start = meta["stop"]
    if expected_start != total:
        raise ValueError(f"shards cover rows [0, {expected_start}) but there are {total} rows")

    failed: list[tuple[int, str, str]] = []
    tmp = _tmp_path(out)
    try:
        merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, dim))
        for shard, meta in metas:
            try:
                part = np.load(shard, mmap_mode="r")
            except ValueError as err:  # e.g. an object array, refused without allow_pickle
                raise ValueError(f"{shard}: not a float32 embedding shard ({err})") from err
            if part.shape != (meta["stop"] - meta["start"], dim):
                raise ValueError(f"{shard}: shape {part.shape} does not match its sidecar")
            for i in range(0, part.shape[0], chunk_size):
                stop = min(i + chunk_size, part.shape[0])
                merged[meta["start"] + i : meta["start"] + stop] = part[i:stop]
            failed.extend((int(r), str(p), str(why)) for r, p, why in meta["failed"])
            del part
        merged.flush()
        del merged
        finish_tmp(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    failed.sort(key=lambda f: f[0])
    write_meta(out, num_rows_total=total, start=0, stop=total, dim=dim, failed=failed)
    if remove_shards:
        for shard, _ in metas:
            meta_path(shard).unlink()
            shard.unlink()
    logger.info(
        "merged %d shards into %s (%d rows, %d failed)", world_size, out, total, len(failed)
    )
    return np.load(out, mmap_mode="r"), failed


def write_meta(
    npy_path: Path,
    *,
    num_rows_total: int,
    start: int,
    stop: int,
    dim: int,
    failed: list[tuple[int, str, str]],
    rank: int = 0,
    world_size: int = 1,
) -> None:
    """Write the sidecar of an embedding file (atomically; it marks the file as complete)."""
    atomic_write_json(
        meta_path(npy_path),
        {
            "num_rows_total": num_rows_total,
            "start": start,
            "stop": stop,
            "dim": dim,
            "rank": rank,
            "world_size": world_size,
            "failed": [list(f) for f in failed],
        },
    )


def _npy_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix != ".npy":
        raise ValueError(f"out must be a .npy path, got {out}")
    return out


def _tmp_path(out: Path) -> str:
    # np.lib.format.open_memmap needs a file name (it maps the file read-write), so we cannot use
    # io.atomic_write's file object; same pattern: a temporary file in the destination folder,
    # renamed over the destination once complete.
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return tmp


def tmp_path(out: Path) -> str:
    """A fresh temporary file beside ``out`` (see :func:`finish_tmp`)."""
    return _tmp_path(out)


def finish_tmp(tmp: str, out: Path) -> None:
    """fsync ``tmp`` and atomically rename it to ``out``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, out)
    fsync_dir(out.parent)


def _discover_world_size(out: Path) -> int:
    pattern = re.compile(re.escape(out.stem) + _SHARD_RE)
    sizes = {
        int(m.group(2))
        for f in out.parent.glob(f"{out.stem}.rank*-of-*.npy.json")
        if (m := pattern.fullmatch(f.name))
    }
    if not sizes:
        raise FileNotFoundError(f"no finished shards of {out} found in {out.parent}")
    if len(sizes) > 1:
        raise ValueError(
            f"shards of {out} from several world sizes {sorted(sizes)}; pass world_size"
        )
    return sizes.pop()
