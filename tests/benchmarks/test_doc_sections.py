"""benchmarks/doc_section.py replaces one marked section and leaves every other byte alone."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


DOC = (
    "# Benchmarks\n\n"
    "<!-- run_header:begin -->\nmachine A\n<!-- run_header:end -->\n\n"
    "<!-- first:begin -->\n## First\n\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- first:end -->\n\n"
    "prose between, with trailing spaces   \n\n"
    "<!-- second:begin -->\n## Second\nold figure 0.123\n<!-- second:end -->\n"
    "<!-- third:begin -->\n## Third\n\n<!-- a comment inside -->\n<!-- third:end -->\n\ntail\n"
)


def _split(text: str, name: str) -> tuple[str, str]:
    """(text before the section's begin marker, text after its end marker)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    return text.split(begin)[0], text.split(end)[1]


def test_only_the_named_section_changes(load_benchmark):
    ds = load_benchmark("doc_section")
    new = ds.replace_section(DOC, "second", "## Second\nnew figure 0.456\n")
    head, tail = _split(DOC, "second")
    assert new == head + (
        "<!-- second:begin -->\n## Second\nnew figure 0.456\n<!-- second:end -->" + tail
    )
    assert "old figure" not in new
    # Replacing with the same body gives the same bytes back (the ending of every line kept).
    assert ds.replace_section(new, "second", "## Second\nnew figure 0.456") == new


def test_a_new_section_is_appended_and_the_rest_kept(load_benchmark):
    ds = load_benchmark("doc_section")
    new = ds.replace_section(DOC, "fourth", "## Fourth\nx")
    assert new.startswith(DOC.rstrip("\n") + "\n\n<!-- fourth:begin -->\n")
    assert new.endswith("## Fourth\nx\n<!-- fourth:end -->\n")


def test_write_section_file_keeps_other_sections_byte_identical(load_benchmark, tmp_path):
    ds = load_benchmark("doc_section")
    doc = tmp_path / "benchmarks.md"
    doc.write_bytes(DOC.encode())
    ds.write_section(doc, "first", "## First\n\nreplaced")
    text = doc.read_text(encoding="utf-8")
    for other in ("run_header", "second", "third"):
        begin, end = f"<!-- {other}:begin -->", f"<!-- {other}:end -->"
        assert (
            begin + text.split(begin)[1].split(end)[0] == begin + DOC.split(begin)[1].split(end)[0]
        )
    assert _split(text, "first")[1] == _split(DOC, "first")[1]
    assert _split(text, "first")[0] == _split(DOC, "first")[0]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "<!-- s:begin -->\na\n<!-- s:end -->\n<!-- s:begin -->\nb\n<!-- s:end -->\n",
            "exactly one",
        ),
        ("<!-- s:end -->\na\n<!-- s:begin -->\n", "exactly one"),
        ("<!-- s:begin -->\nno end\n", "exactly one"),
        ("text <!-- s:begin --> inline\n<!-- s:end -->\n", "not on a line of its own"),
    ],
)
def test_broken_markers_are_an_error_naming_the_file(load_benchmark, text, message):
    ds = load_benchmark("doc_section")
    with pytest.raises(ValueError, match=message) as e:
        ds.replace_section(text, "s", "x", where="docs/x.md")
    assert "docs/x.md" in str(e.value)


def test_the_shipped_docs_use_one_marker_style(load_benchmark):
    """Every generated section of docs/ is a well-formed ``<!-- name:begin/end -->`` pair."""
    import re

    ds = load_benchmark("doc_section")
    for page in ("benchmarks.md", "index.md", "scaling.md", "embed.md"):
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        names = re.findall(r"^<!-- ([\w.-]+):begin -->$", text, re.M)
        assert names, page
        assert not re.search(r"<!-- (BEGIN|END) |:start -->", text), page
        for name in names:  # each replaceable, and replacing it with itself changes nothing
            body = text.split(f"<!-- {name}:begin -->\n")[1].split(f"<!-- {name}:end -->")[0]
            assert ds.replace_section(text, name, body) == text, (page, name)


def test_run_py_replaces_only_its_own_sections(load_benchmark, tmp_path):
    run = load_benchmark("run")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n<!-- run_mining:begin -->\nmining of an earlier run\n"
        "<!-- run_mining:end -->\n\n<!-- bench_partial_fc:begin -->\nkept 1.234\n"
        "<!-- bench_partial_fc:end -->\n",
        encoding="utf-8",
    )
    info = {
        "date": "2026-01-01T00:00:00+00:00",
        "versions": dict.fromkeys(
            ("torch", "torchvision", "faiss", "pytorch-metric-learning", "numpy", "pillow",
             "retrieval_kit"), "1"),
        "cpu": "cpu", "cpus": 2, "cpus_usable": 2, "ram": "1 GiB", "os": "os", "python": "3",
        "gpu": None, "torch_threads": 1, "faiss_threads": 1, "loadavg": (0, 0, 0),
    }  # fmt: skip
    sections = [
        {"name": "metrics", "title": "3. Metrics", "script": "bench_metrics.py", "ok": True,
         "text": "table", "seconds": 1.0}
    ]  # fmt: skip
    parts = run.render(info, sections, "smoke", (0, 0, 0), 1.0)
    assert list(parts) == ["run_header", "run_metrics"]
    assert "--only metrics" in parts["run_header"]
    load_benchmark("doc_section").write_sections(doc, parts)
    text = doc.read_text(encoding="utf-8")
    assert "mining of an earlier run" in text and "kept 1.234" in text
    assert text.startswith(
        "# Benchmarks\n\n<!-- run_mining:begin -->\nmining of an earlier run\n"
        "<!-- run_mining:end -->\n\n<!-- bench_partial_fc:begin -->\nkept 1.234\n"
        "<!-- bench_partial_fc:end -->\n\n<!-- run_header:begin -->\n"
    )
    assert "## 3. Metrics\n\nCompared: table" in text
