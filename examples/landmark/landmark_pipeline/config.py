"""Typed configuration of the landmark pipeline, loaded from YAML with strict checking.

YAML is read with ``yaml.safe_load`` (no Python objects can be constructed from a config) and turned
into the dataclasses below. Unknown keys and values of the wrong type are refused with the dotted
key named (``train.lr: expected float, got str 'fast'``), so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "check_components",
    "check_inputs",
    "config_from_dict",
    "config_to_dict",
    "format_override",
    "load_config",
    "section_hash",
]


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the dotted key."""


@dataclass
class DataConfig:
    """Where the images come from (stage ``prepare``)."""

    #: ``gldv2`` (the Kaggle CSVs + a/b/c/ layout), ``folders`` (root/<class>/<image>),
    #: ``synthetic`` (the embedded demo data, generated into ``root`` or ``<out>/data``).
    format: Literal["gldv2", "folders", "synthetic"] = "gldv2"
    #: data folder; relative paths are relative to the config file. ``null``: ``<out>/data``.
    root: str | None = None
    #: GLDv2: keep only the images listed in train_clean.csv (GLDv2-clean).
    use_train_clean: bool = True
    #: keyword arguments for ``rk.data.synthetic_landmarks`` (format ``synthetic`` only).
    synthetic: dict[str, Any] = field(default_factory=dict)


@dataclass
class CleanConfig:
    """The Places365 outdoor rule and the minimum-images-per-class rule (stage ``clean``)."""

    min_images_per_class: int = 10
    #: path to the CSAIL ``resnet50_places365.pth.tar``; ``null`` skips the outdoor rule (reported).
    places365_checkpoint: str | None = None
    #: path to the official ``IO_places365.txt`` (required with a checkpoint).
    places365_io: str | None = None
    places365_arch: str = "resnet50"
    top_k: int = 5
    min_outdoor_votes: int = 3
    batch_size: int = 64
    num_workers: int = 0


@dataclass
class SplitConfig:
    """Validation classes, their database, the distractor pool (stage ``split``)."""

    seed: int = 0
    #: classes held out of training for validation (queries + database of the same classes).
    num_val_classes: int = 5000
    #: queries drawn from each validation class; the rest of the class is its database.
    val_queries_per_class: int = 2
    #: ``index``: non-landmark pool from index.csv (never a query);
    #: ``other_usage``: non-landmark test queries of the usage that is NOT scored;
    #: ``none``: no reranking.
    distractor_source: Literal["index", "other_usage", "none"] = "index"
    #: cap on the distractor pool (``null``: all of it).
    max_distractors: int | None = None
    #: test-set usages (recognition_solution ``Usage``) that are scored.
    scored_usage: list[str] = field(default_factory=lambda: ["Private", "Public"])


@dataclass
class ModelConfig:
    """The embedding network (``rk.backbones.create_backbone``)."""

    backbone: str = "resnet101"
    #: ``true`` (the backbone's pretrained weights), ``false``, or a path to a state dict.
    pretrained: bool | str = True
    embedding_dim: int | None = 512
    pooling: str = "gem"
    #: training crop / evaluation size and the squash size before the crop.
    image_size: int = 224
    resize_size: int = 256


