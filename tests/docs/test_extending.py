"""Every ```python block of docs/extending.md runs, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_extending_examples_run(monkeypatch):
    # The page registers a loss, a miner and a backbone: register them into copies of the
    # registries so that later tests see only the library's own names.
    import retrieval_kit.backbones._registry as backbone_registry
    import retrieval_kit.losses.registry as loss_registry
    import retrieval_kit.miners.registry as miner_registry

    monkeypatch.setattr(backbone_registry, "_REGISTRY", dict(backbone_registry._REGISTRY))
    monkeypatch.setattr(loss_registry._LOSSES, "_own", dict(loss_registry._LOSSES._own))
    monkeypatch.setattr(miner_registry._MINERS, "_own", dict(miner_registry._MINERS._own))
    blocks = code_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "expected the miner, loss, backbone, training and reranker examples"
    namespace: dict = {"__name__": "docs_extending"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)  # our own docs
        except Exception as e:  # name the block that failed
            raise AssertionError(f"{DOC.name} code block {i + 1} failed: {e!r}") from e
    for name in ("HardPositiveRandomNegativeMiner", "SquaredGapLoss", "ThresholdReranker"):
        assert name in namespace
