"""One portable file per embedding model: safetensors weights + the architecture as JSON metadata.

``save_model`` writes the state dict with safetensors (raw tensors and a JSON header, no pickle)
and puts in its metadata, under the key ``"retrieval_kit"``, what ``create_backbone`` needs to
rebuild the architecture: backbone name and builder kwargs, pooling, head size, normalisation, and
the data config. ``load_model`` rebuilds with ``pretrained=False`` and loads the weights strictly.
Nothing in the file is executed: the header and the metadata are parsed as data, and builder
kwargs that would make timm read other files are refused.
"""

from __future__ import annotations

import enum
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from retrieval_kit._version import __version__
from retrieval_kit.backbones._registry import create_backbone, is_backbone
from retrieval_kit.backbones.data_config import DataConfig
from retrieval_kit.backbones.embedding_model import EmbeddingModel
from retrieval_kit.backbones.model_file_error import ModelFileError
from retrieval_kit.backbones.pooling import MAC, ClassToken, GeM, SPoC
from retrieval_kit.backbones.state_dict import _load_strict
from retrieval_kit.io import atomic_write

logger = logging.getLogger(__name__)

__all__ = ["load_model", "save_model"]

METADATA_KEY = "retrieval_kit"
FORMAT = "retrieval_kit.EmbeddingModel"
FORMAT_VERSION = 1
# Builder kwargs that point timm at files or weights: a model file must not choose what is read.
_REFUSED_KWARGS = frozenset(
    {"pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"}
)
_JSON_SCALARS = (str, int, float, bool, type(None))


def _import_safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as exc:  # a core dependency; only a broken install lacks it
        raise ImportError(
            "save_model / load_model need safetensors: pip install safetensors"
        ) from exc
    return safetensors.torch


def _pooling_spec(pooling: torch.nn.Module) -> dict[str, Any]:
    if type(pooling) is GeM:
        learnable = isinstance(pooling.p, torch.nn.Parameter)
        return {"name": "gem", "learnable": learnable, "eps": float(pooling.eps)}
    for cls, name in ((MAC, "mac"), (SPoC, "spoc"), (ClassToken, "cls")):
        if type(pooling) is cls:
            return {"name": name}
    raise TypeError(
        f"save_model supports the built-in poolings (GeM, MAC, SPoC, ClassToken), got "
        f"{type(pooling).__name__}; save a state dict and rebuild the model in code instead"
    )


def _pooling_from_spec(spec: Any, path: Path) -> str | GeM:
    if not isinstance(spec, dict) or spec.get("name") not in ("gem", "mac", "spoc", "cls"):
        raise ModelFileError(path, f"unknown pooling {spec!r}")
    if spec["name"] != "gem":
        return spec["name"]
    learnable, eps = spec.get("learnable", True), spec.get("eps", 1e-6)
    if not isinstance(learnable, bool) or not isinstance(eps, float) or not eps > 0:
        raise ModelFileError(path, f"bad GeM settings {spec!r}")
    return GeM(p=3.0, eps=eps, learnable=learnable)  # p itself comes with the weights


def _plain_json(value: Any, where: str) -> Any:
    """Builder kwargs as JSON: scalars, lists and string-keyed dicts; enums by their name."""
    if isinstance(value, enum.Enum):
        return value.name  # torchvision weights enums: the builders take the member's name
    if isinstance(value, _JSON_SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain_json(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain_json(v, where) for k, v in value.items()}
    raise TypeError(
        f"save_model: builder argument {where} = {value!r} cannot be stored as JSON; "
        "pass plain values (numbers, strings, lists) to create_backbone"
    )


def _architecture(model: EmbeddingModel) -> dict[str, Any]:
    kwargs = getattr(model, "backbone_kwargs", None)
    if not isinstance(model, EmbeddingModel) or kwargs is None or not is_backbone(model.name):
        raise TypeError(
            "save_model needs an EmbeddingModel made by create_backbone with a registered or "
            f"'timm/' name (got {type(model).__name__} {getattr(model, 'name', '')!r})"
        )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "retrieval_kit_version": __version__,
        "name": model.name,
        "kwargs": {k: _plain_json(v, k) for k, v in kwargs.items()},
        "embedding_dim": None if isinstance(model.head, torch.nn.Identity) else model.embedding_dim,
        "pooling": _pooling_spec(model.pooling),
        "normalize": bool(model.normalize),
        "num_features": model.num_features,
        "data_config": {k: _plain_json(v, k) for k, v in DataConfig.of(model, "the model").items()},
    }


def _tensors_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        storage = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        # safetensors refuses tensors that share memory (tied weights): store each its own copy.
        tensors[key] = value.clone() if storage in seen and value.numel() else value
        seen.add(storage)
    return tensors


