"""Stage train: the reproduced pipeline's metric learning, checkpointed every epoch, resumable."""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import LpDistance

import retrieval_kit as rk
from retrieval_kit.io import atomic_write, atomic_write_json, atomic_write_text

from .config import ARCFACE_LOSSES, Config, ConfigError, check_components
from .context import Context
from .data_stages import load_split
from .non_landmarks import add_non_landmarks, non_landmark_pool

logger = logging.getLogger(__name__)


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


def epoch_image_size(cfg: Config, epoch: int) -> int:
    """The training crop size of ``epoch`` (0-based): ``train.image_sizes``' entry in force.

    Example:
        >>> sizes = {"image_sizes": [[0, 96], [3, 112]]}
        >>> cfg = config_from_dict({"train": sizes})  # doctest: +SKIP
        >>> [epoch_image_size(cfg, e) for e in range(5)]  # doctest: +SKIP
        [96, 96, 96, 112, 112]
    """
    size = cfg.model.image_size
    for start, entry in cfg.train.image_sizes:
        if epoch >= start:
            size = entry
    return size


def train_transform(cfg: Config, model: torch.nn.Module, image_size: int) -> Any:
    """The training augmentation (``train.augment``) at ``image_size``.

    The squash size keeps the config's ratio ``model.resize_size / model.image_size``.
    """
    m, tc = cfg.model, cfg.train
    resize = max(image_size, round(image_size * m.resize_size / m.image_size))
    dcfg = {**data_config(cfg, model), "image_size": image_size, "resize_size": resize}
    if tc.augment == "squash_crop":
        return rk.data.build_train_transform(dcfg)
    return rk.data.build_train_transform(dcfg, random_resized_crop=True, scale=tuple(tc.crop_scale))


def model_paths(out: Path) -> dict[str, Path]:
    """Weights of the two models the later stages compare (baseline: pretrained, no head)."""
    return {"trained": out / "train" / "model.pt", "baseline": out / "train" / "model_init.pt"}


def _distance(config: Config) -> LpDistance:
    # Euclidean on the raw embedding (the reproduced pipeline) or on the unit sphere (monotone in
    # cosine similarity, PML's default); retrieval is cosine either way.
    return LpDistance(normalize_embeddings=config.train.distance == "cosine")


@torch.no_grad()
def embed_on_main(
    model: torch.nn.Module, paths: list[str], ctx: Context, image_size: int
) -> tuple[np.ndarray, list] | None:
    """``model``'s embeddings of ``paths`` and the failed rows, on the main process (else None).

    Under torchrun each rank embeds its share of the images into a shard file and rank 0 merges
    the shards; every rank must call it.
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
    if world_size == 1:
        return rk.embed.extract_embeddings(model, paths, **kwargs)
    tmp = ctx.out / "train" / "train_embeddings.npy"
    rk.embed.extract_embeddings(model, paths, out=tmp, overwrite=True, **kwargs)
    dist.barrier()  # every shard is written
    result = None
    if dist.is_main_process():
        emb, failed = rk.embed.merge_shards(tmp, world_size, remove_shards=True, overwrite=True)
        result = (np.array(emb), failed)  # a copy: the memory-mapped file goes next
        del emb
        tmp.unlink()
        rk.embed.meta_path(tmp).unlink()
    dist.barrier()  # no rank reuses the file name before it is gone
    return result


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

    Rank 0 clusters and sends the mapping to every rank, so all ranks build the same batches.
    """
    embedded = embed_on_main(model, paths, ctx, image_size)
    mapping = None if embedded is None else _cluster(*embedded, labels, num_clusters, seed)
    if rk.train.distributed.get_world_size() > 1:
        mapping = _broadcast(mapping)
    return mapping


