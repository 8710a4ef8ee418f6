"""Smoke test of benchmarks/quotas.py at a tiny rate: the hot-partition figure is the
count of lease writes of the busiest counter in its busiest second."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import quotas as bench  # noqa: E402


def test_the_hot_partition_report_at_a_small_rate() -> None:
    report = bench.hot_partition(
        rate=2000, seconds=6, environments=20, principals=50, zipf=1.1, seed=3
    )
    assert report["ok"]
    assert report["hottest_counter_writes_per_second_after_warm_up"] > 0
    assert (
        report["hottest_counter_writes_per_second_after_warm_up"]
        <= (report["hottest_counter_writes_per_second"])
    )
    # leases: far fewer lease writes than requests once warm
    assert report["lease_writes_per_request"] < 0.5
    assert report["hottest_principal_rate"] > 2000 / 50
