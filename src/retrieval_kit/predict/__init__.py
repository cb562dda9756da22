"""Label prediction from search results.

Example:
    >>> import numpy as np, retrieval_kit as rk
    >>> r = rk.index.SearchResult(np.array([[0.9, 0.5]], "float32"), np.array([["x", "y"]], object))
    >>> rk.predict.predict_labels(r, {"x": 7, "y": 8})
    ([7], array([0.9], dtype=float32))
"""

from __future__ import annotations

from retrieval_kit.predict.confidence_features import ConfidenceFeatures, confidence_features
from retrieval_kit.predict.confidence_model import ConfidenceModel
from retrieval_kit.predict.predict_labels import predict_labels

__all__ = ["ConfidenceFeatures", "ConfidenceModel", "confidence_features", "predict_labels"]
