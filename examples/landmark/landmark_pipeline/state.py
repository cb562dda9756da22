"""Stage completion markers: a stage is done only when its marker says so and its outputs agree.

After a stage has written all its outputs (each one atomically), it writes
``<out>/stages/<stage>.done.json`` - also atomically - holding the config hash it ran with, the
markers of the stages it read from, and the size, modification time (``mtime_ns``) and SHA-256 of
every output. Each output is hashed once, when the marker is written. A stage is complete when that
marker exists and all of it still holds: a later check compares each output's size and
``mtime_ns`` with the marker (a ``stat``, whatever the file's size) and hashes an output again only
when its ``mtime_ns`` moved (a copy, a touch: same bytes keep the stage valid) or when asked to
(``verify=True``, ``run.py --verify``). A stage killed half way has no marker (or an old one whose
outputs no longer match), so it is redone rather than mistaken for done, and an upstream stage that
was redone makes its downstream stages stale.

What the stat check cannot see, like make and git: an output rewritten with the same size while
its modification time was put back. ``--verify`` compares every stored hash. An output written in
the same clock tick as its marker is hashed on every check until the marker is rewritten (git's
"racily clean" rule), so a rewrite in that tick is not missed either.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retrieval_kit.io import atomic_write_json

__all__ = ["StageMarker", "file_digest"]

logger = logging.getLogger(__name__)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class StageMarker:
    """Reads and writes the completion marker of one stage.

    Example:
        >>> marker = StageMarker(out, "embed")  # doctest: +SKIP
        >>> if not marker.is_complete(config_hash, upstream=["train"]): ...
    """

    def __init__(self, out: Path, stage: str) -> None:
        self.out = Path(out)
        self.stage = stage
        self.path = self.out / "stages" / f"{stage}.done.json"

    def read(self) -> dict[str, Any] | None:
        """The marker's content, or None when there is none (or it cannot be read)."""
        if not self.path.is_file():
            return None
        try:
            marker = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:  # ValueError: bad JSON and non-UTF-8 bytes alike
            logger.warning("ignoring unreadable stage marker %s: %s", self.path, e)
            return None
        if not isinstance(marker, dict):
            logger.warning("ignoring stage marker %s: not a JSON object", self.path)
            return None
        return marker

    def fingerprint(self) -> str | None:
        """A hash of this stage's marker: changes whenever the stage's outputs change."""
        marker = self.read()
        if marker is None:
            return None
        # What the stage produced and from what, not when: a forced rerun that reproduces the
        # same outputs, or a copy of the run folder (new mtimes), leaves later stages valid.
        outputs = marker.get("outputs", {})
        core = {
            "config_hash": marker.get("config_hash"),
            "upstream": marker.get("upstream"),
            "outputs": {
                rel: {k: info.get(k) for k in ("size", "sha256")}
                if isinstance(info, dict)
                else info
                for rel, info in (outputs.items() if isinstance(outputs, dict) else ())
            },
        }
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:16]

    def why_incomplete(
        self, config_hash: str, upstream: Iterable[str] = (), *, verify: bool = False
    ) -> str | None:
        """Why the stage must run, or None when it is complete.

        Outputs are checked by size and ``mtime_ns``; one whose ``mtime_ns`` moved is hashed and
        compared with the stored SHA-256 (then its new ``mtime_ns`` is recorded, so the next check
        is a stat again). ``verify`` hashes every output.
        """
        marker = self.read()
        if marker is None:
            return "no completion marker"
        if marker.get("config_hash") != config_hash:
            return "its configuration changed"
        recorded = marker.get("upstream", {})
        for name in upstream:
            if recorded.get(name) != StageMarker(self.out, name).fingerprint():
                return f"upstream stage {name!r} changed"
        try:
            marker_mtime = self.path.stat().st_mtime_ns
        except OSError:
            return "no completion marker"
        refresh = False
        for rel, info in marker.get("outputs", {}).items():
            path = self.out / rel
            if not path.is_file():
                return f"output {rel} is missing"
            st = path.stat()
            if st.st_size != info["size"]:
                return f"output {rel} changed size"
            # Racily clean: written in the marker's clock tick, a later same-tick rewrite would
            # keep the recorded mtime_ns, so such an output is hashed.
            stat_holds = info.get("mtime_ns") == st.st_mtime_ns and st.st_mtime_ns < marker_mtime
            if stat_holds and not verify:
                continue
            if file_digest(path) != info["sha256"]:
                return f"output {rel} changed content"
            if not stat_holds:
                info["mtime_ns"] = st.st_mtime_ns
                refresh = True
        if refresh:
            self._rewrite(marker)
        return None

    def is_complete(
        self, config_hash: str, upstream: Iterable[str] = (), *, verify: bool = False
    ) -> bool:
        """True when the stage's outputs are complete and current."""
        return self.why_incomplete(config_hash, upstream, verify=verify) is None

    def invalidate(self) -> None:
        """Remove the marker (the stage is about to be redone)."""
        self.path.unlink(missing_ok=True)

    def write(
        self,
        config_hash: str,
        outputs: Iterable[Path],
        *,
        upstream: Iterable[str] = (),
        seconds: float,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Record the stage as complete; call only after every output has been written."""
        files = {}
        for p in outputs:
            p = Path(p)
            rel = p.resolve().relative_to(self.out.resolve()).as_posix()
            st = p.stat()
            files[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_digest(p)}
        atomic_write_json(
            self.path,
            {
                "stage": self.stage,
                "config_hash": config_hash,
                "upstream": {n: StageMarker(self.out, n).fingerprint() for n in upstream},
                "outputs": files,
                "seconds": round(seconds, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "info": info or {},
            },
        )

    def _rewrite(self, marker: dict[str, Any]) -> None:
        # Only the recorded mtimes changed (the fingerprint ignores them); a read-only run folder
        # just means the moved outputs are hashed again next time.
        try:
            atomic_write_json(self.path, marker)
        except OSError as e:
            logger.debug("could not refresh stage marker %s: %s", self.path, e)
