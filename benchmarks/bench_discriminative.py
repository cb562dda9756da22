"""Discriminative reranking vs alpha-QE and alpha-DBA: retrieval mAP@100 on synthetic landmarks.

Run: ``python benchmarks/bench_discriminative.py [--seeds 0 1 2] [--workdir DIR] [--no-write]``.

For each seed, ``retrieval_kit.data.synthetic.synthetic_landmarks`` draws a dataset (train,
index and test splits in the GLDv2 format); EfficientNet-Lite0 with its offline ImageNet weights
(``pretrained=True``, no fine-tuning), GeM, no head, embeds every image at 128 px. Queries are the
test images with relevant index images (``retrieval_solution_v2.1.csv``); the database is the
index split. Rows, each a mean over seeds of mAP@100:

* baseline: exact cosine search, top 100;
* alpha-QE (k=2, alpha=3); alpha-DBA (k=2, alpha=3: a new index over augmented vectors); both;
* discriminative reranking (Yokoo et al. 2019): the labels of the queries AND of the index images
  are predicted by a top-3 score vote over their nearest *train* images (train labels are known,
  index labels are not), then ``DiscriminativeReranker`` moves index images of the query's
  predicted label first and inserts the other ones of that label (ranked by cosine);
* combinations, and an oracle row with the true index labels (what perfect index labels give).

Writes its table into ``docs/benchmarks.md`` between ``<!-- bench_discriminative:begin -->`` and
``<!-- bench_discriminative:end -->`` (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import retrieval_kit as rk
from retrieval_kit.data.gldv2 import (
    read_ids_csv,
    read_retrieval_solution_csv,
    read_train_csv,
    solution_dict,
)
from retrieval_kit.data.synthetic import synthetic_landmarks

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from doc_section import machine_line, write_section  # noqa: E402

K = 100


def _embed(model, ds, split, ids, image_size):
    paths = [ds.image_path(split, i) for i in ids]
    emb, _ = rk.embed.extract_embeddings(model, paths, image_size=image_size, batch_size=64)
    return emb


def run_seed(seed: int, workdir: Path, image_size: int = 128, index_per_landmark: int = 6) -> dict:
    """mAP@100 of every row on one synthetic dataset."""
    ds = synthetic_landmarks(
        workdir / f"seed{seed}", seed=seed, index_images_per_landmark=index_per_landmark
    )
    train = read_train_csv(ds.train_csv)
    index_ids = read_ids_csv(ds.index_csv)
    sol = solution_dict(read_retrieval_solution_csv(ds.retrieval_solution_csv))
    sol = {q: v for q, v in sol.items() if v}
    query_ids = sorted(sol)
    torch.manual_seed(0)
    model = rk.backbones.create_backbone("efficientnet_lite0", pretrained=True, embedding_dim=None)
    model.eval()
    t = time.perf_counter()
    x_train = _embed(model, ds, "train", train["id"], image_size)
    x_index = _embed(model, ds, "index", index_ids, image_size)
    x_query = _embed(model, ds, "test", query_ids, image_size)
    embed_s = time.perf_counter() - t

    index = rk.index.build_index(x_index, index_ids, factory="Flat")
    train_index = rk.index.build_index(x_train, train["id"], factory="Flat")
    train_label = dict(zip(train["id"], train["landmark_id"]))

    def knn_labels(x):
        r = train_index.search(x, 3)
        return rk.predict.predict_labels(r, train_label, method="vote", k=3)[0]

    q_labels = knn_labels(x_query)
    index_labels = dict(zip(index_ids, knn_labels(x_index)))
    # the true label of each index image, from the solution (index ids relevant to a query)
    true_index = {i: None for i in index_ids}
    query_truth = read_solution_labels(ds)
    for q, rel in sol.items():
        for i in rel:
            true_index[i] = query_truth[q]

    def mapk(result):
        pred = {q: [i for i in row if i is not None] for q, row in zip(query_ids, result.ids)}
        return rk.metrics.mean_average_precision_at_k(pred, sol, k=K)

    k = min(K, len(index_ids))
    base = index.search(x_query, k)
    qe = rk.rerank.QueryExpansion(index, k=2, alpha=3.0, database_embeddings=x_index)
    base_qe = qe.rerank(x_query, base)
    dba_index = rk.rerank.DatabaseAugmentation(
        index, k=2, alpha=3.0, database_embeddings=x_index
    ).build_index()
    x_dba = dba_index.reconstruct_rows(np.arange(len(dba_index)))
    dba = dba_index.search(x_query, k)
    dba_qe = rk.rerank.QueryExpansion(dba_index, k=2, alpha=3.0, database_embeddings=x_dba).rerank(
        x_query, dba
    )
    disc = rk.rerank.DiscriminativeReranker(
        index_labels, database_embeddings=x_index, database_ids=index_ids
    )
    oracle = rk.rerank.DiscriminativeReranker(
        true_index, database_embeddings=x_index, database_ids=index_ids
    )
    rows = {
        "baseline (exact cosine search)": mapk(base),
        "alpha-QE": mapk(base_qe),
        "alpha-DBA": mapk(dba),
        "alpha-DBA + alpha-QE": mapk(dba_qe),
        "discriminative": mapk(disc.rerank(x_query, base, query_labels=q_labels)),
        "alpha-QE + discriminative": mapk(disc.rerank(x_query, base_qe, query_labels=q_labels)),
        "alpha-DBA + alpha-QE + discriminative": mapk(
            disc.rerank(x_query, dba_qe, query_labels=q_labels)
        ),
        "discriminative, true index labels (oracle)": mapk(
            oracle.rerank(x_query, base, query_labels=q_labels)
        ),
    }
    q_acc = float(np.mean([q_labels[j] == query_truth[q] for j, q in enumerate(query_ids)]))
    lab_idx = [i for i in index_ids if true_index[i] is not None]
    i_acc = float(np.mean([index_labels[i] == true_index[i] for i in lab_idx]))
    return {
        "rows": rows,
        "queries": len(query_ids),
        "index": len(index_ids),
        "train": len(train["id"]),
        "query_label_acc": q_acc,
        "index_label_acc": i_acc,
        "embed_s": embed_s,
    }


def read_solution_labels(ds) -> dict:
    """``{test query id: its landmark}`` from the recognition solution (first label)."""
    rec = solution_dict(rk.data.read_solution_csv(ds.solution_csv))
    return {q: (v[0] if v else None) for q, v in rec.items()}


def run(seeds=(0, 1, 2), workdir: str | None = None) -> dict:
    """Run every seed; returns the per-seed results and the mean of each row."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_disc_")
        workdir = tmp.name
    try:
        per_seed = [run_seed(s, Path(workdir)) for s in seeds]
    finally:
        if tmp is not None:
            tmp.cleanup()
    names = list(per_seed[0]["rows"])
    return {
        "seeds": list(seeds),
        "per_seed": per_seed,
        "mean": {n: float(np.mean([p["rows"][n] for p in per_seed])) for n in names},
    }


