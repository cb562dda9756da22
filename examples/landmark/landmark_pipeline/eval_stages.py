"""Stages embed, index, predict, evaluate, visualize and submit.

Two models go through the same pipeline: ``trained`` (after the train stage) and ``baseline`` (the
pretrained backbone's pooled features, without the embedding head, i.e. what a user would get
without training), so ``baseline_gap`` is measured exactly like ``gap``.

Query sets:

* ``test``: every test image (the submission needs them all); searched against the database
  (every labelled image: train + val_query + val_db), reranked with the distractor pool. Only the
  ``test_query`` rows are scored.
* ``val``: the validation queries against the validation database (classes unseen in training).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

import retrieval_kit as rk
from retrieval_kit.io import atomic_write, atomic_write_json

from .context import Context
from .data_stages import load_split
from .table import ImageRow
from .train_stage import build_model, model_paths

logger = logging.getLogger(__name__)

MODELS = ("trained", "baseline")
BASELINE_DESCRIPTION = (
    "the pretrained {backbone} backbone's {pooling}-pooled features (no embedding head, no "
    "training), L2-normalised, through the same index, prediction and reranking as the "
    "trained model"
)
DB_ROLES = ("train", "val_query", "val_db")


def _embedded_rows(rows: list[ImageRow]) -> list[ImageRow]:
    return [r for r in rows if r.role != "unused"]


# ------------------------------------------------------------------------------------------- embed
def stage_embed(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    cfg = ctx.config
    rows = _embedded_rows(load_split(ctx))
    outputs: list[Path] = []
    info: dict[str, Any] = {"images": len(rows)}
    for name, weights in model_paths(ctx.out).items():
        # The weights come from the checkpoint; the baseline has no head.
        model = build_model(cfg, pretrained=False, head=name != "baseline")
        rk.train.load_checkpoint(weights, model=model, restore_rng=False)
        model.normalize = True  # cosine similarity at retrieval
        folder = ctx.out / "embed" / name
        logger.info("embedding %d images with the %s model", len(rows), name)
        _, failed = rk.embed.extract_embeddings(
            model,
            [r.path for r in rows],
            image_size=cfg.embed.image_size or cfg.model.image_size,
            resize=cfg.embed.resize,
            scales=tuple(cfg.embed.scales),
            batch_size=cfg.embed.batch_size,
            num_workers=cfg.embed.num_workers,
            device=ctx.device,
            on_error="skip",
            progress=ctx.progress,
            out=folder / "embeddings.npy",
            overwrite=True,
            rank=0,  # under torchrun rank 0 alone runs this stage (runner.py): embed every row
            world_size=1,
        )
        if failed:
            logger.warning(
                "%s: %d unreadable images left out (first: %s: %s); listed in %s",
                name,
                len(failed),
                failed[0][1],
                failed[0][2],
                folder / "failed.json",
            )
        atomic_write_json(
            folder / "failed.json",
            [{"row": r, "id": rows[r].id, "path": p, "reason": why} for r, p, why in failed],
        )
        with atomic_write(folder / "ids.txt", "w", encoding="utf-8") as f:
            f.write("".join(r.id + "\n" for r in rows))
        outputs += [folder / "embeddings.npy", folder / "failed.json", folder / "ids.txt"]
        if cfg.embed.whitening != "none":
            outputs.append(_whiten(cfg.embed, folder, rows, {r for r, _, _ in failed}))
        info[f"{name}_failed"] = len(failed)
    return outputs, info


def _whiten(cfg, folder: Path, rows: list[ImageRow], failed: set[int]) -> Path:
    """Fit whitening on the train split's embeddings; whiten every row of ``embeddings.npy``.

    Only ``train`` rows are used to fit (never a query, the validation classes or a distractor),
    so the whitening is learned on the training side of the split.
    """
    path = folder / "embeddings.npy"
    x = np.load(path)
    fit = [i for i, r in enumerate(rows) if r.role == "train" and i not in failed]
    if len(fit) < 2:
        raise ValueError(f"embed.whitening: {len(fit)} train embeddings, too few to fit on")
    w = rk.embed.Whitening(dim=cfg.whitening_dim, shrinkage=cfg.whitening_shrinkage)
    labels = [int(rows[i].label) for i in fit] if cfg.whitening == "learned" else None
    w.fit(x[fit], labels=labels)
    out = np.ascontiguousarray(w.transform(x), dtype=np.float32)
    out[sorted(failed)] = 0.0  # failed rows stay zero (they are never read)
    with atomic_write(path, "wb") as f:
        np.save(f, out)
    w.save(folder / "whitening.npz")
    logger.info(
        "%s whitening (%s): %d -> %d dims", cfg.whitening, folder.name, x.shape[1], out.shape[1]
    )
    return folder / "whitening.npz"


class _Embeddings:
    """One model's embeddings, addressable by role."""

    def __init__(self, ctx: Context, name: str, rows: list[ImageRow]) -> None:
        folder = ctx.out / "embed" / name
        self.matrix = np.load(folder / "embeddings.npy", mmap_mode="r")
        ids = (folder / "ids.txt").read_text(encoding="utf-8").split()
        if ids != [r.id for r in rows]:
            raise ValueError(f"{folder}: embeddings do not match the split table; rerun embed")
        failed = {f["row"] for f in json.loads((folder / "failed.json").read_text())}
        self.rows = rows
        self.ok = np.array([i not in failed for i in range(len(rows))])

    def select(self, keep) -> tuple[np.ndarray, list[ImageRow]]:
        idx = [i for i, r in enumerate(self.rows) if keep(r) and self.ok[i]]
        return np.ascontiguousarray(self.matrix[idx], dtype=np.float32), [self.rows[i] for i in idx]


