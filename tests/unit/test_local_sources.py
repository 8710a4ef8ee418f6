"""The local stack's event sources: DynamoDB stream mappings (polling, filters, batches,
partial failures, retries) and schedules, from template.yaml, on moto in-process and in
a running LocalStack."""

from __future__ import annotations

import copy
import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from click.testing import CliRunner
from moto import mock_aws

from tokenbroker.adapters.aggregates import AggregatesReader
from tokenbroker.adapters.usage import usage_item
from tokenbroker.cli import dev as dev_command
from tokenbroker.domain.models import Decision, UsageRecord
from tokenbroker.local.errors import LocalConfigError
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.sources import (
    LOCAL_MAX_RETRIES,
    EventSources,
    Schedule,
    lambda_record,
    make_streams_client,
    matches,
    rate_seconds,
    scheduled_event,
    schedules,
    stream_mappings,
)
from tokenbroker.local.stack import LocalStack
from tokenbroker.local.template import Template, load_template

REGION = "us-east-1"
STACK = "tb-events"

# ------------------------------------------------------------------ pure pieces


INSERT = {"eventName": ["INSERT"]}
NEW_KIND = {"dynamodb": {"NewImage": {"kind": {"S": ["keep"]}}}}


@pytest.mark.parametrize(
    ("pattern", "record", "expected"),
    [
        (INSERT, {"eventName": "INSERT"}, True),
        (INSERT, {"eventName": "MODIFY"}, False),
        (INSERT, {}, False),
        (NEW_KIND, {"dynamodb": {"NewImage": {"kind": {"S": "keep"}}}}, True),
        (NEW_KIND, {"dynamodb": {"NewImage": {"kind": {"S": "drop"}}}}, False),
        (NEW_KIND, {"dynamodb": {"Keys": {}}}, False),
        ({"eventName": ["INSERT", "MODIFY"]}, {"eventName": "MODIFY"}, True),
        ({"eventName": [{"prefix": "INS"}]}, {"eventName": "INSERT"}, True),
        ({"eventName": [{"suffix": "ERT"}]}, {"eventName": "REMOVE"}, False),
        ({"eventName": [{"anything-but": ["REMOVE"]}]}, {"eventName": "INSERT"}, True),
        ({"eventName": [{"anything-but": "REMOVE"}]}, {"eventName": "REMOVE"}, False),
        ({"eventName": [{"equals-ignore-case": "insert"}]}, {"eventName": "INSERT"}, True),
        ({"userIdentity": [{"exists": False}]}, {"eventName": "REMOVE"}, True),
        ({"userIdentity": [{"exists": True}]}, {"eventName": "REMOVE"}, False),
        (
            {"dynamodb": {"SizeBytes": [{"numeric": [">", 10, "<=", 20]}]}},
            {"dynamodb": {"SizeBytes": 20}},
            True,
        ),
        (
            {"dynamodb": {"SizeBytes": [{"numeric": [">", 10]}]}},
            {"dynamodb": {"SizeBytes": 5}},
            False,
        ),
        ({"dynamodb": {"SizeBytes": [26]}}, {"dynamodb": {"SizeBytes": 26}}, True),
        (
            {"eventName": ["INSERT"], "awsRegion": ["eu-west-1"]},
            {"eventName": "INSERT", "awsRegion": "us-east-1"},
            False,
        ),
    ],
)
def test_filter_patterns_match_as_lambda_event_filtering_does(
    pattern: dict[str, Any], record: dict[str, Any], expected: bool
) -> None:
    assert matches(pattern, record) is expected


@pytest.mark.parametrize(
    ("expression", "seconds"),
    [
        ("rate(15 minutes)", 900.0),
        ("rate(1 minute)", 60.0),
        ("rate(2 hours)", 7200.0),
        ("rate(1 day)", 86400.0),
        ("cron(0 * * * ? *)", None),
        ("every hour", None),
    ],
)
def test_rate_expressions(expression: str, seconds: float | None) -> None:
    assert rate_seconds(expression) == seconds


