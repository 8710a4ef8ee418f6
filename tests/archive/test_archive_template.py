"""The archive's side of template.yaml: the Glue table matches what the archive holds,
the bucket policy refuses plain HTTP, the archive function may only put under usage/."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from tokenbroker.adapters import archive
from tokenbroker.adapters.archive import StreamImage
from tokenbroker.adapters.ledger_items import ATTRIBUTES, RETAIN_UNTIL, to_item
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.local.template import Template, load_template

T0 = 1_796_000_000_000  # a ms time
_des = TypeDeserializer()


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    template: Template = load_template()
    found: dict[str, Any] = template.document()["Resources"]
    return found


def _archived_lines() -> list[dict[str, Any]]:
    """The lines the real ArchiveWriter puts in its objects, for a stream batch holding
    every kind of record, each with every field set, as the real writers spell its item
    (``to_item`` with the hot window: ``ttl`` the window's end, ``ru`` the retention)."""
    records = [
        UsageRecord(
            record_id=f"r-{n}",
            at_ms=T0 + n,
            event=event,
            decision=Decision.DENY if event is EventType.TOKEN_DENIED else Decision.ALLOW,
            reason="why",
            principal="arn:aws:iam::123456789012:role/p",
            client_id="tbc_1",
            jkt="j",
            token_jti="t",
            proof_jti_hash="h",
            method="POST",
            route="/v1/models/{model}/invoke",
            resource="m",
            source_ip="203.0.113.7",
            user_agent="ua",
            request_id="req",
            retain_until=T0 // 1000 + 400 * 86_400,
            actor="arn:aws:sts::123456789012:assumed-role/a",
        )
        for n, event in enumerate(EventType)
    ]
    images = [
        StreamImage(
            sequence_number=f"{n:021d}",
            event_id=f"e{n}",
            image={k: _des.deserialize(v) for k, v in to_item(r, hot_window_days=30).items()},
        )
        for n, r in enumerate(records)
    ]
    s3 = _RecordingS3()
    result = archive.ArchiveWriter(s3, bucket="b").archive(images)
    assert result.archived == len(records)
    return [json.loads(line) for body in s3.bodies for line in gzip.decompress(body).splitlines()]


class _RecordingS3:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def put_object(self, **params: Any) -> dict[str, Any]:
        self.bodies.append(params["Body"])
        return {}


def test_the_glue_columns_are_exactly_the_fields_the_archive_objects_carry(
    resources: dict[str, Any],
) -> None:
    table = resources["UsageArchiveTable"]["Properties"]["TableInput"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    lines = _archived_lines()
    carried: dict[str, set[str]] = {}
    for line in lines:
        for name, value in line.items():
            carried.setdefault(name, set()).add("bigint" if isinstance(value, int) else "string")
    assert {name: kinds.pop() for name, kinds in carried.items() if len(kinds) == 1} == columns
    # the item's attributes (and the retention kept beside the hot-window TTL)
    assert set(columns) == {*ATTRIBUTES.values(), RETAIN_UNTIL}
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == (
        "org.openx.data.jsonserde.JsonSerDe"
    )


def test_the_glue_table_projects_the_archive_hours(resources: dict[str, Any]) -> None:
    table = resources["UsageArchiveTable"]["Properties"]["TableInput"]
    params = table["Parameters"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["hour"]
    assert params["projection.enabled"] == "true"
    assert params["projection.hour.format"] == "yyyy-MM-dd'T'HH"  # hour_of()
    assert params["projection.hour.interval.unit"] == "HOURS"
    location = params["storage.location.template"]["Fn::Sub"]
    assert location == "s3://${DigestBucket}/" + archive.hour_prefix("${!hour}")
    assert table["StorageDescriptor"]["Location"]["Fn::Sub"].endswith("/" + archive.PREFIX)


def test_the_bucket_refuses_requests_without_tls(resources: dict[str, Any]) -> None:
    [statement] = resources["DigestBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_archive_is_locked_and_large_objects_move_to_glacier_instant_retrieval(
    resources: dict[str, Any],
) -> None:
    bucket = resources["DigestBucket"]["Properties"]
    assert bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "COMPLIANCE",
        "Days": {"Ref": "UsageRetentionDays"},
    }
    expire, tier = bucket["LifecycleConfiguration"]["Rules"]
    # every archive object expires with the retention (when its lock ends), whatever its size
    assert expire["Prefix"] == archive.PREFIX
    assert "ObjectSizeGreaterThan" not in expire
    assert expire["ExpirationInDays"] == {"Ref": "UsageRetentionDays"}
    assert expire["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    # only objects above the 128 KB minimum the class bills move, when the hot window ends;
    # Instant Retrieval keeps GetObject working (audit usage, Athena): never Flexible/Deep
    assert tier["Prefix"] == archive.PREFIX
    assert int(tier["ObjectSizeGreaterThan"]) == 128 * 1024
    assert tier["Transitions"] == [
        {"StorageClass": "GLACIER_IR", "TransitionInDays": {"Ref": "HotWindowDays"}}
    ]
    assert "ExpirationInDays" not in tier


def test_the_archive_function_may_only_put_under_usage(resources: dict[str, Any]) -> None:
    statements = resources["ArchiveFunction"]["Properties"]["Policies"][0]["Statement"]
    s3 = [s for s in statements if str(s["Action"]).startswith("s3:")]
    assert s3 == [
        {
            "Sid": "WriteArchive",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": {"Fn::Sub": "${DigestBucket.Arn}/" + archive.PREFIX + "*"},
        }
    ]


def test_the_archive_function_writes_the_time_index_and_reads_nothing(
    resources: dict[str, Any],
) -> None:
    """Index pages only (put_item into AggregatesTable): no read, update or delete."""
    statements = resources["ArchiveFunction"]["Properties"]["Policies"][0]["Statement"]
    tables = [s for s in statements if s["Sid"] == "WriteUsageIndex"]
    assert tables == [
        {
            "Sid": "WriteUsageIndex",
            "Effect": "Allow",
            "Action": "dynamodb:PutItem",
            "Resource": {"Fn::GetAtt": ["AggregatesTable", "Arn"]},
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["IX#*", "IXP#*"]}},
        }
    ]
    env = resources["ArchiveFunction"]["Properties"]["Environment"]["Variables"]
    assert env["AGGREGATES_TABLE"] == {"Ref": "AggregatesTable"}
    assert env["USAGE_HOT_WINDOW_DAYS"] == {"Ref": "HotWindowDays"}
