"""Embedding extraction: batched, in input order, to memory or to a chunked ``.npy`` memmap.

Example:
    >>> import retrieval_kit as rk
    >>> emb, failed = rk.embed.extract_embeddings(model, paths, on_error="skip")  # doctest: +SKIP
"""

from __future__ import annotations

from retrieval_kit.embed.extract import extract_embeddings
from retrieval_kit.embed.shards import merge_shards, meta_path, shard_path, shard_range

__all__ = ["extract_embeddings", "merge_shards", "meta_path", "shard_path", "shard_range"]
