"""The package's top level: version and lazily imported public modules."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import retrieval_kit as rk

PUBLIC = [
    "backbones",
    "data",
    "embed",
    "index",
    "losses",
    "metrics",
    "miners",
    "predict",
    "rerank",
    "samplers",
    "train",
    "viz",
]


def test_version_is_a_string():
    assert isinstance(rk.__version__, str) and rk.__version__.count(".") >= 2


@pytest.mark.parametrize("name", PUBLIC)
def test_public_module_is_reachable(name):
    module = getattr(rk, name)
    assert module is importlib.import_module(f"retrieval_kit.{name}")
    assert module.__all__, f"retrieval_kit.{name} must declare its public names"
    for public in module.__all__:
        assert hasattr(module, public), f"{name}.__all__ names missing {public!r}"


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_module"):
        rk.no_such_module


def test_import_does_not_import_torch_or_faiss():
    code = "import sys, retrieval_kit; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