def markdown(res: dict) -> str:
    seeds = res["seeds"]
    p0 = res["per_seed"][0]
    head = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean mAP@100 |"
    lines = [head, "|---|" + "---:|" * (len(seeds) + 1)]
    for name, mean in res["mean"].items():
        vals = " | ".join(f"{p['rows'][name]:.3f}" for p in res["per_seed"])
        lines.append(f"| {name} | {vals} | {mean:.3f} |")
    q_acc = ", ".join(f"{p['query_label_acc']:.2f}" for p in res["per_seed"])
    i_acc = ", ".join(f"{p['index_label_acc']:.2f}" for p in res["per_seed"])
    lines += [
        "",
        f"Per seed: {p0['queries']} landmark queries, {p0['index']} index images "
        f"(6 views per landmark + 40 non-landmarks), {p0['train']} train images. kNN label "
        f"accuracy (top-3 vote over train): queries {q_acc}; landmark index images {i_acc}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workdir", default=None, help="keep the synthetic datasets here")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--doc", default=str(HERE.parent / "docs" / "benchmarks.md"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    res = run(tuple(a.seeds), a.workdir)
    table = markdown(res)
    body = "\n".join(
        [
            "## Discriminative reranking vs alpha-QE and alpha-DBA (retrieval mAP@100)",
            "",
            "Generated by `python benchmarks/bench_discriminative.py` "
            f"(seeds {' '.join(map(str, a.seeds))}; {time.perf_counter() - t:.0f} s). "
            "Synthetic landmarks (`synthetic_landmarks`, 48 landmarks), EfficientNet-Lite0 with "
            "ImageNet weights, no fine-tuning, GeM, 128 px. Query and index labels for the "
            "discriminative step come from a top-3 score vote over the train images, as in "
            "Yokoo et al. 2019; the oracle row uses the true index labels instead. "
            + machine_line(),
            "",
            table,
        ]
    )
    print(body)
    if not a.no_write:
        write_section(a.doc, "bench_discriminative", body)
    return res


if __name__ == "__main__":
    main()
