"""The hot tier's time index (adapters/archive_index.py), written by ArchiveFunction on
genuine stream events and read by ``audit usage``/export: same answers as the records
written, DynamoDB requests proportional to the records (not the hours of the range),
filters that fetch only matching ids, idempotent retries, fail-closed reads."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from botocore.exceptions import ClientError

from support.archive_stack import DAY, HOUR, T0, Stack
from tokenbroker.adapters.archive_index import (
    INLINE_BYTES,
    HotIndex,
    decode_entries,
    directory_key,
)
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import UsageRecord
from tokenbroker.services.audit import AuditService, UsageFilters


class Counting:
    """A DynamoDB client that counts calls (and keys asked of BatchGetItem per table)."""

    def __init__(self, inner: Any, *, fail: str = "") -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()
        self._fail = fail

    def __getattr__(self, name: str) -> Any:
        operation = getattr(self._inner, name)

        def call(**kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "batch_get_item":
                for table, spec in kwargs["RequestItems"].items():
                    self.keys[table] += len(spec["Keys"])
            if name == self._fail:
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException"}}, name
                )
            return operation(**kwargs)

        return call


def _index(stack: Stack, ddb: Any) -> HotIndex:
    settings = stack.settings()
    return HotIndex(ddb, table=settings.aggregates_table, usage_table=stack.table)


def _audit(stack: Stack, ddb: Any) -> AuditService:
    return AuditService(index=_index(stack, ddb))


def _ids(records: list[UsageRecord]) -> list[str]:
    return [r.record_id for r in records]


def _newest(records: list[UsageRecord]) -> list[str]:
    return _ids(sorted(records, key=lambda r: (r.at_ms, r.record_id), reverse=True))


def test_delivered_records_are_found_newest_first_and_filtered_exactly(stack: Stack) -> None:
    alice = [stack.record(T0 + n * 600_000 + 7) for n in range(5)]
    bob = [
        stack.record(T0 + HOUR + 5, principal="tbc_bob", jkt="jkt-b", resource="model:embed"),
        stack.record(T0 + 20, principal="tbc_bob", jkt="jkt-b"),
    ]
    stack.allow(*alice, *bob)
    stack.deliver()
    audit = stack.container().audit  # the deployment's wiring: AuditTiers on the index
    everything = UsageFilters(T0, T0 + 2 * HOUR)
    assert _ids(audit.usage(everything, limit=1000).records) == _newest(alice + bob)
    got = audit.usage(UsageFilters(T0, T0 + 2 * HOUR, principal="tbc_bob"), limit=1000)
    assert _ids(got.records) == _newest(bob)
    got = audit.usage(UsageFilters(T0, T0 + 2 * HOUR, model="model:embed"), limit=1000)
    assert _ids(got.records) == _ids(bob[:1])
    got = audit.usage(UsageFilters(T0, T0 + 2 * HOUR, device="jkt-a", token="jti-3"), limit=10)
    assert _ids(got.records) == ["rec-00003"]
    # half-open range; records come back as written
    first = alice[0]
    assert _ids(audit.usage(UsageFilters(first.at_ms, first.at_ms + 1)).records) == ["rec-00001"]
    assert first.record_id not in _ids(audit.usage(UsageFilters(T0, first.at_ms)).records)
    assert audit.usage(UsageFilters(T0, T0 + HOUR, principal="tbc_bob"), limit=1).records == [
        bob[1]
    ]
    exported = list(audit.export(T0, T0 + 2 * HOUR))
    assert _ids(exported) == list(reversed(_newest(alice + bob)))


def test_pages_with_a_next_token_join_to_the_whole_result(stack: Stack) -> None:
    records = [stack.record(T0 + (n // 3) * 1000) for n in range(12)]  # runs of equal at
    stack.allow(*records)
    stack.deliver()
    audit = stack.container().audit
    filters = UsageFilters(T0, T0 + HOUR)
    pages = [audit.usage(filters, limit=5)]
    while pages[-1].next_token:
        pages.append(audit.usage(filters, limit=5, cursor=pages[-1].next_token or ""))
    assert _ids(pages[0].records) == _newest(records)[:5]
    assert [i for p in pages for i in _ids(p.records)] == _newest(records)


def test_an_unfiltered_quiet_day_costs_requests_by_records_not_by_hours(stack: Stack) -> None:
    records = [stack.record(T0 + n * 3 * HOUR + 11) for n in range(3)]  # 3 hours of 24
    stack.allow(*records)
    stack.deliver()
    ddb = Counting(stack.ddb)
    day = _audit(stack, ddb).usage(UsageFilters(T0 - 12 * HOUR, T0 + 12 * HOUR), limit=50)
    assert _ids(day.records) == _newest(records)
    # one directory Query (one month) and one BatchGetItem per hour with records
    assert ddb.calls == Counter({"query": 1, "batch_get_item": 3})
    # 25 days (two months): one more Query, nothing per empty hour
    ddb.calls.clear()
    month = _audit(stack, ddb).usage(UsageFilters(T0 - 25 * DAY, T0 + 12 * HOUR), limit=50)
    assert _ids(month.records) == _newest(records)
    assert ddb.calls == Counter({"query": 2, "batch_get_item": 3})
    # an empty range: no record read at all
    ddb.calls.clear()
    assert _audit(stack, ddb).usage(UsageFilters(T0 - 10 * DAY, T0 - 9 * DAY)).records == []
    assert ddb.calls == Counter({"query": 1})


def test_a_principal_filter_fetches_only_that_principals_records(stack: Stack) -> None:
    others = [stack.record(T0 + n * 1000) for n in range(40)]
    carol = [stack.record(T0 + 500 + n * 7000, principal="tbc_carol") for n in range(3)]
    stack.allow(*others, *carol)
    stack.deliver()
    ddb = Counting(stack.ddb)
    got = _audit(stack, ddb).usage(UsageFilters(T0, T0 + HOUR, principal="tbc_carol"))
    assert _ids(got.records) == _newest(carol)
    assert ddb.keys[stack.table] == 3  # not the 43 records of the hour


def test_a_retried_batch_rewrites_the_same_pages_and_counts_nothing_twice(stack: Stack) -> None:
    records = [stack.record(T0 + n) for n in range(4)] + [stack.record(T0 + HOUR + 1)]
    stack.allow(*records)
    event = stack.deliver()
    index_table = stack.settings().aggregates_table
    before = stack.ddb.query(
        TableName=index_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": directory_key(hour_of(T0))}},
    )["Items"]
    from support.archive_stack import context

    stack.archive_handler(event, context("ArchiveFunction"))  # Lambda's retry
    after = stack.ddb.query(
        TableName=index_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": directory_key(hour_of(T0))}},
    )["Items"]
    assert len(after) == len(before) == 2  # one page per batch and hour
    assert after == before
    got = stack.container().audit.usage(UsageFilters(T0, T0 + 2 * HOUR), limit=100)
    assert _ids(got.records) == _newest(records)


def test_records_the_stream_has_not_delivered_are_not_seen_yet(stack: Stack) -> None:
    seen = stack.record(T0 + 1)
    stack.allow(seen)
    stack.deliver()
    pending = stack.record(T0 + 2)
    stack.allow(pending)
    audit = stack.container().audit
    assert _ids(audit.usage(UsageFilters(T0, T0 + HOUR)).records) == ["rec-00001"]
    stack.deliver()
    assert _ids(audit.usage(UsageFilters(T0, T0 + HOUR)).records) == ["rec-00002", "rec-00001"]


def test_a_large_batch_goes_to_page_partitions_and_reads_back(stack: Stack) -> None:
    records = [stack.record(T0 + n * 10, principal=f"tbc_p{n % 7}") for n in range(300)]
    stack.allow(*records)
    stack.deliver()
    index_table = stack.settings().aggregates_table
    [directory] = stack.ddb.query(
        TableName=index_table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": directory_key(hour_of(T0))}},
    )["Items"]
    assert "e" not in directory
    assert directory["k"]["S"].startswith(f"IXP#{hour_of(T0)}#")
    page = stack.ddb.get_item(
        TableName=index_table,
        Key={"pk": directory["k"], "sk": {"S": directory["sk"]["S"].split("#", 1)[1]}},
    )["Item"]
    blob = page["e"]["B"]
    assert len(blob) > INLINE_BYTES
    assert len(decode_entries(blob)) == 300
    # compact: well under a tenth of a write unit (1 KB) per record
    assert len(blob) / 300 < 0.05 * 1024
    got = list(stack.container().audit.export(T0, T0 + HOUR))
    assert _ids(got) == list(reversed(_newest(records)))
    p3 = stack.container().audit.usage(UsageFilters(T0, T0 + HOUR, principal="tbc_p3"), 1000)
    assert _ids(p3.records) == _newest([r for r in records if r.principal == "tbc_p3"])


def test_a_failed_read_fails_closed_naming_the_hour(stack: Stack) -> None:
    stack.allow(stack.record(T0 + 1))
    stack.deliver()
    audit = _audit(stack, Counting(stack.ddb, fail="batch_get_item"))
    with pytest.raises(TemporarilyUnavailable, match=f"hour {hour_of(T0)}"):
        audit.usage(UsageFilters(T0, T0 + HOUR))
    audit = _audit(stack, Counting(stack.ddb, fail="query"))
    with pytest.raises(TemporarilyUnavailable, match="usage index"):
        audit.usage(UsageFilters(T0, T0 + HOUR))


def test_a_record_the_index_names_but_the_table_lacks_is_an_error_not_a_gap(
    stack: Stack,
) -> None:
    kept, gone = stack.record(T0 + 1), stack.record(T0 + 2)
    stack.allow(kept, gone)
    stack.deliver()
    stack.ddb.delete_item(TableName=stack.table, Key={"id": {"S": gone.record_id}})
    with pytest.raises(TemporarilyUnavailable, match=f"hour {hour_of(T0)}: 1 indexed record"):
        stack.container().audit.usage(UsageFilters(T0, T0 + HOUR))


def test_an_index_write_failure_fails_the_batch_so_lambda_retries_it(stack: Stack) -> None:
    from tokenbroker.adapters.archive import ArchiveWriteFailed, ArchiveWriter, StreamImage
    from tokenbroker.adapters.archive_index import HotIndexWriter

    writer = ArchiveWriter(
        stack.s3,
        bucket=stack.bucket,
        index=HotIndexWriter(
            Counting(stack.ddb, fail="put_item"),
            table=stack.settings().aggregates_table,
            hot_window_days=30,
        ),
    )
    image = {"id": "rec-x", "at": T0 + 1, "principal": "tbc_alice"}
    with pytest.raises(ArchiveWriteFailed, match=f"usage index for hour {hour_of(T0)}"):
        writer.archive([StreamImage("100", "ev-1", image)])
