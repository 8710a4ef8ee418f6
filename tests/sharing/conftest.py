"""A template-provisioned stack on moto, with the aggregates function's environment
(which runs the sharing rules), a client and an enrolled device."""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from quotas.module_aws import clear_table, module_aws
from tokenbroker import bootstrap
from tokenbroker.adapters.usage import usage_item
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.domain.rfc7638 import jwk_thumbprint
from tokenbroker.local.lambda_host import LambdaContext, load_handler
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.sources import lambda_record, make_streams_client
from tokenbroker.local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
STACK = "tb-shr"
REGION = "us-east-1"
#: 2027-01-15T08:00:00Z
T0 = calendar.timegm((2027, 1, 15, 8, 0, 0)) * 1000


def new_jkt() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwk_thumbprint(ECAlgorithm.to_jwk(key.public_key(), as_dict=True))


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
    session: Any
    ddb: Any
    streams: Any
    client_id: str = ""
    jkt: str = ""
    queue_url: str = ""
    _position: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000_000)))

    def table(self, logical_id: str) -> str:
        return self.deployment.refs[logical_id]

    def use(self, source_ip: str, *, at_ms: int | None = None, **overrides: Any) -> UsageRecord:
        n = next(self._ids)
        values: dict[str, Any] = {
            "record_id": f"rec-{n:05d}",
            "at_ms": T0 + n if at_ms is None else at_ms,
            "decision": Decision.ALLOW,
            "reason": "ok",
            "principal": self.client_id,
            "client_id": self.client_id,
            "jkt": self.jkt,
            "token_jti": "jti-1",
            "method": "POST",
            "route": "/v1/models/{model}/invoke",
            "resource": "chat",
            "source_ip": source_ip,
            "request_id": f"api-{n}",
            "retain_until": T0 // 1000 + 86400,
        }
        values.update(overrides)
        record = UsageRecord(**values)
        self.ddb.put_item(TableName=self.table("UsageTable"), Item=usage_item(record))
        return record

    def new_records(self) -> list[dict[str, Any]]:
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

    def alert_items(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.table("SharingTable"))["Items"]
        return [i for i in items if i["pk"]["S"].startswith("alert#")]

    def ledger_events(self, event: str) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.table("UsageTable"))["Items"]
        return [i for i in items if i.get("event", {}).get("S") == event]

    def sns_messages(self) -> list[dict[str, Any]]:
        sqs = self.session.client("sqs")
        got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    def device_item(self) -> dict[str, Any]:
        return self.ddb.get_item(
            TableName=self.table("DevicesTable"), Key={"jkt": {"S": self.jkt}}
        )["Item"]


@dataclass
class _Provisioned:
    deployment: Deployment
    session: Any
    queue_url: str
    stream_position: list[str | None]  # where the last test left the usage stream


@pytest.fixture(scope="module")
def _provisioned() -> Iterator[_Provisioned]:
    """The stack, provisioned once per module (most of a test's time); ``stack`` resets
    what a test changes."""
    with module_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            load_template(), session_or_clients=session, stack_name=STACK, region=REGION
        )
        # the platform team's subscription: an SQS queue on the alerts topic
        sqs = session.client("sqs")
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        session.client("sns").subscribe(
            TopicArn=deployment.refs["SharingAlertsTopic"],
            Protocol="sqs",
            Endpoint=queue_arn["Attributes"]["QueueArn"],
            Attributes={"RawMessageDelivery": "true"},
        )
        yield _Provisioned(deployment, session, queue, [None])
    bootstrap.default.cache_clear()


@pytest.fixture
def stack(_provisioned: _Provisioned, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """Per test: empty usage, sharing and aggregates tables, no queued alert, the stream
    read past everything before, a fresh container, a new client with a new device."""
    deployment, session = _provisioned.deployment, _provisioned.session
    for name, value in deployment.environment("AggregatesFunction").items():
        monkeypatch.setenv(name, value)
    ddb = session.client("dynamodb")
    clear_table(ddb, deployment.refs["UsageTable"], ("id",))
    clear_table(ddb, deployment.refs["SharingTable"], ("pk", "sk"))
    clear_table(ddb, deployment.refs["AggregatesTable"], ("pk", "sk"))
    sqs = session.client("sqs")
    while sqs.receive_message(QueueUrl=_provisioned.queue_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        pass
    bootstrap.default.cache_clear()
    container = bootstrap.default()
    client = container.admin.create_client(name="relay", scope="model:chat:invoke").client
    jkt = new_jkt()
    container.admin.enroll_device(client_id=client.client_id, jkt=jkt)
    stack = Stack(deployment, session, ddb, make_streams_client(REGION))
    stack.client_id, stack.jkt, stack.queue_url = client.client_id, jkt, _provisioned.queue_url
    stack._position = _provisioned.stream_position[0]
    while stack.new_records():  # past the earlier tests' and the admin events
        pass
    yield stack
    _provisioned.stream_position[0] = stack._position
    bootstrap.default.cache_clear()


@pytest.fixture
def handler(stack: Stack) -> Any:
    return load_handler(ROOT / "functions" / "aggregates", "app.handler", "AggregatesFunction")
