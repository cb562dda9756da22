"""Extraction settings on real photos: GAP, mAP@100 and top-1 for a grid of resize modes, sizes,
scales and whitening, with the library's own extraction, index, reranker, prediction and metrics.

Run: ``python benchmarks/realphoto_eval.py FOLDER [--sizes 224 288 384 512 640]
[--modes squash long_side] [--scales single multi] [--whitening none pca lw]
[--write docs/benchmarks.md]``.

FOLDER holds one sub-folder of photos per landmark; a sub-folder named ``non_landmark`` (optional)
holds more non-landmark photos. The real photographs that ship inside scikit-image, scikit-learn
and matplotlib (``PACKAGE_PHOTOS``; nothing is downloaded) are added as non-landmarks unless
``--no-package-photos``.

Protocol (every number comes from one run of this script):

* Landmark queries, leave-one-out: each landmark photo is a query against all the other landmark
  photos (the database); its ground truth is its landmark.
* Non-landmark photos are sorted by name and dealt alternately into **queries** (ground truth: no
  landmark; any prediction they get counts against GAP's precision) and a **distractor pool** for
  ``rk.rerank.DistractorReranker`` (confidence minus the mean similarity to the query's 5 nearest
  distractors). Their database is all the landmark photos. No photo is ever both.
* Prediction: ``rk.predict.predict_labels`` (label of the best neighbour) after reranking.
  GAP over all queries (``rk.metrics.global_average_precision``); mAP@100 of the landmark queries'
  rankings (relevant: the other photos of the same landmark); top-1 accuracy of the landmark
  queries.
* Whitening (``pca``): ``rk.embed.Whitening`` PCA whitening fitted, for each query, on its
  database plus the distractor pool (never on the query or the other non-landmark queries), with
  ``--whitening-dim`` components and ``--whitening-shrinkage``. ``lw``: learned whitening from
  the database's same-landmark pairs (distractors add no pair), same dim and shrinkage.
* Model: ``efficientnet_lite0`` with its offline ImageNet weights, no head (the GeM-pooled 1280-d
  features, GeM p = 3), so multi-scale uses cirtorch's power mean with p = 3. ``multi`` scales are
  ``(1, 2 ** -0.5, 2 ** 0.5)``. Time: wall seconds per image for the whole extraction of all the
  photos of a setting (decode, resize, model), one process; on a shared machine read it as a ratio
  between rows.

With a few photos this is a smoke check, not a benchmark: one query changes top-1 by several points.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import retrieval_kit as rk
from retrieval_kit.io import atomic_write_text

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MULTI_SCALES = (1.0, 2**-0.5, 2**0.5)
SECTION = "realphoto_eval"  # its section of docs/benchmarks.md (benchmarks/doc_section.py)

#: Real photographs (not drawings, renderings or synthetic patterns) that ship with the packages.
#: scikit-image's stereo twin motorcycle_right is left out (a near-duplicate of motorcycle_left).
PACKAGE_PHOTOS = {
    "skimage": [
        "astronaut.png",
        "brick.png",
        "camera.png",
        "chelsea.png",
        "clock_motion.png",
        "coffee.png",
        "coins.png",
        "grass.png",
        "gravel.png",
        "hubble_deep_field.jpg",
        "moon.png",
        "motorcycle_left.png",
        "retina.jpg",
        "rocket.jpg",
    ],
    "sklearn": ["china.jpg", "flower.jpg"],
    "matplotlib": ["grace_hopper.jpg"],
}

logger = logging.getLogger("realphoto_eval")


def package_photos() -> list[tuple[str, str]]:
    """``(name, path)`` of the package photos that are installed (missing ones are skipped)."""
    folders = {}
    try:
        import skimage

        folders["skimage"] = Path(skimage.__file__).parent / "data"
    except ImportError:
        pass
    try:
        import sklearn

        folders["sklearn"] = Path(sklearn.__file__).parent / "datasets" / "images"
    except ImportError:
        pass
    try:
        import matplotlib

        folders["matplotlib"] = Path(matplotlib.get_data_path()) / "sample_data"
    except ImportError:
        pass
    found = []
    for package, names in PACKAGE_PHOTOS.items():
        for name in names:
            path = folders.get(package, Path("/nonexistent")) / name
            if path.is_file():
                found.append((f"{package}_{Path(name).stem}", str(path)))
            else:
                logger.warning("package photo %s/%s not installed; skipped", package, name)
    return found


def read_folder(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """Landmark photos as ``(id, path, label)`` and extra non-landmarks as ``(id, path)``."""
    landmarks, others = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            if sub.name == "non_landmark":
                others.append((f"non_landmark_{f.stem}", str(f)))
            else:
                landmarks.append((f"{sub.name}/{f.stem}", str(f), sub.name))
    if not landmarks:
        raise SystemExit(f"{root}: no landmark sub-folder with images")
    return landmarks, others


@dataclass(frozen=True)
class Setting:
    mode: str
    size: int
    scales: str  # "single" | "multi"

    def config(self, batch_size: int) -> rk.embed.ExtractionConfig:
        return rk.embed.ExtractionConfig(
            resize=self.mode,
            image_size=self.size,
            scales=MULTI_SCALES if self.scales == "multi" else (1.0,),
            batch_size=batch_size,
        )


class Protocol:
    """The queries, database and distractors of the run, and the evaluation of one embedding."""

    def __init__(self, landmarks, non_landmarks) -> None:
        self.landmark_ids = [i for i, _, _ in landmarks]
        self.labels = {i: label for i, _, label in landmarks}
        ordered = sorted(non_landmarks)
        self.nl_query_ids = [i for i, _ in ordered[0::2]]
        self.distractor_ids = [i for i, _ in ordered[1::2]]
        self.paths = [p for _, p, _ in landmarks] + [p for _, p in ordered]
        self.row = {i: r for r, i in enumerate(self.landmark_ids + [i for i, _ in ordered])}

    def evaluate(self, emb: np.ndarray, whitening: str, dim: int, shrinkage: float) -> dict:
        predictions, rankings = {}, {}
        queries = [(q, [i for i in self.landmark_ids if i != q]) for q in self.landmark_ids]
        queries += [(q, self.landmark_ids) for q in self.nl_query_ids]
        folds: dict[tuple, tuple] = {}
        for qid, db_ids in queries:
            key = tuple(db_ids)
            if key not in folds:
                folds[key] = self._fold(emb, db_ids, whitening, dim, shrinkage)
            transform, index, reranker = folds[key]
            q = transform(emb[[self.row[qid]]])
            result = reranker.rerank(q, index.search(q, k=len(db_ids)))
            labels, conf = rk.predict.predict_labels(result, self.labels)
            predictions[qid] = (labels[0], float(conf[0]))
            rankings[qid] = list(result.ids[0])
        solution = {q: {self.labels[q]} for q in self.landmark_ids}
        solution.update({q: set() for q in self.nl_query_ids})
        relevant = {
            q: {i for i in self.landmark_ids if i != q and self.labels[i] == self.labels[q]}
            for q in self.landmark_ids
        }
        landmark_rankings = {q: rankings[q] for q in self.landmark_ids if relevant[q]}
        return {
            "gap": rk.metrics.global_average_precision(predictions, solution),
            "map": rk.metrics.mean_average_precision_at_k(
                landmark_rankings, {q: relevant[q] for q in landmark_rankings}, k=100
            ),
            "top1": rk.metrics.top1_accuracy(
                {q: predictions[q] for q in self.landmark_ids},
                {q: solution[q] for q in self.landmark_ids},
            ),
        }

    def _fold(self, emb, db_ids, whitening, dim, shrinkage):
        db = emb[[self.row[i] for i in db_ids]]
        dis = emb[[self.row[i] for i in self.distractor_ids]]
        if whitening == "none":

            def transform(x):
                return x

        else:
            train = np.concatenate([db, dis])
            w = rk.embed.Whitening(min(dim, len(train) - 2), shrinkage=shrinkage)
            if whitening == "pca":
                w.fit(train)
            else:  # lw: same-landmark pairs of the database; distractors pair with nothing
                labels = [self.labels[i] for i in db_ids] + [f"_d{j}" for j in range(len(dis))]
                w.fit(train, labels=labels)
            transform = w.transform
        index = rk.index.build_index(transform(db), ids=list(db_ids), factory="Flat")
        reranker = rk.rerank.DistractorReranker(transform(dis), k=5)
        return transform, index, reranker


def run(args: argparse.Namespace) -> tuple[list[dict], Protocol]:
    landmarks, others = read_folder(Path(args.folder))
    if not args.no_package_photos:
        others += package_photos()
    if len(others) < 2:
        raise SystemExit("need at least 2 non-landmark photos (queries and distractors)")
    protocol = Protocol(landmarks, others)
    logger.info(
        "%d landmark photos (%d landmarks), %d non-landmark queries, %d distractors",
        len(protocol.landmark_ids),
        len(set(protocol.labels.values())),
        len(protocol.nl_query_ids),
        len(protocol.distractor_ids),
    )
    torch.manual_seed(0)
    model = rk.backbones.create_backbone(args.backbone, pretrained=True, embedding_dim=None)
    rows = []
    settings = [
        Setting(mode, size, scales)
        for scales in args.scales
        for mode in args.modes
        for size in args.sizes
        if not (scales == "multi" and mode != "long_side" and not args.all_multi)
    ]
    for s in settings:
        start = time.perf_counter()
        emb, _ = rk.embed.extract_embeddings(
            model, protocol.paths, config=s.config(args.batch_size)
        )
        seconds = (time.perf_counter() - start) / len(protocol.paths)
        for whitening in args.whitening:
            scores = protocol.evaluate(emb, whitening, args.whitening_dim, args.whitening_shrinkage)
            row = {**s.__dict__, "whitening": whitening, "s_per_image": seconds, **scores}
            rows.append(row)
            logger.info(
                "%-9s %4d %-6s %-5s GAP %.3f mAP %.3f top-1 %.3f  %.3f s/img",
                s.mode,
                s.size,
                s.scales,
                whitening,
                scores["gap"],
                scores["map"],
                scores["top1"],
                seconds,
            )
    return rows, protocol


def markdown(rows: list[dict], protocol: Protocol, args: argparse.Namespace) -> str:
    n_l = len(protocol.landmark_ids)
    n_classes = len(set(protocol.labels.values()))
    # The photo folder is named by its last part only: where it lies is the caller's machine.
    argv = [Path(a).name if a == args.folder else a for a in sys.argv[1:]]
    command = "python benchmarks/realphoto_eval.py " + " ".join(argv)
    single_long = [r for r in rows if r["mode"] == "long_side" and r["scales"] == "single"]
    by_size: dict[int, list[float]] = {}
    for r in single_long:
        by_size.setdefault(r["size"], []).append(r["gap"])
    plain = {r["size"]: r["gap"] for r in single_long if r["whitening"] == "none"}
    lines = [
        "## 6. Extraction settings on real photos (a smoke check)",
        "",
        f"Generated by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node() or 'this machine'} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"**Caveat: {n_l} landmark photos of {n_classes} landmarks, "
        f"{len(protocol.nl_query_ids)} non-landmark queries and {len(protocol.distractor_ids)} "
        "distractors. This is a smoke check, not a benchmark: one landmark query moves top-1 by "
        f"{100 / n_l:.0f} points.**",
        "",
        f"Backbone `{args.backbone}` (offline ImageNet weights, no head: GeM-pooled features). "
        "Landmark photos: PhotoTourism sample images (the Image Matching Challenge PhotoTourism "
        "data, shipped as assets of magicleap/SuperGluePretrainedNetwork); non-landmark photos: "
        "the real photographs shipped in scikit-image, scikit-learn and matplotlib. Protocol "
        "(leave-one-out landmark queries, non-landmark queries vs a disjoint distractor pool, "
        "reranking, metrics) in the docstring of `benchmarks/realphoto_eval.py`. Multi-scale: "
        "scales (1, 1/√2, √2), cirtorch's power mean with the GeM p. Whitening `pca`: "
        f"`rk.embed.Whitening(dim={args.whitening_dim}, shrinkage={args.whitening_shrinkage})` "
        "fitted per query on its database + distractors; `lw`: learned whitening from the "
        "database's same-landmark pairs, same dim and shrinkage (it learns from the very landmarks "
        "being queried, through their other photos: what a recognition system with a labelled "
        "database may do, but flattering with so few landmarks). s/img: whole extraction "
        "(decode, resize, model) per photo, one process, on a shared machine: compare rows, "
        "not machines.",
        "",
        "| resize | size | scales | whitening | GAP | mAP@100 | top-1 | s/img |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['size']} | {r['scales']} | {r['whitening']} | {r['gap']:.3f} | "
            f"{r['map']:.3f} | {r['top1']:.3f} | {r['s_per_image']:.3f} |"
        )
    lines.append("")
    if plain:
        best_plain = max(sorted(plain), key=lambda size: round(plain[size], 6))
        mean_gap = {size: float(np.mean(g)) for size, g in by_size.items()}
        best_mean = max(sorted(mean_gap), key=lambda size: round(mean_gap[size], 6))
        variants = "/".join(args.whitening)
        lines.append(
            f"Single-scale `long_side`, best size by GAP without whitening: **{best_plain}** "
            f"(GAP {plain[best_plain]:.3f}); by GAP averaged over the whitening variants "
            f"({variants}): **{best_mean}** (mean GAP {mean_gap[best_mean]:.3f}). Ties go to the "
            "smaller size. See docs/embed.md for the default this sets."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="one sub-folder of photos per landmark")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 288, 384, 512, 640])
    parser.add_argument("--modes", nargs="+", default=["squash", "long_side"])
    parser.add_argument("--scales", nargs="+", default=["single", "multi"])
    parser.add_argument("--all-multi", action="store_true", help="multi-scale for every mode")
    parser.add_argument("--whitening", nargs="+", default=["none", "pca", "lw"])
    parser.add_argument("--whitening-dim", type=int, default=16)
    parser.add_argument("--whitening-shrinkage", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-package-photos", action="store_true")
    parser.add_argument("--write", type=Path, help="replace this script's section in this file")
    parser.add_argument("--json", type=Path, help="also save the rows here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("retrieval_kit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    rows, protocol = run(args)
    section = markdown(rows, protocol, args)
    print(section)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from doc_section import write_section

        write_section(args.write, SECTION, section)
        logger.info("wrote %s", args.write)


if __name__ == "__main__":
    main()