@dataclass
class TrainConfig:
    """Training (stage ``train``); the defaults are the reproduced pipeline's."""

    epochs: int = 5
    classes_per_batch: int = 12
    samples_per_class: int = 8
    #: gradient accumulation: batches per optimizer step.
    accumulate: int = 15
    #: ``sgd`` (with ``momentum``; the reproduced pipeline), ``adam`` or ``adamw``.
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    #: ``euclidean``: train on the raw embedding (the reproduced pipeline); ``cosine``: on the
    #: L2-normalised one. Retrieval is always cosine.
    distance: Literal["euclidean", "cosine"] = "euclidean"
    #: any ``rk.losses.create_loss`` name: ``triplet`` (batch-hard triplets, the reproduced
    #: pipeline), ``subspace_triplet`` (one embedding chunk per cluster), ``subcenter_arcface``,
    #: ``arcface``, or a pytorch-metric-learning class (``MultiSimilarityLoss``).
    loss: str = "triplet"
    #: keyword arguments of the loss; ``num_classes`` and ``embedding_size`` are supplied from
    #: the data and the model when the loss needs them.
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    #: any ``rk.miners.create_miner`` name, ``none`` (no miner), or ``auto``: ``batch_hard``
    #: for ``triplet`` / ``subspace_triplet``, none for any other loss.
    miner: str | None = "auto"
    miner_kwargs: dict[str, Any] = field(default_factory=dict)
    #: triplet losses' margin; ``null``: soft margin log(1 + exp(d_ap - d_an)). Other losses
    #: take theirs in ``loss_kwargs``.
    margin: float | None = None
    #: ArcFace family: one margin per class from its image count, ``a * n ** -lam + b`` scaled
    #: into ``dynamic_margin_range`` (``rk.losses.dynamic_margins``, Ha et al. 2020).
    dynamic_margins: bool = False
    dynamic_margin_range: list[float] = field(default_factory=lambda: [0.05, 0.5])
    dynamic_margin_lambda: float = 0.25
    #: learning rate of the loss's own parameters (an ArcFace head) = lr x this.
    loss_lr_mult: float = 1.0
    #: a classification loss's class weights at the start: ``random`` (the loss's own
    #: initialisation) or ``class_means`` (each class's mean embedding under the initial model,
    #: ``rk.losses.imprint_weights``; Qi et al. 2018): the head classifies from the first step.
    #: Any loss with a class weight ``W``: the ArcFace family, PML's ``CosFaceLoss`` ...
    head_init: Literal["random", "class_means"] = "random"
    #: ``constant`` (the reproduced pipeline) or ``warmup_cosine``: linear warm-up over
    #: ``warmup_steps`` optimizer steps, then cosine decay to 0 at the last step.
    schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = 0
    #: ``cluster``: each batch from one cluster of look-alike classes; ``pk``: P x K at random.
    sampler: Literal["cluster", "pk"] = "cluster"
    num_clusters: int = 20
    #: frozen pretrained model whose class centres are clustered.
    cluster_backbone: str = "resnet50"
    #: weights of the cluster backbone: ``true`` (its pretrained weights) or a path.
    cluster_pretrained: bool | str = True
    #: re-cluster with the current model every N epochs (0: never, as the reproduced pipeline).
    recluster_every: int = 0
    #: non-landmark images put into every batch as negatives only (no class; the ArcFace family
    #: needs ``loss_kwargs.non_landmark_margin``): ``none``; ``index`` (the index.csv images,
    #: the demo's distractor pool; never a test image); ``rejects`` (the images the clean stage
    #: removed); or a folder of images (searched recursively).
    non_landmarks: str = "none"
    non_landmarks_per_batch: int = 8
    #: ``random``: drawn from the whole pool; ``hard``: from the ``non_landmark_candidates``
    #: pool images nearest to each batch class's centre under the frozen cluster backbone.
    non_landmark_mining: Literal["random", "hard"] = "random"
    non_landmark_candidates: int = 16
    amp: bool = False
    #: keep the backbone's BatchNorm statistics frozen while training (small or one-cluster
    #: batches make poor batch statistics).
    freeze_bn: bool = False
    num_workers: int = 0
    #: cap on batches per epoch (``null``: all), for quick runs.
    max_batches_per_epoch: int | None = None
    #: also checkpoint every N optimizer steps inside an epoch (0: only at epoch ends).
    checkpoint_every_steps: int = 0
    #: ``squash_crop``: squash to resize_size, random image_size crop, flip (the reproduced
    #: pipeline); ``random_resized_crop``: RandomResizedCrop with ``crop_scale``, flip.
    augment: Literal["squash_crop", "random_resized_crop"] = "squash_crop"
    crop_scale: list[float] = field(default_factory=lambda: [0.25, 1.0])
    #: progressive image size: ``[[epoch, size], ...]``, each training crop size used from its
    #: epoch (0-based) on, e.g. ``[[0, 96], [3, 112]]``; the squash size scales with it
    #: (``size * model.resize_size / model.image_size``). Empty: ``model.image_size`` throughout.
    #: Evaluation embeds at ``model.image_size``: make it the last size.
    image_sizes: list[list[int]] = field(default_factory=list)
    #: every N epochs (and after the last), embed the validation queries and database with the
    #: current model and log their GAP / mAP@100 (nearest neighbour, no reranking) into
    #: ``train/history.json`` and ``train/loss.png``; 0: never.
    val_every: int = 0
    deterministic: bool = False


