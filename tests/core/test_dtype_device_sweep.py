"""Every registered loss, every own miner and GeM/MAC/SPoC pooling, in each float dtype and on
each device: forward and backward run, stay finite, return the expected dtype and agree with the
same computation in float64.

Each case is compared with float64 on the *same* (already rounded) inputs, so the tolerance only
measures the arithmetic in the lower precision, not the rounding of the inputs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

import retrieval_kit as rk
from retrieval_kit.backbones.pooling import MAC, GeM, SPoC

torch.set_num_threads(1)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
#: (rtol, atol) against float64 on the same inputs.
TOLERANCE = {
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-10, 1e-12),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (5e-3, 5e-3),
}

DIM, CLASSES, BATCH = 8, 4, 16
#: Constructor arguments for the losses that need them (small sizes).
LOSS_KWARGS = {
    "arcface": {"num_classes": CLASSES, "embedding_size": DIM},
    "subcenter_arcface": {"num_classes": CLASSES, "embedding_size": DIM, "sub_centers": 2},
    "subspace_triplet": {"num_subspaces": 2},
    "combined": {
        "losses": {
            "arcface": {"name": "arcface", "num_classes": CLASSES, "embedding_size": DIM},
            "triplet": {"name": "triplet", "weight": 0.5, "miner": "batch_hard"},
        }
    },
    "ArcFaceLoss": {"num_classes": CLASSES, "embedding_size": DIM},
    "MultiSimilarityLoss": {},
    "ContrastiveLoss": {},
}
#: Losses whose logits are computed in float32 whatever the input (documented in
#: ``SubCenterArcFaceLoss``): their value is float32, or float64 when a float64 part is added.
FLOAT32_LOGITS = {"arcface", "subcenter_arcface"}
PML_LOSSES = ["MultiSimilarityLoss", "ContrastiveLoss", "ArcFaceLoss"]
LOSSES = [*rk.losses.list_losses(pml=False), *PML_LOSSES]
#: The pair losses again with a cosine similarity: matmul has CPU half kernels, PML's LpDistance
#: (cdist) has no bfloat16 one.
COSINE = ["triplet", "subspace_triplet", "ContrastiveLoss"]
MINERS = rk.miners.list_miners(pml=False)


def batch(device: str, dtype: torch.dtype, size: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings rounded to ``dtype`` but held in float64, labels), ``size // 4`` per class."""
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(size, DIM, generator=g, dtype=torch.float64)
    return emb.to(dtype).double().to(device), (torch.arange(size) % CLASSES).to(device)


def expected_loss_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    if name in FLOAT32_LOGITS:
        return torch.float32
    if name == "combined":  # ArcFace (float32) + triplet (dtype)
        return torch.promote_types(dtype, torch.float32)
    return dtype


def skip_if_no_kernel(error: NotImplementedError, device: str) -> None:
    """A kernel torch itself lacks (cdist in bfloat16 on CPU) is a reported skip, not a pass."""
    if "not implemented for" in str(error):
        pytest.skip(f"torch has no {device} kernel: {error}")
    raise error


def run_loss(loss: torch.nn.Module, emb: torch.Tensor, labels: torch.Tensor):
    emb = emb.detach().clone().requires_grad_()
    value = loss(emb, labels)
    value.backward()
    return value, emb.grad


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "name, distance",
    [(n, None) for n in LOSSES] + [(n, CosineSimilarity) for n in COSINE],
    ids=lambda v: getattr(v, "__name__", v or "default"),
)
def test_loss(name, distance, dtype, device):
    torch.manual_seed(0)  # the same initial weights for both copies
    kwargs = dict(
        LOSS_KWARGS.get(name, {}), **({} if distance is None else {"distance": distance()})
    )
    base = rk.losses.create_loss(name, **kwargs).to(device)
    emb64, labels = batch(device, dtype)
    ref_value, ref_grad = run_loss(copy.deepcopy(base).double(), emb64, labels)
    try:
        value, grad = run_loss(copy.deepcopy(base).to(dtype), emb64.to(dtype), labels)
    except NotImplementedError as e:
        skip_if_no_kernel(e, device)

    assert value.dtype == expected_loss_dtype(name, dtype)
    assert grad.dtype == dtype
    assert torch.isfinite(value) and bool(torch.isfinite(grad).all())
    assert value.item() > 0  # random embeddings: every one of these losses is active
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(value.double(), ref_value.double(), rtol=rtol, atol=atol)
    scale = float(ref_grad.abs().max())
    torch.testing.assert_close(grad.double(), ref_grad, rtol=rtol, atol=atol * max(scale, 1.0))