def imprint_head(parts: TrainingParts, paths: list[str], labels: np.ndarray, ctx: Context) -> None:
    """``train.head_init: class_means``: the loss's class weights start at the class means.

    First the embedding head's BatchNorm gets the statistics of the training crops (at init it
    is the identity in eval mode but centres every training batch, so eval-mode embeddings
    would not be the ones the loss sees); then the means of the model's normalised embeddings
    at the training size become the class weights (rank 0's, sent to every rank). The global
    random stream is left where it was: the crops and batches are those of a random head's run.
    """
    cfg, model = ctx.config, parts.model
    dist = rk.train.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    targets = np.unique(labels, return_inverse=True)[1]  # the class indices the loss sees
    with torch.random.fork_rng():
        head = getattr(model, "head", None)
        if head is not None:
            shard = torch.utils.data.Subset(parts.dataset, range(rank, len(parts.dataset), world))
            loader = torch.utils.data.DataLoader(
                shard, batch_size=cfg.embed.batch_size, num_workers=cfg.train.num_workers
            )
            rk.train.recalibrate_batchnorm(model, loader, modules=head, device=ctx.device)
        was_normalized = model.normalize
        model.normalize = True
        embedded = embed_on_main(model, paths, ctx, cfg.model.image_size)
        model.normalize = was_normalized
    if embedded is not None:
        emb, failed = embedded
        keep = np.ones(len(paths), bool)
        keep[[row for row, _, _ in failed]] = False
        emb, y = np.asarray(emb[keep], np.float32), targets[keep]
        n = rk.losses.imprint_weights(parts.loss_fn, emb, y, seed=cfg.seed)
        # How well the class means alone classify the training images: the head's start.
        means = np.zeros((y.max() + 1, emb.shape[1]), np.float32)
        np.add.at(means, y, emb)
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        accuracy = float(np.mean(np.argmax(emb @ means.T, axis=1) == y))
        logger.info(
            "head imprinted: %d classes start at their mean embedding (nearest-mean training "
            "accuracy %.3f)",
            n,
            accuracy,
        )
    if world > 1:
        for p in parts.loss_fn.parameters():
            torch.distributed.broadcast(p.data, src=0)


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


@dataclass
class TrainingParts:
    """What trains: built by :func:`build_training`, the one place a loss, miner or sampler is set.

    Attributes:
        model: the embedding network (on the device).
        train_model: ``model``, or its DDP wrapper under torchrun.
        loss_fn: the loss (on the device; its parameters, e.g. an ArcFace head, are optimised).
        miner: the in-batch miner, or ``None``.
        optimizer: over the model's and the loss's parameters (the loss's at its own rate).
        scheduler: per-optimizer-step learning-rate schedule, or ``None`` (constant rate).
        scaler: the AMP gradient scaler, or ``None``.
        dataset: the training images with contiguous class indices ``0..C-1`` as labels.
        make_sampler: ``make_sampler(clusters)``: the batch sampler (cluster or P x K).
        sampler: the first epoch's sampler.
        clusters: class -> cluster of look-alike classes, or ``None``.
        freeze_bn: what ``train_one_epoch(freeze_bn=...)`` gets.
    """

    model: torch.nn.Module
    train_model: torch.nn.Module
    loss_fn: torch.nn.Module
    miner: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    dataset: torch.utils.data.Dataset
    make_sampler: Callable[[dict[int, int] | None], Any]
    sampler: Any
    clusters: dict[int, int] | None
    freeze_bn: Any = False


