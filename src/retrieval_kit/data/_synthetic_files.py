"""The files of the synthetic dataset besides its images: the GLDv2 csv files and the manifest.

Rows are written in id order within each file, so the files do not leak labels through their order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from retrieval_kit.io import atomic_write, atomic_write_json

# Bumped whenever the drawing changes, so a manifest from an older generator is not mistaken for
# the current output.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic_manifest.json"
TRAIN_CSV = "train.csv"
TRAIN_CLEAN_CSV = "train_clean.csv"
TRAIN_CLUTTER_CSV = "train_clutter.csv"
INDEX_CSV = "index.csv"
TEST_CSV = "test.csv"
SOLUTION_CSV = "recognition_solution_v2.1.csv"
RETRIEVAL_SOLUTION_CSV = "retrieval_solution_v2.1.csv"


class SyntheticImage(NamedTuple):
    """One image of the dataset."""

    split: str  # "train", "index" or "test"
    number: int  # position within the split; with the seed it fixes the id and the drawing
    id: str
    landmark_view: bool  # a view of landmark `label`; else a non-landmark picture
    label: int  # the landmark; -1 for non-landmark index and test images (train clutter keeps it)


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest in ``root``, or None when there is none.

    Raises:
        FileExistsError: the manifest is there but unreadable.
    """
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{path} is not a readable synthetic-dataset manifest: {e}") from e


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` (parameters, counts, generator version) into ``folder`` atomically."""
    atomic_write_json(folder / MANIFEST_NAME, manifest)


def write_csvs(
    out: Path, images: Sequence[SyntheticImage], usage_rng: np.random.Generator
) -> dict[str, int]:
    """Write the GLDv2 csv files of ``images`` into ``out``; return the counts per split.

    ``usage_rng`` splits the test queries into Public and Private halves.
    """
    train = sorted((im.id, im.label) for im in images if im.split == "train")
    _write_csv(
        out / TRAIN_CSV,
        ["id", "url", "landmark_id"],
        ([i, f"synthetic://train/{i}", lab] for i, lab in train),
    )
    clutter = sorted(im.id for im in images if im.split == "train" and not im.landmark_view)
    _write_csv(out / TRAIN_CLUTTER_CSV, ["id"], ([i] for i in clutter))
    by_label = _ids_by_label(train)
    _write_csv(
        out / TRAIN_CLEAN_CSV,
        ["landmark_id", "images"],
        ([lab, " ".join(by_label[lab])] for lab in sorted(by_label)),
    )
    index = sorted((im.id, im.label) for im in images if im.split == "index")
    _write_csv(out / INDEX_CSV, ["id"], ([i] for i, _ in index))
    test = sorted((im.id, im.label) for im in images if im.split == "test")
    _write_csv(out / TEST_CSV, ["id"], ([i] for i, _ in test))
    _write_solutions(out, test, index, usage_rng)
    n_test_lm = sum(1 for _, lab in test if lab >= 0)
    return {
        "train": len(train),
        "index": len(index),
        "test": len(test),
        "test_landmark": n_test_lm,
        "test_non_landmark": len(test) - n_test_lm,
    }


def _write_solutions(
    out: Path,
    test: list[tuple[str, int]],
    index: list[tuple[str, int]],
    usage_rng: np.random.Generator,
) -> None:
    # Public / Private halves, each with its share of landmark and non-landmark queries.
    usage: dict[str, str] = {}
    for want_lm in (True, False):
        group = [i for i, lab in test if (lab >= 0) == want_lm]
        flags = usage_rng.permutation(len(group)) % 2
        usage.update({i: ("Public" if f == 0 else "Private") for i, f in zip(group, flags)})
    _write_csv(
        out / SOLUTION_CSV,
        ["id", "landmarks", "Usage"],
        ([i, lab if lab >= 0 else "", usage[i]] for i, lab in test),
    )
    index_by_label = _ids_by_label((i, lab) for i, lab in index if lab >= 0)
    _write_csv(
        out / RETRIEVAL_SOLUTION_CSV,
        ["id", "images", "Usage"],
        (
            [i, " ".join(index_by_label.get(lab, [])) if lab >= 0 else "", usage[i]]
            for i, lab in test
        ),
    )


def _ids_by_label(rows: Iterable[tuple[str, int]]) -> dict[int, list[str]]:
    by_label: dict[int, list[str]] = {}
    for i, lab in rows:
        by_label.setdefault(lab, []).append(i)
    return by_label


def _write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> None:
    # "\n" line ends, not csv's default "\r\n": the bytes are part of the generator's output.
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
