"""Smoke test of benchmarks/ledger_partitions.py at a tiny rate: the report's structure,
and its hottest partitions against an independent brute-force count of every record it
generated, keyed through the real write path (``usage_item``)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import ledger_partitions as bench  # noqa: E402

from tokenbroker.adapters.usage import usage_item  # noqa: E402
from tokenbroker.domain.ledger import hour_of  # noqa: E402
from tokenbroker.domain.models import UsageRecord  # noqa: E402

RATE = 2000
SECONDS = 2


@pytest.fixture(scope="module")
def run() -> tuple[dict[str, Any], list[UsageRecord]]:
    return bench.simulate(rate=RATE, seconds=SECONDS, principals=50, keep_records=True)


@pytest.fixture(scope="module")
def brute(run: tuple[dict[str, Any], list[UsageRecord]]) -> dict[str, Counter[tuple[int, str]]]:
    """writes per (second, partition key) of the table (the usage item's key)."""
    counts: dict[str, Counter[tuple[int, str]]] = {}
    for record in run[1]:
        second = (record.at_ms - bench.START_MS) // 1000
        item = usage_item(record)
        counts.setdefault("id", Counter())[second, item["id"]["S"]] += 1
    return counts


def test_every_request_was_simulated(run: tuple[dict[str, Any], list[UsageRecord]]) -> None:
    report, records = run
    assert report["requests"] == len(records) == RATE * SECONDS
    assert report["violations"] == []
    assert {r.decision.value for r in records} == {"allow"}
    seconds = {(r.at_ms - bench.START_MS) // 1000 for r in records}
    assert seconds == set(range(SECONDS))
    assert len({hour_of(r.at_ms) for r in records}) == 1  # one UTC hour


def test_report_structure(run: tuple[dict[str, Any], list[UsageRecord]]) -> None:
    report, _ = run
    assert "indexes" not in report  # the usage table has no GSI
    assert report["overall"]["writes"] == max(
        report["table"]["hottest"]["writes"], report["time_index"]["hottest"]["writes"]
    )
    # the stream-built time index: pages spread over their hour's partitions
    index = report["time_index"]
    assert index["pass"] is (index["hottest"]["writes"] <= bench.LIMIT)
    assert 0 < index["write_units_per_record"] <= 0.05
    assert index["hottest"]["key"].startswith(("IXP#", "IX#"))


def test_hottest_partitions_match_brute_force(
    run: tuple[dict[str, Any], list[UsageRecord]], brute: dict[str, Counter[tuple[int, str]]]
) -> None:
    report, _ = run
    entries = [{"attribute": "id", **report["table"]}]
    for entry in entries:
        counts = brute[entry["attribute"]]
        hottest = entry["hottest"]
        assert hottest["writes"] == max(counts.values()), entry["attribute"]
        assert counts[hottest["second"], hottest["key"]] == hottest["writes"]
        distinct = {key for _, key in counts}
        if entry["attribute"] == "id":
            assert entry["partitions"] == len(distinct) == RATE * SECONDS
        else:
            assert entry["partitions"] == len(distinct)


def test_hot_principal_sends_most_from_one_device(
    run: tuple[dict[str, Any], list[UsageRecord]],
) -> None:
    _, records = run
    hottest = Counter(r.principal for r in records).most_common(1)[0][0]
    assert hottest == "svc-0001"
    devices = Counter(r.jkt for r in records if r.principal == hottest)
    share = devices.most_common(1)[0][1] / devices.total()
    assert 0.74 < share < 0.86
    # one token per device at a time: a device renews every 300 s
    assert all(
        len({r.token_jti for r in records if r.jkt == jkt and r.at_ms < bench.START_MS + 1000}) == 1
        for jkt in devices
    )


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--rate", "500", "--seconds", "1", "--principals", "20", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["requests"] == 500
    assert report["overall"]["pass"] is True


def test_cli_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--rate", "500", "--seconds", "1", "--principals", "20"]) == 0
    out = capsys.readouterr().out
    assert "(table)" in out
    assert "time index" in out
    assert "overall hottest partition" in out
