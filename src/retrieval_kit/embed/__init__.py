"""Embedding extraction: batched, in input order, to memory or to a chunked ``.npy`` memmap;
aspect-kept retrieval sizes, multi-scale power means, and learned whitening.

Example:
    >>> import retrieval_kit as rk
    >>> emb, failed = rk.embed.extract_embeddings(model, paths, on_error="skip")  # doctest: +SKIP
"""

from __future__ import annotations

from retrieval_kit.embed.extract import extract_embeddings
from retrieval_kit.embed.extraction_config import ExtractionConfig
from retrieval_kit.embed.extractor import Extractor
from retrieval_kit.embed.multiscale import multiscale_embed, multiscale_power, power_mean
from retrieval_kit.embed.retrieval_size import RETRIEVAL_IMAGE_SIZES, retrieval_image_size
from retrieval_kit.embed.shards import merge_shards, meta_path, shard_path, shard_range
from retrieval_kit.embed.whitening import Whitening, pairs_from_labels

__all__ = [
    "RETRIEVAL_IMAGE_SIZES",
    "ExtractionConfig",
    "Extractor",
    "Whitening",
    "extract_embeddings",
    "merge_shards",
    "meta_path",
    "multiscale_embed",
    "multiscale_power",
    "pairs_from_labels",
    "power_mean",
    "retrieval_image_size",
    "shard_path",
    "shard_range",
]
