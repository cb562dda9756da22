"""benchmarks/landmark_report.py: the torchrun table and its within/outside verdict."""

from __future__ import annotations

import json


def _rows(two: tuple[float, float, float]):
    def m(gap, map100, top1):
        return {"gap": gap, "map_at_100": map100, "top1_accuracy": top1}

    return [
        {"name": "1 process x 2 threads", "seconds": 70.0, "metrics": m(0.40, 0.50, 0.75)},
        {"name": "1 process x 1 thread", "seconds": None, "metrics": m(0.44, 0.48, 0.80)},
        {"name": "2 processes x 1 thread (torchrun)", "seconds": 90.0, "metrics": m(*two)},
    ]


def test_torchrun_within_the_rounding_spread(load_benchmark):
    report = load_benchmark("landmark_report")
    text = report.torchrun_table(_rows((0.42, 0.485, 0.80)), seed=0)
    assert "| 1 process x 1 thread | 0.440 | 0.480 | 0.800 | — |" in text
    # Rounding: |0.40 - 0.44| = 0.040, |0.50 - 0.48| = 0.020, |0.75 - 0.80| = 0.050.
    assert "|difference| GAP 0.040, mAP@100 0.020, top-1 0.050." in text
    # Nearer 1-process run, metric by metric: GAP 0.020, mAP 0.005, top-1 0.000.
    assert "|difference| GAP 0.020, mAP@100 0.005, top-1 0.000: within" in text


def test_torchrun_outside_when_one_metric_is_farther_than_rounding(load_benchmark):
    report = load_benchmark("landmark_report")
    # GAP 0.30 is 0.100 from the nearer run (0.40), more than the 0.040 rounding gives.
    text = report.torchrun_table(_rows((0.30, 0.49, 0.80)), seed=0)
    assert "GAP 0.100, mAP@100 0.010, top-1 0.000: outside" in text


def test_run_torchrun_reuses_recorded_runs(load_benchmark, tmp_path, monkeypatch):
    report = load_benchmark("landmark_report")
    metrics = {"gap": 0.4, "map_at_100": 0.5, "top1_accuracy": 0.75}
    (tmp_path / "demo_seed0.json").write_text(json.dumps({"seconds": 70, "index": metrics}))
    for name in ("demo_seed0_p1t1", "demo_seed0_p2t1"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"seconds": 80, "metrics": metrics}))

    def never(*args, **kwargs):
        raise AssertionError("a recorded run was run again")

    monkeypatch.setattr(report, "_run", never)
    rows = report.run_torchrun(0, tmp_path, {})
    assert [r["seconds"] for r in rows] == [70, 80, 80]