# ------------------------------------------------------------------------------------------- index
def stage_index(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    rows = _embedded_rows(load_split(ctx))
    outputs: list[Path] = []
    info: dict[str, Any] = {}
    for name in MODELS:
        emb = _Embeddings(ctx, name, rows)
        for index_name, roles in (("db", DB_ROLES), ("val_db", ("val_db",))):
            x, sel = emb.select(lambda r, roles=roles: r.role in roles)
            if not sel:
                continue
            index = rk.index.build_index(
                x, ids=[r.id for r in sel], factory=ctx.config.index.factory
            )
            path = ctx.out / "index" / name / f"{index_name}.index"
            index.save(path)
            outputs.append(path)
            info[f"{name}_{index_name}"] = len(sel)
    return outputs, info


# ----------------------------------------------------------------------------------------- predict
def _load_index(ctx: Context, name: str, index_name: str):
    path = ctx.out / "index" / name / f"{index_name}.index"
    return rk.index.load_index(path) if path.exists() else None


class _Predictor:
    """One model's prediction pipeline, step by step (each step kept for the ablation).

    Steps, in order: nearest neighbour; label aggregation (``predict.method``); the distractor
    penalty; spatial verification (``predict.verify``); learned confidence
    (``predict.confidence: learned``). The last step's labels and scores are the reported ones.
    """

    def __init__(self, ctx: Context, name: str, rows: list[ImageRow]) -> None:
        self.ctx, self.name, self.cfg = ctx, name, ctx.config.predict
        self.id_to_label = {r.id: int(r.label) for r in rows if r.role in DB_ROLES}
        self.paths = {r.id: r.path for r in rows}
        self.emb = _Embeddings(ctx, name, rows)
        dist_x, dist_rows = self.emb.select(lambda r: r.role == "distractor")
        self.distractors = (dist_x, dist_rows)
        self.reranker = None
        if dist_rows:
            self.reranker = rk.rerank.DistractorReranker(
                dist_x,
                k=self.cfg.rerank_k,
                alpha=self.cfg.rerank_alpha,
                distractor_ids=[r.id for r in dist_rows],
            )
        self.verifier = None
        if self.cfg.verify:
            self.verifier = rk.rerank.SpatialVerificationReranker(
                self.paths,
                k=self.cfg.verify_k,
                min_inliers=self.cfg.min_inliers,
                cache_dir=ctx.out / "predict" / "local_features",
                num_workers=self.cfg.verify_workers,
                on_error="skip",
            )
        self.confidence: rk.predict.ConfidenceModel | None = None

    def _labels(self, result, method: str):
        return rk.predict.predict_labels(result, self.id_to_label, method=method, k=self.cfg.vote_k)

    def run(self, q_x: np.ndarray, q_ids: list[str], result) -> dict[str, Any]:
        """Every step on one query set: ``{"steps": [(name, labels, scores)], ...}``."""
        cfg = self.cfg
        steps = [("nearest neighbour", *self._labels(result, "nn"))]
        vote = f", k={cfg.vote_k or 3}" if cfg.method != "nn" else ""
        steps.append((f"label aggregation ({cfg.method}{vote})", *self._labels(result, cfg.method)))
        penalty = None
        reranked = result
        if self.reranker is not None:
            if cfg.confidence == "learned":  # a feature of the learned confidence
                penalty = self.reranker.query_penalty(q_x, q_ids)
            reranked = self.reranker.rerank(q_x, result, query_ids=q_ids)
        steps.append(("distractor penalty", *self._labels(reranked, cfg.method)))
        inliers, verified = None, None
        if self.verifier is not None:
            verified, inliers = self.verifier.rerank_with_inliers(
                [self.paths[q] for q in q_ids], reranked
            )
            reranked = verified
            steps.append(("spatial verification", *self._labels(reranked, cfg.method)))
        return {
            "steps": steps,
            "final": reranked,
            "penalty": penalty,
            "inliers": inliers,
            "verified": verified,
        }

    def features(self, out: dict[str, Any]):
        assert self.confidence is not None
        return self.confidence.features(
            out["final"],
            self.id_to_label,
            distractor_penalty=out["penalty"],
            inliers=out["inliers"],
        )

    def fit_confidence(self, val_index) -> Path | None:
        """Fit the learned confidence on the validation split; save it; return its path.

        ``None`` (a warning; the formula's scores stand) when the validation predictions are
        all right or all wrong: a small validation split can leave nothing to learn from.

        Fitting queries: the validation queries (landmarks of classes unseen in training,
        searched against their own database) and the distractors (non-landmarks: always wrong;
        their own copy is never a distractor neighbour).
        """
        v_x, v_rows = self.emb.select(lambda r: r.role == "val_query")
        d_x, d_rows = self.distractors
        cap = self.cfg.confidence_distractors
        if cap is not None and len(d_rows) > cap:
            rng = np.random.default_rng(self.ctx.config.seed)
            pick = np.sort(rng.choice(len(d_rows), cap, replace=False))
            d_x, d_rows = d_x[pick], [d_rows[i] for i in pick]
        if val_index is None or not v_rows:
            raise ValueError(
                "predict.confidence: 'learned' is fitted on the validation split, which is empty "
                "(split.num_val_classes: 0?)"
            )
        x = np.concatenate([v_x, d_x]) if d_rows else v_x
        rows = v_rows + d_rows
        ids = [r.id for r in rows]
        result = val_index.search(x, max(self.cfg.k, self.cfg.verify_k))
        out = self.run(x, ids, result)
        self.confidence = rk.predict.ConfidenceModel(
            k=self.cfg.k, method="vote" if self.cfg.method == "vote" else "nn"
        )
        feats = self.features(out)
        correct = [
            lab is not None and r.role == "val_query" and int(lab) in r.labels
            for r, lab in zip(rows, feats.labels, strict=True)
        ]
        if sum(correct) in (0, len(correct)):
            logger.warning(
                "%s: learned confidence not fitted: %d of %d validation predictions are right "
                "(it needs right and wrong ones; a larger split.num_val_classes helps); the "
                "distractor-penalty scores stand",
                self.name,
                sum(correct),
                len(correct),
            )
            self.confidence = None
            return None
        self.confidence.fit(feats, correct)
        path = self.ctx.out / "predict" / self.name / "confidence.json"
        self.confidence.save(path)
        logger.info(
            "%s: learned confidence fitted on %d validation queries + %d distractors (%d correct)",
            self.name,
            len(v_rows),
            len(d_rows),
            sum(correct),
        )
        return path

    def learned_step(self, out: dict[str, Any]) -> None:
        feats = self.features(out)
        prob = self.confidence.predict_confidence(feats)
        out["steps"].append(("learned confidence", feats.labels, np.asarray(prob, np.float32)))


def _check_verify_available() -> None:
    try:
        import cv2  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "predict.verify: spatial verification needs OpenCV: "
            "pip install 'retrieval_kit[verify]' (or set predict.verify: false)"
        ) from e


