"""Readers for the Google Landmarks Dataset v2 CSV files, and the folder-per-class layout.

Every reader validates as it goes and names the file, the line (1-based, the header is line 1) and
the value on error: missing columns, duplicate ids, non-integer labels, empty landmark lists where a
landmark is required, and ids that are not plain alphanumeric (which could otherwise resolve outside
the data folder once turned into a path). Results are plain Python containers:

* ``read_train_csv`` -> ``{"id": [str], "url": [str], "landmark_id": [int]}`` (columns, file order)
* ``read_train_clean_csv`` -> ``{landmark_id: [image ids]}`` (file order)
* ``read_ids_csv`` -> ``[str]`` (index.csv, test.csv)
* ``read_solution_csv`` -> ``{"id": [str], "landmarks": [[int]], "usage": [str]}``;
  ``solution_dict`` turns it into the ``{query_id: [labels]}`` the metrics take.
* ``read_retrieval_solution_csv`` -> ``{"id": [str], "images": [[str]], "usage": [str]}``
* ``read_folder_dataset`` -> ``{"paths": [str], "labels": [int], "classes": [str]}``
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "gldv2_image_path",
    "gldv2_image_paths",
    "read_folder_dataset",
    "read_ids_csv",
    "read_retrieval_solution_csv",
    "read_solution_csv",
    "read_train_clean_csv",
    "read_train_csv",
    "solution_dict",
    "validate_image_id",
]

# GLDv2 ids are 16 lowercase hex characters; users' own ids may be any plain alphanumeric name.
# Nothing that could be a path separator, a drive, "." or "..".
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def validate_image_id(image_id: Any, *, where: str = "") -> str:
    """Return ``image_id`` if it is a safe id (letters, digits, ``_``, ``-``; at least 3 chars).

    Args:
        image_id: the id to check.
        where: context for the error message, e.g. ``"train.csv line 7"``.

    Raises:
        ValueError: naming the id (and ``where``) if it is empty, too short for the a/b/c layout, or
            contains anything else (path separators, ``..``, spaces ...).

    Example:
        >>> validate_image_id("0a1b2c3d4e5f6789")
        '0a1b2c3d4e5f6789'
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(image_id, str):
        raise ValueError(f"{prefix}image id must be a string, got {image_id!r}")
    if not _ID_RE.fullmatch(image_id):
        raise ValueError(
            f"{prefix}unsafe or malformed image id {image_id!r}: ids may only contain letters, "
            "digits, '_' and '-' (refusing anything that could escape the data folder)"
        )
    if len(image_id) < 3:
        raise ValueError(f"{prefix}image id {image_id!r} is shorter than 3 characters")
    return image_id


def gldv2_image_path(root: str | os.PathLike, image_id: str, *, ext: str = ".jpg") -> Path:
    """The GLDv2 path of an image: ``root/a/b/c/abc....jpg`` for id ``"abc..."``.

    Args:
        root: the split's folder (``train``, ``index`` or ``test``).
        image_id: a GLDv2 id; validated with :func:`validate_image_id`.
        ext: the file extension.

    Raises:
        ValueError: the id is unsafe (path traversal) or malformed; the message names it.

    Example:
        >>> gldv2_image_path("train", "0a1b2c3d4e5f6789").as_posix()
        'train/0/a/1/0a1b2c3d4e5f6789.jpg'
    """
    image_id = validate_image_id(image_id)
    root = Path(root)
    path = root / image_id[0] / image_id[1] / image_id[2] / f"{image_id}{ext}"
    # An independent second check: should validate_image_id ever let a separator or '..'
    # through, the path still cannot leave root.
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"image id {image_id!r} resolves outside {root}")
    return path


def gldv2_image_paths(
    root: str | os.PathLike, image_ids: Sequence[str], *, ext: str = ".jpg"
) -> list[Path]:
    """:func:`gldv2_image_path` for many ids; an error names the bad id and its position.

    Example:
        >>> [p.name for p in gldv2_image_paths("index", ["abc1", "def2"])]
        ['abc1.jpg', 'def2.jpg']
    """
    paths = []
    for i, image_id in enumerate(image_ids):
        try:
            paths.append(gldv2_image_path(root, image_id, ext=ext))
        except ValueError as exc:
            raise ValueError(f"image_ids[{i}]: {exc}") from None
    return paths


