"""Input checks shared by the metric functions (clear errors instead of silent wrong scores)."""

from __future__ import annotations

import numbers
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

__all__: list[str] = []

_SHOW = 5  # how many offending keys an error message lists


def check_mapping(obj: Any, name: str) -> None:
    """Raise TypeError unless ``obj`` is a mapping (the dict inputs of the Kaggle metrics)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"{name} must be a mapping {{query_id: ...}}, got {type(obj).__name__}")


def check_collections(solution: Mapping, name: str = "solution") -> None:
    """Every value must be a collection of labels/ids; a bare string would match its characters."""
    # Check each distinct value type once: an ABC isinstance per value costs ~0.5 s per million.
    bad_types = {
        t
        for t in set(map(type, solution.values()))
        if issubclass(t, (str, bytes)) or not issubclass(t, Collection)
    }
    if not bad_types:
        return
    qid, value = next((q, v) for q, v in solution.items() if type(v) in bad_types)
    raise TypeError(
        f"{name}[{qid!r}] must be a collection of labels or ids (list, set, tuple, array; empty "
        f"for none), got {type(value).__name__} {value!r:.60}"
    )


def check_id_types(ids: Iterable, name: str) -> None:
    """Query ids must be all strings or all integers so that they have one total order."""
    kinds = set(map(type, ids))
    if not kinds:
        return
    if all(issubclass(k, str) for k in kinds):
        return
    if all(
        issubclass(k, (numbers.Integral, np.integer)) and not issubclass(k, bool) for k in kinds
    ):
        return
    shown = ", ".join(sorted(k.__name__ for k in kinds))
    raise TypeError(
        f"{name} ids must be all str or all int (they are sorted for tie-breaking); "
        f"got types {shown}"
    )


def unknown_ids(ids: Iterable, solution: Mapping, policy: str, what: str) -> set:
    """Ids not in ``solution``: an error naming them (``policy="raise"``) or the set to drop."""
    if policy not in ("raise", "ignore"):
        raise ValueError(f"unknown_ids must be 'raise' or 'ignore', got {policy!r}")
    missing = {q for q in ids if q not in solution}
    if missing and policy == "raise":
        shown = ", ".join(repr(q) for q in sorted(missing, key=repr)[:_SHOW])
        example = next(iter(solution), None)
        raise ValueError(
            f"{len(missing)} {what} ids are not in the solution (e.g. {shown}); solution ids look "
            f"like {example!r}. Only ids of the solution are scored: remove the others first or "
            "pass unknown_ids='ignore'"
        )
    return missing


def label_kind(value: Any) -> str:
    """A coarse type family: labels of different families never compare equal (5 != '5')."""
    if isinstance(value, (numbers.Number, np.number)):
        return "number"
    return type(value).__name__