def build_training(
    cfg: Config,
    paths: list[str],
    labels: np.ndarray,
    *,
    device: torch.device,
    distributed: bool = False,
    find_clusters: Callable[[], dict[int, int] | None] = lambda: None,
) -> TrainingParts:
    """Model, loss, miner, optimizer, schedule and sampler of the config's ``train`` section.

    ``find_clusters`` is called once the model is built (its random head comes first in the
    seeded random stream). ``labels`` are the landmark ids; the dataset yields their
    contiguous indices, which classification losses (ArcFace) need.

    Example:
        >>> parts = build_training(cfg, paths, labels, device=torch.device("cpu"))  # doctest: +SKIP
    """
    tc = cfg.train
    model = build_model(cfg)
    if tc.loss == "subspace_triplet" and model.embedding_dim % tc.num_clusters:
        raise ValueError(
            f"train.num_clusters={tc.num_clusters} must divide the embedding size "
            f"{model.embedding_dim} for the subspace loss"
        )
    clusters = find_clusters()
    model.to(device)
    model.normalize = tc.distance == "cosine"
    classes, targets = np.unique(labels, return_inverse=True)
    loss_fn = build_loss(cfg, np.bincount(targets, minlength=len(classes)), model.embedding_dim)
    loss_fn.to(device)
    miner = build_miner(cfg)
    optimizer = rk.train.build_optimizer(
        model,
        loss_fn,
        name=tc.optimizer,
        lr=tc.lr,
        loss_lr_mult=tc.loss_lr_mult,
        weight_decay=tc.weight_decay,
        **({"momentum": tc.momentum} if tc.optimizer == "sgd" else {}),
    )
    train_model: torch.nn.Module = model
    if distributed:
        # Head BatchNorm statistics over the global batch, as one process computes them.
        rk.train.GlobalBatchNorm.convert(model)
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    transform = train_transform(cfg, model, epoch_image_size(cfg, 0))
    # Crops seeded per (seed, epoch, row): the same pixels on any number of processes.
    dataset = rk.data.ImageListDataset(
        paths, targets.astype(np.int64), transform=transform, seed=cfg.seed
    )

    def make_sampler(mapping: dict[int, int] | None) -> Any:
        kw = dict(seed=cfg.seed, split_batches=distributed)  # each rank: a share of every batch
        if tc.sampler == "cluster" and mapping is not None:
            return rk.samplers.ClusterBatchSampler(
                labels, mapping, tc.classes_per_batch, tc.samples_per_class, **kw
            )
        return rk.samplers.PKSampler(labels, tc.classes_per_batch, tc.samples_per_class, **kw)

    sampler = make_sampler(clusters)
    scheduler = None
    if tc.schedule == "warmup_cosine":
        batches = len(sampler)
        if tc.max_batches_per_epoch is not None:
            batches = min(batches, tc.max_batches_per_epoch)
        steps = tc.epochs * math.ceil(batches / tc.accumulate)
        scheduler = rk.train.warmup_cosine_schedule(optimizer, tc.warmup_steps, max(steps, 1))
    return TrainingParts(
        model=model,
        train_model=train_model,
        loss_fn=loss_fn,
        miner=miner,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type) if tc.amp else None,
        dataset=dataset,
        make_sampler=make_sampler,
        sampler=sampler,
        clusters=clusters,
        # Pretrained trunk statistics stay; the new head's BatchNorm1d still learns.
        freeze_bn=model.trunk if tc.freeze_bn else False,
    )


def build_loss(cfg: Config, class_counts: np.ndarray, embedding_size: int) -> torch.nn.Module:
    """``train.loss`` with ``train.loss_kwargs``; sizes and dynamic margins from the data.

    Triplet losses get ``train.margin`` and the config's distance; a loss that needs
    ``num_classes`` / ``embedding_size`` (the ArcFace family, PML's proxy losses) gets them from
    ``class_counts`` and the model unless ``loss_kwargs`` sets them. ``combined``: a weighted
    sum (``rk.losses.CombinedLoss``) of the parts in ``loss_kwargs.losses``, each
    ``{name: ..., weight: ..., miner: ..., **kwargs}`` and completed the same way.

    Example:
        >>> cfg = config_from_dict({"train": {"loss": "arcface"}})  # doctest: +SKIP
        >>> build_loss(cfg, np.array([4, 6]), 16).W.shape  # doctest: +SKIP
        torch.Size([16, 2])
    """
    tc = cfg.train
    if tc.loss != "combined":
        return _build_one_loss(cfg, tc.loss, dict(tc.loss_kwargs), class_counts, embedding_size)
    key = "train.loss_kwargs.losses"
    parts = tc.loss_kwargs.get("losses")
    if set(tc.loss_kwargs) != {"losses"} or not isinstance(parts, dict) or not parts:
        raise ConfigError(
            f"{key}: train.loss combined needs loss_kwargs {{losses: {{NAME: {{name: LOSS, "
            f"weight: W, miner: MINER, ...}}}}}}, got {tc.loss_kwargs!r}"
        )
    built: dict[str, tuple[torch.nn.Module, float, Any]] = {}
    for part_name, part in parts.items():
        if not isinstance(part, dict) or not isinstance(part.get("name"), str):
            raise ConfigError(f"{key}.{part_name}: expected a mapping with a 'name', got {part!r}")
        kwargs = dict(part)
        name, weight, miner = (
            kwargs.pop("name"),
            kwargs.pop("weight", 1.0),
            kwargs.pop("miner", None),
        )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{key}.{part_name}.weight: expected a number, got {weight!r}")
        loss = _build_one_loss(
            cfg, name, kwargs, class_counts, embedding_size, f"{key}.{part_name}"
        )
        built[str(part_name)] = (loss, float(weight), _part_miner(cfg, miner, f"{key}.{part_name}"))
    return rk.losses.CombinedLoss(built)


