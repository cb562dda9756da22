"""The one way the library shows progress: a tqdm bar, off unless the caller asks for it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Plain tqdm, not tqdm.auto: in a notebook tqdm.auto picks its asyncio variant, whose constructor
# calls iter() on the iterable and iterating calls it again; on a DataLoader that starts the
# workers twice and spends a resumed sampler's one-shot resume point on the discarded iterator.
from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    enabled: bool,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one, updated with ``.update(n)``).

    Disabled, it draws nothing and iterates ``iterable`` exactly once, as a plain loop would.

    Example:
        >>> sum(progress_bar(range(3), enabled=False, desc="demo"))
        3
    """
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=not enabled)
