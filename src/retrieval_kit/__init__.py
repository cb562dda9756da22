"""retrieval_kit: metric learning and large-scale instance retrieval.

The public modules are imported on first access (``rk.index``, ``rk.losses`` ...), so
``import retrieval_kit`` stays cheap and a user who only needs the metrics never imports faiss.

Example:
    >>> import retrieval_kit as rk
    >>> rk.metrics.global_average_precision({"q1": (7, 0.9)}, {"q1": [7]})
    1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from retrieval_kit._version import __version__

_SUBMODULES = (
    "backbones",
    "data",
    "embed",
    "index",
    "io",
    "losses",
    "metrics",
    "miners",
    "predict",
    "rerank",
    "samplers",
    "train",
    "viz",
)

__all__ = ["__version__", *_SUBMODULES]

if TYPE_CHECKING:  # static type checkers and IDEs see the real modules
    from retrieval_kit import (  # noqa: F401
        backbones,
        data,
        embed,
        index,
        io,
        losses,
        metrics,
        miners,
        predict,
        rerank,
        samplers,
        train,
        viz,
    )


def __getattr__(name: str):  # PEP 562: lazy import of the public modules
    if name in _SUBMODULES:
        module = importlib.import_module(f"retrieval_kit.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'retrieval_kit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
