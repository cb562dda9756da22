"""Write one generated section of a markdown document between its own markers.

Used by the benchmark scripts that keep their table in ``docs/benchmarks.md`` next to the
sections ``run.py`` writes: only the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` is replaced (the section is appended, markers included, the first time).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

from retrieval_kit.io import atomic_write_text

__all__ = ["machine_line", "write_section"]


def machine_line() -> str:
    """CPU model, usable cores, Python/numpy versions, date and load average, in one sentence."""
    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    return (
        f"Measured {date} on {cpu} ({usable} usable CPUs), Python {platform.python_version()}, "
        f"numpy {numpy.__version__}; load average (1 / 5 / 15 min) at the end: {load}. The "
        "machine was shared with other jobs: absolute times are pessimistic; ratios measured "
        "side by side in the same run are the figures to read."
    )


def write_section(doc: str | os.PathLike, name: str, body: str) -> None:
    """Replace the text between ``name``'s markers in ``doc`` (or append it) atomically."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    path = Path(doc)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(path, text)