def read_train_csv(path: str | os.PathLike) -> dict[str, list]:
    """Read GLDv2 ``train.csv`` (``id,url,landmark_id``; ``url`` may be absent).

    Returns:
        ``{"id": [...], "url": [...], "landmark_id": [...]}`` in file order (``url`` is ``""``
        when the column is absent).

    Raises:
        FileNotFoundError, ValueError: missing file or columns, duplicate or unsafe ids,
            non-integer landmark ids; the message names the file, line and value.

    Example:
        >>> train = read_train_csv("train.csv")  # doctest: +SKIP
        >>> train["id"][0], train["landmark_id"][0]  # doctest: +SKIP
        ('6e158a47eb2ca3f6', 142820)
    """
    ids: list[str] = []
    urls: list[str] = []
    labels: list[int] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path, required=("id", "landmark_id")):
        image_id = _id(row["id"], path, line, seen)
        ids.append(image_id)
        urls.append(row.get("url") or "")
        labels.append(_int(row["landmark_id"], path, line, "landmark_id"))
    return {"id": ids, "url": urls, "landmark_id": labels}


def read_train_clean_csv(path: str | os.PathLike) -> dict[int, list[str]]:
    """Read GLDv2 ``train_clean.csv`` (``landmark_id,images``, images space-separated).

    Returns:
        ``{landmark_id: [image ids]}`` in file order.

    Raises:
        FileNotFoundError, ValueError: missing columns, duplicate landmark ids, an image id listed
            twice, an empty image list, non-integer landmark ids, unsafe ids; file and line named.

    Example:
        >>> clean = read_train_clean_csv("train_clean.csv")  # doctest: +SKIP
        >>> sum(len(v) for v in clean.values())  # doctest: +SKIP
        1580470
    """
    out: dict[int, list[str]] = {}
    label_line: dict[int, int] = {}
    seen: dict[str, int] = {}
    for line, row in _rows(path, required=("landmark_id", "images")):
        label = _int(row["landmark_id"], path, line, "landmark_id")
        if label in label_line:
            raise ValueError(
                f"{path}: line {line}: duplicate landmark_id {label} (first on line "
                f"{label_line[label]})"
            )
        label_line[label] = line
        images = (row["images"] or "").split()
        if not images:
            raise ValueError(f"{path}: line {line}: landmark_id {label} has an empty image list")
        out[label] = [_id(image_id, path, line, seen) for image_id in images]
    return out


def read_ids_csv(path: str | os.PathLike, *, column: str = "id") -> list[str]:
    """Read a one-column id file such as GLDv2 ``index.csv`` or ``test.csv``.

    Raises:
        FileNotFoundError, ValueError: missing ``column``, duplicate or unsafe ids; file and line
            named.

    Example:
        >>> ids = read_ids_csv("index.csv")  # doctest: +SKIP
    """
    seen: dict[str, int] = {}
    return [_id(row[column], path, line, seen) for line, row in _rows(path, required=(column,))]


def read_solution_csv(
    path: str | os.PathLike,
    *,
    usage: str | Collection[str] | None = None,
    allow_empty: bool = True,
) -> dict[str, list]:
    """Read ``recognition_solution_v2.1.csv`` (``id,landmarks,Usage``).

    ``landmarks`` is a space-separated list of landmark ids; empty means a non-landmark query.

    Args:
        path: the solution file.
        usage: keep only rows whose ``Usage`` is this (or one of these), e.g. ``"Private"``.
        allow_empty: if False, a row without landmarks is an error.

    Returns:
        ``{"id": [...], "landmarks": [[int, ...], ...], "usage": [...]}`` in file order.

    Raises:
        FileNotFoundError, ValueError: missing columns, duplicate or unsafe ids, non-integer
            landmark ids, empty landmark lists when not allowed; file and line named.

    Example:
        >>> sol = read_solution_csv("solution.csv", usage="Private")  # doctest: +SKIP
        >>> truth = solution_dict(sol)  # doctest: +SKIP
    """

    def landmarks(values: list[str], line: int, image_id: str) -> list[int]:
        labels = [_int(v, path, line, "landmarks") for v in values]
        if not labels and not allow_empty:
            raise ValueError(f"{path}: line {line}: id {image_id!r} has an empty landmarks list")
        return labels

    return _read_solution(path, "landmarks", usage, landmarks)