def test_stream_records_become_lambda_json() -> None:
    raw = {
        "eventID": "e1",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC),
            "Keys": {"id": {"S": "a"}},
            "NewImage": {
                "id": {"S": "a"},
                "blob": {"B": b"\x00\x01"},
                "m": {"M": {"bs": {"BS": [b"x"]}}},
            },
            "SequenceNumber": "100",
            "SizeBytes": 12,
            "StreamViewType": "NEW_IMAGE",
        },
    }

    record = lambda_record(raw, region="eu-west-1", stream_arn="arn:stream")

    when = int(dt.datetime(2027, 1, 15, 8, tzinfo=dt.UTC).timestamp())
    assert record["dynamodb"]["ApproximateCreationDateTime"] == when
    assert record["dynamodb"]["NewImage"]["blob"] == {"B": "AAE="}
    assert record["dynamodb"]["NewImage"]["m"] == {"M": {"bs": {"BS": ["eA=="]}}}
    assert (record["awsRegion"], record["eventSourceARN"]) == ("eu-west-1", "arn:stream")


def test_a_scheduled_event_is_eventbridges_or_the_rules_input() -> None:
    rule = Schedule(
        "Fn",
        "Tick",
        "stack-FnTick",
        "arn:aws:events:us-east-1:1:rule/stack-FnTick",
        "us-east-1",
        "1",
        60.0,
    )
    when = dt.datetime(2027, 1, 15, 8, 0, 5, tzinfo=dt.UTC)

    event = scheduled_event(rule, when)

    assert event == {
        "version": "0",
        "id": event["id"],
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "1",
        "time": "2027-01-15T08:00:05Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:1:rule/stack-FnTick"],
        "detail": {},
    }
    with_input = Schedule(**{**rule.__dict__, "input": {"job": "tick"}})
    assert scheduled_event(with_input, when) == {"job": "tick"}


# ------------------------------------------------------------------ on moto in-process


@dataclass
class Recorder:
    """Stands in for FunctionHost.invoke: records events, answers with ``answer``."""

    answer: Callable[[str, dict[str, Any]], Any] = lambda function, event: {"batchItemFailures": []}
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, function: str, event: dict[str, Any]) -> Any:
        with self.lock:
            self.calls.append((function, copy.deepcopy(event)))
        return self.answer(function, event)

    def ids(self, function: str = "AggregatesFunction") -> list[list[str]]:
        """The record ids of each stream batch delivered to ``function``."""
        return [
            [r["dynamodb"]["NewImage"]["id"]["S"] for r in event["Records"]]
            for name, event in self.calls
            if name == function and "Records" in event
        ]


@dataclass
class Moto:
    deployment: Deployment
    template: Template
    ddb: Any
    logs: list[str] = field(default_factory=list)

    def sources(self, invoke: Recorder, **kwargs: Any) -> EventSources:
        kwargs.setdefault("log", self.logs.append)
        return EventSources(
            self.template,
            self.deployment,
            invoke,
            streams_client=make_streams_client(REGION),
            **kwargs,
        )

    def put(self, *ids: str, table: str = "UsageTable", **attributes: Any) -> None:
        for record_id in ids:
            item = (
                usage_item(record(record_id)) if table == "UsageTable" else {"id": {"S": record_id}}
            )
            item.update(attributes)
            self.ddb.put_item(TableName=self.deployment.refs[table], Item=item)


def record(record_id: str, **overrides: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "record_id": record_id,
        "at_ms": 1_800_000_000_000,
        "decision": Decision.ALLOW,
        "reason": "ok",
        "principal": "tbc_alice",
        "client_id": "tbc_alice",
        "jkt": "jkt-a",
        "token_jti": "jti",
        "proof_jti_hash": "h",
        "method": "GET",
        "route": "/v1/whoami",
        "resource": "",
        "source_ip": "198.51.100.7",
        "user_agent": "ua",
        "request_id": "req",
        "retain_until": 1_900_000_000,
    }
    values.update(overrides)
    return UsageRecord(**values)


