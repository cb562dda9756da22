"""Extraction settings on the landmark demo: GAP, mAP@100, top-1 and time of the demo's trained
model and its pretrained baseline, re-embedded under each setting, scored as the example does.

Run: ``python benchmarks/demo_extraction.py RUN [--settings squash:224 long_side:112 ...]
[--threads 1] [--write docs/embed.md] [--json rows.json]``.

RUN is a finished run of the landmark example (``python examples/landmark/run.py demo --out RUN``):
its ``config.yaml``, its split table ``split/images.csv`` and its two models ``train/model.pt``
(trained) and ``train/model_init.pt`` (the baseline: pretrained backbone, no head). For each
model and each setting, the images are embedded again with ``rk.embed.extract_embeddings`` and
go through what the example's stages ``embed`` / ``index`` / ``predict`` / ``evaluate`` do, with
the public API only:

* database: the ``train``, ``val_query`` and ``val_db`` rows (``rk.index.build_index`` with the
  run's ``index.factory``); distractor pool: the ``distractor`` rows
  (``rk.rerank.DistractorReranker`` with the run's ``predict.rerank_k`` / ``rerank_alpha``);
  queries: the scored test queries (role ``test_query`` with a Usage), searched for
  ``max(predict.k, evaluate.map_k)`` neighbours;
* labels: ``rk.predict.predict_labels`` with the run's ``predict.method`` / ``vote_k``;
* GAP: ``rk.metrics.global_average_precision`` after distractor reranking (the example's ``gap``);
  top-1: of the landmark queries, before reranking (reranking only moves confidences);
  mAP@``map_k``: of the landmark queries' neighbour lists (relevant: every database image of the
  query's landmark), before reranking, as the example's ``map_at_100``;
* whitening: as the run's ``embed.whitening`` (fitted on the ``train`` rows' embeddings).

A setting is ``MODE:SIZE[:multi]``: MODE ``squash`` / ``long_side`` / ``center_crop``, SIZE a
number or ``default`` (``image_size=None``: for ``long_side`` the backbone's measured retrieval
size, ``rk.embed.retrieval_image_size``), ``multi`` the scales (1, 1/√2, √2). Time: wall seconds
per image of the whole extraction (decode, resize, model), one process; read it as a ratio
between rows of one run. Verification, the learned confidence and the ``other_usage`` pool are
not reproduced (the demo's defaults use none of them).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import retrieval_kit as rk
from retrieval_kit.io import atomic_write_text

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # doc_section is a sibling script, not a package

from doc_section import machine_line, write_section  # noqa: E402

MULTI_SCALES = (1.0, 2**-0.5, 2**0.5)
MODES = ("squash", "long_side", "center_crop")
SECTION = "demo_extraction"  # its section of docs/embed.md (benchmarks/doc_section.py)
DB_ROLES = ("train", "val_query", "val_db")
DEFAULT_SETTINGS = [
    "squash:224",
    "squash:112",
    "long_side:112",
    "long_side:160",
    "long_side:224",
    "long_side:112:multi",
    "long_side:224:multi",
    "long_side:default",
]

logger = logging.getLogger("demo_extraction")


@dataclass(frozen=True)
class Setting:
    """One extraction setting of the grid."""

    mode: str
    size: int | None  # None: the library's default for the mode
    multi: bool = False

    @classmethod
    def parse(cls, text: str) -> Setting:
        """``"long_side:112:multi"`` -> ``Setting("long_side", 112, True)``."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "multi"):
            raise ValueError(f"setting {text!r}: expected MODE:SIZE or MODE:SIZE:multi")
        if parts[0] not in MODES:
            raise ValueError(f"setting {text!r}: mode must be one of {MODES}")
        if parts[1] == "default":
            size = None
        elif parts[1].isdigit() and int(parts[1]) > 0:
            size = int(parts[1])
        else:
            raise ValueError(f"setting {text!r}: size must be a positive integer or 'default'")
        return cls(parts[0], size, len(parts) == 3)

    def config(self, batch_size: int) -> rk.embed.ExtractionConfig:
        return rk.embed.ExtractionConfig(
            resize=self.mode,
            image_size=self.size,
            scales=MULTI_SCALES if self.multi else (1.0,),
            batch_size=batch_size,
            on_error="skip",
        )


