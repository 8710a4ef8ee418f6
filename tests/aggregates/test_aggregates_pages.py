"""The aggregates' pages on moto (tables from template.yaml): the reader gives the answers
of a straightforward in-memory fold on a mixed workload, fails closed naming the period,
and pages stay small at a hot hour."""

from __future__ import annotations

import calendar
import random
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from tokenbroker.adapters.aggregates import (
    PART_RAW_BYTES,
    AggregatesReader,
    DynamoAggregatesStore,
    page_pk,
)
from tokenbroker.domain.aggregates import (
    AGG_SHARDS,
    Contribution,
    PrincipalSummary,
    contribution,
    cover,
    fold,
    shard_of,
    summarize,
)
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.provision import provision
from tokenbroker.local.template import load_template
from tokenbroker.services.aggregates import HOUR_MS, AggregatesService
from tokenbroker.services.anomalies import Thresholds, find_anomalies

REGION = "us-east-1"
#: 2027-01-15T08:00:00Z
T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000
DAY = 24 * HOUR_MS


@pytest.fixture
def aws() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name="tb-pages", region=REGION
        )
        yield session.client("dynamodb"), deployment.refs["AggregatesTable"]


def decode(image: Mapping[str, Any]) -> UsageRecord:
    return image["record"]  # type: ignore[no-any-return]


def mixed_workload(rng: random.Random, n: int) -> list[UsageRecord]:
    """Requests, denials, token issuance and refusals, admin events over three days,
    Zipf-ish principals, a few devices and addresses each, out of order."""
    principals = [f"tbc_{i:03d}" for i in range(20)]
    weights = [1 / (i + 1) for i in range(len(principals))]
    out = []
    for i in range(n):
        who = rng.choices(principals, weights)[0]
        kind = rng.random()
        denied = rng.random() < 0.2
        event = (
            EventType.REQUEST
            if kind < 0.8
            else EventType.TOKEN_ISSUED
            if kind < 0.93
            else EventType.DEVICE_ENROLLED
        )
        if event is EventType.TOKEN_ISSUED and denied:
            event = EventType.TOKEN_DENIED
        out.append(
            UsageRecord(
                record_id=f"r-{i:06d}",
                at_ms=T0 - DAY + rng.randrange(3 * DAY),
                decision=Decision.DENY if denied else Decision.ALLOW,
                reason=rng.choice(["proof_replayed", "insufficient_scope", ""]) if denied else "",
                principal=who,
                client_id=who,
                jkt=f"jkt-{who}-{rng.randrange(4)}",
                token_jti=f"jti-{i}",
                proof_jti_hash="h",
                method="POST",
                route="/v1/models/{model}/invoke",
                resource=rng.choice(["gpt-a", "gpt-b", "gpt-c"]),
                source_ip=f"10.{rng.randrange(3)}.0.{rng.randrange(6)}",
                user_agent="ua",
                request_id=f"q-{i}",
                retain_until=T0 // 1000 + 400 * 86400,
            )
        )
    return out


def in_memory(
    records: Sequence[UsageRecord], since_ms: int, until_ms: int
) -> list[PrincipalSummary]:
    """What the aggregates must say: every record of the widened range, folded at once."""
    span = cover(since_ms, until_ms)
    by: dict[str, list[Contribution]] = {}
    for r in records:
        if span.since_ms <= r.at_ms < span.until_ms:
            c = contribution(r)
            by.setdefault(c.principal, []).append(c)
    return [
        replace(summarize(who, cs), since_ms=span.since_ms, until_ms=span.until_ms)
        for who, cs in sorted(by.items())
    ]


def in_memory_hours(
    records: Sequence[UsageRecord], principal: str, since_ms: int, until_ms: int
) -> list[PrincipalSummary]:
    span = cover(since_ms, until_ms)
    hours: dict[int, list[Contribution]] = {}
    for r in records:
        if r.principal == principal and span.since_ms <= r.at_ms < span.until_ms:
            hours.setdefault(r.at_ms - r.at_ms % HOUR_MS, []).append(contribution(r))
    return [
        replace(summarize(principal, cs), since_ms=start, until_ms=start + HOUR_MS)
        for start, cs in sorted(hours.items())
    ]


class MemorySource:
    """The in-memory fold as an AggregateSource (for the anomaly rules)."""

    def __init__(self, records: Sequence[UsageRecord]) -> None:
        self._records = records

    def summaries(
        self, since_ms: int, until_ms: int, principal: str | None = None
    ) -> list[PrincipalSummary]:
        found = in_memory(self._records, since_ms, until_ms)
        return [s for s in found if principal is None or s.principal == principal]

    def hourly(self, principal: str, since_ms: int, until_ms: int) -> list[PrincipalSummary]:
        return in_memory_hours(self._records, principal, since_ms, until_ms)


