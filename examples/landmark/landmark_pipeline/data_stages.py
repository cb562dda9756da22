"""Stages prepare, clean and split: from the raw data to a table where every image has one role."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import retrieval_kit as rk
from retrieval_kit.data import cleaning
from retrieval_kit.io import atomic_write_json

from .context import Context
from .table import ImageRow, read_table, write_table

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- prepare
def stage_prepare(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    """Read the data (GLDv2 CSVs, a folder per class, or the generated demo) into one table."""
    cfg = ctx.config.data
    root = Path(cfg.root) if cfg.root else ctx.out / "data"
    if cfg.format == "synthetic":
        logger.info("generating the synthetic demo dataset in %s", root)
        rk.data.synthetic_landmarks(root, **cfg.synthetic, progress=ctx.progress)
        rows = _read_gldv2(root, cfg.use_train_clean)
    elif cfg.format == "gldv2":
        rows = _read_gldv2(root, cfg.use_train_clean)
    else:
        rows = _read_folders(root)
    missing = [r for r in rows if not Path(r.path).is_file()]
    out_dir = ctx.out / "prepare"
    outputs = []
    if missing:
        # GLDv2 downloads often lack a few images: report them, keep going without them.
        logger.warning(
            "%d images listed in the CSVs are missing on disk (first: %s); listed in %s",
            len(missing),
            missing[0].path,
            out_dir / "missing.csv",
        )
        outputs.append(write_table(out_dir / "missing.csv", missing))
        gone = {r.id for r in missing}
        rows = [r for r in rows if r.id not in gone]
    outputs.append(write_table(out_dir / "images.csv", rows))
    counts = Counter(r.role for r in rows)
    info = {
        "root": str(root),
        "images": dict(counts),
        "classes": len({r.label for r in rows if r.role == "train"}),
        "missing": len(missing),
    }
    logger.info("prepared %s from %s (%d training classes)", dict(counts), root, info["classes"])
    return outputs, info


def _read_gldv2(root: Path, use_train_clean: bool) -> list[ImageRow]:
    data = rk.data
    rows: list[ImageRow] = []
    clean_csv = root / "train_clean.csv"
    if use_train_clean and clean_csv.is_file():
        clean = data.read_train_clean_csv(clean_csv)
        pairs = [(i, lab) for lab, ids in clean.items() for i in ids]
    else:
        if use_train_clean:
            logger.warning("%s not found: using every image of train.csv", clean_csv)
        train = data.read_train_csv(root / "train.csv")
        pairs = list(zip(train["id"], train["landmark_id"], strict=True))
    paths = data.gldv2_image_paths(root / "train", [i for i, _ in pairs])
    rows += [
        ImageRow(i, str(p), str(lab), "train", "", "train") for (i, lab), p in zip(pairs, paths)
    ]

    test_csv = root / "test.csv"
    if test_csv.is_file():
        test_ids = data.read_ids_csv(test_csv)
        truth: dict[str, tuple[str, str]] = {}
        solution_csv = root / "recognition_solution_v2.1.csv"
        if solution_csv.is_file():
            sol = data.read_solution_csv(solution_csv)
            truth = {
                i: (" ".join(map(str, lms)), u)
                for i, lms, u in zip(sol["id"], sol["landmarks"], sol["usage"], strict=True)
            }
            unknown = set(truth) - set(test_ids)
            if unknown:
                raise ValueError(
                    f"{solution_csv}: {len(unknown)} ids are not in {test_csv} "
                    f"(e.g. {sorted(unknown)[0]!r})"
                )
        else:
            logger.info("no %s: test queries have no ground truth (no test metrics)", solution_csv)
        paths = data.gldv2_image_paths(root / "test", test_ids)
        for i, p in zip(test_ids, paths):
            label, usage = truth.get(i, ("", ""))
            rows.append(ImageRow(i, str(p), label, "test", usage, "test"))
    index_csv = root / "index.csv"
    if index_csv.is_file():
        index_ids = data.read_ids_csv(index_csv)
        paths = data.gldv2_image_paths(root / "index", index_ids)
        rows += [ImageRow(i, str(p), "", "index", "", "index") for i, p in zip(index_ids, paths)]
    seen: dict[str, str] = {}
    for r in rows:
        if r.id in seen:
            raise ValueError(f"image id {r.id!r} is in both {seen[r.id]} and {r.role} ({root})")
        seen[r.id] = r.role
    return rows


def _read_folders(root: Path) -> list[ImageRow]:
    data = rk.data.read_folder_dataset(root)
    rows = []
    for path, label in zip(data["paths"], data["labels"], strict=True):
        rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        # A stable, safe id from the relative path (file names may hold anything).
        image_id = hashlib.sha1(rel.encode()).hexdigest()[:16]
        rows.append(ImageRow(image_id, str(Path(path).resolve()), str(label), "train", "", "train"))
    logger.info("classes (label = position): %s", data["classes"][:10])
    return rows


# ------------------------------------------------------------------------------------------- clean
def stage_clean(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    """Places365 outdoor rule (when a checkpoint is configured), then minimum images per class."""
    cfg = ctx.config.clean
    rows = read_table(ctx.out / "prepare" / "images.csv")
    train = [r for r in rows if r.role == "train"]
    others = [r for r in rows if r.role != "train"]
    out_dir = ctx.out / "clean"
    removed: list[dict[str, Any]] = []
    report: dict[str, Any] = {
        "input_images": len(train),
        "input_classes": len({r.label for r in train}),
    }

    if cfg.places365_checkpoint:
        model = cleaning.load_places365_model(cfg.places365_checkpoint, arch=cfg.places365_arch)
        outdoor = cleaning.read_places365_io(cfg.places365_io)
        key = hashlib.sha256(
            f"{Path(cfg.places365_checkpoint).resolve()}/{cfg.places365_arch}".encode()
        ).hexdigest()[:8]
        top = cleaning.places365_top_categories(
            model,
            [r.path for r in train],
            ids=[r.id for r in train],
            top_k=cfg.top_k,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            device=ctx.device,
            cache_path=out_dir / f"places365_top{cfg.top_k}_{key}.csv",
            on_error="skip",
            progress=ctx.progress,
        )
        keep, gone = cleaning.outdoor_filter(
            [r.id for r in train],
            top,
            outdoor,
            min_votes=cfg.min_outdoor_votes,
            labels=[r.label for r in train],
        )
        removed += gone
        train = [r for r, k in zip(train, keep) if k]
        report["outdoor"] = {
            "skipped": False,
            "rule": f">= {cfg.min_outdoor_votes} outdoor of top-{cfg.top_k} Places365 categories",
            "removed_images": len(gone),
        }
        logger.info("outdoor rule removed %d images (%s)", len(gone), report["outdoor"]["rule"])
    else:
        report["outdoor"] = {
            "skipped": True,
            "reason": "no Places365 checkpoint configured (clean.places365_checkpoint)",
            "removed_images": 0,
        }
        logger.info("outdoor rule SKIPPED: no Places365 checkpoint configured")

    keep, gone = cleaning.min_images_filter(
        [r.id for r in train], [r.label for r in train], min_images=cfg.min_images_per_class
    )
    removed += gone
    dropped_classes = {g["label"] for g in gone}
    train = [r for r, k in zip(train, keep) if k]
    report["min_images"] = {
        "rule": f">= {cfg.min_images_per_class} images per class",
        "removed_images": len(gone),
        "removed_classes": len(dropped_classes),
    }
    logger.info(
        "min-images rule removed %d images of %d classes (%s)",
        len(gone),
        len(dropped_classes),
        report["min_images"]["rule"],
    )
    if not train:
        raise ValueError("cleaning removed every training image; check the clean section")
    report["kept_images"] = len(train)
    report["kept_classes"] = len({r.label for r in train})
    cleaning.write_removed_csv(out_dir / "removed.csv", removed)
    atomic_write_json(out_dir / "report.json", report)
    table = write_table(out_dir / "images.csv", train + others)
    return [table, out_dir / "removed.csv", out_dir / "report.json"], report


# ------------------------------------------------------------------------------------------- split
def stage_split(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    """Validation classes (queries + database), the distractor pool and the scored test queries."""
    cfg = ctx.config.split
    rows = read_table(ctx.out / "clean" / "images.csv")
    rng = np.random.default_rng(cfg.seed)

    by_class: dict[str, list[ImageRow]] = defaultdict(list)
    for r in rows:
        if r.role == "train":
            by_class[r.label].append(r)
    # Only classes that can give their queries and keep at least one database image qualify.
    eligible = sorted(
        (c for c, rs in by_class.items() if len(rs) > cfg.val_queries_per_class), key=int
    )
    n_val = min(cfg.num_val_classes, len(eligible))
    if n_val < cfg.num_val_classes:
        logger.warning(
            "only %d classes have more than %d images: %d validation classes instead of %d",
            len(eligible),
            cfg.val_queries_per_class,
            n_val,
            cfg.num_val_classes,
        )
    val_classes = set(rng.choice(eligible, size=n_val, replace=False).tolist()) if n_val else set()
    if len(val_classes) == len(by_class):
        raise ValueError("split.num_val_classes leaves no class to train on")
    for c in sorted(val_classes, key=int):
        members = by_class[c]
        order = rng.permutation(len(members))
        for j, i in enumerate(order):
            members[i].role = "val_query" if j < cfg.val_queries_per_class else "val_db"

    scored = set(cfg.scored_usage)
    test = [r for r in rows if r.role == "test"]
    has_truth = any(r.usage for r in test)
    for r in test:
        # Without ground truth every test image is a (submission-only) query.
        r.role = "test_query" if (not has_truth or r.usage in scored) else "test_other"
    if cfg.distractor_source == "index":
        pool = [r for r in rows if r.role == "index"]
    elif cfg.distractor_source == "other_usage":
        if not has_truth:
            raise ValueError(
                "split.distractor_source 'other_usage' needs recognition_solution_v2.1.csv"
            )
        # Non-landmark test images of the usage that is not scored: never a scored query.
        pool = [r for r in test if r.role == "test_other" and not r.label and r.usage != "Ignored"]
    else:
        pool = []
    if cfg.max_distractors is not None and len(pool) > cfg.max_distractors:
        pick = set(rng.choice(len(pool), size=cfg.max_distractors, replace=False).tolist())
        pool = [r for i, r in enumerate(pool) if i in pick]
    for r in pool:
        r.role = "distractor"
    for r in rows:
        if r.role == "index":
            r.role = "unused"

    _check_split(rows)
    counts = Counter(r.role for r in rows)
    info = {
        "roles": dict(counts),
        "val_classes": len(val_classes),
        "train_classes": len({r.label for r in rows if r.role == "train"}),
        "distractor_source": cfg.distractor_source,
        "scored_usage": sorted(scored) if has_truth else "all (no ground truth)",
    }
    out_dir = ctx.out / "split"
    atomic_write_json(out_dir / "summary.json", info)
    table = write_table(out_dir / "images.csv", rows)
    logger.info("split: %s", dict(counts))
    return [table, out_dir / "summary.json"], info


def _check_split(rows: list[ImageRow]) -> None:
    # The invariants the evaluation relies on; a bug here would silently inflate the metrics.
    ids = Counter(r.id for r in rows)
    dup = [i for i, c in ids.items() if c > 1]
    if dup:
        raise AssertionError(f"image {dup[0]!r} has more than one role")
    queries = {r.id for r in rows if r.role == "test_query"}
    distractors = {r.id for r in rows if r.role == "distractor"}
    if queries & distractors:
        raise AssertionError("a scored query is in the distractor pool")
    train_classes = {r.label for r in rows if r.role == "train"}
    val_classes = {r.label for r in rows if r.role in ("val_query", "val_db")}
    if train_classes & val_classes:
        raise AssertionError("a validation class is also a training class")


def load_split(ctx: Context) -> list[ImageRow]:
    """The split table (for the later stages)."""
    return read_table(ctx.out / "split" / "images.csv")


def summary_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
