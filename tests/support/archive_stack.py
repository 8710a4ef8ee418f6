"""A deployment provisioned from template.yaml into moto, with the usage stream's two
consumers (ArchiveFunction and AggregatesFunction) fed genuine stream events in-process
(what the local stack's event source mapping does), a fixed clock, and the container."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tokenbroker import bootstrap
from tokenbroker.adapters.archive import PREFIX
from tokenbroker.adapters.usage import DynamoUsageLedger
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.lambda_host import LambdaContext, load_handler
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.sources import lambda_record, make_streams_client
from tokenbroker.local.template import load_template
from tokenbroker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STACK = "tb-arch"
REGION = "us-east-1"
#: 2027-01-15T08:00:00Z, the top of a UTC hour
T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000
HOUR = 3_600_000
DAY = 24 * HOUR
WINDOW_DAYS = 30


def context(name: str) -> LambdaContext:
    return LambdaContext(
        function_name=f"{STACK}-{name}",
        memory_limit_in_mb=256,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{STACK}-{name}",
        aws_request_id="req",
        timeout_seconds=60,
    )


@dataclass
class Stack:
    deployment: Deployment
    session: boto3.Session
    clock: FixedClock
    archive_handler: Any
    aggregates_handler: Any
    _position: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    @property
    def ddb(self) -> Any:
        return self.session.client("dynamodb")

    @property
    def s3(self) -> Any:
        return self.session.client("s3")

    @property
    def table(self) -> str:
        return self.deployment.refs["UsageTable"]

    @property
    def bucket(self) -> str:
        return self.deployment.refs["DigestBucket"]

    def settings(self) -> Settings:
        env = {
            **self.deployment.environment("DigestFunction"),
            **self.deployment.environment("AggregatesFunction"),
        }
        return Settings.from_mapping(env)

    def container(self) -> bootstrap.Container:
        return bootstrap.build(self.settings(), aws=self.session.client, clock=self.clock)

    def record(self, at_ms: int, **overrides: Any) -> UsageRecord:
        n = next(self._ids)
        values: dict[str, Any] = {
            "record_id": f"rec-{n:05d}",
            "at_ms": at_ms,
            "decision": Decision.ALLOW,
            "reason": "ok",
            "principal": "tbc_alice",
            "client_id": "tbc_alice",
            "jkt": "jkt-a",
            "token_jti": f"jti-{n}",
            "proof_jti_hash": f"proof-{n}",
            "method": "POST",
            "route": "/v1/models/{model}/invoke",
            "resource": "model:gpt-secret",
            "source_ip": "198.51.100.7",
            "user_agent": "sdk/1.0",
            "request_id": f"api-req-{n}",
            # the hot tier keeps an item for the hot window (TTL), the archive for longer
            "retain_until": at_ms // 1000 + WINDOW_DAYS * 86_400,
            "event": EventType.REQUEST,
        }
        values.update(overrides)
        return UsageRecord(**values)

    def allow(self, *records: UsageRecord) -> None:
        """Recorded as the edge records an allowed request (its usage ledger adapter)."""
        ledger = DynamoUsageLedger(self.ddb, usage_table=self.table)
        for r in records:
            ledger.record_use(r)

    def stream_event(self) -> dict[str, Any]:
        """The stream's records since the last call, as Lambda delivers them."""
        streams = make_streams_client(REGION)
        arn = self.deployment.attrs[("UsageTable", "StreamArn")]
        [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        kwargs: dict[str, Any] = {"StreamArn": arn, "ShardId": shard["ShardId"]}
        if self._position is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._position)
        iterator = streams.get_shard_iterator(**kwargs)["ShardIterator"]
        raw = streams.get_records(ShardIterator=iterator)["Records"]
        if raw:
            self._position = raw[-1]["dynamodb"]["SequenceNumber"]
        inserts = [r for r in raw if r["eventName"] == "INSERT"]  # the FilterCriteria
        return {"Records": [lambda_record(r, region=REGION, stream_arn=arn) for r in inserts]}

    def deliver(self) -> dict[str, Any]:
        """Both consumers of the stream get the new records (one batch)."""
        event = self.stream_event()
        if event["Records"]:
            self.archive_handler(event, context("ArchiveFunction"))
            self.aggregates_handler(event, context("AggregatesFunction"))
        return event

    def archive_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PREFIX)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name=STACK, region=REGION
        )
        env = {
            **deployment.environment("ArchiveFunction"),
            **deployment.environment("AggregatesFunction"),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        bootstrap.default.cache_clear()
        archive = load_handler(ROOT / "functions" / "archive", "app.handler", "ArchiveFunction")
        aggregates = load_handler(
            ROOT / "functions" / "aggregates", "app.handler", "AggregatesFunction"
        )
        clock = FixedClock((T0 + 2 * HOUR) / 1000)
        yield Stack(deployment, session, clock, archive, aggregates)
    bootstrap.default.cache_clear()
