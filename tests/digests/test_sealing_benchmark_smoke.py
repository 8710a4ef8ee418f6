"""Smoke test of benchmarks/ledger_sealing.py at a tiny rate: the report's structure and
arithmetic, and a whole simulated hour sealed by the real code through dispatched
workers, verified intact (so the benchmark measures sealing that works). Never
timings: the machines are shared and noisy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import ledger_sealing as bench  # noqa: E402

RATE = 256 / 30  # 30,720 records an hour


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return bench.simulate(RATE, 60, segments=1)


def test_each_invocation_is_measured_in_its_own_process(report: dict[str, Any]) -> None:
    kinds = [r["kind"] for r in report["invocations_measured"]]
    assert kinds == ["worker", "worker", "finisher"]
    full, small, finisher = report["invocations_measured"]
    # 30,720 records an hour: 13 archive objects of 2,363 records
    assert report["segments_per_hour"] == 13
    assert report["records_per_segment"] == full["records"] == 2363
    assert small["records"] == 24  # objects 1/100 of the size
    minutes = [bench.START_MS + m * 60_000 for m in range(60)]
    assert finisher["sealed"] == minutes  # the last object seals the hour's periods
    assert full["sealed"] == []  # the other 12 are not done in that store
    for r in report["invocations_measured"]:
        assert 10 < r["peak_mb"] < bench.MEMORY_LIMIT_MB
        assert r["cpu_s"] >= 0


def test_the_hour_is_counted_from_the_archive_objects(report: dict[str, Any]) -> None:
    assert report["records_per_hour"] == int(RATE * 3600)
    units = report["segments_per_hour"]  # an object is sealed for all its periods at once
    batch = report["segments_per_invocation"]
    assert batch >= 1
    assert report["invocations_per_hour"] == -(-units // batch) + bench.SCHEDULED_PER_HOUR
    assert report["within_limits"] is True
    text = bench.render(report)
    assert "peak MB" in text
    assert "limits 256 MB and 60 s (CPU) per invocation: met" in text
    assert report["lambda_dollars_per_million_requests"] >= 0


def test_a_whole_hour_sealed_through_workers_verifies_intact(tmp_path: Path) -> None:
    hour = bench.run_hour(8, 900, str(tmp_path), budget_ms=0)
    assert hour["invocations"] >= 2  # the scheduled run dispatched the rest
    assert hour["sealed_periods"] == 4
    assert hour["statuses"] == ["intact"]
    objects = bench.objects_per_hour(8)  # 28,800 records: 12 objects of 2,400
    assert hour["records"] == objects * bench.records_per_object(8) == 28_800