def stage_predict(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    cfg = ctx.config.predict
    if cfg.verify:
        _check_verify_available()
    rows = _embedded_rows(load_split(ctx))
    k = max(cfg.k, ctx.config.evaluate.map_k, cfg.verify_k if cfg.verify else 1)
    outputs: list[Path] = []
    info: dict[str, Any] = {}
    for name in MODELS:
        predictor = _Predictor(ctx, name, rows)
        folder = ctx.out / "predict" / name
        if cfg.confidence == "learned":
            fitted = predictor.fit_confidence(_load_index(ctx, name, "val_db"))
            info[f"{name}_confidence"] = "learned" if fitted else "formula (learned not fitted)"
            outputs += [fitted] if fitted else []
        for query_set, keep, index_name in (
            ("test", lambda r: r.source == "test", "db"),
            ("val", lambda r: r.role == "val_query", "val_db"),
        ):
            q_x, q_rows = predictor.emb.select(keep)
            index = _load_index(ctx, name, index_name)
            if not q_rows or index is None:
                continue
            q_ids = [r.id for r in q_rows]
            result = index.search(q_x, k)
            out = predictor.run(q_x, q_ids, result)
            if predictor.confidence is not None:
                predictor.learned_step(out)
            steps = out["steps"]
            _, labels, conf = steps[1]  # label aggregation, before any reranking
            _, labels_r, conf_r = steps[-1]  # the whole pipeline
            csv_path = folder / f"{query_set}.csv"
            with atomic_write(csv_path, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "label", "score", "label_reranked", "score_reranked"])
                for r, a, b, c, d in zip(q_rows, labels, conf, labels_r, conf_r, strict=True):
                    w.writerow([r.id, _label(a), f"{float(b):.6f}", _label(c), f"{float(d):.6f}"])
            npz_path = folder / f"{query_set}_neighbours.npz"
            _save_neighbours(npz_path, q_ids, result)
            steps_path = folder / f"{query_set}_steps.json"
            ranking = "neighbours"
            step_list = []
            for step, labs, scores in steps:
                if step == "spatial verification":
                    ranking = "verified_neighbours"
                step_list.append(
                    {
                        "step": step,
                        "ranking": ranking,
                        "labels": [_label(a) for a in labs],
                        # a query without a prediction has score -inf: not JSON, and never scored
                        "scores": [
                            round(float(b), 6) if a is not None else 0.0
                            for a, b in zip(labs, scores, strict=True)
                        ],
                    }
                )
            atomic_write_json(steps_path, {"ids": q_ids, "steps": step_list})
            outputs += [csv_path, npz_path, steps_path]
            if out["verified"] is not None:
                v_path = folder / f"{query_set}_verified_neighbours.npz"
                _save_neighbours(v_path, q_ids, out["verified"])
                outputs.append(v_path)
            info[f"{name}_{query_set}"] = len(q_rows)
    return outputs, info