@dataclass
class EmbedConfig:
    batch_size: int = 64
    num_workers: int = 0
    #: evaluation size: the long side with ``resize: long_side`` (``null``: ``model.image_size``).
    image_size: int | None = None
    #: ``long_side`` (aspect ratio kept; retrieval), ``squash`` (the reproduced pipeline) or
    #: ``center_crop`` (see ``rk.embed.ExtractionConfig``); square images give the same pixels
    #: under ``long_side`` and ``squash``.
    resize: Literal["long_side", "squash", "center_crop"] = "long_side"
    #: multi-scale factors, e.g. ``[1.0, 0.7071, 1.4142]``; descriptors combined by power mean.
    scales: list[float] = field(default_factory=lambda: [1.0])
    #: ``pca`` (PCA whitening) or ``learned`` (Lw, from the train split's labels), fitted on the
    #: train split's embeddings and applied to every embedding before indexing; ``none``: off.
    whitening: Literal["none", "pca", "learned"] = "none"
    #: whitened dimensions (``null``: all the whitening can keep).
    whitening_dim: int | None = None
    #: shrinkage of the whitening covariance towards its mean eigenvalue (0 to 1).
    whitening_shrinkage: float = 0.1


@dataclass
class IndexConfig:
    #: faiss index factory string or ``auto`` (exact for small sets).
    factory: str = "auto"


@dataclass
class PredictConfig:
    #: neighbours kept per query.
    k: int = 10
    #: ``nn``: label of the nearest neighbour (the reproduced pipeline); ``vote``: score vote
    #: over the top ``vote_k``; ``sum``: each label's ``vote_k`` best scores summed (GLR 2020).
    method: Literal["nn", "vote", "sum"] = "nn"
    #: neighbours (``vote``) or scores per label (``sum``) aggregated (``null``: 3).
    vote_k: int | None = None
    #: distractor reranking: subtract alpha x mean of the top-k similarities to non-landmarks.
    rerank_k: int = 5
    rerank_alpha: float = 1.0
    #: spatial verification (local features + RANSAC) of the top ``verify_k`` neighbours; needs
    #: OpenCV (``pip install 'retrieval_kit[verify]'``).
    verify: bool = False
    verify_k: int = 10
    #: a neighbour gains score only with at least this many inliers.
    min_inliers: int = 12
    #: threads extracting local features and verifying pairs.
    verify_workers: int = 2
    #: ``formula``: the distractor-penalised score; ``learned``: ``rk.predict.ConfidenceModel``
    #: fitted on the validation split (its queries plus the distractors as non-landmark queries)
    #: and applied to the test split (``method`` ``nn`` or ``vote``).
    confidence: Literal["formula", "learned"] = "formula"
    #: distractors used as non-landmark fitting queries at most (a seeded sample; ``null``: all).
    confidence_distractors: int | None = 10000


@dataclass
class EvaluateConfig:
    map_k: int = 100


@dataclass
class VisualizeConfig:
    #: queries per grid and neighbours shown per query.
    rows: int = 6
    neighbours: int = 3
    thumb_size: int = 128


@dataclass
class SubmitConfig:
    #: use the reranked scores in the submission.
    rerank: bool = True


@dataclass
class Config:
    """The whole pipeline's configuration (one section per stage)."""

    seed: int = 0
    #: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ...
    device: str = "auto"
    #: torch CPU threads (``null``: torch's default).
    threads: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    visualize: VisualizeConfig = field(default_factory=VisualizeConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)


