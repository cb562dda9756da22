"""A tiny deterministic embedding model and a folder of small images for the extraction tests."""

from __future__ import annotations

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


@pytest.fixture
def image_paths(tmp_path) -> list[str]:
    """Nine distinct small images of different sizes and modes."""
    paths = []
    for i in range(9):
        mode = ("RGB", "L", "RGBA")[i % 3]
        color = {"RGB": (20 * i, 255 - 20 * i, 90), "L": 25 * i, "RGBA": (200, 10 * i, 30, 255)}[
            mode
        ]
        img = Image.new(mode, (14 + 3 * i, 11 + i), color)
        img.putpixel((i, i), (0, 0, 0, 255)[: len(img.getbands())] if mode != "L" else 0)
        p = tmp_path / f"img{i}.png"
        img.save(p)
        paths.append(str(p))
    return paths
