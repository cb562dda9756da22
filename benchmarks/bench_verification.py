"""Cost of spatial verification per query against one global search (and real-photo inliers).

Run: ``python benchmarks/bench_verification.py [--queries 6] [--database 100000]
[--realphotos DIR] [--no-write]``.

Cost table, side by side in one run (images ~512 px: warped copies of scikit-image's photos,
written as JPEG files, each distinct so no cache is shared by accident):

* **global search**: exact faiss inner-product search of one 512-d query over ``--database``
  vectors (``IndexFlatIP``), alone (batch 1) and amortised in a batch of 100. The reference: 1.00x.
* **global descriptor**: an EfficientNet-Lite0 forward pass on one 512x512 image (random weights;
  cost does not depend on them), what computing the query's global embedding costs.
* **SIFT, one image** and **one pair** (mutual + ratio matching and MAGSAC++ homography).
* **verification per query, cold**: ``SpatialVerificationReranker.rerank`` with k=10: local
  features of the query and its 10 neighbours extracted (and written to an empty disk cache),
  10 pairs verified; with 1 and 2 worker threads.
* **verification per query, warm**: the database images' features already on disk (the usual
  case: computed once when the index is built); only the query is extracted.

With ``--realphotos DIR`` (a folder of landmark photos, one sub-folder per landmark), every pair
is verified and the inlier counts of same-landmark and different-landmark pairs are summarised.
Writes ``docs/benchmarks.md`` between ``<!-- bench_verification:begin -->`` and
``<!-- bench_verification:end -->`` (``--no-write`` to only print).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from doc_section import machine_line, write_section  # noqa: E402

K = 10


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _photos() -> list[np.ndarray]:
    import skimage.data as d

    left, right, _ = d.stereo_motorcycle()
    return [d.astronaut(), d.coffee(), d.chelsea(), d.rocket(), left, right]


def _write_images(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct ~512 px JPEGs: random mild homographies of the photos."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = _photos()
    paths = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        s = 512 / max(h, w)
        hmat = np.array(
            [
                [s * (1 + rng.normal(0, 0.05)), rng.normal(0, 0.05), rng.normal(0, 10)],
                [rng.normal(0, 0.05), s * (1 + rng.normal(0, 0.05)), rng.normal(0, 10)],
                [rng.normal(0, 1e-4), rng.normal(0, 1e-4), 1.0],
            ]
        )
        out = cv2.warpPerspective(img, hmat, (round(w * s), round(h * s)))
        p = folder / f"img{seed}_{i:04d}.jpg"
        Image.fromarray(out).save(p, quality=90)
        paths.append(str(p))
    return paths


def cost_rows(n_queries: int, n_database: int, repeats: int, workers=(1, 2)) -> list[dict]:
    """The cost table's rows (seconds per query)."""
    import faiss
    import torch

    import retrieval_kit as rk
    from retrieval_kit.data import load_image
    from retrieval_kit.index import SearchResult
    from retrieval_kit.rerank import SIFTExtractor, SpatialVerificationReranker, verify_pair

    rows: list[dict] = []
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_database, 512), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:100] + 0.1 * rng.standard_normal((100, 512), dtype=np.float32)
    flat = faiss.IndexFlatIP(512)
    flat.add(x)
    search1 = _best(lambda: flat.search(q[:1], K), repeats * 3)
    search100 = _best(lambda: flat.search(q, K), repeats) / 100
    rows.append({"what": f"global search, 1 query vs {n_database:,} x 512 (exact, batch 1)",
                 "s": search1})  # fmt: skip
    rows.append({"what": "global search, per query in a batch of 100", "s": search100})
    model = rk.backbones.create_backbone("efficientnet_lite0", embedding_dim=None).eval()
    img = torch.rand(1, 3, 512, 512)
    with torch.inference_mode():
        model(img)
        fwd = _best(lambda: model(img), repeats)
    rows.append({"what": "global descriptor: EfficientNet-Lite0 forward, one 512x512 image",
                 "s": fwd})  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="bench_verif_") as tmp:
        tmp = Path(tmp)
        per_run = n_queries * (K + 1)
        ex = SIFTExtractor()
        probe = _write_images(tmp, 2, seed=999)
        a = ex.extract(np.asarray(load_image(probe[0])))
        b = ex.extract(np.asarray(load_image(probe[1])))
        sift_s = _best(lambda: ex.extract(np.asarray(load_image(probe[0]))), repeats)
        rows.append({"what": "SIFT (1000 RootSIFT, long side 512), one image incl. decode",
                     "s": sift_s})  # fmt: skip
        rows.append({"what": "one pair: mutual + ratio matching + MAGSAC++ homography",
                     "s": _best(lambda: verify_pair(*a, *b), repeats * 3)})  # fmt: skip
        for nw in workers:
            # fresh files per setting: every image is a cache miss in the cold run
            paths = _write_images(tmp, per_run + n_queries, seed=nw)
            db = {i: p for i, p in enumerate(paths[: n_queries * K])}
            cold_q = paths[n_queries * K : per_run]
            warm_q = paths[per_run:]
            ids = np.arange(n_queries * K).reshape(n_queries, K)
            scores = -np.sort(-rng.random((n_queries, K), dtype=np.float32), axis=1)
            result = SearchResult(scores, ids)
            sv = SpatialVerificationReranker(db, k=K, num_workers=nw, cache_dir=tmp / f"c{nw}")
            t = time.perf_counter()
            sv.rerank(cold_q, result)
            cold = (time.perf_counter() - t) / n_queries
            t = time.perf_counter()
            sv.rerank(warm_q, result)
            warm = (time.perf_counter() - t) / n_queries
            threads = f"{nw} thread{'s' if nw > 1 else ''}"
            rows.append({"what": f"verification per query, cold: 11 images extracted + {K} pairs "
                                 f"({threads})", "s": cold})  # fmt: skip
            rows.append({"what": f"verification per query, warm disk cache: query extracted + "
                                 f"{K} pairs ({threads})", "s": warm})  # fmt: skip
    for r in rows:
        r["x"] = r["s"] / search1
    return rows


