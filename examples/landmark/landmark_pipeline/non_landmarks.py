"""Non-landmark images in the training batches (``train.non_landmarks``), as negatives only.

The pool never holds a test image: ``index`` is index.csv (unlabelled, available before any
test query; in the demo also the distractor pool of the reranking), ``rejects`` the images the
clean stage removed from the training set, or a user's folder. Pool rows follow the landmark
rows in the dataset, labelled ``rk.samplers.non_landmark_labels`` (distinct negative ids: a
triplet never takes one as anchor or positive; the ArcFace family pushes them below
``loss_kwargs.non_landmark_margin`` to every class).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import retrieval_kit as rk
from retrieval_kit.data.gldv2 import IMAGE_EXTENSIONS

from .config import Config
from .context import Context
from .data_stages import load_split
from .table import read_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NonLandmarkPool:
    """The pool's image paths and, for hard mining, the candidates table of the sampler."""

    paths: list[str]
    candidates: np.ndarray | None = None


def pool_paths(ctx: Context) -> list[str]:
    """Image paths of ``train.non_landmarks`` (empty for ``none``), sorted or in table order."""
    source = ctx.config.train.non_landmarks
    if source == "none":
        return []
    if source == "index":
        paths = [r.path for r in load_split(ctx) if r.source == "index"]
    elif source == "rejects":
        with (ctx.out / "clean" / "removed.csv").open(newline="", encoding="utf-8") as f:
            ids = {r["id"] for r in csv.DictReader(f)}  # written by cleaning.write_removed_csv
        paths = [r.path for r in read_table(ctx.out / "prepare" / "images.csv") if r.id in ids]
    else:
        folder = Path(source).expanduser()
        ext = {e.lower() for e in IMAGE_EXTENSIONS}
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in ext)
    if not paths:
        raise ValueError(
            f"train.non_landmarks {source!r}: no images (index: none in index.csv; rejects: "
            f"the clean stage removed none; folder: no {', '.join(IMAGE_EXTENSIONS)} files)"
        )
    logger.info("non-landmark pool %r: %d images", source, len(paths))
    return paths


@torch.no_grad()
def hard_candidates(
    ctx: Context, paths: list[str], labels: np.ndarray, pool: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Per class, the ``train.non_landmark_candidates`` pool images nearest to its centre.

    Embedded once by the frozen cluster backbone (on rank 0, then broadcast): the table
    depends on the pool and the classes, not on training. Unreadable pool images leave the pool.
    Returns ``(candidates, pool)``.
    """
    cfg = ctx.config
    dist = rk.train.distributed
    result = None
    if dist.is_main_process():
        # fork_rng: building the frozen model must not move the training's random stream.
        with torch.random.fork_rng():
            frozen = rk.backbones.create_backbone(
                cfg.train.cluster_backbone,
                pretrained=cfg.train.cluster_pretrained,
                embedding_dim=None,
            )
        kwargs: dict[str, Any] = dict(
            image_size=cfg.model.image_size,
            batch_size=cfg.embed.batch_size,
            num_workers=cfg.embed.num_workers,
            device=ctx.device,
            on_error="skip",
            progress=ctx.progress,
        )
        emb, failed = rk.embed.extract_embeddings(frozen, paths + pool, **kwargs)
        ok = np.ones(len(emb), bool)
        ok[[row for row, _, _ in failed]] = False
        n = len(paths)
        if not ok[n:].all():
            bad = [pool[i] for i in np.flatnonzero(~ok[n:])]
            logger.warning(
                "%d unreadable non-landmark images left out (first: %s)", len(bad), bad[0]
            )
        keep = np.flatnonzero(ok[n:])
        table = rk.samplers.nearest_pool_rows(
            emb[:n][ok[:n]], labels[ok[:n]], emb[n:][keep], cfg.train.non_landmark_candidates
        )
        result = (table, [pool[i] for i in keep])
    if dist.get_world_size() > 1:
        box = [result]
        torch.distributed.broadcast_object_list(box, src=0)
        result = box[0]
    return result


def non_landmark_pool(ctx: Context, paths: list[str], labels: np.ndarray) -> NonLandmarkPool | None:
    """The configured pool (``None`` when ``train.non_landmarks`` is ``none``)."""
    pool = pool_paths(ctx)
    if not pool:
        return None
    if ctx.config.train.non_landmark_mining == "hard":
        table, pool = hard_candidates(ctx, paths, labels, pool)
        return NonLandmarkPool(pool, table)
    return NonLandmarkPool(pool)


class _PoolConcat(torch.utils.data.ConcatDataset):
    """``ConcatDataset`` that passes ``set_epoch`` (per-row augmentation seeds) and a new
    ``transform`` (progressive image size) to every part, as the train stage sets them."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch)

    @property
    def transform(self) -> Any:
        return self.datasets[0].transform

    @transform.setter
    def transform(self, transform: Any) -> None:
        for part in self.datasets:
            part.transform = transform


def add_non_landmarks(parts: Any, pool: NonLandmarkPool, cfg: Config) -> None:
    """Append the pool to ``parts.dataset`` and wrap ``parts``' sampler factory and sampler.

    ``parts`` is the train stage's ``TrainingParts``; its dataset's landmark rows keep their
    positions, the pool's rows follow them with labels ``non_landmark_labels``.
    """
    landmark = parts.dataset
    extra = rk.data.ImageListDataset(
        pool.paths,
        rk.samplers.non_landmark_labels(len(pool.paths)).tolist(),
        transform=landmark.transform,
        # Its own augmentation stream: pool row i must not repeat landmark row i's crop.
        seed=None if landmark.seed is None else landmark.seed + 1,
    )
    parts.dataset = _PoolConcat([landmark, extra])
    first = len(landmark)
    rows = np.arange(first, first + len(pool.paths))
    make_landmark_sampler = parts.make_sampler

    def make_sampler(mapping: dict[int, int] | None) -> Any:
        return rk.samplers.NonLandmarkBatchSampler(
            make_landmark_sampler(mapping),
            rows,
            cfg.train.non_landmarks_per_batch,
            candidates=pool.candidates,
            seed=cfg.seed,
        )

    parts.make_sampler = make_sampler
    parts.sampler = make_sampler(parts.clusters)