def test_summaries_hours_and_anomalies_match_an_in_memory_fold_of_a_mixed_workload(
    aws: tuple[Any, str],
) -> None:
    ddb, table = aws
    rng = random.Random(9)
    records = mixed_workload(rng, 1500)
    service = AggregatesService(store=DynamoAggregatesStore(ddb, table=table), decode=decode)
    start = 0
    while start < len(records):  # batches of uneven sizes, one redelivered
        size = rng.randrange(1, 300)
        batch = [{"record": r} for r in records[start : start + size]]
        service.count_batch(batch)
        if start == 0:
            assert service.count_batch(batch).written == 0
        start += size
    reader = AggregatesReader(ddb, table=table)

    for since, until in [
        (T0 - DAY, T0 + 2 * DAY),  # everything: whole days and edge hours
        (T0, T0 + HOUR_MS),
        (T0 - 5 * HOUR_MS + 17, T0 + 30 * HOUR_MS - 3),  # widened to whole hours, midnight
    ]:
        assert reader.summaries(since, until) == in_memory(records, since, until)
        for who in ("tbc_000", "tbc_019", "tbc_nobody"):
            expected = [s for s in in_memory(records, since, until) if s.principal == who]
            assert reader.summaries(since, until, principal=who) == expected
            assert reader.hourly(who, since, until) == in_memory_hours(records, who, since, until)

    thresholds = Thresholds(max_devices=3, max_ips=8, max_denials=5, baseline_days=1)
    found = find_anomalies(reader, T0 + DAY, T0 + 2 * DAY, thresholds)
    assert found == find_anomalies(MemorySource(records), T0 + DAY, T0 + 2 * DAY, thresholds)
    assert found  # the workload does cross the thresholds


def test_a_hot_hour_of_100k_records_keeps_every_page_far_under_the_item_limit(
    aws: tuple[Any, str],
) -> None:
    """40 full batches (BatchSize 2,500) of one UTC hour; a third of the traffic from one
    principal with 2,000 devices: pages stay small, and the sums are exact."""
    ddb, table = aws
    store = DynamoAggregatesStore(ddb, table=table)
    rng = random.Random(1)
    sizes: list[int] = []
    ddb.meta.events.register(
        "provide-client-params.dynamodb.PutItem",
        lambda params, **kw: sizes.append(len(params["Item"]["e"]["B"])),
    )
    hot: list[Contribution] = []
    n = 0
    for _batch in range(40):
        batch = []
        for _ in range(2500):
            n += 1
            who = "tbc_hot" if rng.random() < 0.33 else f"tbc_{rng.randrange(20_000):05d}"
            c = Contribution(
                record_id=f"r{n:06d}",
                principal=who,
                at_ms=T0 + rng.randrange(HOUR_MS),
                retain_until=1,
                requests=1,
                allowed=1,
                model=f"model-{rng.randrange(50)}",
                device=f"jkt-{who}-{rng.randrange(2000):04d}-" + "x" * 30,
                source_ip=f"10.1.{rng.randrange(3)}.{rng.randrange(200)}",
            )
            batch.append(c)
            if who == "tbc_hot":
                hot.append(c)
        for page in fold(batch):
            store.write(page)

    assert len(sizes) == 40 * AGG_SHARDS
    assert max(sizes) < 100_000  # DynamoDB's limit is 400 KB
    reader = AggregatesReader(ddb, table=table)
    [total] = reader.summaries(T0, T0 + HOUR_MS, principal="tbc_hot")
    expected = summarize("tbc_hot", hot)
    assert (total.requests, total.devices, total.source_ips) == (
        len(hot),
        expected.devices,
        expected.source_ips,
    )
    assert (total.first_seen_ms, total.last_seen_ms) == (
        expected.first_seen_ms,
        expected.last_seen_ms,
    )


def test_a_page_too_large_for_one_item_is_split_into_parts_that_sum(aws: tuple[Any, str]) -> None:
    ddb, table = aws
    store = DynamoAggregatesStore(ddb, table=table)
    # one shard, many principals with long device names: more JSON than one part holds
    names = [f"tbc_{i:05d}" for i in range(5000) if shard_of(f"tbc_{i:05d}") == 3][:250]
    batch = [
        Contribution(f"r{i}-{d}", who, T0 + i, requests=1, device=f"{who}-{d}-" + "k" * 200)
        for i, who in enumerate(names)
        for d in range(4)
    ]
    [page] = fold(batch)
    assert store.write(page)

    items = ddb.scan(TableName=table)["Items"]
    assert len(items) >= 2
    assert all(len(i["e"]["B"]) < PART_RAW_BYTES for i in items)
    found = AggregatesReader(ddb, table=table).summaries(T0, T0 + HOUR_MS)
    assert [(s.principal, s.requests, s.distinct_devices) for s in found] == [
        (who, 4, 4) for who in sorted(names)
    ]


# ------------------------------------------------------------------------ fail closed


