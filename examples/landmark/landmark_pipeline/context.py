"""What every stage gets: the config, the output folder, the device and run options."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config

__all__ = ["Context"]


@dataclass
class Context:
    config: Config
    out: Path
    device: torch.device
    #: show tqdm bars.
    progress: bool = True
    #: the stage is being redone on request (train: start over instead of resuming).
    force: bool = False

    @staticmethod
    def resolve_device(name: str) -> torch.device:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(name)
