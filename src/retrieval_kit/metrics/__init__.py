"""Landmark recognition and retrieval metrics, vectorised with numpy.

- :func:`global_average_precision`: Kaggle GLDv2 recognition GAP (micro-AP).
- :func:`mean_average_precision_at_k`: Kaggle GLDv2 retrieval mAP@100.
- :func:`top1_accuracy`, :func:`recall_at_k`: dicts as above, or plain label arrays.
- :func:`revisited_map`: Revisited Oxford/Paris easy/medium/hard mAP with junk images.

Example:
    >>> from retrieval_kit.metrics import global_average_precision
    >>> global_average_precision({"q1": (7, 0.9), "q2": (3, 0.5)}, {"q1": [7], "q2": []})
    1.0
"""

from __future__ import annotations

from retrieval_kit.metrics.recognition import global_average_precision, top1_accuracy
from retrieval_kit.metrics.retrieval import mean_average_precision_at_k, recall_at_k
from retrieval_kit.metrics.revisited import average_precision_with_junk, revisited_map

__all__ = [
    "average_precision_with_junk",
    "global_average_precision",
    "mean_average_precision_at_k",
    "recall_at_k",
    "revisited_map",
    "top1_accuracy",
]
