"""Both tiers end to end on moto: records recorded as the edge records them, the usage
stream delivered to its two consumers (archive + aggregates), the digests sealed from
the archive, then verify across tiers, the forced move (hot items deleted as TTL would,
the clock past the hot window: the same ``audit usage`` answer) and the attacks."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from support.archive_stack import DAY, HOUR, T0, WINDOW_DAYS, Stack
from tokenbroker.adapters.archive import encode_object
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.services.audit_query import UsageFilters
from tokenbroker.services.digest_verify import PeriodReport

SEALED_AT = T0 + 3 * HOUR + 16 * 60_000  # the hours T0 and T0+1h are due (grace 15 min)


def _ledger(stack: Stack) -> dict[str, list[str]]:
    """Records over two hours, two principals, delivered and sealed."""
    alice = [stack.record(T0 + n * 600_000) for n in range(6)]
    bob = [stack.record(T0 + HOUR + n * 900_000, principal="tbc_bob") for n in range(3)]
    stack.allow(*alice[:3])
    stack.deliver()  # two batches: two objects in the first hour
    stack.allow(*alice[3:], *bob)
    stack.deliver()
    stack.clock.now = SEALED_AT / 1000
    sealed = stack.container().digests.seal_due()
    assert T0 in sealed
    assert T0 + HOUR in sealed
    return {"alice": [r.record_id for r in alice], "bob": [r.record_id for r in bob]}


def _verify(stack: Stack) -> dict[int, PeriodReport]:
    reports = stack.container().digests.verify(T0, T0 + 2 * HOUR)
    return {r.period_start: r for r in reports}


def _usage(stack: Stack, limit: int = 1000, **filters: Any) -> list[str]:
    """Every page of ``audit usage`` over the two hours, record ids newest first."""
    audit = stack.container().audit
    query = UsageFilters(T0, T0 + 2 * HOUR, **filters)
    ids, token = [], ""
    while True:
        page = audit.usage(query, limit, token)
        ids += [r.record_id for r in page.records]
        if not page.next_token:
            return ids
        token = page.next_token


def test_the_sealer_reads_the_archive_and_verify_passes_in_the_hot_window(stack: Stack) -> None:
    ids = _ledger(stack)
    reports = _verify(stack)
    assert [(r.status, r.record_count) for r in reports.values()] == [("intact", 6), ("intact", 3)]
    # the first hour came in two batches: two objects (in their segments)
    reader = stack.container().archive_reader
    assert len(reader.objects(T0, T0 + HOUR)) == 2
    assert sorted(_usage(stack)) == sorted(ids["alice"] + ids["bob"])


def test_forced_move_same_audit_answer_and_verify_passes_across_tiers(stack: Stack) -> None:
    ids = _ledger(stack)
    before = {
        "all": _usage(stack),
        "paged": _usage(stack, limit=2),
        "bob": _usage(stack, principal="tbc_bob"),
        "model": _usage(stack, model="model:gpt-secret", event="request"),
        "export": [r.record_id for r in stack.container().audit.export(T0, T0 + 2 * HOUR)],
    }
    assert before["bob"] == list(reversed(ids["bob"]))
    assert before["paged"] == before["all"]
    assert len(before["all"]) == 9
    # the move: TTL deletes the hot items, the clock passes the hot window
    for record_id in ids["alice"] + ids["bob"]:
        stack.ddb.delete_item(TableName=stack.table, Key={"id": {"S": record_id}})
    stack.clock.now = (T0 + (WINDOW_DAYS + 1) * DAY) / 1000
    after = {
        "all": _usage(stack),
        "paged": _usage(stack, limit=2),
        "bob": _usage(stack, principal="tbc_bob"),
        "model": _usage(stack, model="model:gpt-secret", event="request"),
        "export": [r.record_id for r in stack.container().audit.export(T0, T0 + 2 * HOUR)],
    }
    assert after == before
    assert [r.status for r in _verify(stack).values()] == ["intact", "intact"]


def test_a_query_spanning_the_boundary_joins_both_tiers_in_order(stack: Stack) -> None:
    ids = _ledger(stack)
    # the boundary falls inside the second hour: its first record is cold, the rest hot
    stack.clock.now = (T0 + HOUR + 600_000 + WINDOW_DAYS * DAY) / 1000
    for record_id in ids["alice"] + ids["bob"][:1]:  # what the hot tier no longer has
        stack.ddb.delete_item(TableName=stack.table, Key={"id": {"S": record_id}})
    expected = list(reversed(ids["alice"] + ids["bob"]))
    assert _usage(stack) == expected
    assert _usage(stack, limit=1) == expected  # cursors cross the tiers
    assert _usage(stack, principal="tbc_bob", limit=2) == list(reversed(ids["bob"]))


def _doctor(stack: Stack, record_id: str, **changes: Any) -> None:
    """The attacker with s3:PutObject: a new version of the object holding the record."""
    for key in stack.archive_keys():
        body = stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        lines = [json.loads(x) for x in gzip.decompress(body).splitlines()]
        if any(x["id"] == record_id for x in lines):
            lines = [{**x, **changes} if x["id"] == record_id else x for x in lines]
            stack.s3.put_object(
                Bucket=stack.bucket, Key=key, Body=encode_object(lines), ChecksumAlgorithm="SHA256"
            )
            return
    raise AssertionError("record not archived")


def test_an_archived_record_changed_by_a_new_version_fails_verify_naming_it(
    stack: Stack,
) -> None:
    ids = _ledger(stack)
    victim = ids["alice"][2]
    _doctor(stack, victim, principal="tbc_mallory")
    stack.clock.now = (T0 + (WINDOW_DAYS + 1) * DAY) / 1000  # archive only: no hot check
    first, second = _verify(stack).values()
    assert (first.status, first.altered) == ("tampered", [victim])
    assert "1 altered" in first.detail
    assert second.status == "intact"
    # the locked original is still the object's oldest version
    [key] = [k for k in stack.archive_keys() if k in _keys_holding(stack, victim)]
    versions = stack.s3.list_object_versions(Bucket=stack.bucket, Prefix=key)["Versions"]
    assert len(versions) == 2


def _keys_holding(stack: Stack, record_id: str) -> list[str]:
    found = []
    for key in stack.archive_keys():
        body = stack.s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        if record_id.encode() in gzip.decompress(body):
            found.append(key)
    return found


def test_a_hot_item_changed_in_the_table_fails_verify_naming_it(stack: Stack) -> None:
    ids = _ledger(stack)
    victim = ids["bob"][1]
    item = stack.ddb.get_item(TableName=stack.table, Key={"id": {"S": victim}})["Item"]
    item["principal"] = {"S": "tbc_mallory"}
    stack.ddb.put_item(TableName=stack.table, Item=item)
    first, second = _verify(stack).values()
    assert first.status == "intact"
    assert (second.status, second.hot_changed) == ("hot_tampered", [victim])
    assert f"changed in the table: {victim}" in second.detail


def test_a_hot_item_deleted_before_its_ttl_fails_verify(stack: Stack) -> None:
    ids = _ledger(stack)
    victim = ids["alice"][0]
    stack.ddb.delete_item(TableName=stack.table, Key={"id": {"S": victim}})
    first, _ = _verify(stack).values()
    assert (first.status, first.hot_changed) == ("hot_tampered", [victim])
    assert f"deleted before its ttl from the table: {victim}" in first.detail


def test_a_hot_item_gone_after_its_ttl_is_not_tampering(stack: Stack) -> None:
    ids = _ledger(stack)
    stack.ddb.delete_item(TableName=stack.table, Key={"id": {"S": ids["alice"][0]}})
    # the period is inside the hot window; at this time the record's ttl has not passed
    reports = stack.container().digests.verify(T0, T0 + HOUR, now_ms=T0 + WINDOW_DAYS * DAY)
    assert [r.status for r in reports] == ["hot_tampered"]  # ttl not passed at this now
    later = T0 + WINDOW_DAYS * DAY + 700_000  # ttl of every alice record passed
    digests = stack.container().digests
    assert later - digests.hot_window_ms < T0 + HOUR  # the period still counts as hot
    assert [r.status for r in digests.verify(T0, T0 + HOUR, now_ms=later)] == ["intact"]


def test_a_batch_archived_after_its_period_was_sealed_is_a_late_record(stack: Stack) -> None:
    _ledger(stack)
    late = stack.record(T0 + 1234)
    stack.allow(late)
    stack.deliver()  # a late batch object in the sealed hour
    first, second = _verify(stack).values()
    assert (first.status, first.added) == ("late_record", [late.record_id])
    assert second.status == "intact"


def test_hot_check_failures_fail_closed(stack: Stack) -> None:
    _ledger(stack)
    digests = stack.container().digests
    ddb = digests.hot._ddb  # type: ignore[union-attr]

    def throttled(**_: Any) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}},
            "BatchGetItem",
        )

    ddb.meta.events.register("before-call.dynamodb.BatchGetItem", throttled)
    with pytest.raises(TemporarilyUnavailable, match="BatchGetItem failed"):
        digests.verify(T0, T0 + 2 * HOUR)
