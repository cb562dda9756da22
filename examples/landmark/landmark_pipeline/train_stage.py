"""Stage train: the reproduced pipeline's metric learning, checkpointed every epoch, resumable."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import LpDistance

import retrieval_kit as rk
from retrieval_kit.io import atomic_write_json

from .config import Config, section_hash
from .context import Context
from .data_stages import load_split

logger = logging.getLogger(__name__)

TRAIN_SECTIONS = ("seed", "model", "train")


def build_model(
    config: Config, *, pretrained: bool | str | None = None, head: bool = True
) -> torch.nn.Module:
    """The embedding network of the config (``pretrained`` overrides ``model.pretrained``).

    ``head=False``: the backbone's pooled features alone (``embedding_dim=None``), the baseline.
    """
    m = config.model
    return rk.backbones.create_backbone(
        m.backbone,
        pretrained=m.pretrained if pretrained is None else pretrained,
        embedding_dim=m.embedding_dim if head else None,
        pooling=m.pooling,
    )


def data_config(config: Config, model: torch.nn.Module) -> dict[str, Any]:
    """The model's preprocessing with the config's image sizes."""
    return {
        **model.data_config,
        "image_size": config.model.image_size,
        "resize_size": config.model.resize_size,
    }


def model_paths(out: Path) -> dict[str, Path]:
    """Weights of the two models the later stages compare (baseline: pretrained, no head)."""
    return {"trained": out / "train" / "model.pt", "baseline": out / "train" / "model_init.pt"}


def _distance(config: Config) -> LpDistance:
    # Euclidean on the raw embedding (the reproduced pipeline) or on the unit sphere (monotone in
    # cosine similarity, PML's default); retrieval is cosine either way.
    return LpDistance(normalize_embeddings=config.train.distance == "cosine")


@torch.no_grad()
def class_clusters(
    model: torch.nn.Module,
    paths: list[str],
    labels: np.ndarray,
    num_clusters: int,
    ctx: Context,
    image_size: int,
    seed: int,
) -> dict[int, int]:
    """Cluster the classes by the centre of their images' embeddings under ``model``.

    Under torchrun each rank embeds its share of the images into a shard file; rank 0 merges the
    shards, clusters, and sends the mapping to every rank, so all ranks build the same batches.
    """
    dist = rk.train.distributed
    world_size = dist.get_world_size()
    kwargs: dict[str, Any] = dict(
        image_size=image_size,
        batch_size=ctx.config.embed.batch_size,
        num_workers=ctx.config.embed.num_workers,
        device=ctx.device,
        on_error="skip",
        progress=ctx.progress,
    )
    mapping = None
    if world_size == 1:
        emb, failed = rk.embed.extract_embeddings(model, paths, **kwargs)
        mapping = _cluster(emb, failed, labels, num_clusters, seed)
    else:
        tmp = ctx.out / "train" / "cluster_embeddings.npy"
        rk.embed.extract_embeddings(model, paths, out=tmp, overwrite=True, **kwargs)
        dist.barrier()  # every shard is written
        if dist.is_main_process():
            emb, failed = rk.embed.merge_shards(tmp, world_size, remove_shards=True, overwrite=True)
            mapping = _cluster(emb, failed, labels, num_clusters, seed)
            del emb
            tmp.unlink()
            rk.embed.meta_path(tmp).unlink()
        mapping = _broadcast(mapping)
    return mapping


def _cluster(
    emb: np.ndarray, failed: list, labels: np.ndarray, num_clusters: int, seed: int
) -> dict[int, int]:
    if len(emb) != len(labels):
        raise ValueError(f"{len(emb)} embeddings for {len(labels)} images")
    keep = np.ones(len(labels), bool)
    keep[[row for row, _, _ in failed]] = False
    k = min(num_clusters, len(np.unique(labels[keep])))
    mapping = rk.samplers.cluster_classes(emb[keep], labels[keep], k, seed=seed)
    return {int(c): int(v) for c, v in mapping.items()}


def _broadcast(obj: Any) -> Any:
    """``obj`` of rank 0 on every rank."""
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def stage_train(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    cfg, tc = ctx.config, ctx.config.train
    out_dir = ctx.out / "train"
    ckpt_dir = out_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    run_hash = section_hash(cfg, *TRAIN_SECTIONS)
    dist = rk.train.distributed
    distributed = dist.is_distributed()  # joined by the runner under torchrun
    device = ctx.device
    main = dist.is_main_process()

    rows = [r for r in load_split(ctx) if r.role == "train"]
    paths = [r.path for r in rows]
    labels = np.array([int(r.label) for r in rows], dtype=np.int64)
    rk.train.seed_everything(cfg.seed, deterministic=tc.deterministic)

    model = build_model(cfg)
    dcfg = data_config(cfg, model)
    if tc.loss == "subspace_triplet" and model.embedding_dim % tc.num_clusters:
        raise ValueError(
            f"train.num_clusters={tc.num_clusters} must divide the embedding size "
            f"{model.embedding_dim} for the subspace loss"
        )
    init_path = model_paths(ctx.out)["baseline"]
    if main:
        # What baseline_gap measures: the pretrained backbone's pooled features, without the
        # randomly initialised head (a random projection is no baseline a user would keep).
        # fork_rng: building it must not move the training's random stream.
        with torch.random.fork_rng():
            baseline = build_model(cfg, head=False)
        rk.train.save_checkpoint(init_path, model=baseline, epoch=0, extra={"run": run_hash})
        del baseline

    resume = None
    if last.is_file() and not ctx.force:
        probe = torch.load(last, map_location="cpu", weights_only=True)
        if (probe.get("extra") or {}).get("run") == run_hash:
            resume = probe
        else:
            logger.warning("%s is from another configuration: training from scratch", last)
    elif last.is_file():
        logger.info("--force: training from scratch (ignoring %s)", last)

    # Look-alike clusters of classes, from a frozen pretrained model (computed once per run).
    clusters: dict[int, int] | None = None
    if resume is not None and resume["extra"].get("clusters") is not None:
        clusters = {int(c): int(k) for c, k in resume["extra"]["clusters"]}
    elif tc.sampler == "cluster" or tc.loss == "subspace_triplet":
        frozen = rk.backbones.create_backbone(
            tc.cluster_backbone, pretrained=tc.cluster_pretrained, embedding_dim=None
        )
        logger.info(
            "class centres from frozen %s, %d clusters", tc.cluster_backbone, tc.num_clusters
        )
        clusters = class_clusters(
            frozen, paths, labels, tc.num_clusters, ctx, cfg.model.image_size, cfg.seed
        )
        del frozen

    model.to(device)
    model.normalize = tc.distance == "cosine"
    # Pretrained trunk statistics stay; the new head's BatchNorm1d still learns.
    freeze_bn = model.trunk if tc.freeze_bn else False
    optimizer = torch.optim.SGD(
        model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type) if tc.amp else None
    train_model: torch.nn.Module = model
    if distributed:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    if tc.augment == "squash_crop":
        transform = rk.data.build_train_transform(dcfg)
    else:
        transform = rk.data.build_train_transform(
            dcfg, random_resized_crop=True, scale=tuple(tc.crop_scale)
        )
    dataset = rk.data.ImageListDataset(paths, labels, transform=transform)
    distance = _distance(cfg)
    miner = rk.miners.BatchHardMiner(distance=distance)
    if tc.loss == "subspace_triplet":
        loss_fn = rk.losses.SubspaceTripletLoss(
            tc.num_clusters, margin=tc.margin, distance=distance
        )
    else:
        loss_fn = rk.losses.TripletLoss(margin=tc.margin, distance=distance)

    def make_sampler(mapping: dict[int, int] | None, rows_labels: np.ndarray) -> Any:
        kw = dict(seed=cfg.seed, split_batches=distributed)  # each rank: a share of every batch
        if tc.sampler == "cluster" and mapping is not None:
            return rk.samplers.ClusterBatchSampler(
                rows_labels, mapping, tc.classes_per_batch, tc.samples_per_class, **kw
            )
        return rk.samplers.PKSampler(rows_labels, tc.classes_per_batch, tc.samples_per_class, **kw)

    sampler = make_sampler(clusters, labels)
    start_epoch, start_step = 0, 0
    history: list[dict[str, Any]] = []
    if resume is not None:
        ck = rk.train.load_checkpoint(
            last, model=model, optimizer=optimizer, sampler=sampler, scaler=scaler
        )
        start_epoch, start_step = ck["epoch"], ck["step"]
        history = list(ck["extra"].get("history", []))
        logger.info("resuming from %s: epoch %d, batch %d", last, start_epoch, start_step)

    def extra() -> dict[str, Any]:
        return {
            "run": run_hash,
            "clusters": None if clusters is None else [[c, k] for c, k in clusters.items()],
            "history": history,
        }

    for epoch in range(start_epoch, tc.epochs):
        if (
            tc.recluster_every
            and epoch > 0
            and epoch % tc.recluster_every == 0
            and start_step == 0
            and clusters is not None
        ):
            logger.info("epoch %d: re-clustering the classes with the current model", epoch)
            model.normalize = True
            if distributed:
                # Each rank's BatchNorm statistics moved with its own last batch since DDP synced
                # them: every shard must be embedded by the same model, rank 0's.
                for buf in model.buffers():
                    torch.distributed.broadcast(buf, src=0)
            clusters = class_clusters(
                model, paths, labels, tc.num_clusters, ctx, cfg.model.image_size, cfg.seed + epoch
            )
            model.normalize = tc.distance == "cosine"
            sampler = make_sampler(clusters, labels)
        if start_step == 0:
            sampler.set_epoch(epoch)
        logger.info("epoch %d/%d", epoch + 1, tc.epochs)
        if tc.loss == "subspace_triplet" and not (epoch == tc.epochs - 1 and tc.epochs > 1):
            stats = _subspace_epoch(
                train_model,
                dataset,
                labels,
                clusters,
                loss_fn,
                miner,
                optimizer,
                scaler,
                device,
                ctx,
                epoch,
                freeze_bn,
            )
        else:
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=tc.num_workers,
                # Its own generator: creating the iterator must not draw from the global RNG,
                # or a resumed epoch's random crops would differ from an uninterrupted run's.
                generator=torch.Generator().manual_seed(ctx.config.seed + epoch),
            )
            since_ckpt = [0]

            def on_step(
                step: int,
                stats: dict[str, float],
                epoch: int = epoch,
                since_ckpt: list[int] = since_ckpt,
                sampler: Any = sampler,
            ) -> None:
                # Mid-epoch checkpoint (exact resume needs num_workers=0: workers prefetch).
                since_ckpt[0] += 1
                due = tc.checkpoint_every_steps and since_ckpt[0] % tc.checkpoint_every_steps == 0
                if due and main and step < len(sampler):
                    rk.train.save_checkpoint(
                        last,
                        model=model,
                        optimizer=optimizer,
                        sampler=sampler,
                        scaler=scaler,
                        epoch=epoch,
                        step=step,
                        extra=extra(),
                    )

            max_steps = tc.max_batches_per_epoch
            if max_steps is not None:
                max_steps = max(0, max_steps - start_step)
            stats = rk.train.train_one_epoch(
                train_model,
                loader,
                loss_fn,
                miner,
                optimizer,
                scaler=scaler,
                accumulate=tc.accumulate,
                device=device,
                gather_for_mining=distributed,
                freeze_bn=freeze_bn,
                max_steps=max_steps,
                start_step=start_step,
                progress=ctx.progress and main,
                on_step=on_step,
            )
        start_step = 0
        history.append({"epoch": epoch + 1, **{k: float(v) for k, v in stats.items()}})
        logger.info(
            "epoch %d: loss %.4f, active triplets %.3f, %.1f img/s",
            epoch + 1,
            stats["loss"],
            stats.get("active_fraction", math.nan),
            stats.get("images_per_s", math.nan),
        )
        if main:
            kwargs = dict(
                model=model,
                optimizer=optimizer,
                sampler=sampler,
                scaler=scaler,
                epoch=epoch + 1,
                step=0,
                extra=extra(),
            )
            rk.train.save_checkpoint(ckpt_dir / f"epoch_{epoch + 1:03d}.pt", **kwargs)
            rk.train.save_checkpoint(last, **kwargs)
        dist.barrier()

    outputs: list[Path] = []
    if main:
        model.normalize = True
        final = model_paths(ctx.out)["trained"]
        rk.train.save_checkpoint(final, model=model, epoch=tc.epochs, extra={"run": run_hash})
        atomic_write_json(out_dir / "history.json", history)
        outputs = [init_path, final, out_dir / "history.json"]
    dist.barrier()
    summary = {
        "epochs": tc.epochs,
        "final_loss": history[-1]["loss"] if history else None,
        "images": len(paths),
        "classes": int(len(np.unique(labels))),
        "clusters": None if clusters is None else len(set(clusters.values())),
    }
    return outputs, summary


def _subspace_epoch(
    model,
    dataset,
    labels,
    clusters,
    loss_fn,
    miner,
    optimizer,
    scaler,
    device,
    ctx,
    epoch,
    freeze_bn,
) -> dict[str, float]:
    # Divide and Conquer: cluster k's classes train embedding chunk k, one cluster after another.
    tc = ctx.config.train
    totals: dict[str, float] = {"loss": 0.0, "batches": 0.0}
    cap = tc.max_batches_per_epoch
    groups = sorted(set(clusters.values()))
    for k in groups:
        rows = np.flatnonzero(np.isin(labels, [c for c, v in clusters.items() if v == k]))
        if len(np.unique(labels[rows])) < 2:
            continue  # one class alone has no negatives
        sampler = rk.samplers.PKSampler(
            labels[rows],
            min(tc.classes_per_batch, len(np.unique(labels[rows]))),
            tc.samples_per_class,
            seed=ctx.config.seed + k,
        )
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(dataset, rows.tolist()),
            batch_sampler=sampler,
            num_workers=tc.num_workers,
            generator=torch.Generator().manual_seed(ctx.config.seed + 1000 * epoch + k),
        )
        stats = rk.train.train_one_epoch(
            model,
            loader,
            loss_fn,
            miner,
            optimizer,
            scaler=scaler,
            accumulate=tc.accumulate,
            device=device,
            subspace=k,
            freeze_bn=freeze_bn,
            progress=ctx.progress,
            max_steps=None if cap is None else max(1, math.ceil(cap / len(groups))),
        )
        totals["loss"] += stats["loss"] * stats["batches"]
        totals["batches"] += stats["batches"]
    totals["loss"] /= max(totals["batches"], 1.0)
    return totals