def _one_page(ddb: Any, table: str) -> None:
    store = DynamoAggregatesStore(ddb, table=table)
    for page in fold([Contribution("r1", "tbc_alice", T0 + 5, requests=1)]):
        store.write(page)


def test_a_throttled_read_fails_closed_naming_the_period(aws: tuple[Any, str]) -> None:
    ddb, table = aws
    _one_page(ddb, table)

    def throttle(**kw: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
            "Query",
        )

    ddb.query = throttle
    reader = AggregatesReader(ddb, table=table)
    with pytest.raises(TemporarilyUnavailable, match=r"2027-01-15T08\.\.2027-01-15T08.*Throughput"):
        reader.summaries(T0, T0 + HOUR_MS, principal="tbc_alice")
    with pytest.raises(
        TemporarilyUnavailable, match=r"aggregates of 2027-01-15T00\.\.2027-01-15T23"
    ):
        reader.summaries(T0 - 8 * HOUR_MS, T0 + 16 * HOUR_MS)
    with pytest.raises(TemporarilyUnavailable, match="2027-01-15T08"):
        reader.hourly("tbc_alice", T0, T0 + HOUR_MS)


def test_a_missing_table_fails_closed(aws: tuple[Any, str]) -> None:
    ddb, _table = aws
    with pytest.raises(TemporarilyUnavailable, match="ResourceNotFoundException"):
        AggregatesReader(ddb, table="no-such-table").summaries(T0, T0 + HOUR_MS)


def test_a_page_that_does_not_decode_fails_closed_naming_its_hour(aws: tuple[Any, str]) -> None:
    ddb, table = aws
    _one_page(ddb, table)
    [item] = ddb.scan(TableName=table)["Items"]
    ddb.put_item(TableName=table, Item={**item, "e": {"B": b"not zlib"}})

    with pytest.raises(TemporarilyUnavailable, match="hour 2027-01-15T08: a page does not decode"):
        AggregatesReader(ddb, table=table).summaries(T0, T0 + HOUR_MS)


def test_a_half_rewritten_page_fails_closed_rather_than_answering_short(
    aws: tuple[Any, str],
) -> None:
    """A retried batch with more records rewrites its page's parts last to first; cut
    off after part 1, part 0 still names the old writer: the read refuses the hour."""
    ddb, table = aws
    _one_page(ddb, table)
    [item] = ddb.scan(TableName=table)["Items"]
    part1 = {**item, "sk": {"S": item["sk"]["S"][:-3] + "001"}, "w": {"S": "newer"}}
    ddb.put_item(TableName=table, Item={**item, "n": {"N": "2"}})  # part 0 says two parts
    ddb.put_item(TableName=table, Item=part1)  # ... but part 1 is another writer's

    with pytest.raises(TemporarilyUnavailable, match="hour 2027-01-15T08: a page is half"):
        AggregatesReader(ddb, table=table).summaries(T0, T0 + HOUR_MS)


def test_pages_live_in_the_principals_shard_partition_of_the_day(aws: tuple[Any, str]) -> None:
    ddb, table = aws
    _one_page(ddb, table)
    [item] = ddb.scan(TableName=table)["Items"]
    assert item["pk"]["S"] == page_pk("2027-01-15", shard_of("tbc_alice"))
    assert item["sk"]["S"].startswith(hour_of(T0) + "#")


@pytest.mark.parametrize(
    "entries",
    [b'[{"r": 3}]', b'[{"p": "tbc_alice", "r": "many"}]', b'{"p": "tbc_alice"}', b"[7]"],
    ids=["no-principal", "not-a-count", "not-a-list", "not-a-delta"],
)
def test_a_page_whose_deltas_are_malformed_fails_closed_naming_its_hour(
    aws: tuple[Any, str], entries: bytes
) -> None:
    """Valid zlib and JSON, but not deltas we write: the read refuses the hour
    (TemporarilyUnavailable), never a KeyError/TypeError traceback in `audit summary`."""
    ddb, table = aws
    _one_page(ddb, table)
    [item] = ddb.scan(TableName=table)["Items"]
    ddb.put_item(TableName=table, Item={**item, "e": {"B": zlib.compress(entries)}})

    with pytest.raises(TemporarilyUnavailable, match="hour 2027-01-15T08: a page does not decode"):
        AggregatesReader(ddb, table=table).summaries(T0, T0 + HOUR_MS)


@pytest.mark.parametrize("drop", ["w", "n"])
def test_a_page_without_its_writer_or_part_count_fails_closed_naming_its_hour(
    aws: tuple[Any, str], drop: str
) -> None:
    ddb, table = aws
    _one_page(ddb, table)
    [item] = ddb.scan(TableName=table)["Items"]
    ddb.put_item(TableName=table, Item={k: v for k, v in item.items() if k != drop})

    with pytest.raises(TemporarilyUnavailable, match="hour 2027-01-15T08: a page does not decode"):
        AggregatesReader(ddb, table=table).summaries(T0, T0 + HOUR_MS)