def realphoto_rows(folder: str, settings=((512, 1000), (1024, 4000))) -> list[dict]:
    """Inliers of every same-landmark and different-landmark pair of photos in ``folder``."""
    from retrieval_kit.data import load_image
    from retrieval_kit.rerank import SIFTExtractor, VerificationSettings, verify_pair

    exts = {".jpg", ".jpeg", ".png"}
    paths = sorted(
        str(p) for p in Path(folder).glob("*/*") if p.suffix.lower() in exts and p.is_file()
    )
    if len(paths) < 2:
        raise ValueError(f"{folder}: expected landmark sub-folders with photos, found {paths}")
    images = {p: np.asarray(load_image(p)) for p in paths}
    out = []
    for side, nf in settings:
        ex = SIFTExtractor(nf, max_side=side)
        feats = {p: ex.extract(im) for p, im in images.items()}
        for geometry in ("homography", "fundamental"):
            vs = VerificationSettings(geometry=geometry)
            same, diff = [], []
            for p1, p2 in itertools.combinations(paths, 2):
                n = verify_pair(*feats[p1], *feats[p2], vs).inliers
                (same if Path(p1).parent == Path(p2).parent else diff).append(n)
            out.append({"side": side, "features": nf, "geometry": geometry, "photos": len(paths),
                        "same": np.array(same), "diff": np.array(diff)})  # fmt: skip
    return out


def markdown(cost: list[dict], real: list[dict] | None, args: argparse.Namespace) -> str:
    lines = [
        "| step | seconds per query | x one global search |",
        "|---|---:|---:|",
    ]
    for r in cost:
        lines.append(f"| {r['what']} | {r['s']:.4f} | {r['x']:.1f} |")
    if real:
        thr = 12
        lines += [
            "",
            f"Real photos (`--realphotos`: {real[0]['photos']} photos of 4 landmarks, PhotoTourism "
            "samples; a smoke check, not a benchmark: one pair moves a share by several points). "
            f"Inliers of every pair; 'share >= {thr}' is the fraction of pairs with at least "
            f"{thr} inliers (the reranker's default `min_inliers`).",
            "",
            "| long side, SIFT features | geometry | same-landmark pairs | median inliers | "
            f"share >= {thr} | different-landmark pairs | median | max | share >= {thr} |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in real:
            s, d = r["same"], r["diff"]
            lines.append(
                f"| {r['side']} px, {r['features']} | {r['geometry']} | {len(s)} | "
                f"{np.median(s):.0f} | {np.mean(s >= thr):.2f} | {len(d)} | {np.median(d):.0f} | "
                f"{d.max()} | {np.mean(d >= thr):.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=6)
    p.add_argument("--database", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--realphotos", default=None, help="folder of landmark sub-folders")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--doc", default=str(HERE.parent / "docs" / "benchmarks.md"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    t = time.perf_counter()
    cost = cost_rows(a.queries, a.database, a.repeats)
    real = realphoto_rows(a.realphotos) if a.realphotos else None
    cmd = "python benchmarks/bench_verification.py" + (" --realphotos DIR" if a.realphotos else "")
    body = "\n".join(
        [
            "## Spatial verification: cost per query vs one global search",
            "",
            f"Generated by `{cmd}` ({a.queries} queries x {K} neighbours, images ~512 px, "
            f"{time.perf_counter() - t:.0f} s; torch/faiss threads: "
            f"{os.environ.get('OMP_NUM_THREADS', 'default')}). " + machine_line(),
            "",
            markdown(cost, real, a),
        ]
    )
    print(body)
    if not a.no_write:
        write_section(a.doc, "bench_verification", body)


if __name__ == "__main__":
    main()