def save_model(model: EmbeddingModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to one safetensors file that :func:`load_model` rebuilds it from.

    The file holds the weights (every ``state_dict`` tensor, including GeM's p and BatchNorm
    statistics) and, as JSON metadata, the backbone name and builder kwargs, pooling, head size,
    ``normalize`` and ``data_config``. The write is atomic.

    Args:
        model: An :class:`EmbeddingModel` from :func:`create_backbone` (or :func:`load_model`)
            with a built-in pooling.
        path: Destination, conventionally ``*.safetensors``.

    Returns:
        The path written.

    Example:
        >>> model = create_backbone("resnet18", embedding_dim=64)
        >>> save_model(model, "resnet18_gldv2.safetensors")  # doctest: +SKIP
    """
    st = _import_safetensors()
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    architecture = _architecture(model)
    data = st.save(_tensors_for_saving(model), metadata={METADATA_KEY: json.dumps(architecture)})
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(data)
    logger.info("saved %s (%d bytes) to %s", model.name, len(data), path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    _import_safetensors()
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError, OSError, header/JSON errors from the parser
        raise ModelFileError(path, f"not a readable safetensors file ({exc})") from exc
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            path,
            f"no {METADATA_KEY!r} entry in its metadata: not written by "
            "rk.backbones.save_model (for a plain state dict use create_backbone(..., "
            "pretrained=PATH))",
        )
    try:
        architecture = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ModelFileError(path, f"its architecture metadata is not JSON ({exc})") from exc
    return tensors, architecture


def _check_architecture(arch: Any, path: Path) -> None:
    if not isinstance(arch, dict) or arch.get("format") != FORMAT:
        raise ModelFileError(path, f"metadata is not a {FORMAT} description")
    if arch.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            path,
            f"format_version {arch.get('format_version')!r}; this retrieval_kit "
            f"({__version__}) reads {FORMAT_VERSION}",
        )
    expected_types = {
        "name": str,
        "kwargs": dict,
        "embedding_dim": (int, type(None)),
        "normalize": bool,
        "num_features": int,
        "data_config": dict,
    }
    for key, types in expected_types.items():
        value = arch.get(key)
        # bool is an int in Python: a count given as true/false is as wrong as a string.
        if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
            raise ModelFileError(path, f"metadata field {key!r} is {value!r}")
    refused = sorted(_REFUSED_KWARGS & set(arch["kwargs"]))
    if refused:
        raise ModelFileError(path, f"builder arguments {refused} are not accepted from a file")


def load_model(path: str | os.PathLike) -> EmbeddingModel:
    """Rebuild the model that :func:`save_model` wrote, in eval mode, without running file content.

    The architecture is rebuilt with ``create_backbone(name, pretrained=False, ...)`` (a
    ``timm/`` backbone needs timm; a backbone you registered yourself must be registered again
    before loading), then every tensor is loaded strictly and ``data_config`` restored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ModelFileError: the file is not a safetensors file written by ``save_model``, or its
            description or tensors do not fit (a ValueError naming the file).

    Example:
        >>> model = load_model("resnet18_gldv2.safetensors")  # doctest: +SKIP
        >>> model.data_config["image_size"]  # doctest: +SKIP
        224
    """
    path = Path(path)
    tensors, arch = _read(path)
    _check_architecture(arch, path)
    name = arch["name"]
    if not is_backbone(name):
        raise ModelFileError(
            path,
            f"backbone {name!r} is not available here (register it, or install timm for "
            "'timm/' names, before loading)",
        )
    pooling = _pooling_from_spec(arch.get("pooling"), path)
    try:
        data_config = DataConfig.from_mapping(arch["data_config"], where=str(path))
        model = create_backbone(
            name,
            pretrained=False,
            embedding_dim=arch["embedding_dim"],
            pooling=pooling,
            normalize=arch["normalize"],
            **arch["kwargs"],
        )
    except (TypeError, ValueError) as exc:
        raise ModelFileError(path, f"cannot rebuild the architecture ({exc})") from exc
    if model.num_features != arch["num_features"]:
        raise ModelFileError(
            path,
            f"{name} has {model.num_features} features here but {arch['num_features']} in the file",
        )
    try:
        _load_strict(model, tensors, str(path), into=f"EmbeddingModel {name!r}")
    except ValueError as exc:
        raise ModelFileError(path, str(exc)) from exc
    expected = model.state_dict()
    wrong_dtype = [k for k, v in tensors.items() if v.dtype != expected[k].dtype]
    if wrong_dtype:  # load_state_dict would cast silently
        raise ModelFileError(path, f"tensors of another dtype than the model's: {wrong_dtype[:5]}")
    model.data_config = data_config
    logger.info("loaded %s from %s", name, path)
    return model.eval()
