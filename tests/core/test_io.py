"""Atomic writes: the destination is either the old file or the complete new one, never a mix."""

from __future__ import annotations

import json
import os

import pytest

from retrieval_kit.io import atomic_write, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    with atomic_write(path) as f:
        f.write(b"first")
    with atomic_write(path) as f:
        f.write(b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["out.bin"]  # no temporary file left behind


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_write(path, "w", encoding="utf-8") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_json_roundtrip(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"b": 1, "a": [1.5, "x"]})
    assert json.loads(path.read_text()) == {"a": [1.5, "x"], "b": 1}


def test_mode_is_checked(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass


def test_written_file_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_former_private_module_is_an_alias():
    import retrieval_kit.io
    from retrieval_kit import _io

    assert _io.atomic_write is retrieval_kit.io.atomic_write
    assert _io._fsync_dir is retrieval_kit.io.fsync_dir