def _build_one_loss(
    cfg: Config,
    name: str,
    kwargs: dict[str, Any],
    class_counts: np.ndarray,
    embedding_size: int,
    key: str = "train.loss_kwargs",
) -> torch.nn.Module:
    tc = cfg.train
    if name in ("triplet", "subspace_triplet"):
        kwargs.setdefault("margin", tc.margin)
        kwargs.setdefault("distance", _distance(cfg))
        if name == "subspace_triplet":
            kwargs.setdefault("num_subspaces", tc.num_clusters)
    if tc.dynamic_margins and name in ARCFACE_LOSSES:
        if "margin" in kwargs:
            raise ConfigError(f"{key}.margin: not with train.dynamic_margins: true")
        kwargs["margin"] = rk.losses.dynamic_margins(
            class_counts,
            lam=tc.dynamic_margin_lambda,
            margin_range=tuple(tc.dynamic_margin_range),
        )
    try:
        return rk.losses.create_loss(name, **kwargs)
    except KeyError as e:  # an unknown name inside a combination: the registry's message
        raise ConfigError(f"{key}: {e}") from None
    except TypeError as e:
        # A classification loss: its required sizes are named in Python's "missing" message.
        sizes = {"num_classes": len(class_counts), "embedding_size": embedding_size}
        missing = {k: v for k, v in sizes.items() if k not in kwargs and f"'{k}'" in str(e)}
        if not missing:
            raise ConfigError(f"{key}: {e}") from None
    try:
        return rk.losses.create_loss(name, **kwargs, **missing)
    except TypeError as e:
        raise ConfigError(f"{key}: {e}") from None


def _part_miner(cfg: Config, miner: Any, key: str) -> Any:
    """A combined loss part's own miner: a name or ``{name: ..., **kwargs}`` (``None``: none)."""
    if miner is None:
        return None
    kwargs = dict(miner) if isinstance(miner, dict) else {"name": miner}
    name = kwargs.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.miner: expected a miner name or {{name: ...}}, got {miner!r}")
    if name == "batch_hard":
        kwargs.setdefault("distance", _distance(cfg))
    try:
        return rk.miners.create_miner(name, **kwargs)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{key}.miner: {e}") from None


def build_miner(cfg: Config) -> Any:
    """``train.miner`` with ``train.miner_kwargs`` (``None``: no miner).

    ``auto``: batch-hard under the config's distance for the triplet losses (the reproduced
    pipeline), none for others (a classification loss uses every sample).
    """
    tc = cfg.train
    name = tc.miner
    if name is None or name.lower() == "none":
        return None
    kwargs = dict(tc.miner_kwargs)
    if name.lower() == "auto":
        if tc.loss not in ("triplet", "subspace_triplet"):
            return None
        name = "batch_hard"
    if name == "batch_hard":
        kwargs.setdefault("distance", _distance(cfg))
    try:
        return rk.miners.create_miner(name, **kwargs)
    except TypeError as e:
        raise ConfigError(f"train.miner_kwargs: {e}") from None


