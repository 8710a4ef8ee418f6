"""Units reports are sealed ledger events: ``report_usage``'s event lands in the usage
table next to the usage record it reports on, the digests seal it like every record,
and ``audit verify`` names it when it is altered (the provisioned stack, wall clock and
CLI of tests/digests/test_verify_cli.py)."""

from __future__ import annotations

from typing import Any

import boto3

from digests.test_verify_cli import REGION, P, Stack, _environment, iso, periods, record, stack
from tokenbroker.adapters.archive import ArchiveWriter, StreamImage
from tokenbroker.adapters.ledger_scan import plain
from tokenbroker.bootstrap import build
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.quotas import ALL_MODELS, QuotaLimits

__all__ = ["_environment", "stack"]


def _report(stack: Stack, at_ms: int, usage_id: str, units: int) -> tuple[bool, dict[str, Any]]:
    """Admit and report as the edge and the protected function do; the event's item is
    also archived, as the stream function does with every new item."""
    container = build(
        stack.settings,
        aws=lambda name: boto3.client(name, region_name=REGION),
        clock=FixedClock(at_ms / 1000),
    )
    container.quota_admin.set("tbc_vera", ALL_MODELS, QuotaLimits(units_per_day=10**6))
    gate = container.quota_gate
    assert gate is not None
    reference = gate.admit("tbc_vera", "tbc_vera", "demo", at_ms / 1000)
    context = {"usage_id": usage_id, "quota": reference, "principal": "tbc_vera"}
    counted = container.units_reporter.report(
        {**context, "client_id": "tbc_vera", "jkt": "jkt-vera"}, units=units, model="demo"
    )
    ddb = stack.ledger.dynamodb
    item = ddb.get_item(TableName=stack.ledger.table, Key={"id": {"S": "units:" + usage_id}})
    if counted:
        writer = ArchiveWriter(stack.s3, bucket=stack.ledger.bucket)
        writer.write_batch(
            [StreamImage(f"{at_ms}999999", "units:" + usage_id, plain(item["Item"]))]
        )
    return counted, item["Item"]


def test_a_units_event_is_sealed_with_its_usage_record_and_verify_covers_it(
    stack: Stack,
) -> None:
    period = stack.now - 10 * P
    use = record(period + 1000)
    stack.ledger.write([use])
    counted, item = _report(stack, period + 2000, use.record_id, 42)
    assert counted
    assert (item["event"]["S"], item["reason"]["S"]) == ("units_reported", "units:42")
    # a retried report: refused, nothing new in the ledger
    again, _ = _report(stack, period + 3000, use.record_id, 42)
    assert not again
    stack.service().seal_due(stack.now)
    code, document = stack.json("--since", iso(period), "--until", iso(period + P))
    assert code == 0, document
    assert periods(document["periods"])[period]["records"] == 2  # the use and its units
    assert periods(document["periods"])[period]["status"] == "intact"

    # the attacker lowers the reported units after the seal: verify names the event
    stack.ledger.dynamodb.update_item(
        TableName=stack.ledger.table,
        Key={"id": {"S": "units:" + use.record_id}},
        UpdateExpression="SET reason = :r",
        ExpressionAttributeValues={":r": {"S": "units:1"}},
    )
    code, document = stack.json("--since", iso(period), "--until", iso(period + P))
    assert code == 1
    row = periods(document["periods"])[period]
    assert "hot_tampered" in row["problems"]
    assert row["hot_changed"] == ["units:" + use.record_id]
