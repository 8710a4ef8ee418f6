"""The archive's side of template.yaml: the Glue table matches what the archive holds,
the bucket policy refuses plain HTTP, the archive function may only put under usage/."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbroker.adapters import archive
from tokenbroker.adapters.ledger_items import ATTRIBUTES
from tokenbroker.local.template import Template, load_template


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    template: Template = load_template()
    found: dict[str, Any] = template.document()["Resources"]
    return found


def test_the_glue_columns_are_the_usage_item_attributes(resources: dict[str, Any]) -> None:
    table = resources["UsageArchiveTable"]["Properties"]["TableInput"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    # the archive stores the stream's images: the item's attribute names (the index
    # keys aside, which Athena does not need)
    assert set(columns) == set(ATTRIBUTES.values())
    assert columns[ATTRIBUTES["at_ms"]] == columns[ATTRIBUTES["retain_until"]] == "bigint"
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


def test_the_archive_is_locked_and_moves_to_infrequent_access(resources: dict[str, Any]) -> None:
    bucket = resources["DigestBucket"]["Properties"]
    assert bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {
        "Mode": "COMPLIANCE",
        "Days": {"Ref": "UsageRetentionDays"},
    }
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["Prefix"] == archive.PREFIX
    assert rule["Transitions"] == [{"StorageClass": "STANDARD_IA", "TransitionInDays": 30}]
    assert rule["ExpirationInDays"] == {"Ref": "UsageRetentionDays"}


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
        }
    ]
    env = resources["ArchiveFunction"]["Properties"]["Environment"]["Variables"]
    assert env["AGGREGATES_TABLE"] == {"Ref": "AggregatesTable"}
    assert env["USAGE_HOT_WINDOW_DAYS"] == {"Ref": "HotWindowDays"}