def read_retrieval_solution_csv(
    path: str | os.PathLike, *, usage: str | Collection[str] | None = None
) -> dict[str, list]:
    """Read ``retrieval_solution_v2.1.csv`` (``id,images,Usage``; images space-separated index ids).

    Args:
        path: the solution file.
        usage: keep only rows whose ``Usage`` is this (or one of these).

    Returns:
        ``{"id": [...], "images": [[index id, ...], ...], "usage": [...]}`` in file order; an
        empty list means no relevant image. ``solution_dict`` gives ``{query: [index ids]}``.

    Raises:
        FileNotFoundError, ValueError: missing columns, duplicate or unsafe ids, an index id listed
            twice in one row; file and line named.

    Example:
        >>> sol = read_retrieval_solution_csv("retrieval_solution_v2.1.csv")  # doctest: +SKIP
        >>> relevant = solution_dict(sol)  # doctest: +SKIP
    """

    def images(values: list[str], line: int, image_id: str) -> list[str]:
        in_row: dict[str, int] = {}
        return [_id(v, path, line, in_row) for v in values]

    return _read_solution(path, "images", usage, images)


def _read_solution(
    path: str | os.PathLike,
    column: str,
    usage: str | Collection[str] | None,
    parse: Callable[[list[str], int, str], list],
) -> dict[str, list]:
    # The two Kaggle solution files share a layout: id, a space-separated list, Usage.
    keep = {usage} if isinstance(usage, str) else (set(usage) if usage is not None else None)
    ids: list[str] = []
    values: list[list] = []
    usages: list[str] = []
    seen: dict[str, int] = {}
    for line, row in _rows(path, required=("id", column, "Usage")):
        image_id = _id(row["id"], path, line, seen)
        parsed = parse((row[column] or "").split(), line, image_id)
        row_usage = (row["Usage"] or "").strip()
        if keep is not None and row_usage not in keep:
            continue
        ids.append(image_id)
        values.append(parsed)
        usages.append(row_usage)
    return {"id": ids, column: values, "usage": usages}


def solution_dict(solution: dict[str, list]) -> dict[str, list]:
    """``{query_id: [labels or index ids]}`` from a solution reader, as ``rk.metrics`` takes it.

    Example:
        >>> solution_dict({"id": ["q1", "q2"], "landmarks": [[7], []], "usage": ["Public"] * 2})
        {'q1': [7], 'q2': []}
    """
    values = solution["landmarks"] if "landmarks" in solution else solution["images"]
    return dict(zip(solution["id"], values, strict=True))


def read_folder_dataset(
    root: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS
) -> dict[str, list]:
    """Read a folder-per-class image collection (``root/<class>/<...>/<image>``).

    Class folders and files are sorted, so the result is the same on every machine. Uses
    torchvision's ``find_classes`` / ``make_dataset`` (the ``ImageFolder`` scanner).

    Args:
        root: the folder holding one sub-folder per class.
        extensions: image file extensions to keep (case-insensitive).

    Returns:
        ``{"paths": [str], "labels": [int], "classes": [str]}``; ``labels[i]`` indexes ``classes``.

    Raises:
        FileNotFoundError: ``root`` is missing, has no class folders, or a class has no images.

    Example:
        >>> data = read_folder_dataset("my_photos")  # doctest: +SKIP
        >>> ds = ImageListDataset(data["paths"], data["labels"])  # doctest: +SKIP
    """
    from torchvision.datasets.folder import find_classes, make_dataset

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist or is not a folder")
    classes, class_to_idx = find_classes(os.fspath(root))
    samples = make_dataset(
        os.fspath(root), class_to_idx, extensions=tuple(e.lower() for e in extensions)
    )
    return {
        "paths": [p for p, _ in samples],
        "labels": [label for _, label in samples],
        "classes": list(classes),
    }


def _rows(path: str | os.PathLike, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; header is {header}")
        for row in reader:
            if None in row:  # more fields than the header
                raise ValueError(f"{path}: line {reader.line_num}: more fields than the header")
            if any(row[c] is None for c in required):
                raise ValueError(f"{path}: line {reader.line_num}: fewer fields than the header")
            yield reader.line_num, row


def _id(value: str, path: Any, line: int, seen: dict[str, int]) -> str:
    value = value.strip()
    validate_image_id(value, where=f"{path}: line {line}")
    if value in seen:
        raise ValueError(
            f"{path}: line {line}: duplicate id {value!r} (first on line {seen[value]})"
        )
    seen[value] = line
    return value


def _int(value: str, path: Any, line: int, column: str) -> int:
    try:
        return int(value.strip())
    except (ValueError, AttributeError):
        raise ValueError(
            f"{path}: line {line}: {column} must be an integer, got {value!r}"
        ) from None