def _run_hash(cfg: Config) -> str:
    from .runner import STAGES  # lazy: the runner imports this module lazily too

    return STAGES["train"].config_hash(cfg)


@dataclass
class _StepLog:
    """Per-optimizer-step rows (``train/steps.csv``), rewritten atomically after each epoch."""

    path: Path
    images_per_batch: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    _last: tuple[int, float, float, float] = (0, 0.0, 0.0, 0.0)
    _start: int = 0

    def start_epoch(self, start_step: int, optimizer: torch.optim.Optimizer) -> None:
        lr = optimizer.param_groups[0]["lr"]
        self._start = start_step
        self._last = (start_step, 0.0, time.perf_counter(), lr)

    def on_step(self, epoch: int, done: int, stats: dict[str, float], parts: TrainingParts) -> None:
        batches0, loss_sum0, t0, lr = self._last
        now = time.perf_counter()
        n = done - batches0
        # stats["loss"] is the running mean since start_step: this step's from the sums.
        loss_sum = stats["loss"] * (done - self._start)
        row: dict[str, Any] = {
            "step": len(self.rows) + 1,
            "epoch": epoch + 1,
            "batch": done,
            "loss": (loss_sum - loss_sum0) / max(n, 1),
            "lr": lr,  # the model's rate this step used (the scheduler has stepped since)
            "images_per_s": n * self.images_per_batch / max(now - t0, 1e-9),
        }
        for key, value in (getattr(parts.loss_fn, "last_stats", None) or {}).items():
            row[key] = float(value)
        self.rows.append(row)
        self._last = (done, loss_sum, now, parts.optimizer.param_groups[0]["lr"])

    def resume(self, epochs_done: int) -> None:
        """Keep the rows of the epochs a checkpoint holds (the file has whole epochs only)."""
        if self.path.is_file():
            with self.path.open(newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= epochs_done]

    def write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


@torch.no_grad()
def validation_metrics(model: torch.nn.Module, rows: list[Any], ctx: Context) -> dict[str, float]:
    """GAP and mAP@k of the validation queries against the validation database under ``model``.

    The prediction is the nearest database image's label, its cosine the confidence (no
    reranking), as the evaluate stage's ``val`` figures; ``{}`` without validation rows. The
    training's random stream and the model's mode are left as they were.
    """
    cfg = ctx.config
    queries = [r for r in rows if r.role == "val_query"]
    db = [r for r in rows if r.role == "val_db"]
    if not queries or not db:
        return {}
    start = time.perf_counter()
    normalize = model.normalize
    model.normalize = True
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            emb, failed = rk.embed.extract_embeddings(
                model,
                [r.path for r in queries + db],
                image_size=cfg.embed.image_size or cfg.model.image_size,
                resize=cfg.embed.resize,
                batch_size=cfg.embed.batch_size,
                num_workers=cfg.embed.num_workers,
                device=ctx.device,
                on_error="skip",
                progress=False,
                rank=0,  # the main process alone embeds every row
                world_size=1,
            )
    finally:
        model.normalize = normalize
    bad = {row for row, _, _ in failed}
    q_ok = [i for i in range(len(queries)) if i not in bad]
    d_ok = [i for i in range(len(db)) if len(queries) + i not in bad]
    if not q_ok or not d_ok:
        return {}
    q_emb = np.asarray(emb[q_ok], dtype=np.float32)
    d_emb = np.asarray(emb[[len(queries) + i for i in d_ok]], dtype=np.float32)
    sims = q_emb @ d_emb.T
    k = min(cfg.evaluate.map_k, len(d_ok))
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    db_ids = [db[i].id for i in d_ok]
    truth = {queries[i].id: {int(queries[i].label)} for i in q_ok}
    by_label: dict[int, set[str]] = {}
    for r in db:
        by_label.setdefault(int(r.label), set()).add(r.id)
    predictions, ranked, solution = {}, {}, {}
    for row, qi in enumerate(q_ok):
        q = queries[qi]
        best = order[row, 0]
        predictions[q.id] = (int(db[d_ok[best]].label), float(sims[row, best]))
        wanted = by_label.get(int(q.label), set()) & set(db_ids)
        if wanted:
            ranked[q.id] = [db_ids[j] for j in order[row]]
            solution[q.id] = wanted
    out = {"val_gap": rk.metrics.global_average_precision(predictions, truth)}
    if solution:
        out["val_map_at_100"] = rk.metrics.mean_average_precision_at_k(
            ranked, solution, k=cfg.evaluate.map_k
        )
    out["val_seconds"] = time.perf_counter() - start
    return out


