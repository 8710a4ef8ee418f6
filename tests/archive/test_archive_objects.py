"""The archive writer (ArchiveFunction on genuine stream events) and reader on moto S3
under the template's Object Lock: one deterministic gzip JSONL object per batch and
hour, retries rewrite the same bytes, S3 faults fail the batch or the read (naming the
hour), never a shorter answer."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from support.archive_stack import HOUR, T0, Stack, context
from tokenbroker.adapters.archive import (
    ArchiveReader,
    ArchiveUnavailable,
    ArchiveWriteFailed,
    StreamImage,
    encode_object,
    plan_batch,
)
from tokenbroker.adapters.ledger_items import from_plain
from tokenbroker.domain.ledger import hour_of, record_hash


def _reader(stack: Stack, s3: Any) -> ArchiveReader:
    return ArchiveReader(s3, bucket=stack.bucket)


def test_a_batch_becomes_one_sorted_object_per_hour_it_touches(stack: Stack) -> None:
    late = [stack.record(T0 + HOUR - 5), stack.record(T0 + 10)]
    early = [stack.record(T0 + HOUR + 1), stack.record(T0 + 10)]  # same ms as one above
    stack.allow(*late, *early)
    stack.deliver()
    keys = stack.archive_keys()
    assert [k.split("/")[1] for k in keys] == [
        f"hour={hour_of(T0)}",
        f"hour={hour_of(T0 + HOUR)}",
    ]
    assert all(k.endswith(".jsonl.gz") for k in keys)
    body = stack.s3.get_object(Bucket=stack.bucket, Key=keys[0])["Body"].read()
    lines = [json.loads(x) for x in gzip.decompress(body).splitlines()]
    assert [(x["at"], x["id"]) for x in lines] == sorted(
        (r.at_ms, r.record_id) for r in (late + early) if r.at_ms < T0 + HOUR
    )
    # what the table holds, attribute for attribute: the hash is the item's hash
    item = stack.ddb.get_item(TableName=stack.table, Key={"id": {"S": lines[0]["id"]}})["Item"]
    from tokenbroker.adapters.ledger_scan import plain

    assert record_hash(lines[0]) == record_hash(plain(item))
    assert from_plain(lines[0]).record_id == lines[0]["id"]


def test_objects_are_locked_and_cannot_be_deleted(stack: Stack) -> None:
    stack.allow(stack.record(T0 + 1))
    stack.deliver()
    [key] = stack.archive_keys()
    head = stack.s3.head_object(Bucket=stack.bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    version = head["VersionId"]
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        stack.s3.delete_object(Bucket=stack.bucket, Key=key, VersionId=version)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_retried_batch_rewrites_the_same_names_with_the_same_bytes(stack: Stack) -> None:
    stack.allow(stack.record(T0 + 5), stack.record(T0 + HOUR + 5))
    event = stack.deliver()
    first = {
        k: stack.s3.get_object(Bucket=stack.bucket, Key=k)["Body"].read()
        for k in stack.archive_keys()
    }
    stack.archive_handler(event, context("ArchiveFunction"))  # Lambda delivers it again
    again = {
        k: stack.s3.get_object(Bucket=stack.bucket, Key=k)["Body"].read()
        for k in stack.archive_keys()
    }
    assert again == first
    for key in first:
        versions = stack.s3.list_object_versions(Bucket=stack.bucket, Prefix=key)["Versions"]
        assert len({v["ETag"] for v in versions}) == 1  # two versions, identical bytes


def test_a_retry_carrying_more_records_of_the_hour_rewrites_the_same_object() -> None:
    def image(n: int, at: int) -> StreamImage:
        return StreamImage(f"{100 + n}", f"ev-{n}", {"id": f"r{n}", "at": at})

    first = plan_batch([image(1, T0 + 3), image(2, T0 + 1)])
    bigger = plan_batch([image(1, T0 + 3), image(2, T0 + 1), image(3, T0 + 2)])
    assert list(first) == list(bigger)  # same name: a superset, never a second object
    [(hour, images)] = bigger.values()
    assert hour == hour_of(T0)
    body = gzip.decompress(encode_object(images))
    assert [json.loads(x)["id"] for x in body.splitlines()] == ["r2", "r3", "r1"]


def test_a_failed_put_fails_the_batch_and_the_retry_archives_everything(stack: Stack) -> None:
    records = [stack.record(T0 + 5), stack.record(T0 + HOUR + 5)]
    stack.allow(*records)
    event = stack.stream_event()
    from tokenbroker import bootstrap

    s3 = bootstrap.default().archive_writer._s3
    calls = {"n": 0}

    def second_put_fails(**_: Any) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:  # the second object, every attempt
            raise ReadTimeoutError(endpoint_url="https://s3")

    s3.meta.events.register("before-send.s3.PutObject", second_put_fails)
    with pytest.raises(ArchiveWriteFailed, match=f"hour {hour_of(T0 + HOUR)}.*ReadTimeoutError"):
        stack.archive_handler(event, context("ArchiveFunction"))
    s3.meta.events.unregister("before-send.s3.PutObject", second_put_fails)
    stack.archive_handler(event, context("ArchiveFunction"))  # the retry
    reader = _reader(stack, stack.s3)
    ids = [x["id"] for x in reader.records(T0, T0 + 2 * HOUR)]
    assert sorted(ids) == sorted(r.record_id for r in records)  # each once


def test_a_stream_record_that_is_not_a_ledger_record_is_skipped(stack: Stack) -> None:
    stack.allow(stack.record(T0 + 5))
    stack.ddb.put_item(TableName=stack.table, Item={"id": {"S": "odd"}, "at": {"S": "soon"}})
    stack.deliver()
    ids = [x["id"] for x in _reader(stack, stack.s3).records(T0, T0 + HOUR)]
    assert ids == ["rec-00001"]


# ---------------------------------------------------------------------- reading
def test_object_records_stream_one_object_in_time_order_within_the_range(stack: Stack) -> None:
    records = [stack.record(T0 + n * 60_000) for n in (5, 1, 3)]
    stack.allow(*records)
    stack.deliver()
    reader = _reader(stack, stack.s3)
    [name] = reader.objects(T0, T0 + HOUR)
    got = list(reader.object_records(name, T0 + 60_000, T0 + 4 * 60_000))
    assert [x["at"] for x in got] == [T0 + 60_000, T0 + 3 * 60_000]
    with pytest.raises(ValueError, match="one UTC hour"):
        reader.segments(T0, T0 + HOUR + 1)


def test_a_segment_merges_its_group_of_objects_in_time_order(stack: Stack) -> None:
    batches = [[stack.record(T0 + n * 1000 + b) for n in range(4)] for b in range(3)]
    for batch in batches:
        stack.allow(*batch)
        stack.deliver()  # one object per batch
    reader = ArchiveReader(stack.s3, bucket=stack.bucket, groups=1)  # all in one group
    assert len(reader.objects(T0, T0 + HOUR)) == 3
    [segment] = reader.segments(T0, T0 + HOUR)
    got = [(x["at"], x["id"]) for x in reader.segment_records(segment, T0, T0 + HOUR)]
    assert got == sorted((r.at_ms, r.record_id) for batch in batches for r in batch)
    # the deployment's grouping: the same objects, the same records
    spread = ArchiveReader(stack.s3, bucket=stack.bucket)
    again = [
        (x["at"], x["id"])
        for g in spread.segments(T0, T0 + HOUR)
        for x in spread.segment_records(g, T0, T0 + HOUR)
    ]
    assert sorted(again) == got


def test_a_deleted_object_fails_the_hour_naming_it(stack: Stack) -> None:
    stack.allow(stack.record(T0 + 5))
    stack.deliver()
    [key] = stack.archive_keys()
    stack.s3.delete_object(Bucket=stack.bucket, Key=key)  # a delete marker
    with pytest.raises(ArchiveUnavailable, match=f"hour {hour_of(T0)}: {key} is deleted"):
        list(_reader(stack, stack.s3).records(T0, T0 + HOUR))


def test_a_missing_object_fails_naming_the_hour(stack: Stack) -> None:
    reader = _reader(stack, stack.s3)
    with pytest.raises(ArchiveUnavailable, match=f"hour {hour_of(T0)}: .*gone.jsonl.gz is missing"):
        list(reader.object_records("gone", T0, T0 + HOUR))


def test_an_unreadable_object_fails_naming_the_hour(stack: Stack) -> None:
    key = f"usage/hour={hour_of(T0)}/junk.jsonl.gz"
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=b"not gzip", ChecksumAlgorithm="SHA256")
    with pytest.raises(ArchiveUnavailable, match=f"hour {hour_of(T0)}: {key} is not readable gzip"):
        list(_reader(stack, stack.s3).records(T0, T0 + HOUR))
    stack.s3.put_object(
        Bucket=stack.bucket, Key=key, Body=gzip.compress(b"{}\n"), ChecksumAlgorithm="SHA256"
    )
    with pytest.raises(ArchiveUnavailable, match="line 1 is not a record"):
        list(_reader(stack, stack.s3).records(T0, T0 + HOUR))


@pytest.mark.parametrize("operation", ["ListObjectVersions", "GetObject"])
def test_s3_failures_fail_closed_naming_the_hour(stack: Stack, operation: str) -> None:
    stack.allow(stack.record(T0 + 5))
    stack.deliver()
    s3 = stack.s3

    def timeout(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://s3")

    s3.meta.events.register(f"before-send.s3.{operation}", timeout)
    with pytest.raises(ArchiveUnavailable, match=f"hour {hour_of(T0)}: .*ReadTimeoutError"):
        list(_reader(stack, s3).records(T0, T0 + HOUR))
