"""Issue 6, bad input: NaN/inf embeddings are refused, naming the row, by every entry point that
indexes or searches vectors, including when a model produced them during extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import retrieval_kit as rk

X = np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32)
LABELS = np.arange(30) % 5


def _bad(value: float, row: int = 7) -> np.ndarray:
    x = X.copy()
    x[row, 2] = value
    return x


def _index() -> rk.index.Index:
    return rk.index.build_index(X, gpu=False)


ENTRY_POINTS = {
    "build_index": lambda x: rk.index.build_index(x, gpu=False),
    "Index.search": lambda x: _index().search(x, 3),
    "IndexMiner.mine": lambda x: rk.miners.IndexMiner(k=2).mine(x, LABELS),
    "cluster_classes": lambda x: rk.samplers.cluster_classes(x, LABELS, 2),
    "DistractorReranker": lambda x: rk.rerank.DistractorReranker(x, k=2),
    "DistractorReranker.rerank": lambda x: rk.rerank.DistractorReranker(X, k=2).rerank(
        x, _index().search(X, 3)
    ),
    "QueryExpansion.rerank": lambda x: rk.rerank.QueryExpansion(_index()).rerank(
        x, _index().search(X, 3)
    ),
    "DatabaseAugmentation.rerank": lambda x: rk.rerank.DatabaseAugmentation(_index()).rerank(
        x, _index().search(X, 3)
    ),
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_nonfinite_rows_are_refused_and_named(entry, value):
    ENTRY_POINTS[entry](X)  # the finite input is accepted, so the refusal below is about the value
    with pytest.raises(ValueError, match="row 7"):
        ENTRY_POINTS[entry](_bad(value))


class NaNForDarkImages(nn.Module):
    """Returns NaN for an all-black image: a diverged model, or fp16 overflow on a GPU."""

    data_config = {"mean": (0.0,) * 3, "std": (1.0,) * 3, "image_size": 4, "resize_size": 4}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :3] + 1.0
        return torch.where(x.flatten(1).amax(1, keepdim=True) == 0, torch.nan, v)


def test_nan_from_the_model_is_caught_before_indexing(tmp_path):
    from PIL import Image

    paths = []
    for i, color in enumerate([(200, 10, 10), (0, 0, 0), (10, 200, 10)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (6, 6), color).save(paths[-1])
    emb, failed = rk.embed.extract_embeddings(NaNForDarkImages(), paths)
    assert failed == [] and np.isnan(emb[1]).all() and np.isfinite(emb[[0, 2]]).all()
    with pytest.raises(ValueError, match="row 1"):
        rk.index.build_index(emb, ids=paths, gpu=False)
