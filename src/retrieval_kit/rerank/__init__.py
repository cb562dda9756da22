"""Rerankers: each takes a ``SearchResult`` and returns a new one, so they chain.

Example:
    >>> import numpy as np, retrieval_kit as rk
    >>> db = np.eye(3, dtype="float32")
    >>> index = rk.index.build_index(db)
    >>> result = index.search(db[:1], k=2)
    >>> rk.rerank.DistractorReranker(db[2:], k=1).rerank(db[:1], result).ids.tolist()
    [[0, 1]]
"""

from __future__ import annotations

from retrieval_kit.rerank.database_augmentation import DatabaseAugmentation
from retrieval_kit.rerank.discriminative_reranker import DiscriminativeReranker
from retrieval_kit.rerank.distractor_reranker import DistractorReranker
from retrieval_kit.rerank.geometric_verification import (
    PairVerification,
    VerificationSettings,
    match_descriptors,
    verify_pair,
)
from retrieval_kit.rerank.local_feature_cache import LocalFeatureCache
from retrieval_kit.rerank.local_feature_extractor import LocalFeatureExtractor
from retrieval_kit.rerank.neighbour_averaging import NeighbourAveraging
from retrieval_kit.rerank.query_expansion import QueryExpansion
from retrieval_kit.rerank.reranker import Reranker
from retrieval_kit.rerank.sift_extractor import SIFTExtractor
from retrieval_kit.rerank.spatial_verification_reranker import SpatialVerificationReranker

__all__ = [
    "DatabaseAugmentation",
    "DiscriminativeReranker",
    "DistractorReranker",
    "LocalFeatureCache",
    "LocalFeatureExtractor",
    "NeighbourAveraging",
    "QueryExpansion",
    "PairVerification",
    "Reranker",
    "SIFTExtractor",
    "SpatialVerificationReranker",
    "VerificationSettings",
    "match_descriptors",
    "verify_pair",
]
