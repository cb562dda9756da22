"""The landmark example's stage markers: a stat per output on later runs, the hash on --verify."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "landmark"))

from landmark_pipeline import state  # noqa: E402
from landmark_pipeline.runner import STAGES  # noqa: E402
from landmark_pipeline.state import StageMarker  # noqa: E402


@pytest.fixture
def hashes(monkeypatch):
    """Counts the files hashed."""
    seen: list[str] = []
    real = state.file_digest

    def counting(path):
        seen.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(state, "file_digest", counting)
    return seen


def _done(out: Path, name: str = "embed", upstream=()) -> tuple[StageMarker, Path]:
    out.mkdir(exist_ok=True)
    f = out / name / "vectors.bin"
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(b"0123456789" * 100)
    old = f.stat().st_mtime_ns - 10**9  # clearly before the marker: not racily clean
    os.utime(f, ns=(old, old))
    marker = StageMarker(out, name)
    marker.write("h", [f], upstream=upstream, seconds=1.0)
    return marker, f


def test_marker_records_size_mtime_and_hash_once(tmp_path, hashes):
    marker, f = _done(tmp_path)
    assert hashes == ["vectors.bin"]
    info = marker.read()["outputs"]["embed/vectors.bin"]
    assert info["size"] == 1000 and info["mtime_ns"] == f.stat().st_mtime_ns
    assert info["sha256"] == state.file_digest(f)


def test_later_checks_stat_and_do_not_hash(tmp_path, hashes):
    marker, _ = _done(tmp_path)
    hashes.clear()
    for _ in range(3):
        assert marker.why_incomplete("h") is None
    assert hashes == []
    assert marker.why_incomplete("h", verify=True) is None
    assert hashes == ["vectors.bin"]


def test_changed_output_is_detected(tmp_path):
    marker, f = _done(tmp_path)
    f.write_bytes(b"x" * 1000)  # same size, new mtime: hashed, differs
    assert marker.why_incomplete("h") == "output embed/vectors.bin changed content"
    f.write_bytes(b"short")
    assert marker.why_incomplete("h") == "output embed/vectors.bin changed size"
    f.unlink()
    assert marker.why_incomplete("h") == "output embed/vectors.bin is missing"


def test_same_size_rewrite_with_time_put_back_needs_verify(tmp_path):
    marker, f = _done(tmp_path)
    st = f.stat()
    f.write_bytes(b"y" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert marker.why_incomplete("h") is None  # what a stat cannot see
    assert marker.why_incomplete("h", verify=True) == "output embed/vectors.bin changed content"


def test_copied_output_stays_valid_and_the_new_time_is_recorded(tmp_path, hashes):
    marker, f = _done(tmp_path / "a", upstream=())
    downstream = StageMarker(tmp_path / "a", "index")
    downstream.write("d", [], upstream=["embed"], seconds=0)
    before = marker.fingerprint()
    f.write_bytes(f.read_bytes())  # same bytes, new mtime (a copy)
    hashes.clear()
    assert marker.why_incomplete("h") is None and hashes == ["vectors.bin"]
    assert marker.read()["outputs"]["embed/vectors.bin"]["mtime_ns"] == f.stat().st_mtime_ns
    assert marker.fingerprint() == before  # stages after it stay valid
    assert downstream.why_incomplete("d", ["embed"]) is None
    hashes.clear()
    assert marker.why_incomplete("h") is None and hashes == []  # a stat again


def test_marker_without_mtimes_is_hashed_then_upgraded(tmp_path, hashes):
    marker, f = _done(tmp_path)
    data = marker.read()
    del data["outputs"]["embed/vectors.bin"]["mtime_ns"]
    marker.path.write_text(json.dumps(data))
    hashes.clear()
    assert marker.why_incomplete("h") is None and hashes == ["vectors.bin"]
    assert "mtime_ns" in marker.read()["outputs"]["embed/vectors.bin"]


def test_output_written_in_the_markers_tick_is_hashed(tmp_path, hashes):
    marker, f = _done(tmp_path)
    t = marker.path.stat().st_mtime_ns
    os.utime(f, ns=(t, t))
    data = marker.read()
    data["outputs"]["embed/vectors.bin"]["mtime_ns"] = t
    marker.path.write_text(json.dumps(data))
    os.utime(marker.path, ns=(t, t))
    hashes.clear()
    assert marker.why_incomplete("h") is None and hashes == ["vectors.bin"]


def test_stages_are_typed_and_train_is_the_distributed_one():
    assert list(STAGES)[0] == "prepare" and list(STAGES)[-1] == "submit"
    assert {s.name for s in STAGES.values() if s.distributed} == {"train"}
    for stage in STAGES.values():
        assert all(list(STAGES).index(u) < list(STAGES).index(stage.name) for u in stage.upstream)
    assert STAGES["train"].sections == ("seed", "model", "train")
