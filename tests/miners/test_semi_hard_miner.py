from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

from retrieval_kit.miners import SemiHardMiner


def _reference(emb, labels, margin, distance):
    """Plain loop: one triplet per positive pair; hardest semi-hard, else hardest negative."""
    mat = distance(emb)
    d = -mat if distance.is_inverted else mat
    out = []
    n = len(labels)
    for a in range(n):
        neg = [j for j in range(n) if labels[j] != labels[a]]
        if not neg:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            semi = [j for j in neg if d[a, p] < d[a, j] < d[a, p] + margin]
            pool = semi if semi else neg
            out.append((a, p, min(pool, key=lambda j: d[a, j].item())))
    return sorted(out)


def _triplets(tup):
    return sorted(zip(*(t.tolist() for t in tup), strict=True))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("margin", [0.05, 0.3, 2.0])
@pytest.mark.parametrize("distance", [LpDistance(), CosineSimilarity()])
def test_matches_plain_loop(seed, margin, distance):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(30, 6, generator=g)
    labels = torch.randint(0, 6, (30,), generator=g)
    got = _triplets(SemiHardMiner(margin, distance=distance)(emb, labels))
    expected = _reference(emb, labels, margin, distance)
    assert len(expected) > 0
    assert got == expected


def test_both_branches_are_exercised():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(30, 6, generator=g)
    labels = torch.randint(0, 6, (30,), generator=g)
    dist = LpDistance()
    d = dist(emb)
    a, p, n = SemiHardMiner(0.3)(emb, labels)
    semi = (d[a, n] > d[a, p]) & (d[a, n] < d[a, p] + 0.3)
    assert semi.any() and (~semi).any()


def test_skips_and_empty():
    emb = torch.randn(5, 3)
    a, p, n = SemiHardMiner(0.2)(emb, torch.tensor([0, 0, 0, 0, 0]))  # no negatives
    assert len(a) == len(p) == len(n) == 0
    a, p, n = SemiHardMiner(0.2)(emb, torch.tensor([0, 1, 2, 3, 4]))  # no positives
    assert len(a) == 0
    a, p, n = SemiHardMiner(0.2)(emb, torch.tensor([0, 0, 1, 2, 3]))
    assert sorted(a.tolist()) == [0, 1]


def test_errors():
    with pytest.raises(ValueError, match="margin"):
        SemiHardMiner(-1.0)
    with pytest.raises(TypeError, match="margin"):
        SemiHardMiner("0.2")
