"""Revisited Oxford / Paris evaluation (Radenovic et al., CVPR 2018): mAP with junk images."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["average_precision_with_junk", "revisited_map"]

logger = logging.getLogger(__name__)

# protocol -> (which gnd lists are positives, which are junk), as in revisitop's evaluation
PROTOCOLS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def average_precision_with_junk(
    ranked: Sequence[Any] | np.ndarray,
    positives: Sequence[Any] | np.ndarray,
    junk: Sequence[Any] | np.ndarray = (),
    kappas: Sequence[int] = (),
) -> tuple[float, list[float]]:
    """AP of one ranked list with junk entries removed, and precision at each kappa.

    Reproduces revisitop's ``compute_map`` for a single query: the positions of the positives are
    shifted down by the number of junk entries ranked above them, then AP is the trapezoid-rule
    area under the precision-recall curve (``compute_ap``): for the j-th positive (0-based) at
    0-based shifted position r it adds ``(j / r + (j + 1) / (r + 1)) / 2 / len(positives)``, with
    ``j / r`` taken as 1 when r is 0. Precision at kappa uses revisitop's definition
    ``#{positives at 1-based position <= kq} / kq`` with ``kq = min(last positive position,
    kappa)``; it is 0 when no positive is ranked.

    Args:
        ranked: the database items (indices or ids), best first; usually the whole database.
        positives: the relevant items; must not be empty.
        junk: items that are neither relevant nor wrong; they are dropped from the ranking.
        kappas: ranks for precision@k.

    Returns:
        ``(ap, [precision at each kappa])``.

    Example:
        >>> # 7 moves up to 0-based position 1: (0/1 + 1/2) / 2 = 0.25 by the trapezoid rule
        >>> average_precision_with_junk([5, 9, 7], positives=[7], junk=[9])[0]
        0.25
    """
    if len(positives) == 0:
        raise ValueError("average precision needs at least one positive")
    ranked = np.asarray(ranked)
    pos = np.flatnonzero(np.isin(ranked, np.asarray(positives)))
    junk_at = np.flatnonzero(np.isin(ranked, np.asarray(junk))) if len(junk) else pos[:0]
    # number of junk entries strictly above each positive (revisitop's while-loop, vectorised)
    pos = pos - np.searchsorted(junk_at, pos, side="left")
    j = np.arange(len(pos), dtype=np.float64)
    r = pos.astype(np.float64)
    precision_0 = np.divide(j, r, out=np.ones_like(j), where=r > 0)
    precision_1 = (j + 1) / (r + 1)
    ap = float(np.sum((precision_0 + precision_1) / 2.0) / len(positives))
    precisions = []
    one_based = pos + 1
    for kappa in kappas:
        if len(one_based) == 0:
            precisions.append(0.0)
            continue
        kq = min(int(one_based.max()), int(kappa))
        precisions.append(float(np.sum(one_based <= kq) / kq))
    return ap, precisions


def revisited_map(
    ranks: np.ndarray | Sequence[Sequence[Any]],
    gnd: Sequence[Mapping[str, Sequence[Any]]],
    *,
    kappas: Sequence[int] = (),
) -> dict[str, float]:
    """mAP of the Revisited Oxford/Paris protocols easy, medium and hard.

    Positives and junk per protocol, as in revisitop: easy: positives ``easy``, junk
    ``junk + hard``; medium: positives ``easy + hard``, junk ``junk``; hard: positives ``hard``,
    junk ``junk + easy``. A query without positives in a protocol is left out of that protocol's
    mean (revisitop does the same); a protocol where every query is left out gives NaN.

    Args:
        ranks: (Q, N) database items per query, best first: row q ranks the database for query q
            (``SearchResult.ids`` or ``np.argsort(-scores, axis=1)``). revisitop's own ``ranks``
            array is (N, Q): pass its transpose.
        gnd: one dict per query with keys ``"easy"``, ``"hard"``, ``"junk"`` (the ``gnd`` of
            revisitop's ``gnd_roxford5k.pkl``), holding items of the same kind as ``ranks``.
        kappas: optionally also report mean precision at these ranks as ``"<protocol>_mp@<k>"``.

    Returns:
        ``{"easy": mAP, "medium": mAP, "hard": mAP}`` (fractions, not percentages), plus the
        ``mp@k`` entries when ``kappas`` is given.

    Example:
        >>> gnd = [{"easy": [0], "hard": [3], "junk": [1]}]
        >>> revisited_map([[0, 1, 2, 3]], gnd)
        {'easy': 1.0, 'medium': 0.7916666666666666, 'hard': 0.25}
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(f"ranks must be 2-D (queries, database), got shape {ranks.shape}")
    if ranks.shape[0] != len(gnd):
        hint = " (revisitop's ranks are (N, Q): pass ranks.T)" if ranks.shape[1] == len(gnd) else ""
        raise ValueError(f"ranks has {ranks.shape[0]} rows but gnd has {len(gnd)} queries{hint}")
    for i, g in enumerate(gnd):
        missing = [key for key in ("easy", "hard", "junk") if key not in g]
        if missing:
            raise ValueError(f"gnd[{i}] lacks {missing}; each query needs easy, hard and junk")

    out: dict[str, float] = {}
    for protocol, (pos_keys, junk_keys) in PROTOCOLS.items():
        aps, precs = [], []
        for i, g in enumerate(gnd):
            positives = np.concatenate([np.asarray(g[key]).ravel() for key in pos_keys])
            if positives.size == 0:
                continue
            junk = np.concatenate([np.asarray(g[key]).ravel() for key in junk_keys])
            ap, p = average_precision_with_junk(ranks[i], positives, junk, kappas)
            aps.append(ap)
            precs.append(p)
        if not aps:
            logger.warning("no query has positives under the %s protocol: mAP is NaN", protocol)
        out[protocol] = float(np.mean(aps)) if aps else float("nan")
        for col, kappa in enumerate(kappas):
            out[f"{protocol}_mp@{kappa}"] = (
                float(np.mean([p[col] for p in precs])) if precs else float("nan")
            )
    return out
