"""Worker for test_kill_mid_write.py: saves one kind of file over and over until it is killed.

``python kill_writer.py KIND FOLDER``: writes version 0 of ``FOLDER/<file>``, prints ``ready``,
then keeps overwriting it with versions 1, 2, ... through the library's own save function. The
test SIGKILLs it while a temporary file is being written and checks what is left.
Each version is large (tens of MB) so that a write takes long enough to be caught half way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import retrieval_kit as rk  # noqa: E402  (lazy: each kind imports only what it needs)
from retrieval_kit.io import atomic_write, atomic_write_json  # noqa: E402

BYTES = 24 << 20
JSON_ROWS = 300_000
INDEX_ROWS, INDEX_DIM = 60_000, 64
LINEAR = 1600
EMB_ROWS, EMB_SHAPE = 6000, (3, 16, 16)

FILES = {
    "atomic_write": "blob.bin",
    "json": "marker.json",
    "index": "db.npz",
    "checkpoint": "last.pt",
    "embeddings": "emb.npy",
}


def index_vectors(version: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((INDEX_ROWS, INDEX_DIM)).astype(np.float32)
    return x + np.float32(version)


def _embedding_objects():
    import torch

    class Flatten(torch.nn.Module):
        data_config = {"mean": (0.0,) * 3, "std": (1.0,) * 3, "image_size": 16, "resize_size": 16}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    class Constant(torch.utils.data.Dataset):
        def __init__(self, version: int) -> None:
            self.version = version

        def __len__(self) -> int:
            return EMB_ROWS

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.full(EMB_SHAPE, float(self.version))

    return Flatten(), Constant


def writer(kind: str, path: Path):
    if kind == "atomic_write":

        def write(v):
            chunk = bytes([v % 251]) * (1 << 20)
            with atomic_write(path, "wb") as f:
                f.write(v.to_bytes(8, "little"))
                for _ in range(BYTES >> 20):
                    f.write(chunk)

    elif kind == "json":

        def write(v):
            atomic_write_json(path, {"version": v, "rows": [v] * JSON_ROWS})

    elif kind == "index":
        # Two prebuilt indexes saved in turn: building is not what is being tested.
        built = [rk.index.build_index(index_vectors(v), factory="Flat", gpu=False) for v in (0, 1)]

        def write(v):
            built[v % 2].save(path)

    elif kind == "checkpoint":
        import torch

        model = torch.nn.Linear(LINEAR, LINEAR, bias=False)

        def write(v):
            with torch.no_grad():
                model.weight.fill_(float(v))
            rk.train.save_checkpoint(path, model=model, epoch=v, step=0)

    elif kind == "embeddings":
        model, Constant = _embedding_objects()

        def write(v):
            rk.embed.extract_embeddings(
                model, Constant(v), batch_size=1000, out=path, overwrite=True, chunk_size=1000
            )

    else:
        raise SystemExit(f"unknown kind {kind}")
    return write


def main() -> None:
    kind, folder = sys.argv[1], Path(sys.argv[2])
    path = folder / FILES[kind]
    write = writer(kind, path)
    write(0)
    print("ready", flush=True)
    version = 1
    while True:
        write(version)
        version += 1


if __name__ == "__main__":
    main()
