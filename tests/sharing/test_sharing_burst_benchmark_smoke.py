"""Smoke test of benchmarks/sharing_burst.py at a tiny size: the old burst rule read two
Queries of aggregates pages per principal per batch; the new one reads nothing and
writes one small item per principal."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import sharing_burst as bench  # noqa: E402


def test_reads_per_batch_before_and_after() -> None:
    report = bench.run(principals=5, hours=3, batches_per_hour=2)
    before, after = report["before"], report["after"]
    assert before["Query"] == 2 * 5  # its 25 hours span two UTC days: a Query per day
    assert before["query_items"] > 0
    assert before["read_units"] > 0
    assert (after.get("Query", 0), after.get("GetItem", 0), after["UpdateItem"]) == (0, 0, 5)
    assert after["update_item_bytes"] < 1024  # one write unit each
    assert "the new one reads none" in bench.render(report)