def _plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = [h for h in history if "val_gap" in h]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(9 if val else 5, 3.2), squeeze=False)
    ax = axes[0, 0]
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training loss")
    ax.grid(alpha=0.3)
    if val:
        ax = axes[0, 1]
        for key, name in (("val_gap", "GAP"), ("val_map_at_100", "mAP@100")):
            points = [(h["epoch"], h[key]) for h in val if key in h]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation (unseen classes)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def stage_train(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    cfg, tc = ctx.config, ctx.config.train
    check_components(cfg)  # an unknown loss or miner fails before anything is written
    out_dir = ctx.out / "train"
    ckpt_dir = out_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    run_hash = _run_hash(cfg)
    dist = rk.train.distributed
    distributed = dist.is_distributed()  # joined by the runner under torchrun
    device = ctx.device
    main = dist.is_main_process()

    split_rows = load_split(ctx)
    rows = [r for r in split_rows if r.role == "train"]
    paths = [r.path for r in rows]
    labels = np.array([int(r.label) for r in rows], dtype=np.int64)
    rk.train.seed_everything(cfg.seed, deterministic=tc.deterministic)

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

    def find_clusters() -> dict[int, int] | None:
        # Look-alike clusters of classes, from a frozen pretrained model (once per run).
        if resume is not None and resume["extra"].get("clusters") is not None:
            return {int(c): int(k) for c, k in resume["extra"]["clusters"]}
        if tc.sampler == "cluster" or tc.loss == "subspace_triplet":
            frozen = rk.backbones.create_backbone(
                tc.cluster_backbone, pretrained=tc.cluster_pretrained, embedding_dim=None
            )
            logger.info(
                "class centres from frozen %s, %d clusters", tc.cluster_backbone, tc.num_clusters
            )
            return class_clusters(
                frozen, paths, labels, tc.num_clusters, ctx, cfg.model.image_size, cfg.seed
            )
        return None

    parts = build_training(
        cfg, paths, labels, device=device, distributed=distributed, find_clusters=find_clusters
    )
    if tc.head_init == "class_means" and resume is None:  # a resumed run restores the head
        imprint_head(parts, paths, labels, ctx)
    pool = non_landmark_pool(ctx, paths, labels)
    if pool is not None:
        add_non_landmarks(parts, pool, cfg)
    model, sampler = parts.model, parts.sampler
    step_log = _StepLog(out_dir / "steps.csv", parts.sampler.batch_size)
    start_epoch, start_step = 0, 0
    history: list[dict[str, Any]] = []
    if resume is not None:
        ck = rk.train.load_checkpoint(last, **_state(parts, sampler))
        start_epoch, start_step = ck["epoch"], ck["step"]
        history = list(ck["extra"].get("history", []))
        step_log.resume(epochs_done=start_epoch)
        logger.info("resuming from %s: epoch %d, batch %d", last, start_epoch, start_step)

    def save(path: Path, sampler: Any, epoch: int, step: int) -> None:
        extra = {
            "run": run_hash,
            "clusters": None
            if parts.clusters is None
            else [[c, k] for c, k in parts.clusters.items()],
            "history": history,
        }
        rk.train.save_checkpoint(
            path, **_state(parts, sampler), epoch=epoch, step=step, extra=extra
        )

    for epoch in range(start_epoch, tc.epochs):
        if (
            tc.recluster_every
            and epoch > 0
            and epoch % tc.recluster_every == 0
            and start_step == 0
            and parts.clusters is not None
        ):
            logger.info("epoch %d: re-clustering the classes with the current model", epoch)
            model.normalize = True
            if distributed:
                # Every shard must be embedded by the same model. GlobalBatchNorm keeps the ranks'
                # BatchNorm statistics equal; rank 0's buffers are sent anyway, so that a buffer
                # no all-reduce covers (a custom module's) cannot split the clustering.
                for buf in model.buffers():
                    torch.distributed.broadcast(buf, src=0)
            parts.clusters = class_clusters(
                model, paths, labels, tc.num_clusters, ctx, cfg.model.image_size, cfg.seed + epoch
            )
            model.normalize = tc.distance == "cosine"
            sampler = parts.make_sampler(parts.clusters)
        parts.dataset.set_epoch(epoch)
        if start_step == 0:
            sampler.set_epoch(epoch)
        logger.info("epoch %d/%d", epoch + 1, tc.epochs)
        if tc.image_sizes:  # progressive size: this epoch's, also when resuming inside it
            size = epoch_image_size(cfg, epoch)
            parts.dataset.transform = train_transform(cfg, model, size)
            logger.info("epoch %d: training images at %d px", epoch + 1, size)
        if tc.loss == "subspace_triplet" and not (epoch == tc.epochs - 1 and tc.epochs > 1):
            stats = _subspace_epoch(parts, labels, ctx, epoch)
        else:
            stats = _epoch(parts, sampler, ctx, epoch, start_step, save, step_log)
        start_step = 0
        history.append({"epoch": epoch + 1, **{k: float(v) for k, v in stats.items()}})
        due = tc.val_every and ((epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs)
        if due and main:
            history[-1].update(validation_metrics(model, split_rows, ctx))
            if "val_gap" in history[-1]:
                logger.info(
                    "epoch %d: validation GAP %.4f, mAP@100 %.4f (%.1f s)",
                    epoch + 1,
                    history[-1]["val_gap"],
                    history[-1].get("val_map_at_100", math.nan),
                    history[-1]["val_seconds"],
                )
        logger.info(
            "epoch %d: loss %.4f, %s%.1f img/s",
            epoch + 1,
            stats["loss"],
            "".join(
                f"{k} {stats[k]:.3f}, "
                for k in ("active_fraction", "accuracy", "mean_angle")
                if k in stats
            ),
            stats.get("images_per_s", math.nan),
        )
        if main:
            save(ckpt_dir / f"epoch_{epoch + 1:03d}.pt", sampler, epoch + 1, 0)
            save(last, sampler, epoch + 1, 0)
            step_log.write()
            _plot_history(history, out_dir / "loss.png")
        dist.barrier()
    _warn_if_head_did_not_learn(history, len(np.unique(labels)))

    outputs: list[Path] = []
    if main:
        model.normalize = True
        final = model_paths(ctx.out)["trained"]
        rk.train.save_checkpoint(final, model=model, epoch=tc.epochs, extra={"run": run_hash})
        atomic_write_json(out_dir / "history.json", history)
        if not step_log.path.is_file():  # no epoch to run (resumed at the end)
            step_log.write()
        outputs = [init_path, final, out_dir / "history.json", step_log.path]
    dist.barrier()
    summary = {
        "epochs": tc.epochs,
        "loss": tc.loss,
        "final_loss": history[-1]["loss"] if history else None,
        "images": len(paths),
        "classes": int(len(np.unique(labels))),
        "clusters": None if parts.clusters is None else len(set(parts.clusters.values())),
        "non_landmarks": 0 if pool is None else len(pool.paths),
    }
    return outputs, summary


def _warn_if_head_did_not_learn(history: list[dict[str, Any]], num_classes: int) -> None:
    """Warn when a classification loss's training accuracy ended near chance.

    A fresh ArcFace head under the triplet recipe's optimizer (the demo's SGD at 3e-3) stays at
    chance while its gradient wrecks the pretrained trunk: say so instead of a silent bad model.
    """
    accuracy = history[-1].get("accuracy") if history else None
    if accuracy is None or accuracy >= 3.0 / max(num_classes, 1):
        return
    logger.warning(
        "training accuracy of the last epoch is %.3f, about chance for %d classes: the loss's "
        "head did not learn and the trained model may be worse than the pretrained one. Start "
        "the head at the class means (train.head_init: class_means) and give it its own rate "
        "(configs/demo_arcface.yaml: Adam 3e-4, train.loss_lr_mult 30)",
        accuracy,
        num_classes,
    )


def _state(parts: TrainingParts, sampler: Any) -> dict[str, Any]:
    """What a checkpoint saves and restores: ``save_checkpoint`` / ``load_checkpoint`` kwargs."""
    state: dict[str, Any] = dict(
        model=parts.model,
        optimizer=parts.optimizer,
        sampler=sampler,
        scaler=parts.scaler,
        loss=parts.loss_fn,
    )
    if parts.scheduler is not None:
        state["scheduler"] = parts.scheduler
    return state


def _epoch(
    parts: TrainingParts,
    sampler: Any,
    ctx: Context,
    epoch: int,
    start_step: int,
    save: Callable[[Path, Any, int, int], None],
    step_log: _StepLog,
) -> dict[str, float]:
    """One epoch over the whole training set, with mid-epoch checkpoints and the step log."""
    tc = ctx.config.train
    dist = rk.train.distributed
    main = dist.is_main_process()
    last = ctx.out / "train" / "checkpoints" / "last.pt"
    loader = torch.utils.data.DataLoader(
        parts.dataset,
        batch_sampler=sampler,
        num_workers=tc.num_workers,
        # Its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed epoch's random crops would differ from an uninterrupted run's.
        generator=torch.Generator().manual_seed(ctx.config.seed + epoch),
    )
    since_ckpt = 0
    step_log.start_epoch(start_step, parts.optimizer)

    def on_step(step: int, stats: dict[str, float]) -> None:
        nonlocal since_ckpt
        step_log.on_step(epoch, step, stats, parts)
        # Mid-epoch checkpoint (exact resume needs num_workers=0: workers prefetch).
        since_ckpt += 1
        due = tc.checkpoint_every_steps and since_ckpt % tc.checkpoint_every_steps == 0
        if due and main and step < len(sampler):
            save(last, sampler, epoch, step)

    max_steps = tc.max_batches_per_epoch
    if max_steps is not None:
        max_steps = max(0, max_steps - start_step)
    return rk.train.train_one_epoch(
        parts.train_model,
        loader,
        parts.loss_fn,
        parts.miner,
        parts.optimizer,
        scheduler=parts.scheduler,
        scaler=parts.scaler,
        accumulate=tc.accumulate,
        device=ctx.device,
        gather_for_mining=dist.is_distributed(),
        freeze_bn=parts.freeze_bn,
        max_steps=max_steps,
        start_step=start_step,
        progress=ctx.progress and main,
        on_step=on_step,
    )


def _subspace_epoch(
    parts: TrainingParts, labels: np.ndarray, ctx: Context, epoch: int
) -> dict[str, float]:
    # Divide and Conquer: cluster k's classes train embedding chunk k, one cluster after another.
    tc = ctx.config.train
    clusters = parts.clusters
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
            torch.utils.data.Subset(parts.dataset, rows.tolist()),
            batch_sampler=sampler,
            num_workers=tc.num_workers,
            generator=torch.Generator().manual_seed(ctx.config.seed + 1000 * epoch + k),
        )
        stats = rk.train.train_one_epoch(
            parts.train_model,
            loader,
            parts.loss_fn,
            parts.miner,
            parts.optimizer,
            scaler=parts.scaler,
            accumulate=tc.accumulate,
            device=ctx.device,
            subspace=k,
            freeze_bn=parts.freeze_bn,
            progress=ctx.progress,
            max_steps=None if cap is None else max(1, math.ceil(cap / len(groups))),
        )
        totals["loss"] += stats["loss"] * stats["batches"]
        totals["batches"] += stats["batches"]
    totals["loss"] /= max(totals["batches"], 1.0)
    return totals