def _provisioned(template: Template) -> Iterator[Moto]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        deployment = provision(
            template, session_or_clients=session, stack_name=STACK, region=REGION
        )
        yield Moto(deployment, template, session.client("dynamodb"))


def emulator_template() -> Template:
    """template.yaml with the stream mapping's retry knobs that these emulator tests
    exercise switched on (the deployed AggregatesFunction retries whole, unsplit
    batches: its bucket deltas are keyed by the batch, see tests/aggregates)."""
    real = load_template()
    doc = real.document()
    # the emulator's mechanics on one consumer: the archive's own stream mapping is
    # tested in tests/archive
    doc["Resources"]["ArchiveFunction"]["Properties"].pop("Events", None)
    events = doc["Resources"]["AggregatesFunction"]["Properties"]["Events"]
    events["UsageStream"]["Properties"].update(
        BatchSize=100,
        BisectBatchOnFunctionError=True,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    return Template(doc, real.path)


@pytest.fixture
def moto() -> Iterator[Moto]:
    yield from _provisioned(emulator_template())


def test_the_templates_stream_mapping_and_schedule_are_read(moto: Moto) -> None:
    mappings = {m.function: m for m in stream_mappings(load_template(), moto.deployment)}
    assert set(mappings) == {"AggregatesFunction", "ArchiveFunction"}  # two consumers at most
    mapping = mappings["AggregatesFunction"]
    [digest] = schedules(moto.template, moto.deployment, cap=60)

    assert (mapping.function, mapping.event) == ("AggregatesFunction", "UsageStream")
    assert mapping.stream_arn == moto.deployment.attrs[("UsageTable", "StreamArn")]
    assert (mapping.starting_position, mapping.batch_size, mapping.max_retries) == (
        "TRIM_HORIZON",
        2500,
        10,
    )
    assert not mapping.report_failures
    assert not mapping.bisect
    [emulated] = stream_mappings(moto.template, moto.deployment)
    assert (emulated.batch_size, emulated.report_failures, emulated.bisect) == (100, True, True)
    assert mapping.filters == ({"eventName": ["INSERT"]},)
    assert (digest.function, digest.interval) == ("DigestFunction", 60.0)
    assert (
        digest.rule_arn == f"arn:aws:events:{REGION}:123456789012:rule/{STACK}-DigestFunctionHourly"
    )
    assert schedules(moto.template, moto.deployment, cap=3600)[0].interval == 900.0


def test_drain_delivers_new_records_as_a_genuine_lambda_stream_event(moto: Moto) -> None:
    invoke = Recorder()
    moto.put("r1", "r2", "r3")

    moto.sources(invoke).drain()

    [(function, event)] = invoke.calls
    assert function == "AggregatesFunction"
    assert [r["dynamodb"]["NewImage"] for r in event["Records"]] == [
        usage_item(record(i)) for i in ("r1", "r2", "r3")
    ]
    first = event["Records"][0]
    assert set(first) == {
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    }
    assert (first["eventName"], first["eventSource"], first["awsRegion"]) == (
        "INSERT",
        "aws:dynamodb",
        REGION,
    )
    assert first["eventSourceARN"] == moto.deployment.attrs[("UsageTable", "StreamArn")]
    assert first["dynamodb"]["Keys"] == {"id": {"S": "r1"}}
    assert first["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert isinstance(first["dynamodb"]["ApproximateCreationDateTime"], int)
    sequence = [int(r["dynamodb"]["SequenceNumber"]) for r in event["Records"]]
    assert sequence == sorted(sequence)
    # what the function's Powertools data classes read from it
    parsed = next(DynamoDBStreamEvent(event).records)
    assert parsed.dynamodb is not None
    assert parsed.dynamodb.new_image["id"] == "r1"
    assert parsed.dynamodb.sequence_number == str(sequence[0])


def test_updates_and_deletions_are_filtered_out_by_the_insert_pattern(moto: Moto) -> None:
    invoke = Recorder()
    sources = moto.sources(invoke)
    moto.put("r1")
    sources.drain()
    table = moto.deployment.refs["UsageTable"]
    moto.ddb.update_item(
        TableName=table,
        Key={"id": {"S": "r1"}},
        UpdateExpression="SET reason = :r",
        ExpressionAttributeValues={":r": {"S": "edited"}},
    )
    moto.ddb.delete_item(TableName=table, Key={"id": {"S": "r1"}})

    sources.drain()

    assert invoke.ids() == [["r1"]]


def test_what_was_delivered_is_not_delivered_again(moto: Moto) -> None:
    invoke = Recorder()
    sources = moto.sources(invoke)
    moto.put("r1")
    sources.drain()
    sources.drain()
    moto.put("r2")
    sources.drain()

    assert invoke.ids() == [["r1"], ["r2"]]


def test_records_after_a_cancelled_transaction_on_the_table_are_still_seen(moto: Moto) -> None:
    """moto undoes a cancelled transaction by swapping in a copy of the table (and of
    its stream shard): an iterator taken before would never see new records."""
    invoke = Recorder()
    sources = moto.sources(invoke)
    moto.put("r1")
    sources.drain()
    table = moto.deployment.refs["UsageTable"]
    with pytest.raises(moto.ddb.exceptions.TransactionCanceledException):
        moto.ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": usage_item(record("never"))}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"id": {"S": "missing"}},
                        "ConditionExpression": "attribute_exists(id)",
                    }
                },
            ]
        )
    moto.put("r2")

    sources.drain()

    assert invoke.ids() == [["r1"], ["r2"]]


