from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from retrieval_kit.backbones import MAC, GeM, SPoC, gem, get_pooling, mac, spoc


def _gem_loop(x: torch.Tensor, p: float, eps: float = 1e-6) -> torch.Tensor:
    """GeM written as the textbook formula, one (b, c) at a time, in float64."""
    b, c, h, w = x.shape
    out = torch.empty(b, c, dtype=torch.float64)
    for i in range(b):
        for j in range(c):
            values = [max(float(v), eps) ** p for v in x[i, j].flatten()]
            out[i, j] = (sum(values) / (h * w)) ** (1.0 / p)
    return out


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0, 4.5])
def test_gem_matches_plain_formula(p):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5).relu()  # zeros included: the eps clamp matters
    expected = _gem_loop(x, p)
    assert torch.allclose(gem(x, p=p).double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(GeM(p=p)(x).double(), expected, rtol=1e-5, atol=1e-6)


def test_gem_p1_is_average_pooling_and_large_p_tends_to_max():
    torch.manual_seed(1)
    x = torch.rand(3, 8, 7, 7) + 0.1
    avg = F.adaptive_avg_pool2d(x, 1).flatten(1)
    assert torch.allclose(gem(x, p=1.0), avg, atol=1e-6)
    assert torch.allclose(spoc(x), avg, atol=1e-6)
    assert torch.allclose(gem(x, p=200.0), mac(x), rtol=0.03)


def test_mac_equals_max_pooling():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 6, 3)
    assert torch.equal(mac(x), F.adaptive_max_pool2d(x, 1).flatten(1))
    assert torch.equal(MAC()(x), x.flatten(2).max(dim=2).values)
    assert torch.allclose(SPoC()(x), x.flatten(2).mean(dim=2))


def test_gem_p_is_learnable_and_starts_at_3():
    pool = GeM()
    assert isinstance(pool.p, torch.nn.Parameter)
    assert pool.p.item() == 3.0
    x = torch.rand(2, 4, 3, 3, requires_grad=True)
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad).all()
    assert pool.p.grad.abs().item() > 0
    fixed = GeM(p=2.0, learnable=False)
    assert "p" in dict(fixed.named_buffers()) and not list(fixed.parameters())


def test_gem_half_precision_does_not_overflow():
    x = torch.full((1, 2, 3, 3), 50.0, dtype=torch.float16)  # 50 ** 3 > float16 max
    out = gem(x, p=3.0)
    assert out.dtype == torch.float16
    assert torch.allclose(out.float(), torch.full((1, 2), 50.0), rtol=1e-3)


def test_get_pooling_names_modules_and_errors():
    assert isinstance(get_pooling("gem"), GeM)
    assert isinstance(get_pooling("MAC"), MAC)
    assert isinstance(get_pooling("avg"), SPoC)
    custom = torch.nn.Identity()
    assert get_pooling(custom) is custom
    with pytest.raises(ValueError, match="unknown pooling 'median'.*gem"):
        get_pooling("median")
    with pytest.raises(TypeError, match="int"):
        get_pooling(3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gem(torch.rand(2, 3))
    with pytest.raises(ValueError, match="p must be > 0"):
        GeM(p=0.0)
    assert math.isclose(GeM(p=2.5).p.item(), 2.5)
