"""timm ViTs through ``timm/<name>``: CLS / mean / GeM pooling over the right tokens; training."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import retrieval_kit as rk
from retrieval_kit.backbones import create_backbone

timm = pytest.importorskip("timm")

VIT = "timm/vit_tiny_patch16_224"
VIT_REG = "timm/vit_small_patch14_reg4_dinov2"  # 1 class + 4 register tokens


def _tokens(model, x):
    with torch.no_grad():
        return model.trunk.forward_features(x)


@pytest.mark.parametrize("name", [VIT, VIT_REG])
def test_poolings_take_the_right_tokens(name):
    torch.manual_seed(0)
    patch = 16 if name == VIT else 14
    x = torch.randn(2, 3, 3 * patch, 4 * patch)  # not the 224 of the config: dynamic size
    cls_model = create_backbone(name, embedding_dim=None, pooling="cls", normalize=False).eval()
    prefix = 1 if name == VIT else 5
    assert cls_model.is_token_model and cls_model.num_prefix_tokens == prefix
    tokens = _tokens(cls_model, x)
    assert tokens.shape == (2, prefix + 12, cls_model.num_features)
    patches = tokens[:, prefix:]  # written out: the 12 patch tokens, class/register tokens dropped
    with torch.no_grad():
        assert torch.allclose(cls_model(x), tokens[:, 0], atol=1e-6)
        grid = cls_model.forward_features(x)
        assert grid.shape == (2, cls_model.num_features, 3, 4)
        # Row-major patch order: grid[:, :, r, c] is patch token r * 4 + c.
        assert torch.allclose(grid[:, :, 1, 2], patches[:, 1 * 4 + 2], atol=1e-6)
    sd = cls_model.state_dict()
    for pooling, expected in [
        ("mean", patches.mean(dim=1)),
        ("gem", patches.clamp(min=1e-6).pow(3).mean(dim=1).pow(1 / 3)),
        ("mac", patches.amax(dim=1)),
    ]:
        model = create_backbone(name, embedding_dim=None, pooling=pooling, normalize=False)
        model.load_state_dict(sd, strict=False)  # same trunk; GeM's p stays 3
        with torch.no_grad():
            assert torch.allclose(model.eval()(x), expected, atol=1e-5), pooling


def test_average_pooled_token_models_keep_their_fc_norm():
    model = create_backbone(
        "timm/eva02_tiny_patch14_224", embedding_dim=None, pooling="mean", normalize=False
    ).eval()
    x = torch.randn(1, 3, 56, 56)
    tokens = _tokens(model, x)
    with torch.no_grad():
        expected = model.trunk.fc_norm(tokens[:, model.num_prefix_tokens :].mean(dim=1))
        # timm's own head path (pool = mean of the patch tokens, then fc_norm) agrees.
        timm_head = model.trunk.forward_head(tokens, pre_logits=True)
        assert torch.allclose(timm_head, expected, atol=1e-5)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_poolings_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="'cls' needs a class token.*vit_medium_patch16_gap"):
        create_backbone("timm/vit_medium_patch16_gap_256", pooling="cls")
    with pytest.raises(ValueError, match="pooling 'cls' takes the class token.*'resnet18'"):
        create_backbone("resnet18", pooling="cls")
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        create_backbone(VIT, pooling="median")
    # A fixed-size ViT stays fixed when asked to.
    fixed = create_backbone(VIT, embedding_dim=8, dynamic_img_size=False).eval()
    with pytest.raises(AssertionError, match="doesn't match model"):
        fixed(torch.randn(2, 3, 64, 64))


def _toy_batches(seed: int) -> DataLoader:
    """4 classes x 4 images of 32x32: each class a fixed random image, each sample a noisy copy."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(4, 3, 32, 32, generator=g)
    labels = torch.arange(4).repeat_interleave(4)
    images = prototypes[labels] + 0.5 * torch.randn(16, 3, 32, 32, generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=False)


@pytest.mark.parametrize("pooling", ["cls", "mean", "gem"])
def test_vit_trains_with_the_library_loop(pooling):
    torch.manual_seed(0)
    model = create_backbone(VIT, pretrained=False, embedding_dim=32, pooling=pooling)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn, miner = rk.losses.TripletLoss(), rk.miners.BatchHardMiner()
    losses = []
    for epoch in range(3):
        stats = rk.train.train_one_epoch(model, _toy_batches(epoch), loss_fn, miner, optimizer)
        losses.append(stats["loss"])
    assert all(torch.isfinite(torch.tensor(losses))), losses
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    for key in ("patch_embed.proj.weight", "pos_embed", "blocks.11.mlp.fc2.weight"):
        assert f"trunk.{key}" in changed, key
    if pooling == "cls":
        assert "trunk.cls_token" in changed
    if pooling == "gem":
        assert "pooling.p" in changed
    assert "head.0.weight" in changed


class _Tokens(torch.nn.Module):
    """A hand-made token trunk: 2 prefix tokens (class, register), then 3 patch tokens."""

    num_prefix_tokens = 2
    has_class_token = True
    num_features = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.tensor([[9.0, -9.0], [7.0, 7.0], [1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
        return self.scale * tokens.expand(x.shape[0], -1, -1)


def test_own_token_trunk_pools_by_its_declared_prefix():
    from retrieval_kit.backbones import EmbeddingModel

    x = torch.zeros(2, 3, 8, 8)
    kw = {"embedding_dim": None, "normalize": False}
    cls = EmbeddingModel(_Tokens(), pooling="cls", **kw)
    assert cls(x).tolist() == [[9.0, -9.0]] * 2
    mean = EmbeddingModel(_Tokens(), pooling="mean", **kw)
    assert mean(x).tolist() == [[3.0, 2.0]] * 2  # patches only: (1+3+5)/3, (2+4+0)/3
    assert mean.forward_features(x).shape == (2, 2, 3, 1)  # no patch grid known: one column
    mac = EmbeddingModel(_Tokens(), pooling="mac", **kw)
    assert mac(x).tolist() == [[5.0, 4.0]] * 2