def _save_neighbours(path: Path, q_ids: list[str], result) -> None:
    with atomic_write(path, "wb") as f:
        np.savez(
            f,
            query_ids=np.array(q_ids),
            ids=np.array(result.ids, dtype=str),
            scores=np.asarray(result.scores, dtype=np.float32),
        )


def _label(value: Any) -> str:
    return (
        "" if value is None or (isinstance(value, (int, np.integer)) and value < 0) else str(value)
    )


def read_predictions(ctx: Context, name: str, query_set: str) -> dict[str, dict[str, Any]]:
    path = ctx.out / "predict" / name / f"{query_set}.csv"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def _as_predictions(preds: dict[str, dict[str, Any]], rerank: bool) -> dict[str, tuple[int, float]]:
    lab, score = ("label_reranked", "score_reranked") if rerank else ("label", "score")
    return {q: (int(p[lab]), float(p[score])) for q, p in preds.items() if p[lab] != ""}


# ---------------------------------------------------------------------------------------- evaluate
def stage_evaluate(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    start = time.perf_counter()
    rows = load_split(ctx)
    map_k = ctx.config.evaluate.map_k
    db_by_label: dict[int, set[str]] = {}
    val_db_by_label: dict[int, set[str]] = {}
    for r in rows:
        if r.role in DB_ROLES:
            db_by_label.setdefault(int(r.label), set()).add(r.id)
        if r.role == "val_db":
            val_db_by_label.setdefault(int(r.label), set()).add(r.id)
    test_truth = {r.id: r.labels for r in rows if r.role == "test_query" and r.usage}
    val_truth = {r.id: r.labels for r in rows if r.role == "val_query"}

    metrics: dict[str, Any] = {}
    if test_truth and any(test_truth.values()):
        metrics["protocol"] = "test"
        truth, query_set, relevant = test_truth, "test", db_by_label
    elif val_truth:
        metrics["protocol"] = "val"
        truth, query_set, relevant = val_truth, "val", val_db_by_label
    else:
        raise ValueError("nothing to evaluate: no test ground truth and no validation queries")
    metrics["scored_queries"] = len(truth)
    metrics["scored_landmark_queries"] = sum(1 for v in truth.values() if v)

    def score(name: str, qset: str, truth: dict, relevant: dict) -> dict[str, float]:
        preds = {q: p for q, p in read_predictions(ctx, name, qset).items() if q in truth}
        gap_r = rk.metrics.global_average_precision(_as_predictions(preds, True), truth)
        gap = rk.metrics.global_average_precision(_as_predictions(preds, False), truth)
        top1 = rk.metrics.top1_accuracy(_as_predictions(preds, False), truth)
        ranked, solution = _ranked_lists(ctx, name, qset, truth, relevant)
        m = rk.metrics.mean_average_precision_at_k(ranked, solution, k=map_k) if solution else None
        return {"gap": gap_r, "gap_without_rerank": gap, "top1_accuracy": top1, "map": m}

    trained = score("trained", query_set, truth, relevant)
    baseline = score("baseline", query_set, truth, relevant)
    metrics.update(
        gap=trained["gap"],
        gap_without_rerank=trained["gap_without_rerank"],
        baseline_gap=baseline["gap"],
        baseline_gap_without_rerank=baseline["gap_without_rerank"],
        top1_accuracy=trained["top1_accuracy"],
        baseline_top1_accuracy=baseline["top1_accuracy"],
        map_at_100=trained["map"],
        baseline_map_at_100=baseline["map"],
        map_k=map_k,
        baseline={
            "description": BASELINE_DESCRIPTION.format(
                backbone=ctx.config.model.backbone, pooling=ctx.config.model.pooling
            ),
            "gap": baseline["gap"],
            "gap_without_rerank": baseline["gap_without_rerank"],
            "top1_accuracy": baseline["top1_accuracy"],
            "map_at_100": baseline["map"],
        },
    )
    metrics["ablation"] = _ablation(ctx, query_set, truth, relevant, map_k)
    if metrics["protocol"] == "test" and val_truth:
        val = score("trained", "val", val_truth, val_db_by_label)
        val_base = score("baseline", "val", val_truth, val_db_by_label)
        metrics["val"] = {
            "gap": val["gap_without_rerank"],
            "baseline_gap": val_base["gap_without_rerank"],
            "top1_accuracy": val["top1_accuracy"],
            "map_at_100": val["map"],
            "baseline_map_at_100": val_base["map"],
            "queries": len(val_truth),
        }
    seconds = {}
    from .state import StageMarker

    for stage in ("prepare", "clean", "split", "train", "embed", "index", "predict"):
        marker = StageMarker(ctx.out, stage).read()
        if marker is not None:
            seconds[stage] = marker["seconds"]
    seconds["evaluate"] = round(time.perf_counter() - start, 3)
    metrics["stage_seconds"] = seconds
    path = ctx.out / "metrics.json"
    atomic_write_json(path, metrics)
    logger.info(
        "GAP %.4f (without reranking %.4f, baseline %.4f), top-1 %.4f, mAP@%d %s",
        metrics["gap"],
        metrics["gap_without_rerank"],
        metrics["baseline_gap"],
        metrics["top1_accuracy"],
        map_k,
        metrics["map_at_100"],
    )
    return [path], {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def _ablation(ctx, query_set, truth, relevant, map_k) -> list[dict[str, Any]]:
    """Each pipeline step's GAP, mAP@k and top-1 accuracy (trained model), in pipeline order."""
    data = json.loads((ctx.out / "predict" / "trained" / f"{query_set}_steps.json").read_text())
    ids = data["ids"]
    rows = []
    for step in data["steps"]:
        preds = {
            q: (int(lab), float(s))
            for q, lab, s in zip(ids, step["labels"], step["scores"], strict=True)
            if q in truth and lab != ""
        }
        ranked, solution = _ranked_lists(
            ctx, "trained", query_set, truth, relevant, kind=step["ranking"]
        )
        rows.append(
            {
                "step": step["step"],
                "gap": rk.metrics.global_average_precision(preds, truth),
                "map_at_100": (
                    rk.metrics.mean_average_precision_at_k(ranked, solution, k=map_k)
                    if solution
                    else None
                ),
                "top1_accuracy": rk.metrics.top1_accuracy(preds, truth),
            }
        )
    return rows


def _ranked_lists(ctx, name, query_set, truth, relevant, kind="neighbours"):
    path = ctx.out / "predict" / name / f"{query_set}_{kind}.npz"
    data = np.load(path, allow_pickle=False)
    ranked, solution = {}, {}
    for q, ids in zip(data["query_ids"].tolist(), data["ids"].tolist()):
        labels = truth.get(q)
        if not labels:
            continue
        rel = set().union(*(relevant.get(lab, set()) for lab in labels))
        if not rel:
            continue  # the landmark has no database image (e.g. cleaned away): AP undefined
        ranked[q] = [i for i in ids if i not in ("", "None")]
        solution[q] = rel
    return ranked, solution


# --------------------------------------------------------------------------------------- visualize
GRIDS = ("most_confident_correct", "least_confident_correct", "most_confident_incorrect", "random")


def stage_visualize(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    """Prediction grids of the trained model (reranked scores), as the reproduced pipeline drew."""
    cfg = ctx.config.visualize
    rows = load_split(ctx)
    by_id = {r.id: r for r in rows}
    query_set = json.loads((ctx.out / "metrics.json").read_text())["protocol"]
    role = "test_query" if query_set == "test" else "val_query"
    truth = {r.id: r.labels for r in rows if r.role == role and (r.usage or query_set == "val")}
    preds = read_predictions(ctx, "trained", query_set)
    data = np.load(ctx.out / "predict" / "trained" / f"{query_set}_neighbours.npz")
    neighbours = dict(zip(data["query_ids"].tolist(), zip(data["ids"], data["scores"])))
    qids = [q for q, p in preds.items() if q in truth and p["label_reranked"] != ""]
    labels = [int(preds[q]["label_reranked"]) for q in qids]
    conf = np.array([float(preds[q]["score_reranked"]) for q in qids])
    true = [truth[q] for q in qids]
    outputs = []
    for kind in GRIDS:
        picked = rk.viz.select_predictions(
            labels, conf, true, kind, n=cfg.rows, seed=ctx.config.seed
        )
        if len(picked) == 0:
            logger.info("no query for the %s grid", kind)
            continue
        queries, rows_nb, captions = [], [], []
        for i in picked:
            q = qids[i]
            ids, scores = neighbours[q]
            nb = [
                (by_id[n].path, int(by_id[n].label), float(s))
                for n, s in zip(ids[: cfg.neighbours], scores[: cfg.neighbours])
                if n in by_id
            ]
            queries.append(by_id[q].path)
            rows_nb.append(nb)
            captions.append(f"pred {labels[i]} @ {conf[i]:.3f}")
        path = ctx.out / "viz" / f"{kind}.png"
        rk.viz.save_prediction_grid(
            path,
            queries,
            rows_nb,
            [true[i] for i in picked],
            title=f"{kind.replace('_', ' ')} (score after reranking)",
            k=cfg.neighbours,
            thumb_size=cfg.thumb_size,
            query_captions=captions,
        )
        outputs.append(path)
    return outputs, {"grids": [p.name for p in outputs]}


# ------------------------------------------------------------------------------------------ submit
def stage_submit(ctx: Context) -> tuple[list[Path], dict[str, Any]]:
    rows = load_split(ctx)
    test_ids = [r.id for r in rows if r.source == "test"]
    if not test_ids:
        raise ValueError("no test images: nothing to submit (prepare found no test.csv)")
    preds = read_predictions(ctx, "trained", "test")
    lab, score = (
        ("label_reranked", "score_reranked") if ctx.config.submit.rerank else ("label", "score")
    )
    path = ctx.out / "submission.csv"
    empty = 0
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "landmarks"])
        for i in test_ids:
            p = preds.get(i)
            if p is None or p[lab] == "":
                empty += 1  # unreadable image: Kaggle accepts an empty prediction
                w.writerow([i, ""])
            else:
                w.writerow([i, f"{p[lab]} {float(p[score]):.6f}"])
    return [path], {"rows": len(test_ids), "empty": empty}
