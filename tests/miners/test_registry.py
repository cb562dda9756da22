"""Miners by name: own names, PML class names, errors, registration."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import miners as pml_miners

import retrieval_kit as rk
from retrieval_kit.miners import create_miner, list_miners, register_miner


def test_lists_and_builds():
    own = [n for n in list_miners(pml=False) if not n.startswith("test_")]
    assert own == ["batch_hard", "semi_hard"]
    names = list_miners()
    assert names.index("semi_hard") < names.index("AngularMiner")
    assert "MultiSimilarityMiner" in names and "BaseMiner" not in names
    assert type(create_miner("batch_hard")) is rk.miners.BatchHardMiner
    assert create_miner("semi_hard", margin=0.3).margin == 0.3
    ms = create_miner("MultiSimilarityMiner", epsilon=0.2)
    assert type(ms) is pml_miners.MultiSimilarityMiner and ms.epsilon == 0.2
    assert type(create_miner("BatchHardMiner")) is pml_miners.BatchHardMiner


@pytest.mark.parametrize("name", [n for n in list_miners(pml=False) if not n.startswith("test_")])
def test_own_miners_mine_valid_triplets(name):
    emb, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    a, p, n = create_miner(name)(emb, labels)
    assert torch.equal(labels[a], labels[p]) and (labels[a] != labels[n]).all()


def test_errors_name_the_miner():
    with pytest.raises(KeyError, match="did you mean 'batch_hard'"):
        create_miner("batchhard")
    with pytest.raises(KeyError, match="'MultiSimilarityMiner'"):
        create_miner("MultiSimilartyMiner")
    with pytest.raises(TypeError, match=r"miner 'semi_hard'.*'margn'"):
        create_miner("semi_hard", margn=0.1)


def test_register_a_users_miner():
    @register_miner("test_first_triplet")
    def first_triplet():
        def mine(embeddings, labels, ref_emb=None, ref_labels=None):
            return torch.tensor([0]), torch.tensor([1]), torch.tensor([2])

        return mine

    assert "test_first_triplet" in list_miners(pml=False)
    a, p, n = create_miner("test_first_triplet")(torch.randn(3, 2), torch.tensor([0, 0, 1]))
    assert (a.item(), p.item(), n.item()) == (0, 1, 2)
