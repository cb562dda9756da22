"""EmbeddingModel: trunk -> global pooling -> optional Linear + BatchNorm1d head -> L2 norm.

Token models (timm ViTs and the like, whose ``forward_features`` gives (B, N, C) tokens, the first
``num_prefix_tokens`` of them class and register tokens) are pooled either by their class token
(``pooling="cls"``) or, like a CNN's feature map, over their patch tokens only (``"mean"``,
``"gem"``, ``"mac"``, or a module): the patch tokens are laid out as the (B, C, h, w) patch grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from retrieval_kit._checks import positive_int
from retrieval_kit.backbones.data_config import DataConfig
from retrieval_kit.backbones.pooling import ClassToken, get_pooling

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingModel"]


class EmbeddingModel(nn.Module):
    """An image embedding network: ``trunk`` feature maps, ``pooling``, ``head``, L2 normalisation.

    Usually built with :func:`retrieval_kit.backbones.create_backbone`; construct it directly to
    wrap any trunk of your own.

    Args:
        trunk: Module whose ``forward_features(x)`` (if it has one, as timm models do) or
            ``forward(x)`` returns a (B, C, H, W) feature map. A timm trunk with
            ``output_fmt == "NHWC"`` is permuted. A token trunk returns (B, N, C) tokens; its
            ``num_prefix_tokens`` (class + register tokens, 0 if absent) are left out of the
            patch grid, and ``has_class_token`` (or a ``cls_token``) allows ``pooling="cls"``.
        embedding_dim: Output size of the Linear + BatchNorm1d head; None for no head (the pooled
            trunk features, ``embedding_dim`` is then C).
        pooling: ``"gem"`` (learnable p, starts at 3), ``"mac"``, ``"spoc"`` / ``"mean"``, a
            module mapping (B, C, H, W) to (B, C), or, for token trunks only, ``"cls"``.
        normalize: L2-normalise the output. The trainer may switch it off
            (``model.normalize = False``) to train with Euclidean distance on the raw embedding.
        num_features: C; defaults to ``trunk.num_features``, else found with one dummy forward.
        data_config: Preprocessing (mean, std, image_size, resize_size, interpolation); defaults to
            ``trunk.data_config``, then the trunk's timm ``pretrained_cfg``, then ImageNet 224/256.
        name: The backbone's registry name, for reprs and logs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> trunk = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
        >>> model = EmbeddingModel(trunk, embedding_dim=4, num_features=8)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        embedding_dim: int | None = 512,
        pooling: str | nn.Module = "gem",
        normalize: bool = True,
        num_features: int | None = None,
        data_config: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        embedding_dim = positive_int(embedding_dim, "embedding_dim", allow_none=True)
        self.name = name or type(trunk).__name__
        self.trunk = trunk
        self._use_forward_features = callable(getattr(trunk, "forward_features", None))
        self._nhwc = str(getattr(trunk, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self.num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
        self.is_token_model = hasattr(trunk, "num_prefix_tokens")
        # timm's token models that pool by average normalise after the pooling (fc_norm), and
        # have no final norm in forward_features: keep that norm after our pooling.
        fc_norm = getattr(trunk, "fc_norm", None)
        self._post_pool_norm = (
            self.is_token_model
            and isinstance(fc_norm, nn.Module)
            and not isinstance(fc_norm, nn.Identity)
        )
        self.data_config = self._resolve_data_config(trunk, data_config)
        if num_features is None:
            num_features = getattr(trunk, "num_features", None)
        if num_features is None:
            num_features = self._infer_num_features()
        self.num_features = int(num_features)
        self.pooling = get_pooling(pooling)
        if isinstance(self.pooling, ClassToken):
            self._check_class_token(trunk)
        if embedding_dim is None:
            self.head: nn.Module = nn.Identity()
            self.embedding_dim = self.num_features
        else:
            # The reproduced pipeline's head: Linear(C -> D) then BatchNorm1d(D).
            self.head = nn.Sequential(
                nn.Linear(self.num_features, embedding_dim), nn.BatchNorm1d(embedding_dim)
            )
            self.embedding_dim = int(embedding_dim)
        self.normalize = bool(normalize)

    @property
    def data_config(self) -> DataConfig:
        """The preprocessing; assigning a mapping (``dict(model.data_config, image_size=320)``)
        validates it into a :class:`DataConfig`."""
        return self._data_config

    @data_config.setter
    def data_config(self, value: Mapping[str, Any]) -> None:
        self._data_config = DataConfig.from_mapping(value, where=f"backbone {self.name!r}")

    def _resolve_data_config(
        self, trunk: nn.Module, data_config: Mapping[str, Any] | None
    ) -> Mapping[str, Any]:
        if data_config is None:
            data_config = getattr(trunk, "data_config", None)
        if data_config is None and isinstance(getattr(trunk, "pretrained_cfg", None), Mapping):
            data_config = DataConfig.from_timm(trunk.pretrained_cfg)
        return DataConfig() if data_config is None else data_config

    def _check_class_token(self, trunk: nn.Module) -> None:
        has_class_token = getattr(trunk, "has_class_token", None)
        if has_class_token is None:
            has_class_token = getattr(trunk, "cls_token", None) is not None
        if not self.is_token_model:
            raise ValueError(
                f"pooling 'cls' takes the class token of a token model (a ViT); backbone "
                f"{self.name!r} gives feature maps: use 'gem', 'mac' or 'spoc'"
            )
        if not has_class_token:
            raise ValueError(
                f"pooling 'cls' needs a class token, and backbone {self.name!r} has none "
                f"(num_prefix_tokens={self.num_prefix_tokens}): use 'gem' or 'mean' over its "
                "patch tokens"
            )

    @torch.no_grad()
    def _infer_num_features(self) -> int:
        size = self.data_config["image_size"]
        was_training = self.trunk.training
        self.trunk.eval()  # so the dummy pass does not touch BatchNorm running statistics
        try:
            param = next(self.trunk.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            features = self.forward_features(torch.zeros(1, 3, size, size, device=device))
        finally:
            self.trunk.train(was_training)
        logger.debug("inferred num_features=%d for %s", features.shape[1], self.name)
        return int(features.shape[1])

    def _trunk_output(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x) if self._use_forward_features else self.trunk(x)

    def _to_feature_map(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if features.ndim == 3:  # tokens (B, N, C): the patch tokens as a (B, C, h, w) grid
            patches = features[:, self.num_prefix_tokens :]
            b, n, c = patches.shape
            h, w = self._patch_grid(x, n)
            return patches.transpose(1, 2).reshape(b, c, h, w)
        if features.ndim != 4:
            raise ValueError(
                f"trunk of {self.name!r} returned shape {tuple(features.shape)}; EmbeddingModel "
                "needs a (B, C, H, W) feature map or (B, N, C) tokens"
            )
        if self._nhwc:
            features = features.permute(0, 3, 1, 2)
        return features

    def _patch_grid(self, x: torch.Tensor, num_patches: int) -> tuple[int, int]:
        patch_embed = getattr(self.trunk, "patch_embed", None)
        size = None
        if callable(getattr(patch_embed, "dynamic_feat_size", None)):
            size = tuple(patch_embed.dynamic_feat_size(tuple(x.shape[-2:])))
        elif getattr(patch_embed, "grid_size", None) is not None:
            size = tuple(patch_embed.grid_size)
        if size is not None and len(size) == 2 and size[0] * size[1] == num_patches:
            return int(size[0]), int(size[1])
        return num_patches, 1  # grid unknown: a one-column map pools the same

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk feature map (B, C, H, W) of a normalised image batch (B, 3, H_in, W_in).

        For a token model: its patch tokens on the patch grid (class/register tokens left out).
        """
        return self._to_feature_map(self._trunk_output(x), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, embedding_dim), L2-normalised when ``self.normalize`` is True."""
        features = self._trunk_output(x)
        if isinstance(self.pooling, ClassToken):
            pooled = self.pooling(features)
        else:
            pooled = self.pooling(self._to_feature_map(features, x))
        if self._post_pool_norm:
            pooled = self.trunk.fc_norm(pooled)
        embedding = self.head(pooled)
        if self.normalize:
            embedding = F.normalize(embedding, p=2.0, dim=1)
        return embedding

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_features={self.num_features}, "
            f"embedding_dim={self.embedding_dim}, normalize={self.normalize}"
        )