def test_batches_hold_at_most_batch_size_records(moto: Moto) -> None:
    invoke = Recorder()
    moto.put(*(f"r{i:03d}" for i in range(230)))

    moto.sources(invoke).drain()

    assert [len(batch) for batch in invoke.ids()] == [100, 100, 30]
    assert [i for batch in invoke.ids() for i in batch] == [f"r{i:03d}" for i in range(230)]


def _failing(*ids: str, times: int = 1) -> Callable[[str, dict[str, Any]], Any]:
    """Reports the records ``ids`` as failed, the first ``times`` times each is seen."""
    seen: dict[str, int] = {}

    def answer(function: str, event: dict[str, Any]) -> Any:
        failed = []
        for r in event["Records"]:
            record_id = r["dynamodb"]["NewImage"]["id"]["S"]
            if record_id in ids and seen.get(record_id, 0) < times:
                seen[record_id] = seen.get(record_id, 0) + 1
                failed.append({"itemIdentifier": r["dynamodb"]["SequenceNumber"]})
        return {"batchItemFailures": failed}

    return answer


def test_reported_failures_are_redelivered_from_the_first_failed_record(moto: Moto) -> None:
    invoke = Recorder(_failing("r3", "r1"))
    moto.put("r0", "r1", "r2", "r3", "r4")

    moto.sources(invoke).drain()

    assert invoke.ids() == [["r0", "r1", "r2", "r3", "r4"], ["r1", "r2", "r3", "r4"]]


def test_a_batch_that_keeps_failing_is_dropped_after_maximum_retry_attempts(moto: Moto) -> None:
    invoke = Recorder(_failing("r2", times=1_000))
    sources = moto.sources(invoke)
    moto.put("r0", "r1", "r2", "r3")

    sources.drain()

    assert invoke.ids() == [["r0", "r1", "r2", "r3"]] + [["r2", "r3"]] * 10
    assert moto.logs[-1].startswith(
        "AggregatesFunction.UsageStream: dropped 2 record(s) from sequence"
    )
    moto.put("r4")
    sources.drain()
    assert invoke.ids()[-1] == ["r4"]