def valid_triplets(a, p, n, labels) -> None:
    assert len(a) > 0 and a.dtype == p.dtype == n.dtype == torch.int64
    assert bool((labels[a] == labels[p]).all()) and bool((a != p).all())
    assert bool((labels[a] != labels[n]).all())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("distance", [LpDistance, CosineSimilarity], ids=lambda d: d.__name__)
@pytest.mark.parametrize("name", MINERS)
def test_miner(name, distance, dtype, device):
    miner = rk.miners.create_miner(name, distance=distance())
    # 64 samples per class: close competitors, so mining in a coarser precision than asked for
    # picks other triplets.
    emb64, labels = batch(device, dtype, size=256)
    ref = miner(emb64, labels)
    emb = emb64.to(dtype).requires_grad_()
    try:
        mined = miner(emb, labels)
    except NotImplementedError as e:
        skip_if_no_kernel(e, device)
    for t in mined:
        assert t.device == emb.device
    valid_triplets(*mined, labels)
    assert emb.grad is None  # mining is not part of the graph
    if dtype in (torch.float32, torch.float64):
        for got, want in zip(mined, ref):
            torch.testing.assert_close(got, want)
        return
    # Half precision may break near-ties differently, and a pair at the edge of the semi-hard band
    # may fall back to its hardest negative: nearly all triplets must be as hard, in float64.
    a, p, n = mined
    ra, rp, rn = ref
    assert torch.equal(a, ra)
    if name == "semi_hard":  # one triplet per positive pair
        assert torch.equal(p, rp)
    d = miner.distance(emb64, emb64)
    d = -d if miner.distance.is_inverted else d  # smaller is closer
    assert (d[a, n] - d[ra, rn]).abs().le(0.05).double().mean() >= 0.95
    assert (d[a, p] - d[ra, rp]).abs().le(0.05).double().mean() >= 0.95


def pooled_by_hand(kind: str, x: torch.Tensor, p: float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    if kind == "GeM":
        return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return x.amax(dim=(2, 3)) if kind == "MAC" else x.mean(dim=(2, 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("pooling", [GeM, MAC, SPoC], ids=lambda c: c.__name__)
def test_pooling(pooling, dtype, device):
    g = torch.Generator().manual_seed(0)
    # Post-ReLU-like activations (GeM clamps at eps), rounded to dtype and held in float64.
    x64 = torch.rand(2, 5, 4, 3, generator=g, dtype=torch.float64).mul(4.0).to(dtype).double()
    x = x64.to(device=device, dtype=dtype).requires_grad_()
    module = pooling().to(device=device, dtype=dtype)
    out = module(x)
    out.sum().backward()

    assert out.dtype == dtype and out.shape == (2, 5)
    assert x.grad.dtype == dtype
    assert bool(torch.isfinite(out).all()) and bool(torch.isfinite(x.grad).all())
    rtol, atol = TOLERANCE[dtype]
    x_ref = x64.to(device).requires_grad_()
    ref = pooled_by_hand(pooling.__name__, x_ref)
    ref.sum().backward()
    torch.testing.assert_close(out.double(), ref, rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=rtol, atol=atol)
    if pooling is GeM:
        assert module.p.grad is not None and bool(torch.isfinite(module.p.grad).all())
