"""A tiny deterministic embedding model and a folder of small images for the extraction tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

CFG = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "image_size": 16, "resize_size": 18}


class TinyNet(nn.Module):
    """Conv -> average pool -> linear -> L2 norm; every sample is embedded independently."""

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        self.embedding_dim = dim
        self.data_config = dict(CFG)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.fc(torch.relu(self.conv(x)).mean((2, 3))), dim=1)


@pytest.fixture
def model() -> TinyNet:
    torch.set_num_threads(1)
    return TinyNet()


#: (width, height): landscape, portrait and square, no two with the same aspect ratio except the
#: squares; chosen so that no resized short side falls on a .5 rounding tie at sizes 16 and 24.
SIZES = [(14, 11), (11, 17), (16, 16), (23, 14), (12, 30), (20, 20), (33, 18), (15, 25), (38, 19)]


@pytest.fixture
def image_paths(tmp_path) -> list[str]:
    """Nine distinct small noise images of different sizes and modes."""
    paths = []
    for i, (w, h) in enumerate(SIZES):
        rng = np.random.default_rng(i)
        mode = ("RGB", "L", "RGBA")[i % 3]
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
        if mode == "RGBA":
            pixels[..., 3] = 255
        img = Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode=mode)
        p = tmp_path / f"img{i}.png"
        img.save(p)
        paths.append(str(p))
    return paths