@dataclass(frozen=True)
class Row:
    """One image of the run's split table (``split/images.csv``)."""

    id: str
    path: str
    labels: tuple[int, ...]
    role: str
    usage: str


class DemoRun:
    """A finished run of the landmark example: its config, split table and models."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        config_path = self.folder / "config.yaml"
        table_path = self.folder / "split" / "images.csv"
        for path in (config_path, table_path):
            if not path.is_file():
                raise SystemExit(f"{path} not found: is {self.folder} a finished landmark run?")
        self.config: dict[str, Any] = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        self.rows = _read_table(table_path)

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name) or {}

    def synthetic_params(self) -> dict[str, Any]:
        """The synthetic data's arguments: its manifest's, else the config's (may be empty)."""
        root = self.section("data").get("root")
        manifest = Path(root) / "synthetic_manifest.json" if root else None
        if manifest is not None and manifest.is_file():
            return json.loads(manifest.read_text(encoding="utf-8")).get("params", {})
        return self.section("data").get("synthetic") or {}

    def eval_size(self) -> int:
        """The example's evaluation size: ``embed.image_size``, else ``model.image_size``."""
        return int(self.section("embed").get("image_size") or self.section("model")["image_size"])

    def models(self) -> dict[str, torch.nn.Module]:
        """``{"trained": ..., "baseline": ...}`` loaded from the run's checkpoints."""
        m = self.section("model")
        out = {}
        for name, file, dim in (
            ("trained", "model.pt", m.get("embedding_dim")),
            ("baseline", "model_init.pt", None),
        ):
            path = self.folder / "train" / file
            if not path.is_file():
                raise SystemExit(f"{path} not found: run the example's train stage first")
            model = rk.backbones.create_backbone(
                m["backbone"], pretrained=False, embedding_dim=dim, pooling=m.get("pooling", "gem")
            )
            rk.train.load_checkpoint(path, model=model, restore_rng=False)
            model.normalize = True  # cosine similarity at retrieval, as the example's embed stage
            out[name] = model
        return out


def _read_table(path: Path) -> list[Row]:
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            try:
                labels = tuple(int(v) for v in r["label"].split())
                rows.append(Row(r["id"], r["path"], labels, r["role"], r["usage"]))
            except (KeyError, ValueError) as e:
                raise SystemExit(f"{path}:{line}: not a split table row ({e})") from None
    return rows


