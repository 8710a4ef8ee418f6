"""The burst rule on the stream, on moto: a principal far above its own baseline is
flagged from the rule's own hourly counts (one UpdateItem per principal per batch, no
read of the aggregates), a redelivered batch counts nothing twice, and an alert left
undelivered by a failure is delivered by the retry."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from tokenbroker import bootstrap
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.units import HOUR_MS

from .conftest import T0, Stack, context

#: a burst needs 20 requests here (500 by default: fewer records to write on moto)
RULES = '{"principal_burst": {"min_requests": 20}}'


@pytest.fixture
def burst_rules(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    monkeypatch.setenv("SHARING_RULES", RULES)
    bootstrap.default.cache_clear()
    return stack


def baseline(stack: Stack, per_hour: int) -> None:
    """``per_hour`` requests in each of the 24 hours before T0's hour."""
    for hour in range(1, 25):
        for i in range(per_hour):
            stack.use("198.51.100.7", at_ms=T0 - hour * HOUR_MS + i)


def current_hour(stack: Stack, n: int) -> None:
    for i in range(n):
        stack.use("198.51.100.7", at_ms=T0 + 1000 + i)


def bursts(stack: Stack) -> list[dict[str, Any]]:
    return [a for a in stack.alert_items() if a["rule"]["S"] == "principal_burst"]


def calls(stack: Stack) -> Counter[str]:
    """DynamoDB calls by operation and table kind, on the handler's client."""
    seen: Counter[str] = Counter()

    def count(params: dict[str, Any], event_name: str, **_: Any) -> None:
        table = params.get("TableName", "")
        operation = event_name.rsplit(".", 1)[-1]
        if table == stack.table("AggregatesTable"):
            seen[f"{operation}:aggregates"] += 1
        elif table == stack.table("SharingTable"):
            kind = params.get("Key", {}).get("pk", {}).get("S", "").partition("#")[0]
            seen[f"{operation}:sharing:{kind}"] += 1

    ddb = bootstrap.default().client("dynamodb")
    ddb.meta.events.register("provide-client-params.dynamodb", count)
    return seen


def test_a_burst_far_above_the_principals_baseline_is_flagged_reading_nothing(
    burst_rules: Stack, handler: Any
) -> None:
    stack = burst_rules
    baseline(stack, 1)  # 1 request an hour: the limit is 10 x 1.0
    handler({"Records": stack.new_records()}, context())
    assert bursts(stack) == []
    current_hour(stack, 30)
    seen = calls(stack)
    handler({"Records": stack.new_records()}, context())
    [alert] = bursts(stack)
    assert alert["summary"]["S"] == "30 requests this hour in 3600s (limit 10)"
    assert alert["principal"]["S"] == stack.client_id
    assert [e["S"] for e in alert["evidence"]["L"]] == ["baseline 1.0/h over 24h"]
    # the rule's whole cost: one UpdateItem of the principal's counts, no read at all
    assert seen["UpdateItem:sharing:burst"] == 1
    assert seen["Query:aggregates"] == 0
    assert seen["GetItem:sharing:burst"] == 0


def test_use_within_the_baseline_is_not_a_burst(burst_rules: Stack, handler: Any) -> None:
    stack = burst_rules
    baseline(stack, 4)  # limit 40
    current_hour(stack, 30)
    handler({"Records": stack.new_records()}, context())
    assert bursts(stack) == []


def _hours_item(stack: Stack) -> dict[str, Any]:
    key = {"pk": {"S": "burst#" + stack.client_id}, "sk": {"S": "hours"}}
    item: dict[str, Any] = stack.ddb.get_item(
        TableName=stack.table("SharingTable"), Key=key, ConsistentRead=True
    )["Item"]
    return item


def test_a_redelivered_batch_counts_nothing_twice(burst_rules: Stack, handler: Any) -> None:
    stack = burst_rules
    current_hour(stack, 15)
    records = stack.new_records()
    handler({"Records": records}, context())
    hour = f"h{T0 // HOUR_MS}"
    assert _hours_item(stack)[hour] == {"N": "15"}
    seen = calls(stack)
    handler({"Records": records}, context())  # the same batch again
    assert _hours_item(stack)[hour] == {"N": "15"}  # 30 would be a burst: 2 x 15 >= 20
    assert bursts(stack) == []
    # its pages were skipped, so its principal was read back and evaluated again
    assert (seen["UpdateItem:sharing:burst"], seen["GetItem:sharing:burst"]) == (0, 1)


def _fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    response = AWSResponse("https://x", 400, {}, None)
    return response, {"Error": {"Code": "ThrottlingException", "Message": "injected"}}


def test_a_burst_alert_left_undelivered_is_delivered_by_the_retry(
    burst_rules: Stack, handler: Any
) -> None:
    stack = burst_rules
    current_hour(stack, 25)  # no baseline: min_requests decides
    records = stack.new_records()
    events = bootstrap.default().client("events")
    events.meta.events.register("before-call.events.PutEvents", _fail, "fault")
    with pytest.raises(TemporarilyUnavailable):
        handler({"Records": records}, context())
    [written] = bursts(stack)
    assert written["delivered"]["BOOL"] is False
    events.meta.events.unregister("before-call.events.PutEvents", unique_id="fault")
    handler({"Records": records}, context())
    [delivered] = bursts(stack)
    assert delivered["delivered"]["BOOL"] is True
    assert _hours_item(stack)[f"h{T0 // HOUR_MS}"] == {"N": "25"}  # counted once


def test_hours_before_the_baseline_are_dropped_from_the_counts(
    burst_rules: Stack, handler: Any
) -> None:
    """An idle principal's old hours are removed when it is next seen: the item holds
    at most the baseline and the current hour (bounded size)."""
    stack = burst_rules
    for hour in (30, 26, 25):  # all before the 24-hour baseline of T0's hour
        stack.use("198.51.100.7", at_ms=T0 - hour * HOUR_MS)
    handler({"Records": stack.new_records()}, context())
    current_hour(stack, 1)
    handler({"Records": stack.new_records()}, context())
    hours = sorted(k for k in _hours_item(stack) if k.startswith("h") and k[1:].isdigit())
    assert hours == [f"h{T0 // HOUR_MS}"]
