from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

from retrieval_kit.miners import BatchHardMiner


def _triplets(tup):
    return sorted(zip(*(t.tolist() for t in tup), strict=True))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "distance", [None, LpDistance(normalize_embeddings=False), CosineSimilarity()]
)
def test_same_triplets_as_pml(seed, distance):
    g = torch.Generator().manual_seed(seed)
    n = 40
    emb = torch.randn(n, 8, generator=g)
    # uneven classes, including singletons (anchors without a positive are skipped)
    labels = torch.randint(0, 9, (n,), generator=g)
    kw = {} if distance is None else {"distance": distance}
    ours = BatchHardMiner(**kw)(emb, labels)
    ref = pml_miners.BatchHardMiner(**kw)(emb, labels)
    assert len(ours[0]) > 0
    assert _triplets(ours) == _triplets(ref)


def test_same_triplets_as_pml_with_ref_emb():
    g = torch.Generator().manual_seed(7)
    emb, ref_emb = torch.randn(12, 4, generator=g), torch.randn(20, 4, generator=g)
    labels, ref_labels = (
        torch.randint(0, 4, (12,), generator=g),
        torch.randint(0, 4, (20,), generator=g),
    )
    ours = BatchHardMiner()(emb, labels, ref_emb, ref_labels)
    ref = pml_miners.BatchHardMiner()(emb, labels, ref_emb, ref_labels)
    assert _triplets(ours) == _triplets(ref)


def test_plain_loop_reference_and_skips():
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(15, 3, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6, 6])
    d = torch.cdist(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(emb))
    expected = []
    for a in range(15):
        pos = [j for j in range(15) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(15) if labels[j] != labels[a]]
        if pos and neg:
            expected.append((a, max(pos, key=lambda j: d[a, j]), min(neg, key=lambda j: d[a, j])))
    got = _triplets(BatchHardMiner()(emb, labels))
    assert got == expected
    assert {a for a, _, _ in got} == set(range(15)) - {5, 10}  # singletons skipped


def test_no_triplets_does_not_crash():
    emb = torch.randn(4, 3)
    for labels in (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 0, 0])):
        a, p, n = BatchHardMiner()(emb, labels)
        assert len(a) == len(p) == len(n) == 0
