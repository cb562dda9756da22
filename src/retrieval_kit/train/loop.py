"""``train_one_epoch``: one explicit pass over a loader (AMP, gradient accumulation, DDP-aware)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_metric_learning.distances import LpDistance

from retrieval_kit._checks import positive_int
from retrieval_kit._progress import progress_bar
from retrieval_kit.train.distributed import gather_embeddings, get_world_size, is_distributed

__all__ = ["train_one_epoch"]

logger = logging.getLogger(__name__)

_IMAGE_KEYS = ("image", "images")
_LABEL_KEYS = ("label", "labels")


def _unpack(batch: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        image_key = next((k for k in _IMAGE_KEYS if k in batch), None)
        label_key = next((k for k in _LABEL_KEYS if k in batch), None)
        if image_key is None or label_key is None:
            raise KeyError(
                f"batch {index} is a dict with keys {sorted(batch)}; expected an image key "
                f"{_IMAGE_KEYS} and a label key {_LABEL_KEYS}"
            )
        return batch[image_key], batch[label_key]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"batch {index} is a {type(batch).__name__}; expected (images, labels, ...) or a dict "
        f"with 'image' and 'label' keys"
    )


def _subspace_view(loss_fn: Any, embeddings: torch.Tensor, subspace: int | None) -> torch.Tensor:
    # The loss's own view of subspace k, so that the miner mines where the loss acts, and active
    # triplets are counted there.
    if subspace is None:
        return embeddings
    view = getattr(loss_fn, "subspace_view", None)
    if view is None:
        raise ValueError(
            f"subspace={subspace} was given but {type(loss_fn).__name__} has no subspaces "
            f"(use rk.losses.SubspaceTripletLoss)"
        )
    return view(embeddings, subspace)


def _tuple_kind(indices: Any) -> str | None:
    if isinstance(indices, (tuple, list)) and len(indices) in (3, 4):
        return "triplets" if len(indices) == 3 else "pairs"
    return None


def _loss_parameters(loss_fn: Any) -> list[torch.nn.Parameter]:
    if not isinstance(loss_fn, torch.nn.Module):
        return []
    return [p for p in loss_fn.parameters() if p.requires_grad]


def _sync_loss_grads(params: list[torch.nn.Parameter], gathered_world: int) -> None:
    # DDP averages the model's gradients but knows nothing of the loss's own parameters (an
    # ArcFace head): average them across ranks here. With gathered embeddings every rank
    # computed the same global loss scaled by the world size, so divide that factor out too.
    world = get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world * gathered_world)


@torch.no_grad()
def _count_active(loss_fn: Any, embeddings: torch.Tensor, indices: Any) -> tuple[int, int]:
    # Active triplet: d(a, p) - d(a, n) + margin > 0 under the loss's own distance (for a
    # similarity, s(a, n) - s(a, p) + margin > 0); margin=None (soft margin) counts as 0.
    if not (isinstance(indices, (tuple, list)) and len(indices) == 3):
        return 0, 0
    a, p, n = indices
    if len(a) == 0:
        return 0, 0
    distance = getattr(loss_fn, "distance", None) or LpDistance()
    margin = getattr(loss_fn, "margin", None) or 0.0
    if distance.normalize_embeddings:
        embeddings = F.normalize(embeddings, dim=1)
    mat = distance.pairwise_distance if hasattr(distance, "pairwise_distance") else None
    if mat is not None:
        ap = mat(embeddings[a], embeddings[p])
        an = mat(embeddings[a], embeddings[n])
    else:  # pragma: no cover - every PML distance has pairwise_distance
        ap = torch.diagonal(distance(embeddings[a], embeddings[p]))
        an = torch.diagonal(distance(embeddings[a], embeddings[n]))
    violation = distance.margin(ap, an)  # d_ap - d_an, or s_an - s_ap for a similarity
    return int((violation + float(margin) > 0).sum()), len(a)


def _allreduce_grads(model: torch.nn.Module) -> None:
    # Grads accumulated under DDP's no_sync() that never reached a synchronising backward (the
    # loader ended early): average them by hand so that every rank takes the same step.
    world = get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def _check_loss_parameters(params: list[torch.nn.Parameter], optimizer: Any) -> None:
    # A loss's parameters left out of the optimizer never train (a frozen random ArcFace head):
    # a silent failure, so refuse it.
    if not params or not hasattr(optimizer, "param_groups"):
        return
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    missing = sum(1 for p in params if id(p) not in in_optimizer)
    if missing:
        raise ValueError(
            f"{missing} of the loss's {len(params)} trainable parameters are not in the "
            f"optimizer, so they would never train; build it with "
            f"rk.train.build_optimizer(model, loss_fn, lr=...) (or freeze them: "
            f"requires_grad_(False))"
        )


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    loss_fn: Callable[..., torch.Tensor],
    miner: Callable[..., Any] | None,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any | None = None,
    scaler: torch.amp.GradScaler | None = None,
    accumulate: int = 1,
    device: str | torch.device | None = None,
    subspace: int | Callable[[torch.Tensor], int | None] | None = None,
    gather_for_mining: bool = False,
    max_grad_norm: float | None = None,
    freeze_bn: bool | torch.nn.Module = False,
    max_steps: int | None = None,
    start_step: int = 0,
    progress: bool = False,
    log_every: int = 50,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """Train ``model`` for one pass over ``loader`` (or ``max_steps`` batches of it).

    For each batch: forward (under ``torch.autocast`` when ``scaler`` is given), optional mining,
    loss, backward of ``loss / accumulate``; the optimizer steps every ``accumulate`` batches and
    once more at the end for a remainder. Mining and loss run in float32 on the embeddings.

    Args:
        model: maps images ``(B, ...)`` to embeddings ``(B, D)``; may be wrapped in
            ``DistributedDataParallel`` (no gradient sync inside an accumulation group).
        loader: yields ``(images, labels, ...)`` tuples/lists or dicts with an ``"image"`` /
            ``"images"`` and a ``"label"`` / ``"labels"`` key; labels are integer class ids.
        loss_fn: PML-style ``loss_fn(embeddings, labels, indices_tuple)``; gets ``subspace=`` too
            when ``subspace`` is not None (``rk.losses.SubspaceTripletLoss``). A loss with
            parameters (an ArcFace head) must be on ``device`` and its parameters in
            ``optimizer`` (``rk.train.build_optimizer``); they are clipped with the model's
            and, under torch.distributed, averaged across ranks.
        miner: PML-style ``miner(embeddings, labels) -> indices_tuple``, or None (the loss mines,
            uses every pair/triplet, or needs none: classification losses). With
            ``subspace=k`` it mines on the k-th normalised chunk.
        optimizer: the optimizer.
        scheduler: a learning-rate scheduler stepped after every optimizer step (per-step
            schedules such as ``rk.train.warmup_cosine_schedule``); None: not stepped here.
        scaler: a ``torch.amp.GradScaler`` turns on automatic mixed precision on the model's
            device type (float16 on CUDA, bfloat16 on CPU).
        accumulate: batches per optimizer step (gradient accumulation).
        device: where batches go; default the device of the model's first parameter.
        subspace: train the Divide-and-Conquer subspace ``k`` (None: the whole embedding), or a
            callable ``subspace(labels) -> k | None`` picking it per batch, e.g. the cluster of
            a ``ClusterBatchSampler`` batch: ``lambda y: class_to_cluster[int(y[0])]``.
        gather_for_mining: under torch.distributed, mine and compute the loss over the embeddings
            of every rank (``rk.train.distributed.gather_embeddings``), as one process would over
            the global batch; gradients stay exact (the loss is scaled by the world size).
        max_grad_norm: clip the gradient norm to this before each step (None: no clipping).
        freeze_bn: keep BatchNorm layers in eval mode (running statistics frozen, affine
            weights still trained): the usual choice when fine-tuning a pretrained backbone on
            small or single-cluster batches, whose statistics would overwrite ImageNet's.
            ``True`` freezes every BatchNorm of ``model``; a sub-module (e.g. ``model.trunk``)
            freezes only those inside it, so a freshly initialised head's BatchNorm still learns.
        max_steps: stop after this many batches (optimizer steps happen for the remainder).
        start_step: batches of this epoch already done before this call (resuming mid-epoch);
            only shifts the step numbers and accumulation groups; the loader must yield the
            remaining batches itself (restore the sampler with ``load_checkpoint(sampler=...)``).
        progress: show a tqdm bar.
        log_every: log a line every this many optimizer steps (0: never).
        on_step: ``on_step(step, stats)`` after every optimizer step, where ``step`` counts the
            batches of the epoch done so far (``start_step`` included) and ``stats`` holds the
            running ``loss`` and ``active_fraction``. Gradients are zero there, so it is the place
            for a mid-epoch ``save_checkpoint(..., step=step)``.

    Returns:
        Floats: ``loss`` (mean over batches of the un-divided batch loss), ``images_per_s``
        (this process), ``batches``, ``steps`` (optimizer steps), ``seconds``; and only when
        they mean something (never NaN):

        - a miner giving triplets: ``triplets`` (mean mined triplets per batch) and, when any
          was mined, ``active_fraction`` (mined triplets with a positive hinge,
          ``d(a,p) - d(a,n) + margin > 0`` under the loss's distance, margin 0 for the soft
          margin);
        - a miner giving pairs: ``pos_pairs`` and ``neg_pairs`` (mean mined per batch);
        - a loss with a ``last_stats`` dict (``rk.losses.SubCenterArcFaceLoss``: ``accuracy``,
          ``mean_angle``; ``rk.losses.CombinedLoss``: each part's loss): their means over
          batches.

    Example:
        >>> stats = train_one_epoch(model, loader, rk.losses.TripletLoss(),  # doctest: +SKIP
        ...                         rk.miners.BatchHardMiner(), optimizer)
        >>> stats["loss"], stats["active_fraction"]  # doctest: +SKIP
    """
    if optimizer is None:
        raise TypeError("train_one_epoch needs an optimizer")
    loss_params = _loss_parameters(loss_fn)
    _check_loss_parameters(loss_params, optimizer)
    accumulate = positive_int(accumulate, "accumulate")
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps!r}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    for p in loss_params:
        if p.device.type != device.type:
            raise ValueError(
                f"{type(loss_fn).__name__} has parameters on {p.device} but training runs on "
                f"{device}: move the loss first (loss_fn.to(device)), then build the optimizer"
            )
    use_amp = scaler is not None
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    world = get_world_size() if gather_for_mining and is_distributed() else 1

    try:  # for the progress bar only: a resumed sampler may or may not count the batches done
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        total = None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)

    model.train()
    if freeze_bn is not False:
        frozen = model if freeze_bn is True else freeze_bn
        for module in frozen.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    optimizer.zero_grad(set_to_none=True)
    loss_sum, active, mined, images, batches, steps = 0.0, 0, 0, 0, 0, 0
    tuple_kinds: set[str] = set()
    pos_pairs = neg_pairs = 0
    loss_stats: dict[str, list[float]] = {}
    clipped = [*model.parameters(), *loss_params]
    pending, pending_unsynced = False, False
    start = time.perf_counter()

    def optimizer_step() -> None:
        nonlocal steps, pending, pending_unsynced
        if pending_unsynced and ddp:
            _allreduce_grads(model)
        if loss_params and is_distributed():
            _sync_loss_grads(loss_params, world)
        if scaler is not None:
            if max_grad_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(clipped, max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
        else:
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(clipped, max_grad_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        steps += 1
        pending, pending_unsynced = False, False

    def running() -> dict[str, float]:
        stats = {"loss": loss_sum / max(batches, 1)}
        if mined:
            stats["active_fraction"] = active / mined
        return stats

    bar = progress_bar(loader, enabled=progress, total=total, desc="train", leave=False)
    for i, batch in enumerate(bar):
        if max_steps is not None and i >= max_steps:
            break
        x, y = _unpack(batch, start_step + i)
        x = x.to(device, non_blocking=True)
        y = torch.as_tensor(y).to(device, non_blocking=True)
        done = start_step + i + 1  # batches of the epoch done after this one
        # Inside an accumulation group DDP skips the gradient all-reduce; a group cut short by
        # the end of the loader is all-reduced by hand in optimizer_step.
        boundary = done % accumulate == 0
        sync = contextlib.nullcontext() if (boundary or not ddp) else model.no_sync()
        with sync:
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                emb = model(x)
            emb = emb.float()
            if world > 1:
                emb, y = gather_embeddings(emb, y)
            k = subspace(y) if callable(subspace) else subspace
            view = _subspace_view(loss_fn, emb, k)
            indices = miner(view, y) if miner is not None else None
            loss = loss_fn(emb, y, indices, **({} if k is None else {"subspace": k}))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at batch {start_step + i}")
            if loss.requires_grad:
                scaled = loss * (world / accumulate)
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        pending = True
        pending_unsynced = pending_unsynced or not boundary
        kind = _tuple_kind(indices)
        if kind is not None:
            tuple_kinds.add(kind)
        if kind == "triplets":
            a, m = _count_active(loss_fn, view, indices)
            active, mined = active + a, mined + m
        elif kind == "pairs":
            pos_pairs += len(indices[0])
            neg_pairs += len(indices[2])
        for key, value in (getattr(loss_fn, "last_stats", None) or {}).items():
            loss_stats.setdefault(key, []).append(float(value))
        loss_sum += float(loss.detach())
        images += int(x.shape[0])
        batches += 1
        if boundary:
            optimizer_step()
            stats = running()
            if bar is not None:
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if log_every and steps % log_every == 0:
                logger.info(
                    "step %d (batch %d): %s",
                    steps,
                    done,
                    ", ".join(f"{k} {v:.4f}" for k, v in stats.items()),
                )
            if on_step is not None:
                on_step(done, stats)
    if pending:  # remainder of an accumulation group at the end of the loader
        optimizer_step()
        if on_step is not None:
            on_step(start_step + batches, running())
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    stats = running()
    if "triplets" in tuple_kinds:
        stats["triplets"] = mined / max(batches, 1)
    if "pairs" in tuple_kinds:
        stats["pos_pairs"] = pos_pairs / max(batches, 1)
        stats["neg_pairs"] = neg_pairs / max(batches, 1)
    for key, values in loss_stats.items():
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            stats.setdefault(key, sum(finite) / len(finite))
    return {
        **stats,
        "images_per_s": images / seconds if seconds > 0 else 0.0,
        "batches": float(batches),
        "steps": float(steps),
        "seconds": seconds,
    }
