"""Write one generated section of a markdown document between its own markers.

Every benchmark script that puts figures in ``docs/`` writes them through this module, so each
replaces only its own section and leaves the rest of the file byte for byte as it was. A section
is the text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, each on its own line; the
first time, the section is appended to the end of the file (markers included).

    from doc_section import write_section
    write_section("docs/benchmarks.md", "bench_stage_markers", table)
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
from collections.abc import Mapping
from pathlib import Path

from retrieval_kit.io import atomic_write_text

__all__ = [
    "cpu_model",
    "machine_line",
    "markers",
    "replace_section",
    "write_section",
    "write_sections",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what the platform module says."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_line() -> str:
    """CPU model, usable cores, Python/numpy versions, date and load average, in one sentence."""
    import numpy

    cpu = cpu_model()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    loads = os.getloadavg() if hasattr(os, "getloadavg") else None
    load = " / ".join(f"{x:.1f}" for x in loads) if loads else "n/a"
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    shared = (
        "The machine was shared with other jobs: absolute times are pessimistic; ratios"
        if loads and loads[0] > usable
        else "Ratios"
    )
    return (
        f"Measured {date} on {cpu} ({usable} usable CPUs), Python {platform.python_version()}, "
        f"numpy {numpy.__version__}; load average (1 / 5 / 15 min) at the end: {load}. "
        f"{shared} measured side by side in the same run are the figures to read."
    )


def markers(name: str) -> tuple[str, str]:
    """The begin and end marker lines of section ``name``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"section name {name!r}: use letters, digits, '_', '.' or '-'")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(text: str, name: str, body: str, *, where: str = "the document") -> str:
    """``text`` with section ``name``'s body replaced by ``body`` (appended when absent).

    Only the lines between the markers change. Markers that are not on their own line, appear
    twice, or come out of order are an error naming ``where`` and the section.

    Example:
        >>> replace_section("# T\\n<!-- a:begin -->\\nold\\n<!-- a:end -->\\ntail\\n", "a", "new")
        '# T\\n<!-- a:begin -->\\nnew\\n<!-- a:end -->\\ntail\\n'
    """
    begin, end = markers(name)
    lines = text.splitlines(keepends=True)
    stripped = [line.rstrip("\r\n") for line in lines]
    starts = [i for i, s in enumerate(stripped) if s == begin]
    ends = [i for i, s in enumerate(stripped) if s == end]
    stray = [m for m in (begin, end) if text.count(m) != stripped.count(m)]
    if stray:
        raise ValueError(f"{where}: marker {stray[0]} is not on a line of its own")
    block = [begin + "\n", body.strip("\n") + "\n", end + "\n"]
    if not starts and not ends:
        head = text.rstrip("\n")
        return (head + "\n\n" if head else "") + "".join(block)
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(
            f"{where}: section {name!r} needs exactly one {begin} followed by one {end} "
            f"(found {len(starts)} and {len(ends)})"
        )
    i, j = starts[0], ends[0]
    # Keep the end marker's own line ending (a file without a final newline keeps none).
    tail_end = lines[j][len(end) :]
    block[-1] = end + tail_end
    return "".join(lines[:i] + block + lines[j + 1 :])


def write_section(doc: str | os.PathLike, name: str, body: str) -> None:
    """Replace section ``name`` of the markdown file ``doc`` with ``body``, atomically.

    The file is created (with a ``# Benchmarks`` title) when it does not exist.
    """
    write_sections(doc, {name: body})


def write_sections(doc: str | os.PathLike, sections: Mapping[str, str]) -> None:
    """Replace several sections of ``doc`` (``{name: body}``, appended in this order) at once."""
    path = Path(doc)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    for name, body in sections.items():
        text = replace_section(text, name, body, where=str(path))
    atomic_write_text(path, text)


def load_note(load: tuple[float, ...], cpus: int, when: str = "at the start") -> str:
    """``load average <when> a / b / c``, saying so when the 1-minute load exceeded ``cpus``.

    Example:
        >>> load_note((1.0, 2.0, 3.0), 2)
        'load average at the start 1.0 / 2.0 / 3.0'
        >>> load_note((3.0, 2.0, 1.0), 2).endswith("(above the CPU count: times are pessimistic)")
        True
    """
    text = f"load average {when} {' / '.join(f'{x:.1f}' for x in load)}"
    if load and load[0] > cpus:
        text += " (above the CPU count: times are pessimistic)"
    return text
