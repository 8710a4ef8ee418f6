"""The aggregates function, fed genuine DynamoDB stream events in-process, on moto with
the tables provisioned from template.yaml.

Records are written to the usage table as the ledger writes them (``usage_item``) and
read back from its stream, so the events carry exactly what DynamoDB Streams delivers
(Lambda's event source mapping is the only part left out: see tests/unit/
test_local_events.py for the local stack's emulation of it).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from tokenbroker import bootstrap
from tokenbroker.adapters.aggregates import AggregatesReader, DynamoAggregatesStore
from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain import aggregates as domain_aggregates
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.lambda_host import LambdaContext, load_handler
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.sources import lambda_record, make_streams_client
from tokenbroker.local.template import load_template
from tokenbroker.services.aggregates import (
    HOUR_MS,
    Contribution,
    PrincipalSummary,
    contribution,
    fold,
    shard_of,
)

ROOT = Path(__file__).resolve().parents[2]
STACK = "tb-agg"
REGION = "us-east-1"
#: 2027-01-15T08:00:00Z
T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000
RETAIN = T0 // 1000 + 400 * 86400


def context() -> LambdaContext:
    return LambdaContext(
        function_name=f"{STACK}-AggregatesFunction",
        memory_limit_in_mb=128,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{STACK}-Agg",
        aws_request_id="req",
        timeout_seconds=30,
    )


@dataclass
class Stack:
    deployment: Deployment
    ddb: Any
    streams: Any
    _position: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def usage_table(self) -> str:
        return self.deployment.refs["UsageTable"]

    @property
    def reader(self) -> AggregatesReader:
        return AggregatesReader(self.ddb, table=self.deployment.refs["AggregatesTable"])

    def write(self, *records: UsageRecord) -> None:
        for r in records:
            self.ddb.put_item(TableName=self.usage_table, Item=usage_item(r))

    def write_item(self, item: dict[str, Any]) -> None:
        self.ddb.put_item(TableName=self.usage_table, Item=item)

    def record(self, **overrides: Any) -> UsageRecord:
        n = next(self._ids)
        values: dict[str, Any] = {
            "record_id": f"rec-{n:04d}",
            "at_ms": T0 + n * 1000,
            "decision": Decision.ALLOW,
            "reason": "ok",
            "principal": "tbc_alice",
            "client_id": "tbc_alice",
            "jkt": "jkt-a",
            "token_jti": "jti-1",
            "proof_jti_hash": "proof-hash",
            "method": "POST",
            "route": "/v1/models/{model}/invoke",
            "resource": "gpt-secret",
            "source_ip": "198.51.100.7",
            "user_agent": "sdk/1.0",
            "request_id": f"api-req-{n}",
            "retain_until": RETAIN,
        }
        values.update(overrides)
        return UsageRecord(**values)

    def new_records(self) -> list[dict[str, Any]]:
        """What the stream holds after the last call, as Lambda delivers it."""
        arn = self.deployment.attrs[("UsageTable", "StreamArn")]
        [shard] = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard["ShardId"]}
        if self._position is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._position)
        iterator = self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        raw = self.streams.get_records(ShardIterator=iterator)["Records"]
        if raw:
            self._position = raw[-1]["dynamodb"]["SequenceNumber"]
        return [lambda_record(r, region=REGION, stream_arn=arn) for r in raw]

    def aggregate_items(self) -> list[dict[str, Any]]:
        table = self.deployment.refs["AggregatesTable"]
        items = self.ddb.scan(TableName=table)["Items"]
        return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))

    def summary(self, principal: str = "tbc_alice") -> PrincipalSummary:
        [summary] = self.reader.summaries(T0 - HOUR_MS, T0 + HOUR_MS, principal=principal)
        return summary


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name=STACK, region=REGION
        )
        for name, value in deployment.environment("AggregatesFunction").items():
            monkeypatch.setenv(name, value)
        bootstrap.default.cache_clear()
        yield Stack(deployment, session.client("dynamodb"), make_streams_client(REGION))
    bootstrap.default.cache_clear()


@pytest.fixture
def handler(stack: Stack) -> Any:
    """The function as Lambda loads it: in its environment (Powertools reads it once)."""
    return load_handler(ROOT / "functions" / "aggregates", "app.handler", "AggregatesFunction")


# ---------------------------------------------------------------------------- tests


def test_a_batch_of_records_becomes_day_and_hour_counters(stack: Stack, handler: Any) -> None:
    stack.write(
        *(stack.record(jkt=f"jkt-{i % 2}", source_ip=f"10.0.0.{i % 2}") for i in range(5)),
        stack.record(decision=Decision.DENY, reason="proof_replayed"),
        stack.record(decision=Decision.DENY, reason="insufficient_scope", resource="other"),
        stack.record(event=EventType.TOKEN_ISSUED, jkt="jkt-c", source_ip="10.0.0.9", resource=""),
        stack.record(event=EventType.DEVICE_ENROLLED, jkt="jkt-d", source_ip="", resource=""),
        stack.record(principal="tbc_bob", client_id="tbc_bob"),
    )
    records = stack.new_records()
    assert len(records) == 10

    assert handler({"Records": records}, context()) == {"batchItemFailures": []}

    alice = stack.summary()
    assert (alice.requests, alice.allowed, alice.denied) == (7, 5, 2)
    assert alice.denials == {"proof_replayed": 1, "insufficient_scope": 1}
    assert alice.models == {"gpt-secret": 6, "other": 1}
    assert (alice.tokens_issued, alice.admin_events) == (1, {"device_enrolled": 1})
    assert alice.devices == {"jkt-0", "jkt-1", "jkt-a", "jkt-c"}
    assert alice.source_ips == {"10.0.0.0", "10.0.0.1", "198.51.100.7", "10.0.0.9"}
    assert (alice.first_seen_ms, alice.last_seen_ms) == (T0 + 1000, T0 + 9000)
    assert stack.summary("tbc_bob").requests == 1
    # one page per hour and principal shard (a day is the sum of its hours); each
    # holds the newest record's TTL
    keys = [(i["pk"]["S"], i["sk"]["S"]) for i in stack.aggregate_items()]
    assert [k[0] for k in keys if k[0].startswith("AG#")] == [
        f"AG#2027-01-15#{shard_of('tbc_bob'):02d}",
        f"AG#2027-01-15#{shard_of('tbc_alice'):02d}",
    ]
    assert all(k[1].startswith("2027-01-15T08#") and k[1].endswith("#000") for k in keys)
    day = stack.reader.summaries(T0 - 8 * HOUR_MS, T0 + 16 * HOUR_MS, principal="tbc_alice")
    assert day == [
        PrincipalSummary(
            **{**alice.__dict__, "since_ms": T0 - 8 * HOUR_MS, "until_ms": T0 + 16 * HOUR_MS}
        )
    ]
    assert all(
        i["ttl"]["N"] == str(RETAIN)
        for i in stack.aggregate_items()
        if i["pk"]["S"].startswith("AG#")
    )


def test_a_malformed_record_is_skipped_and_the_rest_of_the_batch_is_counted(
    stack: Stack, handler: Any
) -> None:
    stack.write(stack.record())
    stack.write_item({"id": {"S": "bad-1"}, "event": {"S": "request"}})  # no time, no decision
    stack.write(stack.record())
    stack.write_item({**usage_item(stack.record()), "event": {"S": "teleported"}})
    stack.write(stack.record())
    records = stack.new_records()

    # one bad item must not stop the shard: skipped (and logged), not retried
    assert handler({"Records": records}, context()) == {"batchItemFailures": []}
    assert stack.summary().requests == 3


def test_a_batch_writes_each_page_once_whatever_its_size(stack: Stack, handler: Any) -> None:
    stack.write(*(stack.record(jkt=f"jkt-{i % 3}") for i in range(40)))
    stack.write(*(stack.record(principal="tbc_bob", client_id="tbc_bob") for _ in range(10)))
    records = stack.new_records()
    puts: list[str] = []
    client = bootstrap.default().client("dynamodb")
    client.meta.events.register(
        "before-call.dynamodb.PutItem",
        lambda params, **kw: puts.append(json.loads(params["body"])["Item"]["pk"]["S"]),
    )
    reads: list[str] = []
    client.meta.events.register("before-call.dynamodb.GetItem", lambda **kw: reads.append("x"))

    handler({"Records": records}, context())

    # 50 records, 2 principals in one hour and two shards: one page each, no read
    assert sorted(puts) == sorted(f"AG#2027-01-15#{shard_of(p):02d}" for p in ALICE_BOB)
    assert reads == []
    assert (stack.summary().requests, stack.summary("tbc_bob").requests) == (40, 10)


def test_a_redelivered_batch_leaves_the_aggregates_unchanged(stack: Stack, handler: Any) -> None:
    stack.write(*(stack.record(jkt=f"jkt-{i}") for i in range(4)))
    records = stack.new_records()
    handler({"Records": records}, context())
    before = stack.aggregate_items()

    assert handler({"Records": records}, context()) == {"batchItemFailures": []}
    assert handler({"Records": records}, context()) == {"batchItemFailures": []}

    assert stack.aggregate_items() == before
    assert stack.summary().requests == 4


_THROTTLED = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}}


ALICE_BOB = ("tbc_alice", "tbc_bob")


def _page_of(principal: str) -> str:
    return f"AG#2027-01-15#{shard_of(principal):02d}"


def _fail_bucket(pk: str) -> Any:
    """A before-call hook throttling the PutItems of one page partition."""

    def fail(params: dict[str, Any], **kwargs: Any) -> Any:
        item = json.loads(params["body"])["Item"]  # before-call sees the serialised request
        if item["pk"]["S"] != pk:
            return None
        parsed = {**_THROTTLED, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), parsed

    return fail


def test_a_batch_that_fails_half_way_is_retried_without_counting_twice(
    stack: Stack, handler: Any
) -> None:
    stack.write(*(stack.record() for _ in range(3)))
    stack.write(*(stack.record(principal="tbc_bob", client_id="tbc_bob") for _ in range(2)))
    records = stack.new_records()
    client = bootstrap.default().client("dynamodb")
    # bob's page is written first (sorted by shard), then alice's fails
    assert shard_of("tbc_bob") < shard_of("tbc_alice")
    client.meta.events.register("before-call.dynamodb.PutItem", _fail_bucket(_page_of("tbc_alice")))

    with pytest.raises(TemporarilyUnavailable):
        handler({"Records": records}, context())
    assert stack.summary("tbc_bob").requests == 2
    assert stack.reader.summaries(T0, T0 + HOUR_MS, principal="tbc_alice") == []

    bootstrap.default.cache_clear()  # a fresh client, without the fault
    assert handler({"Records": records}, context()) == {"batchItemFailures": []}  # the retry
    assert (stack.summary().requests, stack.summary("tbc_bob").requests) == (3, 2)
    day = stack.reader.summaries(T0 - 8 * HOUR_MS, T0 + 16 * HOUR_MS, principal="tbc_alice")
    assert day[0].requests == 3  # the day bucket too


def test_two_stream_shards_on_one_principal_and_hour_keep_two_pages_that_sum(
    stack: Stack, handler: Any
) -> None:
    """Two stream shards folding the same principal and hour name their pages after
    their own first records: neither replaces the other, and the reader sums both."""
    store = DynamoAggregatesStore(stack.ddb, table=stack.deployment.refs["AggregatesTable"])
    first = fold([contribution(stack.record()), contribution(stack.record())])
    second = fold([contribution(stack.record())])

    assert all(store.write(page) for page in [*second, *first])

    assert stack.summary().requests == 3
    assert len(stack.aggregate_items()) == 2


def test_a_retried_batch_with_more_records_replaces_its_page(stack: Stack) -> None:
    store = DynamoAggregatesStore(stack.ddb, table=stack.deployment.refs["AggregatesTable"])
    one, two = stack.record(), stack.record()
    [short] = fold([contribution(one)])
    [longer] = fold([contribution(one), contribution(two)])
    assert store.write(short)

    assert store.write(longer) is True
    assert store.write(longer) is False  # the same batch again: kept already

    assert stack.summary().requests == 2
    assert len(stack.aggregate_items()) == 1


def test_a_store_failure_fails_the_batch_so_lambda_retries_it_whole(
    stack: Stack, handler: Any
) -> None:
    stack.write(stack.record())
    records = stack.new_records()
    client = bootstrap.default().client("dynamodb")
    client.meta.events.register("before-call.dynamodb.PutItem", _fail_bucket(_page_of("tbc_alice")))

    with pytest.raises(TemporarilyUnavailable):
        handler({"Records": records}, context())


def test_a_batch_writes_no_hour_registry_any_more(stack: Stack, handler: Any) -> None:
    """The hot tier's time index (archive function) replaced the by_hour shard registry:
    a batch writes its pages only (the former ``HOURS`` items cost a write per hour)."""
    written = [stack.record(), stack.record(at_ms=T0 + 2 * HOUR_MS + 7)]
    stack.write(*written)
    handler({"Records": stack.new_records()}, context())
    items = stack.ddb.scan(TableName=stack.deployment.refs["AggregatesTable"])["Items"]
    assert items
    assert {i["pk"]["S"] for i in items} == {_page_of("tbc_alice")}
    assert len(items) == 2  # two hours


def test_records_delivered_out_of_order_keep_exact_first_and_last_seen(
    stack: Stack, handler: Any
) -> None:
    at = [T0 + 5000, T0 + 9000, T0 + 1000, T0 + 7000, T0 + 500]
    stack.write(*(stack.record(at_ms=t) for t in at))

    handler({"Records": stack.new_records()}, context())

    summary = stack.summary()
    assert (summary.first_seen_ms, summary.last_seen_ms) == (T0 + 500, T0 + 9000)
    assert summary.requests == 5


def test_source_ips_stop_growing_at_the_cap_and_flag_the_overflow(
    stack: Stack, handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(domain_aggregates, "MAX_SOURCE_IPS", 3)
    ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.1", "10.0.0.5"]
    stack.write(*(stack.record(source_ip=ip) for ip in ips))

    handler({"Records": stack.new_records()}, context())

    summary = stack.summary()
    assert summary.source_ips == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert summary.source_ips_overflow is True
    assert summary.requests == 6


def test_the_newest_records_ttl_wins_whatever_the_order(stack: Stack) -> None:
    store = DynamoAggregatesStore(stack.ddb, table=stack.deployment.refs["AggregatesTable"])
    batch = []
    for n, (at, ttl) in enumerate([(T0 + 1, 500), (T0 + 2, 900), (T0 + 3, 700)]):
        c = Contribution(f"r{n}", "tbc_alice", at, retain_until=ttl, requests=1)
        batch.append(c)
    for page in fold(batch):
        assert store.write(page) is True

    ttls = [i["ttl"]["N"] for i in stack.aggregate_items()]
    assert ttls == ["900"]


def test_summaries_without_a_principal_list_every_principal_in_the_range(
    stack: Stack, handler: Any
) -> None:
    stack.write(
        stack.record(principal="tbc_bob", client_id="tbc_bob"),
        stack.record(),
        stack.record(at_ms=T0 + 3 * HOUR_MS),  # outside the range below
        stack.record(principal="tbc_carol", client_id="tbc_carol", at_ms=T0 - 26 * HOUR_MS),
    )
    handler({"Records": stack.new_records()}, context())

    found = stack.reader.summaries(T0, T0 + HOUR_MS)

    assert [(s.principal, s.requests) for s in found] == [("tbc_alice", 1), ("tbc_bob", 1)]
    assert stack.reader.summaries(T0 + 5 * HOUR_MS, T0 + 6 * HOUR_MS) == []


def test_a_long_range_reads_days_and_edge_hours_without_double_counting(
    stack: Stack, handler: Any
) -> None:
    hours = [-30, -20, -9, -8, -1, 0, 5, 15, 16, 17, 40]  # around 2027-01-15T08
    stack.write(*(stack.record(at_ms=T0 + h * HOUR_MS + 1) for h in hours))
    handler({"Records": stack.new_records()}, context())

    for since_h, until_h in [(-30, 41), (-20, 17), (-8, 16), (-9, 0), (-25, 20), (0, 1)]:
        [summary] = stack.reader.summaries(
            T0 + since_h * HOUR_MS, T0 + until_h * HOUR_MS, principal="tbc_alice"
        )
        expected = sum(1 for h in hours if since_h <= h < until_h)
        assert summary.requests == expected, (since_h, until_h)


def test_hourly_lists_the_principals_hours_with_records_oldest_first(
    stack: Stack, handler: Any
) -> None:
    stack.write(
        stack.record(at_ms=T0 + 2 * HOUR_MS + 5),
        stack.record(at_ms=T0 + 10),
        stack.record(at_ms=T0 + 20),
        stack.record(at_ms=T0 + 9 * HOUR_MS),  # after the range
    )
    handler({"Records": stack.new_records()}, context())

    hours = stack.reader.hourly("tbc_alice", T0, T0 + 3 * HOUR_MS)

    assert [(h.since_ms, h.until_ms, h.requests) for h in hours] == [
        (T0, T0 + HOUR_MS, 2),
        (T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS, 1),
    ]
    assert stack.reader.hourly("tbc_nobody", T0, T0 + 3 * HOUR_MS) == []