class Scorer:
    """The example's index / predict / evaluate steps on one set of embeddings."""

    def __init__(self, run: DemoRun) -> None:
        self.run = run
        rows = run.rows
        self.db = [r for r in rows if r.role in DB_ROLES]
        self.distractors = [r for r in rows if r.role == "distractor"]
        self.queries = [r for r in rows if r.role == "test_query" and r.usage]
        if not self.queries or not self.db:
            raise SystemExit(f"{run.folder}: no scored test queries or no database rows")
        #: the rows to embed, in this order: database, distractors, queries
        self.embedded = self.db + self.distractors + self.queries
        self.id_to_label = {r.id: r.labels[0] for r in self.db}
        self.truth = {r.id: set(r.labels) for r in self.queries}
        db_by_label: dict[int, set[str]] = {}
        for r in self.db:
            db_by_label.setdefault(r.labels[0], set()).add(r.id)
        self.relevant = {
            r.id: set().union(*(db_by_label.get(lab, set()) for lab in r.labels))
            for r in self.queries
            if r.labels
        }

    def score(self, emb: np.ndarray, ok: np.ndarray) -> dict[str, float]:
        """GAP (reranked), GAP without reranking, top-1 and mAP@k of one model's embeddings."""
        cfg_p, cfg_e = self.run.section("predict"), self.run.section("embed")
        emb = self._whiten(emb, ok, cfg_e)
        n_db, n_dis = len(self.db), len(self.distractors)
        parts = {"db": (0, n_db), "dis": (n_db, n_db + n_dis), "q": (n_db + n_dis, len(emb))}
        sel = {k: [i for i in range(a, b) if ok[i]] for k, (a, b) in parts.items()}
        index = rk.index.build_index(
            emb[sel["db"]],
            ids=[self.embedded[i].id for i in sel["db"]],
            factory=self.run.section("index").get("factory", "auto"),
        )
        q_x, q_ids = emb[sel["q"]], [self.embedded[i].id for i in sel["q"]]
        map_k = int(self.run.section("evaluate").get("map_k", 100))
        result = index.search(q_x, max(int(cfg_p.get("k", 10)), map_k))
        reranked = result
        if sel["dis"]:
            reranker = rk.rerank.DistractorReranker(
                emb[sel["dis"]],
                k=int(cfg_p.get("rerank_k", 5)),
                alpha=float(cfg_p.get("rerank_alpha", 1.0)),
                distractor_ids=[self.embedded[i].id for i in sel["dis"]],
            )
            reranked = reranker.rerank(q_x, result, query_ids=q_ids)
        method, vote_k = cfg_p.get("method", "nn"), cfg_p.get("vote_k")
        before = self._predictions(q_ids, result, self.id_to_label, method, vote_k)
        after = self._predictions(q_ids, reranked, self.id_to_label, method, vote_k)
        ranked = {
            q: [i for i in ids if i is not None]
            for q, ids in zip(q_ids, result.ids)
            if q in self.relevant
        }
        return {
            "gap": rk.metrics.global_average_precision(after, self.truth),
            "gap_without_rerank": rk.metrics.global_average_precision(before, self.truth),
            "top1": rk.metrics.top1_accuracy(before, self.truth),
            "map": rk.metrics.mean_average_precision_at_k(
                ranked, {q: self.relevant[q] for q in ranked}, k=map_k
            ),
        }

    @staticmethod
    def _predictions(ids, result, id_to_label, method, k) -> dict[str, tuple[int, float]]:
        labels, conf = rk.predict.predict_labels(result, id_to_label, method=method, k=k)
        return {q: (lab, float(c)) for q, lab, c in zip(ids, labels, conf) if lab is not None}

    def _whiten(self, emb: np.ndarray, ok: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
        kind = cfg.get("whitening", "none")
        if kind == "none":
            return emb
        fit = [i for i, r in enumerate(self.embedded) if r.role == "train" and ok[i]]
        w = rk.embed.Whitening(
            dim=cfg.get("whitening_dim"), shrinkage=float(cfg.get("whitening_shrinkage", 0.1))
        )
        labels = [self.embedded[i].labels[0] for i in fit] if kind == "learned" else None
        w.fit(emb[fit], labels=labels)
        return np.ascontiguousarray(w.transform(emb), dtype=np.float32)


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], DemoRun, Scorer]:
    demo = DemoRun(args.run)
    scorer = Scorer(demo)
    settings = [Setting.parse(s) for s in args.settings]
    paths = [r.path for r in scorer.embedded]
    logger.info(
        "%d images to embed (%d database, %d distractors, %d scored queries), %d settings",
        len(paths),
        len(scorer.db),
        len(scorer.distractors),
        len(scorer.queries),
        len(settings),
    )
    rows = []
    for name, model in demo.models().items():
        for s in settings:
            size = s.size or rk.embed.retrieval_image_size(model)
            start = time.perf_counter()
            emb, failed = rk.embed.extract_embeddings(
                model, paths, config=s.config(args.batch_size)
            )
            seconds = (time.perf_counter() - start) / len(paths)
            ok = np.ones(len(paths), dtype=bool)
            ok[[row for row, _, _ in failed]] = False
            scores = scorer.score(np.asarray(emb, dtype=np.float32), ok)
            row = {
                "model": name,
                "mode": s.mode,
                "size": size,
                "size_is_default": s.size is None,
                "multi": s.multi,
                "s_per_image": seconds,
                "failed": len(failed),
                **scores,
            }
            rows.append(row)
            logger.info(
                "%-8s %-9s %4d %-6s GAP %.3f (no rerank %.3f) mAP %.3f top-1 %.3f  %.4f s/img",
                name,
                s.mode,
                size,
                "multi" if s.multi else "single",
                scores["gap"],
                scores["gap_without_rerank"],
                scores["map"],
                scores["top1"],
                seconds,
            )
    return rows, demo, scorer