def test_a_function_error_bisects_the_batch_until_the_bad_record_is_alone(moto: Moto) -> None:
    def answer(function: str, event: dict[str, Any]) -> Any:
        if any(r["dynamodb"]["NewImage"]["id"]["S"] == "bad" for r in event["Records"]):
            raise RuntimeError("boom")
        return None

    invoke = Recorder(answer)
    moto.put("r0", "r1", "bad", "r3", "r4")

    moto.sources(invoke).drain()

    delivered = [batch for batch in invoke.ids() if "bad" not in batch]
    assert sorted(i for batch in delivered for i in batch) == ["r0", "r1", "r3", "r4"]
    assert ["bad"] in invoke.ids()
    assert any("dropped 1 record(s)" in line for line in moto.logs)
    assert any("the function failed: RuntimeError: boom" in line for line in moto.logs)


def test_an_invalid_item_identifier_fails_the_whole_batch(moto: Moto) -> None:
    answers = iter([{"batchItemFailures": [{"itemIdentifier": "nope"}]}])
    invoke = Recorder(lambda function, event: next(answers, None))
    moto.put("r0", "r1")

    moto.sources(invoke).drain()

    assert invoke.ids() == [["r0", "r1"], ["r0", "r1"]]


def test_started_sources_poll_the_stream_and_run_the_schedules(moto: Moto) -> None:
    invoke = Recorder(lambda function, event: None)
    sources = moto.sources(invoke, schedule_interval=0.05, poll_interval=0.05)
    sources.start()
    try:
        moto.put("r1")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with invoke.lock:
                names = [name for name, _ in invoke.calls]
            if "AggregatesFunction" in names and names.count("DigestFunction") >= 2:
                break
            time.sleep(0.02)
    finally:
        sources.stop()

    assert invoke.ids() == [["r1"]]
    ticks = [event for name, event in invoke.calls if name == "DigestFunction"]
    assert len(ticks) >= 2
    assert ticks[0]["detail-type"] == "Scheduled Event"
    assert ticks[0]["resources"] == [
        f"arn:aws:events:{REGION}:123456789012:rule/{STACK}-DigestFunctionHourly"
    ]
    calls = len(invoke.calls)
    time.sleep(0.2)
    assert len(invoke.calls) == calls  # stopped


def test_a_failing_scheduled_function_is_logged_and_runs_again(moto: Moto) -> None:
    def answer(function: str, event: dict[str, Any]) -> Any:
        raise RuntimeError("digest down")

    sources = moto.sources(Recorder(answer))
    sources.run_schedules()
    sources.run_schedules()

    assert (
        moto.logs == ["DigestFunction.Hourly: the function failed: RuntimeError: digest down"] * 2
    )


# ------------------------------------------------------ a template of our own


OWN_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Things:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      StreamSpecification: {StreamViewType: NEW_IMAGE}
  Watcher:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      Events:
        Changes:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Things.StreamArn
            StartingPosition: LATEST
            BatchSize: 2
            FilterCriteria:
              Filters:
                - Pattern: '{"dynamodb": {"NewImage": {"kind": {"S": [{"prefix": "keep"}]}}}}'
                - Pattern: '{"dynamodb": {"NewImage": {"urgent": {"BOOL": [true]}}}}'
        Tick:
          Type: Schedule
          Properties:
            Schedule: cron(0 * * * ? *)
            Input: '{"job": "tick"}'
        Off:
          Type: Schedule
          Properties:
            Schedule: rate(1 minute)
            Enabled: false
