"""Loading local state dicts into backbones, and mapping differently named weights by position."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["load_state_dict_file", "load_weights", "map_state_dict_by_position"]

# Keys of an ImageNet classifier layer, dropped when a full classifier dict is loaded into a trunk.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
_MODEL_PREFIXES = ("trunk.", "pooling.", "head.")
_SHOW = 10  # keys listed per category in error messages


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)`` (safetensors for ``*.safetensors``).

    Neither runs code from the file. A checkpoint that wraps the weights under ``"model"`` or
    ``"state_dict"`` is unwrapped, and a ``"module."`` prefix (DistributedDataParallel) is stripped.

    Example:
        >>> sd = load_state_dict_file("resnet50_gldv2.pth")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            tensors = load_file(str(path), device="cpu")
        except ImportError:
            raise
        except Exception as exc:  # SafetensorError and OS errors from the parser
            raise ValueError(f"could not read {path} as a safetensors file: {exc}") from exc
        return _as_tensor_dict(tensors, where=str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError variants
        raise ValueError(
            f"could not read {path} as a state dict with torch.load(weights_only=True): {exc}. "
            "Save weights with torch.save(model.state_dict(), path)."
        ) from exc
    return _as_tensor_dict(obj, where=str(path))


def _as_tensor_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise TypeError(f"{where} does not hold a state dict (a non-empty mapping name -> tensor)")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f"{where}: entries {bad[:_SHOW]} are not tensors; expected a state dict")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _describe(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], where: str, into: str) -> None:
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if mismatched:
            parts.append(
                f"shape mismatches (file vs model) ({len(mismatched)}): {_describe(mismatched)}"
            )
        raise ValueError(
            f"weights from {where} do not fit the {into}: " + "; ".join(parts) + ". Expected a "
            "trunk-only state dict, a full torchvision/timm classifier state dict, or one saved "
            "from an EmbeddingModel built with the same name, embedding_dim and pooling."
        )
    module.load_state_dict(sd, strict=True)


def load_weights(
    model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load a path or state dict into an :class:`EmbeddingModel` (whole model) or its trunk.

    Accepted: a dict saved from an EmbeddingModel (keys ``trunk.*``, ``pooling.*``, ``head.*``;
    loaded into the whole model), a trunk-only dict, or a full classifier dict (``fc.*`` /
    ``classifier.*`` dropped). Anything that does not fit raises ValueError listing missing /
    unexpected keys.

    Example:
        >>> load_weights(model, "my_resnet50.pth")  # doctest: +SKIP
    """
    if isinstance(weights, Mapping):
        where = "the given state dict"
        sd = _as_tensor_dict(weights, where=where)
    else:
        where = str(weights)
        sd = load_state_dict_file(weights)
    if all(k.startswith(_MODEL_PREFIXES) for k in sd) and any(k.startswith("trunk.") for k in sd):
        _load_strict(model, sd, where, into=f"EmbeddingModel {getattr(model, 'name', '')!r}")
        logger.info("loaded EmbeddingModel weights from %s", where)
        return model
    trunk = model.trunk
    expected = trunk.state_dict()
    dropped = [k for k in sd if k not in expected and k.startswith(_CLASSIFIER_PREFIXES)]
    if dropped:
        logger.info("ignoring classifier keys from %s: %s", where, _describe(dropped))
        sd = {k: v for k, v in sd.items() if k not in dropped}
    _load_strict(trunk, sd, where, into=f"trunk of {getattr(model, 'name', '')!r}")
    logger.info("loaded trunk weights from %s", where)
    return model


def map_state_dict_by_position(
    source: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``reference``'s keys, pairing them in order.

    For weights of the same architecture saved under another naming scheme. Parameters and BatchNorm
    running statistics are paired by position; ``num_batches_tracked`` counters (present in one
    naming scheme and not the other in some exports) are left out of the pairing, copied where the
    source has one for the same BatchNorm and zero otherwise. Every pair must agree in shape and in
    its last name part (``weight``, ``bias``, ``running_mean``...), else ValueError.

    Args:
        source: State dict under the foreign names.
        reference: State dict (or ``model.state_dict()``) whose keys and shapes are wanted.

    Returns:
        An OrderedDict with exactly ``reference``'s keys, for ``load_state_dict(strict=True)``.

    Example:
        >>> a = {"_fc.weight": torch.ones(2, 3), "_fc.bias": torch.zeros(2)}
        >>> list(map_state_dict_by_position(a, torch.nn.Linear(3, 2).state_dict()))
        ['weight', 'bias']
    """
    counter = "num_batches_tracked"
    src = [(k, v) for k, v in source.items() if not k.endswith(counter)]
    ref = [(k, v) for k, v in reference.items() if not k.endswith(counter)]
    if len(src) != len(ref):
        raise ValueError(
            f"cannot map by position: source has {len(src)} tensors and reference has {len(ref)} "
            f"(not counting {counter})"
        )
    mapped: dict[str, torch.Tensor] = {}
    src_prefix_of: dict[str, str] = {}
    for i, ((ks, vs), (kr, vr)) in enumerate(zip(src, ref)):
        if vs.shape != vr.shape or ks.rsplit(".", 1)[-1] != kr.rsplit(".", 1)[-1]:
            raise ValueError(
                f"cannot map by position: tensor #{i} is {ks} {tuple(vs.shape)} in the source but "
                f"{kr} {tuple(vr.shape)} in the reference"
            )
        mapped[kr] = vs
        if kr.endswith(".running_mean"):
            src_prefix_of[kr[: -len("running_mean")]] = ks[: -len("running_mean")]
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for kr, vr in reference.items():
        if kr.endswith(counter):
            src_key = src_prefix_of.get(kr[: -len(counter)], "\0") + counter
            out[kr] = source[src_key].clone() if src_key in source else torch.zeros_like(vr)
        else:
            out[kr] = mapped[kr]
    return out
