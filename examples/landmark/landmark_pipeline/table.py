"""The image table passed between stages: one CSV row per image (id, path, label, role, usage).

``label`` is a landmark id (an integer, or several separated by spaces for a test query showing more
than one landmark; empty for a non-landmark or unknown). ``role`` says what the image is for:

=============  ==============================================================================
prepare        ``train`` (labelled training images), ``test`` (queries), ``index`` (GLDv2 index)
split          ``train``, ``val_query``, ``val_db``, ``distractor``, ``test_query``,
               ``test_other`` (test images neither scored nor distractors), ``unused``
=============  ==============================================================================

Every image has exactly one role; ``source`` keeps the role prepare gave it. ``usage`` is the test
ground truth's Public / Private / Ignored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from retrieval_kit.io import atomic_write

__all__ = ["ImageRow", "read_table", "write_table"]

COLUMNS = ("id", "path", "label", "role", "usage", "source")


@dataclass
class ImageRow:
    id: str
    path: str
    label: str
    role: str
    usage: str = ""
    #: where the image came from: ``train``, ``test`` or ``index`` (the role given by prepare).
    source: str = ""

    @property
    def labels(self) -> list[int]:
        """The landmark ids of this image (empty for a non-landmark)."""
        return [int(v) for v in self.label.split()]


def write_table(path: Path, rows: Iterable[ImageRow]) -> Path:
    """Write the table atomically."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([r.id, r.path, r.label, r.role, r.usage, r.source])
    return Path(path)


def read_table(path: Path) -> list[ImageRow]:
    """Read a table written by :func:`write_table`; an error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image table not found: {path}")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected columns {COLUMNS}, got {reader.fieldnames}")
        for row in reader:
            rows.append(ImageRow(**{k: row[k] or "" for k in COLUMNS}))
    return rows