"""


@pytest.fixture
def own(tmp_path: Path) -> Iterator[Moto]:
    path = tmp_path / "template.yaml"
    path.write_text(OWN_TEMPLATE, encoding="utf-8")
    yield from _provisioned(load_template(path))


def test_latest_skips_what_the_stream_held_before_the_start_and_filters_are_ored(own: Moto) -> None:
    invoke = Recorder(lambda function, event: None)
    own.put("old", table="Things", kind={"S": "keep-old"})
    sources = own.sources(invoke, schedule_interval=3600)
    sources.start()
    sources.stop()
    own.put("a", table="Things", kind={"S": "keep-a"})
    own.put("b", table="Things", kind={"S": "drop-b"})
    own.put("c", table="Things", kind={"S": "drop-c"}, urgent={"BOOL": True})
    own.put("d", table="Things", kind={"S": "keep-d"})
    own.put("e", table="Things")

    sources.drain()

    assert invoke.ids("Watcher") == [["a", "c"], ["d"]]


def test_cron_schedules_run_every_interval_with_their_input_and_disabled_ones_not(
    own: Moto,
) -> None:
    [tick] = schedules(own.template, own.deployment, cap=42)
    invoke = Recorder(lambda function, event: None)

    own.sources(invoke).run_schedules()

    assert (tick.event, tick.interval) == ("Tick", 42)
    assert invoke.calls == [("Watcher", {"job": "tick"})]


KEEP_PATTERN = """'{"dynamodb": {"NewImage": {"kind": {"S": [{"prefix": "keep"}]}}}}'"""


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        (
            "StartingPosition: LATEST",
            "StartingPosition: AT_TIMESTAMP",
            "StartingPosition AT_TIMESTAMP",
        ),
        (
            KEEP_PATTERN,
            """'{"eventName": [{"wildcard": "x*"}]}'""",
            "{'wildcard': 'x*'} is not emulated",
        ),
        (KEEP_PATTERN, "'[1, 2]'", "a FilterCriteria pattern must be an object"),
        ("""Input: '{"job": "tick"}'""", "Input: 'not json'", "Input is not JSON"),
        (
            "Schedule: cron(0 * * * ? *)",
            "Schedule: at(2027-01-01T00:00:00)",
            "not rate() or cron()",
        ),
    ],
)
def test_what_cannot_be_emulated_is_an_error_at_start(
    tmp_path: Path, line: str, replacement: str, message: str
) -> None:
    assert line in OWN_TEMPLATE
    path = tmp_path / "template.yaml"
    path.write_text(OWN_TEMPLATE.replace(line, replacement), encoding="utf-8")
    for moto in _provisioned(load_template(path)):
        with pytest.raises(LocalConfigError, match=re.escape(message)):
            moto.sources(Recorder())


# ------------------------------------------------------------------- the local stack


def test_the_local_stack_feeds_the_usage_stream_to_the_aggregates_function() -> None:
    with LocalStack(
        "127.0.0.1", port=0, stack_name="tb-events-stack", log=lambda line: None
    ) as stack:
        assert stack.deployment is not None
        ddb = stack._client("dynamodb")
        for i in range(3):
            item = usage_item(record(f"r{i}", at_ms=1_800_000_000_000 + i))
            ddb.put_item(TableName=stack.deployment.refs["UsageTable"], Item=item)

        stack.drain()

        reader = AggregatesReader(ddb, table=stack.deployment.refs["AggregatesTable"])
        [summary] = reader.summaries(1_800_000_000_000, 1_800_000_000_010)
        assert (summary.principal, summary.requests, summary.allowed) == ("tbc_alice", 3, 3)


def test_dev_passes_the_schedule_interval_to_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    created: dict[str, Any] = {}

    class FakeStack:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            created.update(kwargs)

        def start(self) -> None:
            pass

        def export_lines(self) -> list[str]:
            return ["Local API: http://127.0.0.1:1"]

        def stop(self) -> None:
            pass

    monkeypatch.setattr(dev_command, "LocalStack", FakeStack)
    monkeypatch.setattr(dev_command, "wait_for_signal", lambda: 2)
    runner = CliRunner()

    assert runner.invoke(dev_command.dev, ["--schedule-interval", "5"]).exit_code == 0
    assert created["schedule_interval"] == 5.0
    assert runner.invoke(dev_command.dev, []).exit_code == 0
    assert created["schedule_interval"] == 60.0
    assert runner.invoke(dev_command.dev, ["--schedule-interval", "0"]).exit_code == 2


def test_the_local_retry_cap_stands_in_for_unlimited_retries() -> None:
    assert LOCAL_MAX_RETRIES == 100
