"""Global pooling of (B, C, H, W) feature maps into (B, C) descriptors.

The pure functions follow cirtorch's ``layers/functional.py``; the modules around them follow
its ``layers/pooling.py``. ``GeM`` (generalised mean) has a learnable exponent ``p``: ``p = 1`` is
average pooling (SPoC), ``p -> inf`` tends to max pooling (MAC).

Example:
    >>> import torch
    >>> from retrieval_kit.backbones.pooling import GeM, gem
    >>> x = torch.rand(2, 8, 4, 4)
    >>> GeM()(x).shape
    torch.Size([2, 8])
    >>> torch.allclose(gem(x, p=1.0), x.mean(dim=(2, 3)))
    True
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MAC", "ClassToken", "GeM", "SPoC", "gem", "get_pooling", "mac", "spoc"]


def _check_4d(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects a (B, C, H, W) feature map, got shape {tuple(x.shape)}")


def gem(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling: ``(mean(clamp(x, eps) ** p)) ** (1 / p)`` over H and W.

    Args:
        x: Feature map (B, C, H, W).
        p: Exponent, a float or a tensor (a learnable scalar in :class:`GeM`).
        eps: Lower clamp so that fractional powers of zero stay differentiable.

    Returns:
        (B, C) tensor in the dtype of ``x``.

    Example:
        >>> gem(torch.ones(1, 2, 3, 3), p=3.0).tolist()
        [[1.0, 1.0]]
    """
    _check_4d(x, "gem")
    dtype = x.dtype
    # Powers of half-precision activations overflow quickly (40 ** 3 > fp16 max): pool in float32.
    xf = (x if x.dtype == torch.float64 else x.float()).clamp(min=eps)
    if isinstance(p, torch.Tensor):
        p = p.to(xf.dtype)
    pooled = xf.pow(p).mean(dim=(2, 3)).pow(1.0 / p)
    return pooled.to(dtype)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Maximum activation of convolutions: the spatial max per channel, (B, C, H, W) -> (B, C).

    Example:
        >>> mac(torch.arange(4.0).view(1, 1, 2, 2)).tolist()
        [[3.0]]
    """
    _check_4d(x, "mac")
    return x.amax(dim=(2, 3))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum-pooled convolutional features (as a mean): spatial average per channel -> (B, C).

    Example:
        >>> spoc(torch.arange(4.0).view(1, 1, 2, 2)).tolist()
        [[1.5]]
    """
    _check_4d(x, "spoc")
    return x.mean(dim=(2, 3))


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent (starts at 3, as in cirtorch).

    Args:
        p: Initial exponent.
        eps: Lower clamp of the activations.
        learnable: If False, ``p`` is a buffer and stays fixed.

    Example:
        >>> GeM(p=3.0)(torch.rand(2, 16, 7, 7)).shape
        torch.Size([2, 16])
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM p must be > 0, got {p}")
        self.eps = eps
        p_tensor = torch.ones(1) * float(p)
        if learnable:
            self.p = nn.Parameter(p_tensor)
        else:
            self.register_buffer("p", p_tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, p=self.p, eps=self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class MAC(nn.Module):
    """Max pooling over H and W (module around :func:`mac`).

    Example:
        >>> MAC()(torch.rand(2, 16, 7, 7)).shape
        torch.Size([2, 16])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mac(x)


class SPoC(nn.Module):
    """Average pooling over H and W (module around :func:`spoc`).

    Example:
        >>> SPoC()(torch.rand(2, 16, 7, 7)).shape
        torch.Size([2, 16])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spoc(x)


class ClassToken(nn.Module):
    """The class (CLS) token of a token model's output: (B, N, C) tokens -> (B, C) token 0.

    Only for trunks whose ``forward_features`` gives tokens with a class token first (timm ViTs;
    :class:`~retrieval_kit.backbones.EmbeddingModel` checks it when it is built).

    Example:
        >>> ClassToken()(torch.arange(6.0).view(1, 3, 2)).tolist()
        [[0.0, 1.0]]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise ValueError(
                f"CLS-token pooling expects (B, N, C) tokens, got shape {tuple(x.shape)}"
            )
        return x[:, 0]


_POOLINGS: dict[str, type[nn.Module]] = {
    "gem": GeM,
    "mac": MAC,
    "max": MAC,
    "spoc": SPoC,
    "avg": SPoC,
    "mean": SPoC,
    "cls": ClassToken,
}


def get_pooling(pooling: str | nn.Module) -> nn.Module:
    """A pooling module from a name or a module (returned as is; it maps (B, C, H, W) to (B, C)).

    Names: ``gem``, ``mac`` / ``max``, ``spoc`` / ``avg`` / ``mean``, and ``cls`` (the class token
    of a token model, :class:`ClassToken`).

    Example:
        >>> get_pooling("gem")
        GeM(p=3.0000, eps=1e-06)
    """
    if isinstance(pooling, nn.Module):
        return pooling
    if isinstance(pooling, str):
        key = pooling.lower()
        if key not in _POOLINGS:
            raise ValueError(
                f"unknown pooling {pooling!r}; known: {sorted(_POOLINGS)} or an nn.Module"
            )
        return _POOLINGS[key]()
    raise TypeError(f"pooling must be a name or an nn.Module, got {type(pooling).__name__}")
