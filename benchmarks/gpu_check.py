"""One prepared GPU check for a lent accelerator (issue 5): run it once, paste the table into
docs/benchmarks.md with the card named.

    python benchmarks/gpu_check.py [--steps 30] [--batch 96] [--extract-images 4096]

Measures, on ``cuda:0``: (1) a ResNet101-GeM-512 training step (batch-hard soft-margin triplets,
SGD) at 224 px with and without AMP, images/s; (2) extraction throughput of the model alone on
pre-made tensors, fp32 vs AMP; (3) faiss exact search on the GPU against faiss on the CPU, when the
installed faiss has GPU support. Also a correctness check: AMP and fp32 embeddings of the same
batch agree (cosine > 0.99). Runs in about 3 minutes on an H100.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import retrieval_kit as rk


def _timed(fn, steps: int) -> float:
    fn()  # warm-up (cudnn autotune, allocator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def train_step_throughput(batch: int, steps: int, amp: bool) -> float:
    model = rk.backbones.create_backbone("resnet101", embedding_dim=512).cuda()
    model = model.to(memory_format=torch.channels_last).train()
    loss_fn, miner = rk.losses.TripletLoss(), rk.miners.BatchHardMiner()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    labels = torch.arange(batch, device="cuda") // 8  # 12 classes x 8 images for batch 96

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            emb = model(images)
        emb = emb.float()
        loss = loss_fn(emb, labels, miner(emb, labels))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return batch / _timed(step, steps)


def extraction_throughput(n: int, batch: int = 256) -> tuple[float, float, float]:
    model = rk.backbones.create_backbone("resnet101", embedding_dim=512).cuda().eval()
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    steps = max(1, n // batch)
    with torch.inference_mode():
        fp32 = batch / _timed(lambda: model(images), steps)
        with torch.autocast("cuda", dtype=torch.float16):
            amp = batch / _timed(lambda: model(images), steps)
            half = model(images[:32]).float()
        full = model(images[:32])
    agreement = float(torch.nn.functional.cosine_similarity(half, full).min())
    return fp32, amp, agreement


def faiss_gpu(n: int = 1_000_000, d: int = 512, q: int = 10_000) -> dict[str, float] | None:
    import faiss

    if faiss.get_num_gpus() == 0:
        return None
    rng = np.random.default_rng(0)
    db = rng.standard_normal((n, d), dtype=np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db[rng.choice(n, q, replace=False)] + 0.01
    cpu = rk.index.build_index(db, factory="Flat", gpu=False)
    gpu = rk.index.build_index(db, factory="Flat", gpu=True)
    start = time.perf_counter()
    r_cpu = cpu.search(queries, 10)
    t_cpu = time.perf_counter() - start
    start = time.perf_counter()
    r_gpu = gpu.search(queries, 10)
    t_gpu = time.perf_counter() - start
    same = float(np.mean(r_cpu.ids[:, 0] == r_gpu.ids[:, 0]))
    return {"cpu_s": t_cpu, "gpu_s": t_gpu, "top1_agreement": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--extract-images", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script is for a lent GPU machine")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print("| measurement | value |\n|---|---:|")
    for amp in (False, True):
        ips = train_step_throughput(args.batch, args.steps, amp)
        name = "bf16 AMP" if amp else "fp32"
        print(f"| ResNet101 train step, batch {args.batch}, 224 px, {name} | {ips:.0f} img/s |")
    fp32, amp, agreement = extraction_throughput(args.extract_images)
    print(f"| ResNet101 extraction, model alone, fp32 | {fp32:.0f} img/s |")
    print(f"| ResNet101 extraction, model alone, fp16 AMP | {amp:.0f} img/s |")
    print(f"| AMP vs fp32 embeddings, min cosine over 32 images | {agreement:.4f} |")
    result = faiss_gpu()
    if result is None:
        print("| faiss on GPU | not available (faiss-cpu installed) |")
    else:
        print(f"| faiss Flat 1M x 512, 10k queries, CPU | {result['cpu_s']:.2f} s |")
        print(f"| faiss Flat 1M x 512, 10k queries, GPU | {result['gpu_s']:.2f} s |")
        print(f"| CPU vs GPU top-1 agreement | {result['top1_agreement']:.3f} |")


if __name__ == "__main__":
    main()
