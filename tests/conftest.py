"""Fixtures shared by several test folders.

Folder-specific helpers stay next to their tests (``tests/embed/conftest.py``: a tiny model and
images that the embed tests and their worker processes import).
"""

from __future__ import annotations

from pathlib import Path

import faiss
import pytest
import torch

TESTS = Path(__file__).resolve().parent

#: Folders whose tests run with one faiss OpenMP thread / one torch intra-op thread. Elsewhere a
#: test chooses its own thread counts (some measure or compare 1 and 2 threads).
ONE_FAISS_THREAD = frozenset({"index", "rerank"})
ONE_TORCH_THREAD = frozenset({"backbones"})


def _folder(request: pytest.FixtureRequest) -> str:
    try:
        return request.path.resolve().relative_to(TESTS).parts[0]
    except ValueError:  # a test module outside tests/
        return ""


@pytest.fixture(autouse=True)
def _one_faiss_thread(request):
    # faiss' OpenMP threads spin while waiting; on a small, shared CI machine that makes tiny
    # trainings (PQ) 10x slower. One thread keeps these tests fast and deterministic.
    if _folder(request) not in ONE_FAISS_THREAD:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    # On a small, shared CI machine intra-op threads fight each other (30x slower under load).
    if _folder(request) not in ONE_TORCH_THREAD:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
