"""Any timm model as a trunk: ``create_backbone("timm/<name>")``, also ``timm/hf-hub:org/name``.

Token models (ViTs) are built with ``dynamic_img_size=True`` where timm supports it, so that they
take the aspect-kept, larger-than-classification images of retrieval (the position embeddings are
interpolated to the patch grid); pass ``dynamic_img_size=False`` to keep the fixed size.
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["HF_HUB_PREFIX", "import_timm", "suggest_names", "timm_trunk"]

HF_HUB_PREFIX = "hf-hub:"


def import_timm(what: str) -> Any:
    """Import timm or raise an ImportError saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"{what} needs timm, which is not installed: pip install retrieval_kit[timm]"
        ) from exc
    return timm


def suggest_names(name: str, candidates: list[str], n: int = 5) -> list[str]:
    """Close matches of a misspelt ``name`` among ``candidates`` (difflib), best first.

    Example:
        >>> suggest_names("resnt18", ["resnet18", "resnet34", "vit_tiny_patch16_224"])
        ['resnet18', 'resnet34']
    """
    return difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:
        return "the Hugging Face cache (huggingface_hub is not installed)"
    return str(constants.HF_HUB_CACHE)


def _hf_hub_error(model_name: str, exc: BaseException) -> OSError:
    repo = model_name[len(HF_HUB_PREFIX) :]
    return OSError(
        f"timm/{model_name}: could not get its config/weights from the Hugging Face hub ({exc}). "
        f"They are not in the local cache ({_hf_cache_dir()}) and the hub is unreachable or "
        "HF_HUB_OFFLINE=1. On a machine with network run "
        f"`hf download {repo}` (huggingface_hub's CLI) and copy that cache folder here (or set "
        "HF_HUB_CACHE to it); or create 'timm/<architecture>' with pretrained=PATH to a local "
        "state dict."
    )


def _create(timm: Any, model_name: str, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    if "dynamic_img_size" not in kwargs:
        try:
            return timm.create_model(
                model_name, pretrained=pretrained, num_classes=0, dynamic_img_size=True, **kwargs
            )
        except TypeError as exc:  # the model's class does not take it (CNNs and some others)
            if "dynamic_img_size" not in str(exc):
                raise
    return timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)


def timm_trunk(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A timm model without classifier (``num_classes=0``); features come from ``forward_features``.

    Its ``pretrained_cfg`` (mean, std, input size, crop_pct) becomes the EmbeddingModel's
    data_config (see :func:`retrieval_kit.backbones.DataConfig.from_timm`).
    ``hf-hub:org/name`` names are passed to timm; they need the Hugging Face cache (even with
    ``pretrained=False``, for the architecture's config.json) and work offline from it.

    Example:
        >>> trunk = timm_trunk("resnet10t")  # doctest: +SKIP
    """
    timm = import_timm(f"backbone 'timm/{model_name}'")
    is_hub = model_name.startswith(HF_HUB_PREFIX)
    if is_hub and "/" not in model_name[len(HF_HUB_PREFIX) :]:
        raise ValueError(f"timm/{model_name}: an hf-hub name is 'timm/hf-hub:<org>/<repo>'")
    if not is_hub and not timm.is_model(model_name):
        close = suggest_names(model_name.split(".")[0], timm.list_models())
        hint = f" (did you mean {', '.join(repr('timm/' + c) for c in close)}?)" if close else ""
        raise ValueError(f"timm has no model {model_name!r}{hint}")
    try:
        model = _create(timm, model_name, pretrained, kwargs)
    except OSError as exc:  # hub unreachable or not cached (huggingface_hub errors are OSErrors)
        if is_hub:
            raise _hf_hub_error(model_name, exc) from exc
        raise OSError(
            f"could not fetch timm's pretrained weights for {model_name!r} ({exc}); this machine "
            "is probably offline. Use pretrained=PATH to a local state dict, pre-seed the Hugging "
            f"Face cache ({_hf_cache_dir()}; then HF_HUB_OFFLINE=1 works), or "
            "create_backbone('efficientnet_lite0', pretrained=True) (offline)."
        ) from exc
    logger.debug("created timm model %s (pretrained=%s)", model_name, pretrained)
    return model
