"""Nearest-neighbour indexes over embeddings (faiss underneath).

Example:
    >>> import numpy as np, retrieval_kit as rk
    >>> index = rk.index.build_index(np.eye(4, dtype="float32"), ids=list("abcd"))
    >>> index.search(np.eye(4, dtype="float32")[2:3], k=1).ids.tolist()
    [['c']]
"""

from __future__ import annotations

from retrieval_kit.index.build import auto_factory, build_index
from retrieval_kit.index.faiss_file import from_faiss
from retrieval_kit.index.index import Index, load_index
from retrieval_kit.index.search_result import SearchResult

__all__ = ["Index", "SearchResult", "auto_factory", "build_index", "from_faiss", "load_index"]