def _label(r: dict[str, Any], eval_size: int) -> str:
    notes = []
    if r["mode"] == "squash" and r["size"] == 224 and not r["multi"]:
        notes.append("the library's old default: the classification size")
    if r["mode"] == "long_side" and r["size_is_default"] and not r["multi"]:
        notes.append("the library's default: the backbone's retrieval size")
    if r["mode"] == "long_side" and r["size"] == eval_size and not r["multi"]:
        notes.append("the example's default: its eval size")
    scales = "1, 1/√2, √2" if r["multi"] else "1"
    return f"{r['mode']} | {r['size']} | {scales} | {'; '.join(notes)}"


def verdict(rows: list[dict[str, Any]], eval_size: int) -> list[str]:
    """One generated sentence per model: do the defaults beat squash-224 by GAP?"""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model and not r["multi"]]
        old = next((r for r in mine if r["mode"] == "squash" and r["size"] == 224), None)
        if old is None:
            continue
        parts = []
        for what, pick in (
            (
                "the example's default (long side " + str(eval_size) + ")",
                lambda r: r["size"] == eval_size and not r["size_is_default"],
            ),
            ("the library's default (long side = retrieval size)", lambda r: r["size_is_default"]),
        ):
            new = next((r for r in mine if r["mode"] == "long_side" and pick(r)), None)
            if new is None:
                continue
            diff = new["gap"] - old["gap"]
            word = "beats" if diff > 0 else "does not beat"
            parts.append(
                f"{what} {word} squash 224: GAP {new['gap']:.3f} vs {old['gap']:.3f} "
                f"({diff:+.3f}), mAP@100 {new['map']:.3f} vs {old['map']:.3f}, top-1 "
                f"{new['top1']:.3f} vs {old['top1']:.3f}, "
                f"time x{new['s_per_image'] / old['s_per_image']:.2f}"
            )
        if parts:
            lines.append(f"* **{model}**: " + "; ".join(parts) + ".")
    return lines


def markdown(rows: list[dict[str, Any]], demo: DemoRun, scorer: Scorer, command: str) -> str:
    eval_size = demo.eval_size()
    synthetic = demo.synthetic_params()
    ratios = synthetic.get("aspect_ratios")
    data = (
        "square images"
        if not ratios
        else "aspect ratios drawn from " + ", ".join(f"{r:.3g}" for r in ratios)
    )
    lines = [
        f"Generated by `{command}` ({machine_line()} torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s).)",
        "",
        f"Data: the demo run's own split ({demo.section('data').get('format')} data, {data}; "
        f"long side {synthetic.get('image_size', 160)} px): {len(scorer.db)} database images, "
        f"{len(scorer.distractors)} distractors, {len(scorer.queries)} scored test queries "
        f"({len(scorer.relevant)} with a landmark). Models: the run's trained model and its "
        f"baseline ({demo.section('model').get('backbone')} pretrained, no head); trained at "
        f"{demo.section('model').get('image_size')} px squashed crops. Protocol: the example's "
        "(docstring of `benchmarks/demo_extraction.py`); GAP after distractor reranking.",
        "",
        "| model | resize | size | scales | note | GAP | GAP no rerank | mAP@100 | top-1 | s/img |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {_label(r, eval_size)} | {r['gap']:.3f} | "
            f"{r['gap_without_rerank']:.3f} | {r['map']:.3f} | {r['top1']:.3f} | "
            f"{r['s_per_image']:.4f} |"
        )
    lines += ["", *verdict(rows, eval_size)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished landmark example run (its --out folder)")
    parser.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="MODE:SIZE[:multi]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="replace this script's section in this file")
    parser.add_argument("--json", type=Path, help="also save the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("retrieval_kit").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for s in args.settings:
        Setting.parse(s)  # a typo fails before any model loads
    rows, demo, scorer = run(args)
    # The run folder is named by its last part only: where it lies is the caller's machine.
    argv = [Path(a).name if a == args.run else a for a in (argv or sys.argv[1:])]
    section = markdown(rows, demo, scorer, "python benchmarks/demo_extraction.py " + " ".join(argv))
    print(section)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=1) + "\n")
    if args.write:
        write_section(args.write, SECTION, section)
        logger.info("wrote %s", args.write)


if __name__ == "__main__":
    main()
