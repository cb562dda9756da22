"""Variable-size (aspect-kept) extraction vs the fixed-size pipeline at equal pixel count.

Run: ``python benchmarks/bench_variable_size.py [--images 192] [--size 384] [--batch-size 32]
[--model efficientnet_lite0] [--workers 0] [--repeats 3] [--device cpu]
[--write docs/benchmarks.md]`` (``--write`` replaces this script's own section of that file,
between its markers).

Both sides run ``rk.embed.extract_embeddings`` on the same JPEG files with the same model (random
weights: speed does not depend on them), batch size, workers and threads, in one run:

* **variable**: ``resize="long_side"``, ``image_size=--size``: every image keeps its aspect ratio;
  the extractor batches images shape by shape (short side rounded to a multiple of
  ``shape_step``, default ``size // 32``).
* **fixed**: ``resize="squash"`` to a square whose area is the variable side's mean image area,
  so both sides push the same number of pixels through the model.
* Passes alternate ``--repeats`` times and each side keeps its fastest (other jobs on a shared
  machine only ever slow a pass down).

The images mimic a photo collection: aspect ratios drawn from 4:3, 3:2, 16:9 and 1:1, landscape
and portrait, plus 20% uniformly random ratios in [1/2, 2]; long side 500-800 px, smooth content
plus noise, JPEG quality 90. ``ratio`` = variable pixels/s / fixed pixels/s; the target is >= 0.85.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import retrieval_kit as rk

COMMON_RATIOS = (4 / 3, 3 / 2, 16 / 9, 1.0)
SECTION = "bench_variable_size"  # its section of docs/benchmarks.md (benchmarks/doc_section.py)


def write_photos(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` JPEGs with photo-like aspect ratios (see the module docstring)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        ratio = rng.uniform(0.5, 2.0) if rng.random() < 0.2 else rng.choice(COMMON_RATIOS)
        if rng.random() < 0.3:
            ratio = 1 / ratio  # portrait
        long = int(rng.integers(500, 801))
        w, h = (long, round(long / ratio)) if ratio >= 1 else (round(long * ratio), long)
        low = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(str(path))
    return paths


class CountingModel(nn.Module):
    """Counts forward passes (batches) of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0
        self.data_config, self.embedding_dim = inner.data_config, inner.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def run(
    images: int = 192,
    size: int = 384,
    batch_size: int = 32,
    model_name: str = "efficientnet_lite0",
    workers: int = 0,
    repeats: int = 3,
    device: str = "cpu",
) -> list[dict]:
    torch.manual_seed(0)
    model = CountingModel(rk.backbones.create_backbone(model_name, embedding_dim=None)).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), images)
        step = max(1, size // 32)
        shapes = [rk.data.long_side_shape(*Image.open(p).size, size, step) for p in paths]
        mean_area = float(np.mean([h * w for h, w in shapes]))
        fixed = round(math.sqrt(mean_area))
        sides = {
            "variable": dict(resize="long_side", image_size=size),
            "fixed": dict(resize="squash", image_size=fixed),
        }
        pixels = {"variable": sum(h * w for h, w in shapes), "fixed": fixed * fixed * images}
        best = {k: math.inf for k in sides}
        batches = {}
        common = dict(batch_size=batch_size, num_workers=workers, device=device)
        rk.embed.extract_embeddings(model, paths[:batch_size], **common, **sides["fixed"])  # warm
        for _ in range(repeats):
            for name, opts in sides.items():
                model.calls = 0
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                rk.embed.extract_embeddings(model, paths, **common, **opts)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
                batches[name] = model.calls
    rows = []
    for name, opts in sides.items():
        rows.append(
            {
                "pipeline": name,
                "resize": f"{opts['resize']} {opts['image_size']}",
                "shapes": len(set(shapes)) if name == "variable" else 1,
                "batches": batches[name],
                "images_per_s": images / best[name],
                "mpixels_per_s": pixels[name] / best[name] / 1e6,
            }
        )
    ratio = rows[0]["mpixels_per_s"] / rows[1]["mpixels_per_s"]
    for r in rows:
        r["ratio"] = ratio
    return rows


def markdown(rows: list[dict], args: argparse.Namespace) -> str:
    command = "python benchmarks/bench_variable_size.py " + " ".join(sys.argv[1:])
    ratio = rows[0]["ratio"]
    lines = [
        "## 7. Aspect-kept (variable-size) extraction vs the fixed-size pipeline",
        "",
        f"Generated by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.node() or 'this machine'} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {args.device}; "
        f"load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        f"{args.images} photo-like JPEGs (aspect ratios 4:3, 3:2, 16:9, 1:1, landscape and "
        f"portrait, 20% random in [1/2, 2]), `{args.model}` (random weights), "
        f"batch {args.batch_size}, "
        f"{args.workers} workers; both sides push the same pixels through the model (the squash "
        "side is the square of the variable side's mean area); fastest of "
        f"{args.repeats} alternating passes each. Protocol: docstring of "
        "`benchmarks/bench_variable_size.py`. Target: ratio >= 0.85.",
        "",
        "| pipeline | resize | shapes | forward batches | images/s | Mpixels/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pipeline']} | {r['resize']} | {r['shapes']} | {r['batches']} | "
            f"{r['images_per_s']:.1f} | {r['mpixels_per_s']:.2f} |"
        )
    verdict = "PASS" if ratio >= 0.85 else "FAIL"
    lines += ["", f"Variable / fixed pixels per second: **{ratio:.2f}** ({verdict})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", type=Path, help="replace this script's section in this file")
    args = parser.parse_args()
    rows = run(
        args.images, args.size, args.batch_size, args.model, args.workers, args.repeats, args.device
    )
    section = markdown(rows, args)
    print(section)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from doc_section import write_section

        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
