"""Revisited Oxford/Paris mAP against hand-worked cases and a loop port of revisitop's code."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.metrics import average_precision_with_junk, revisited_map


def loop_compute_ap(ranks, nres):
    """revisitop compute_ap: trapezoids in the precision-recall plot, 0-based ranks."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else j / rank
        precision_1 = (j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def loop_compute_map(ranks_nq_first, gnd, kappas=()):
    """revisitop compute_map as loops; ``gnd`` has "ok" and "junk"; ranks are (Q, N) here."""
    aps, prs = [], []
    for i, g in enumerate(gnd):
        ok, junk = list(g["ok"]), list(g["junk"])
        if not ok:
            continue
        row = list(ranks_nq_first[i])
        pos = [p for p, x in enumerate(row) if x in ok]
        junk_pos = [p for p, x in enumerate(row) if x in junk]
        shifted = [p - sum(1 for jp in junk_pos if jp < p) for p in pos]
        aps.append(loop_compute_ap(shifted, len(ok)))
        one_based = [p + 1 for p in shifted]
        row_pr = []
        for kappa in kappas:
            kq = min(max(one_based), kappa) if one_based else None
            row_pr.append(sum(1 for p in one_based if p <= kq) / kq if kq else 0.0)
        prs.append(row_pr)
    return float(np.mean(aps)), np.mean(prs, axis=0) if kappas else []


def to_protocols(gnd):
    easy = [{"ok": g["easy"], "junk": g["junk"] + g["hard"]} for g in gnd]
    medium = [{"ok": g["easy"] + g["hard"], "junk": g["junk"]} for g in gnd]
    hard = [{"ok": g["hard"], "junk": g["junk"] + g["easy"]} for g in gnd]
    return {"easy": easy, "medium": medium, "hard": hard}


def test_perfect_ranking_is_one():
    assert average_precision_with_junk([3, 1, 2, 0], positives=[3, 1]) == (1.0, [])


def test_trapezoid_values_by_hand():
    # positives at 0-based positions 1 and 3 of 4, no junk:
    #   j=0, r=1: (0/1 + 1/2) / 2 = 0.25;  j=1, r=3: (1/3 + 2/4) / 2 = 5/12;  sum / 2 positives
    ap, _ = average_precision_with_junk([9, 1, 8, 2], positives=[1, 2])
    assert ap == pytest.approx((0.25 + 5 / 12) / 2)
    # the same ranking with 8 declared junk: 2 moves from position 3 to 2:
    #   j=1, r=2: (1/2 + 2/3) / 2 = 7/12
    ap, _ = average_precision_with_junk([9, 1, 8, 2], positives=[1, 2], junk=[8])
    assert ap == pytest.approx((0.25 + 7 / 12) / 2)
    # a positive that is never ranked only lowers recall: 1 of 2 found at position 0 -> 1/2
    ap, _ = average_precision_with_junk([1, 9], positives=[1, 2])
    assert ap == pytest.approx(0.5)


def test_precision_at_k_follows_revisitop_definition():
    # positives at 1-based 1 and 3; mP@5 uses kq = min(last positive (3), 5) = 3 -> 2/3
    _, precisions = average_precision_with_junk([1, 9, 2, 8, 7], positives=[1, 2], kappas=(1, 2, 5))
    assert precisions == pytest.approx([1.0, 0.5, 2 / 3])
    _, precisions = average_precision_with_junk([9, 8], positives=[1], kappas=(1,))
    assert precisions == [0.0]


def test_protocols_by_hand():
    gnd = [{"easy": [0], "hard": [3], "junk": [1]}]
    out = revisited_map([[0, 1, 2, 3]], gnd, kappas=(1,))
    # easy: positive 0 at position 0 -> 1
    # medium: positives 0 (pos 0) and 3 (pos 3, one junk above -> 2): (1 + (1/2 + 2/3)/2) / 2
    # hard: positive 3, junk 1 and 0 above it -> position 1: (0/1 + 1/2) / 2 = 0.25
    assert out["easy"] == 1.0
    assert out["medium"] == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)
    assert out["hard"] == pytest.approx(0.25)
    assert out["hard_mp@1"] == 0.0 and out["easy_mp@1"] == 1.0


def test_query_without_hard_positives_is_left_out_of_hard(caplog):
    gnd = [{"easy": [0], "hard": [], "junk": []}, {"easy": [], "hard": [1], "junk": []}]
    # query 1 has no easy positive: easy mAP is query 0 alone, and the reverse for hard
    out = revisited_map([[0, 1], [0, 1]], gnd)
    assert out == {"easy": 1.0, "medium": pytest.approx((1 + 0.25) / 2), "hard": 0.25}
    with caplog.at_level("WARNING"):
        empty = revisited_map([[0, 1]], [{"easy": [0], "hard": [], "junk": []}])
    assert np.isnan(empty["hard"]) and "hard protocol" in caplog.text


def test_matches_loop_port_of_revisitop_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(200):
        nq, ndb = int(rng.integers(1, 6)), int(rng.integers(5, 40))
        scores = rng.random((nq, ndb))
        ranks = np.argsort(-scores, axis=1)
        if rng.random() < 0.3:
            ranks = ranks[:, : max(1, ndb // 2)]  # a truncated shortlist
        gnd = []
        for _q in range(nq):
            perm = [int(x) for x in rng.permutation(ndb)]
            a, b, c = (int(x) for x in rng.integers(0, 6, size=3))
            gnd.append({"easy": perm[:a], "hard": perm[a : a + b], "junk": perm[a + b : a + b + c]})
        got = revisited_map(ranks, gnd, kappas=(1, 5, 10))
        for protocol, pg in to_protocols(gnd).items():
            if not any(g["ok"] for g in pg):
                assert np.isnan(got[protocol])
                continue
            expected_map, expected_pr = loop_compute_map(ranks, pg, kappas=(1, 5, 10))
            assert got[protocol] == pytest.approx(expected_map, rel=1e-12)
            for col, kappa in enumerate((1, 5, 10)):
                assert got[f"{protocol}_mp@{kappa}"] == pytest.approx(expected_pr[col])


def test_string_ids_work_like_indices():
    gnd = [{"easy": ["a"], "hard": ["c"], "junk": ["b"]}]
    assert revisited_map([["a", "b", "c", "d"]], gnd) == revisited_map(
        [[0, 1, 2, 3]], [{"easy": [0], "hard": [2], "junk": [1]}]
    )


def test_errors():
    gnd = [{"easy": [0], "hard": [], "junk": []}] * 3
    with pytest.raises(ValueError, match=r"ranks\.T"):
        revisited_map(np.zeros((5, 3), dtype=int), gnd)
    with pytest.raises(ValueError, match="lacks"):
        revisited_map([[0]], [{"easy": [0]}])
    with pytest.raises(ValueError, match="2-D"):
        revisited_map([0, 1], gnd[:1])
    with pytest.raises(ValueError, match="at least one positive"):
        average_precision_with_junk([0, 1], positives=[])
