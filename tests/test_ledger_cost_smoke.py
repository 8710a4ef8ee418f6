"""Smoke test of benchmarks/ledger_cost.py: DynamoDB's item-size rules, the copies the
template's indexes keep of a real item, and the aggregates' write count against an
independent count of the buckets each batch touches."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level directory, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import ledger_cost as bench  # noqa: E402

from tokenbroker.adapters.ledger_items import to_item  # noqa: E402
from tokenbroker.domain.ledger import hour_of  # noqa: E402
from tokenbroker.local.template import load_template  # noqa: E402


def test_item_sizes_follow_dynamodbs_rules() -> None:
    assert bench.item_size({"id": {"S": "abc"}}) == 2 + 3
    assert bench.item_size({"n": {"N": "123"}}) == 1 + 3  # ceil(3 digits / 2) + 1
    assert bench.item_size({"s": {"SS": ["ab", "c"]}, "b": {"BOOL": True}}) == 1 + 3 + 1 + 1
    assert bench.units(1024, 1024) == 1
    assert bench.units(1025, 1024) == 2
    assert bench.units(0, 1024) == 1  # every write costs at least one unit


def test_an_allowed_request_is_copied_into_the_table_only() -> None:
    usage = bench.Table.of(load_template().tables()["UsageTable"])
    [request] = bench.edge_records(1, seed=1)
    copies = usage.copies(to_item(request))
    assert [where for where, _ in copies] == ["table"]


def test_the_aggregates_are_one_page_per_batch_hour_and_shard_with_no_read() -> None:
    from tokenbroker.domain.aggregates import shard_of

    records = bench.edge_records(300, seed=2)
    measured = bench.count_aggregates(records, batch_size=100)
    expected = sum(
        len({(hour_of(r.at_ms), shard_of(r.principal)) for r in records[start : start + 100]})
        for start in range(0, 300, 100)
    )
    counted = measured.counted
    assert counted.calls["PutItem"] == counted.writes == expected
    assert "GetItem" not in counted.calls
    assert counted.read_units == 0
    assert counted.write_units >= expected
    # the auditor's pass read the pages back: one Query per day and shard
    days = len({r.at_ms // 86_400_000 for r in records})
    assert measured.auditor.calls["Query"] >= 16 * days
    assert measured.auditor.read_units > 0


def test_an_allowed_request_costs_one_write_unit() -> None:
    usage = bench.Table.of(load_template().tables()["UsageTable"])
    [request] = bench.edge_records(1, seed=3)
    item = to_item(request, hot_window_days=30)
    assert bench.item_size(item) <= 1024
    assert sum(bench.units(size, 1024) for _, size in usage.copies(item)) == 1


def test_the_time_index_is_one_page_per_batch_and_hour_under_a_twentieth_unit() -> None:
    from boto3.dynamodb.types import TypeDeserializer

    des = TypeDeserializer()
    records = bench.edge_records(3000, seed=6)
    plain = [{k: des.deserialize(v) for k, v in to_item(r).items()} for r in records]
    counted, sizes = bench.count_index(plain, batch_size=1000)
    hours = sum(
        len({hour_of(r.at_ms) for r in records[start : start + 1000]})
        for start in range(0, 3000, 1000)
    )
    # per (batch, hour): a large page item plus its directory item (the pointer)
    assert counted.calls["PutItem"] == counted.writes == 2 * hours == len(sizes)
    assert counted.write_units / len(records) <= 0.05
    assert sum(sizes.values()) < 60 * len(records)  # ~40 B per entry, compressed


def test_the_archive_is_one_gzip_object_per_batch_and_hour() -> None:
    from boto3.dynamodb.types import TypeDeserializer

    des = TypeDeserializer()
    records = bench.edge_records(50, seed=4)
    plain = [{k: des.deserialize(v) for k, v in to_item(r).items()} for r in records]
    sizes = bench.archive_objects(plain, batch_size=20)
    hours = sum(
        len({hour_of(r.at_ms) for r in records[start : start + 20]}) for start in (0, 20, 40)
    )
    assert len(sizes) == hours
    assert all(s > 0 for s in sizes)
    assert sum(sizes) < sum(bench.item_size(to_item(r)) for r in records)  # it compresses


# ---------------------------------------------------------------------- the usage item


def test_the_usage_item_expires_at_the_hot_window_and_keeps_the_retention() -> None:
    from tokenbroker.adapters.ledger_items import RETAIN_UNTIL, from_item

    [request] = bench.edge_records(1, seed=5)
    item = to_item(request, hot_window_days=30)
    assert int(item["ttl"]["N"]) == request.at_ms // 1000 + 30 * 86_400
    assert int(item[RETAIN_UNTIL]["N"]) == request.retain_until
    assert from_item(item) == request  # the record is unchanged: only its TTL moved
    # a window past the retention changes nothing (TTL never later than the retention)
    # (None: no hot window, the item holds the retention)
    assert to_item(request, hot_window_days=10_000) == to_item(request, hot_window_days=None)
    assert RETAIN_UNTIL not in to_item(request, hot_window_days=None)
    # every writer's default is the template's HotWindowDays (30)
    assert to_item(request) == item


def test_the_archive_is_priced_from_the_templates_lifecycle_rule() -> None:
    tiering = bench.archive_tiering(load_template())
    assert tiering == bench.Tiering(storage_class="GLACIER_IR", after_days=30, min_bytes=131072)


def test_archive_pricing_object_by_object() -> None:
    gb = int(bench.GB)
    month = bench.DAYS_PER_MONTH
    tier = bench.Tiering(storage_class="GLACIER_IR", after_days=30, min_bytes=128 * 1024)
    # a small object stays in Standard for the whole retention: no transition, no retrieval
    small = bench.archive_bill([100_000], tier, 400, reads=1)
    assert small == pytest.approx((100_000 / gb * 0.023 * 400 / month, 0.0, 0.0))
    # a large one: 30 days Standard, 370 days Glacier IR, one transition, one read billed
    storage, moves, reads = bench.archive_bill([gb], tier, 400, reads=1)
    assert storage == pytest.approx(0.023 * 30 / month + 0.004 * 370 / month)
    assert moves == pytest.approx(0.02 / 1000)
    assert reads == pytest.approx(0.03)
    # a short retention is billed the class's 90-day minimum after the move
    storage, _, _ = bench.archive_bill([gb], tier, 60, reads=0)
    assert storage == pytest.approx(0.023 * 30 / month + 0.004 * 90 / month)
    # no rule: Standard for the retention
    assert bench.archive_bill([gb], None, 400, reads=5) == pytest.approx(
        (0.023 * 400 / month, 0.0, 0.0)
    )
