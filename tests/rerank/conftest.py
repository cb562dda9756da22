from __future__ import annotations

import faiss
import pytest


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    # faiss' OpenMP threads spin while waiting; on a small, shared CI machine that makes tiny
    # trainings (PQ) 10x slower. One thread keeps these tests fast and deterministic.
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