# A float written as 1e-3 is a *string* to YAML 1.1 (it needs a dot); accept that one spelling.
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(
            f"{key}: expected {' or '.join(_type_name(o) for o in options)}, "
            f"got {type(value).__name__} {value!r}"
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {
            _convert(k, key_tp, f"{key}.{k}"): _convert(v, val_tp, f"{key}.{k}")
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if value is None:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got null")
    # bool is an int subclass: refuse it where a number is meant, and numbers where a bool is.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this loader does not know
        raise TypeError(f"{key}: unsupported config field type {tp!r}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        dotted = ", ".join(f"{prefix + '.' if prefix else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown key {dotted} (known keys in {where}: {', '.join(names)})")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _convert(
                data[name], hints[name], f"{prefix + '.' if prefix else ''}{name}"
            )
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Build a :class:`Config` from a plain mapping, refusing unknown keys and wrong types.

    Example:
        >>> config_from_dict({"train": {"epochs": 2}}).train.epochs
        2
    """
    config = _build(Config, data, "")
    _check_values(config)
    return config


def _check_values(config: Config) -> None:
    positive = {
        "clean.min_images_per_class": config.clean.min_images_per_class,
        "clean.top_k": config.clean.top_k,
        "clean.batch_size": config.clean.batch_size,
        "split.val_queries_per_class": config.split.val_queries_per_class,
        "model.image_size": config.model.image_size,
        "model.resize_size": config.model.resize_size,
        "train.classes_per_batch": config.train.classes_per_batch,
        "train.samples_per_class": config.train.samples_per_class,
        "train.accumulate": config.train.accumulate,
        "train.num_clusters": config.train.num_clusters,
        "embed.batch_size": config.embed.batch_size,
        "predict.k": config.predict.k,
        "predict.rerank_k": config.predict.rerank_k,
        "predict.verify_k": config.predict.verify_k,
        "predict.min_inliers": config.predict.min_inliers,
        "predict.verify_workers": config.predict.verify_workers,
        "evaluate.map_k": config.evaluate.map_k,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be >= 1, got {value}")
    non_negative = {
        "split.num_val_classes": config.split.num_val_classes,
        "train.epochs": config.train.epochs,
        "train.recluster_every": config.train.recluster_every,
        "train.checkpoint_every_steps": config.train.checkpoint_every_steps,
        "train.lr": config.train.lr,
        "train.warmup_steps": config.train.warmup_steps,
        "train.val_every": config.train.val_every,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must be >= 0, got {value}")
    if not 0 <= config.clean.min_outdoor_votes <= config.clean.top_k:
        raise ConfigError(
            f"clean.min_outdoor_votes: must be between 0 and clean.top_k={config.clean.top_k}, "
            f"got {config.clean.min_outdoor_votes}"
        )
    if config.clean.places365_checkpoint and not config.clean.places365_io:
        raise ConfigError("clean.places365_io: required when clean.places365_checkpoint is set")
    if len(config.train.crop_scale) != 2 or not (
        0 < config.train.crop_scale[0] <= config.train.crop_scale[1] <= 1
    ):
        raise ConfigError(
            f"train.crop_scale: expected [low, high] with 0 < low <= high <= 1, "
            f"got {config.train.crop_scale}"
        )
    _check_train(config.train)
    if config.model.resize_size < config.model.image_size:
        raise ConfigError(
            f"model.resize_size: must be >= model.image_size={config.model.image_size}, "
            f"got {config.model.resize_size}"
        )
    for key, value in (
        ("embed.whitening_dim", config.embed.whitening_dim),
        ("predict.vote_k", config.predict.vote_k),
        ("predict.confidence_distractors", config.predict.confidence_distractors),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{key}: must be >= 1 or null, got {value}")
    if not config.embed.scales or any(s <= 0 for s in config.embed.scales):
        raise ConfigError(f"embed.scales: expected positive factors, got {config.embed.scales}")
    if not 0 <= config.embed.whitening_shrinkage <= 1:
        raise ConfigError(
            f"embed.whitening_shrinkage: must be in [0, 1], got {config.embed.whitening_shrinkage}"
        )
    if config.predict.confidence == "learned" and config.predict.method == "sum":
        raise ConfigError(
            "predict.confidence: 'learned' predicts the label itself with method 'nn' or 'vote'; "
            "predict.method is 'sum'"
        )
    if config.split.distractor_source == "other_usage" and len(config.split.scored_usage) != 1:
        raise ConfigError(
            "split.scored_usage: distractor_source 'other_usage' takes its distractors from the "
            f"usage that is not scored, so exactly one usage must be scored, got "
            f"{config.split.scored_usage}"
        )


def _check_train(tc: TrainConfig) -> None:
    if tc.loss_lr_mult <= 0:
        raise ConfigError(f"train.loss_lr_mult: must be > 0, got {tc.loss_lr_mult}")
    low_high = tc.dynamic_margin_range
    if len(low_high) != 2 or not 0 <= low_high[0] <= low_high[1]:
        raise ConfigError(
            "train.dynamic_margin_range: expected [low, high] with 0 <= low <= high, "
            f"got {low_high}"
        )
    if tc.dynamic_margins and not set(_loss_names(tc)) & set(ARCFACE_LOSSES):
        raise ConfigError(
            f"train.dynamic_margins: needs train.loss subcenter_arcface or arcface, or a combined "
            f"loss with one of them (margins in radians, one per class), got {tc.loss!r}"
        )
    starts = [item[0] for item in tc.image_sizes if len(item) == 2]
    if (
        len(starts) != len(tc.image_sizes)
        or (starts and starts[0] != 0)
        or any(b <= a for a, b in zip(starts, starts[1:]))
        or any(item[1] < 1 for item in tc.image_sizes)
    ):
        raise ConfigError(
            "train.image_sizes: expected [[epoch, size], ...] with the first epoch 0, epochs "
            f"increasing and sizes >= 1, e.g. [[0, 96], [3, 112]], got {tc.image_sizes}"
        )
    if tc.loss == "subspace_triplet" and tc.schedule != "constant":
        raise ConfigError("train.schedule: subspace_triplet trains with a constant rate")
    _check_non_landmarks(tc)


#: ``train.non_landmarks`` values that name a pool; anything else is a folder.
NON_LANDMARK_POOLS = ("none", "index", "rejects")


def _check_non_landmarks(tc: TrainConfig) -> None:
    if not tc.non_landmarks:
        raise ConfigError("train.non_landmarks: expected none, index, rejects or a folder, got ''")
    for key in ("non_landmarks_per_batch", "non_landmark_candidates"):
        if getattr(tc, key) < 1:
            raise ConfigError(f"train.{key}: must be >= 1, got {getattr(tc, key)}")
    if tc.non_landmarks == "none":
        return
    if tc.loss in ("subcenter_arcface", "arcface"):
        if "non_landmark_margin" not in tc.loss_kwargs:
            raise ConfigError(
                f"train.loss_kwargs.non_landmark_margin: required with train.non_landmarks "
                f"{tc.non_landmarks!r} and loss {tc.loss!r} (the cosine that non-landmarks are "
                f"kept below, e.g. 0.3)"
            )
    elif tc.loss not in ("triplet", "subspace_triplet"):
        raise ConfigError(
            f"train.non_landmarks: needs a triplet loss or the ArcFace family, got loss {tc.loss!r}"
        )


#: losses that take one ArcFace margin per class (``train.dynamic_margins``).
ARCFACE_LOSSES = ("subcenter_arcface", "arcface")


def _loss_names(tc: TrainConfig) -> list[str]:
    """``train.loss``, or the part names of a ``combined`` loss (``loss_kwargs.losses``)."""
    if tc.loss != "combined":
        return [tc.loss]
    parts = tc.loss_kwargs.get("losses")
    if not isinstance(parts, dict):
        return []
    return [
        p["name"] for p in parts.values() if isinstance(p, dict) and isinstance(p.get("name"), str)
    ]


def check_components(config: Config) -> None:
    """Refuse an unknown ``train.loss`` / ``train.miner`` name, naming the key (imports torch).

    Example:
        >>> check_components(config_from_dict({"train": {"loss": "MultiSimilarityLoss"}}))
    """
    import retrieval_kit as rk  # lazy: run.py --help stays fast

    tc = config.train
    checks = [("train.loss", tc.loss, rk.losses.list_losses, rk.losses.create_loss)]
    if tc.loss == "combined":
        checks += [
            (
                f"train.loss_kwargs.losses.{k}",
                p["name"],
                rk.losses.list_losses,
                rk.losses.create_loss,
            )
            for k, p in (tc.loss_kwargs.get("losses") or {}).items()
            if isinstance(p, dict) and isinstance(p.get("name"), str)
        ]
    if tc.miner is not None and tc.miner.lower() not in ("none", "auto"):
        checks.append(("train.miner", tc.miner, rk.miners.list_miners, rk.miners.create_miner))
    for key, name, names, create in checks:
        if name not in names():
            try:
                create(name)
            except KeyError as e:  # the registry's message, with close names
                raise ConfigError(f"{key}: {e}") from None
    if tc.head_init == "class_means" and not any(map(_has_class_weights, _loss_names(tc))):
        raise ConfigError(
            f"train.head_init: class_means needs a loss with class weights W (subcenter_arcface, "
            f"arcface, PML's ArcFaceLoss / CosFaceLoss ..., or a combined loss with one), got "
            f"{tc.loss!r}"
        )


def _has_class_weights(name: str) -> bool:
    """Whether loss ``name`` holds a class weight ``W``, as ``rk.losses.imprint_weights`` needs."""
    import retrieval_kit as rk

    if name in ARCFACE_LOSSES:
        return True
    try:  # a tiny instance tells: PML's classification losses take these two sizes
        loss = rk.losses.create_loss(name, num_classes=2, embedding_size=2)
    except Exception:  # noqa: BLE001 - any loss that cannot be built so has no such head
        return False
    return hasattr(loss, "W") and hasattr(loss, "num_classes")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML config (``yaml.safe_load``) into a :class:`Config`.

    A file may start from another: ``base: demo.yaml`` (relative to the file) reads that one
    first, then this file's keys replace its values (mappings merge key by key).
    ``train.loss_overrides`` maps a loss name to ``train`` keys that replace the file's when
    ``train.loss`` (after the overrides) names that loss; ``overrides`` still win. Relative data
    paths are resolved against the folder of the file that sets them. An error caused by
    an override names it (``--set train.epochs=two: train.epochs: expected int ...``); one in the
    file names the file.

    Args:
        path: the YAML file.
        overrides: dotted keys to set after reading, e.g. ``{"train.epochs": 1}``.

    Example:
        >>> cfg = load_config("examples/landmark/configs/demo.yaml")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    items = list((overrides or {}).items())
    data = _apply_loss_overrides(path, _read_layers(path, ()), items)
    try:
        config = config_from_dict(_with_overrides(data, items))
    except ConfigError as e:
        raise ConfigError(_blame(path, data, items, e)) from None
    base = path.resolve().parent
    for section, key in _PATH_KEYS:
        obj = getattr(config, section)
        value = getattr(obj, key)
        if _is_path_value(section, key, value):
            setattr(obj, key, str((base / Path(value).expanduser()).resolve()))
    return config


#: Config keys holding a path, resolved against the folder of the file that sets them.
_PATH_KEYS = (
    ("data", "root"),
    ("clean", "places365_checkpoint"),
    ("clean", "places365_io"),
    ("model", "pretrained"),  # a path when it is a string
    ("train", "non_landmarks"),  # a folder unless it names a pool (NON_LANDMARK_POOLS)
)


def _is_path_value(section: str, key: str, value: Any) -> bool:
    """Whether ``value`` of ``section.key`` is a relative path to resolve."""
    if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
        return False
    return (section, key) != ("train", "non_landmarks") or value not in NON_LANDMARK_POOLS


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _read_layers(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The file's mapping on top of its ``base:`` file's (recursively), merged key by key.

    An overlay (``base: demo.yaml`` and the keys it changes) keeps a variant of a config short
    and in step with its base. Relative paths of a base file are made absolute against its own
    folder before merging; the top file's are resolved by :func:`load_config`.
    """
    data = _read_yaml(path)
    parent = data.pop("base", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: base: expected a config file name, got {parent!r}")
    parent_path = (path.resolve().parent / Path(parent).expanduser()).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ConfigError(f"{path}: base: {parent} includes itself")
    if not parent_path.is_file():
        raise ConfigError(f"{path}: base: file not found: {parent_path}")
    below = _read_layers(parent_path, (*seen, path.resolve()))
    for section, key in _PATH_KEYS:
        node = below.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if _is_path_value(section, key, value):
            node[key] = str((parent_path.parent / Path(value).expanduser()).resolve())
    return _merge(below, data)


def _merge(below: dict[str, Any], above: dict[str, Any]) -> dict[str, Any]:
    """``above`` over ``below``: mappings merge key by key, any other value replaces."""
    merged = dict(below)
    for key, value in above.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_override(key: str, value: Any) -> str:
    """An override as it is written on the command line.

    Example:
        >>> format_override("train.lr", 0.01), format_override("data.root", "/d")
        ('--set train.lr=0.01', '--set data.root=/d')
    """
    text = value if isinstance(value, str) else json.dumps(value)
    return f"--set {key}={text}"


def _apply_loss_overrides(
    path: Path, data: dict[str, Any], items: list[tuple[str, Any]]
) -> dict[str, Any]:
    """``data`` with ``train.loss_overrides[<the loss>]`` merged into ``train``, the table gone.

    A loss's training needs can differ from the file's recipe (a fresh ArcFace head needs its own
    rates): the table keeps them beside it, so ``--set train.loss=NAME`` alone trains NAME well.
    The loss is the overrides' ``train.loss`` when they set it; their other keys are applied
    later and win over the table's.
    """
    train = data.get("train")
    if not isinstance(train, dict) or "loss_overrides" not in train:
        return data
    data = copy.deepcopy(data)
    train = data["train"]
    table = train.pop("loss_overrides") or {}
    key = f"{path}: train.loss_overrides"
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a mapping of loss name -> train keys, got {table!r}")
    loss = dict(items).get("train.loss", train.get("loss", TrainConfig.loss))
    block = table.get(loss)
    if block is None:
        return data
    if not isinstance(block, dict) or "loss" in block:
        raise ConfigError(f"{key}.{loss}: expected a mapping of train keys but loss, got {block!r}")
    data["train"] = _merge(train, block)
    return data


def _with_overrides(data: dict[str, Any], items: list[tuple[str, Any]]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for dotted, value in items:
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if node.get(p) is None:  # absent, or an empty section (``train:``)
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {p} is not a mapping")
        node[leaf] = value
    return data


def _blame(path: Path, data: dict[str, Any], items: list[tuple[str, Any]], error: Exception) -> str:
    """The message of ``error``, prefixed with what caused it: an override or the file."""

    def fails(upto: int) -> str | None:
        try:
            config_from_dict(_with_overrides(data, items[:upto]))
        except ConfigError as e:
            return str(e)
        return None

    # The first override after which the build gives this error is the one to blame; if the
    # file alone gives it, the file is.
    for n in range(len(items) + 1):
        if fails(n) == str(error):
            return f"{format_override(*items[n - 1]) if n else path}: {error}"
    return f"{path} with {' '.join(format_override(k, v) for k, v in items)}: {error}"


def check_inputs(config: Config) -> None:
    """Refuse a config whose input folders or files do not exist, naming the key and the path.

    Run before anything is written, so a typo in a path leaves no half-made output folder.

    Raises:
        ConfigError: e.g. ``data.root: folder not found: /data/gldv2``.

    Example:
        >>> check_inputs(config_from_dict({"data": {"format": "synthetic"}}))
    """
    d = config.data
    if d.format != "synthetic":
        if d.root is None:
            raise ConfigError(f"data.root: required for format {d.format!r}")
        root = Path(d.root)
        if not root.is_dir():
            raise ConfigError(
                f"data.root: folder not found: {root} "
                "(set data.root in the config or with --set data.root=PATH)"
            )
        if d.format == "gldv2":
            wanted = ["train_clean.csv", "train.csv"] if d.use_train_clean else ["train.csv"]
            if not any((root / name).is_file() for name in wanted):
                raise ConfigError(
                    f"data.root: no {' or '.join(wanted)} in {root} (format gldv2 expects the "
                    "Kaggle files: train.csv, train/a/b/c/<id>.jpg ...)"
                )
    check_components(config)
    nl = config.train.non_landmarks
    if nl not in NON_LANDMARK_POOLS and not Path(nl).expanduser().is_dir():
        raise ConfigError(
            f"train.non_landmarks: folder not found: {nl} (or one of {list(NON_LANDMARK_POOLS)})"
        )
    files = {
        "clean.places365_checkpoint": config.clean.places365_checkpoint,
        "clean.places365_io": config.clean.places365_io,
        "model.pretrained": config.model.pretrained,
    }
    for key, value in files.items():
        if isinstance(value, str) and not Path(value).expanduser().is_file():
            hint = " (null skips the outdoor rule)" if key.startswith("clean.") else ""
            raise ConfigError(f"{key}: file not found: {value}{hint}")


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain data (what ``config.yaml`` in the output folder holds)."""
    return dataclasses.asdict(config)


def section_hash(config: Config, *sections: str) -> str:
    """A short, stable hash of some config sections (decides whether a stage must be redone)."""
    data = config_to_dict(config)
    blob = json.dumps({s: data[s] for s in sections}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
