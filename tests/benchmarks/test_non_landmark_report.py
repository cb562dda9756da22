"""benchmarks/non_landmark_report.py: its table from finished runs' metrics.json."""

from __future__ import annotations

import json


def test_table_and_differences_from_finished_runs(load_benchmark, tmp_path):
    report = load_benchmark("non_landmark_report")
    for variant, gaps in ((0, (0.2, 0.4)), (2, (0.3, 0.45))):
        run = tmp_path / f"seed0_variant{variant}"
        run.mkdir()
        metrics = {"gap_without_rerank": gaps[0], "gap": gaps[1], "map_at_100": 0.5}
        (run / "metrics.json").write_text(json.dumps({**metrics, "top1_accuracy": 0.8}))
    rows = [r for v in range(len(report.VARIANTS)) if (r := report.collect(0, v, tmp_path))]
    assert [r["variant"] for r in rows] == [0, 2]  # unfinished variants are left out
    text = report.table(rows)
    assert "| 0 | + folder, random | 0.300 | 0.450 | 0.500 | 0.800 |" in text
    assert "+ folder, random vs the default: GAP w/o rerank +0.100; GAP +0.050 (seeds 0)." in text
