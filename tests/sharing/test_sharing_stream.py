"""Sharing rules in the aggregates function's batch, on moto: alerts, events, containment."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from tokenbroker import bootstrap
from tokenbroker.domain.errors import InvalidToken, TemporarilyUnavailable

from .conftest import T0, Stack, context


def twenty_networks(stack: Stack) -> None:
    for i in range(20):
        stack.use(f"203.0.{i}.9", at_ms=T0 + i * 1000)


def capture_events(calls: list[dict[str, Any]]) -> None:
    client = bootstrap.default().client("events")
    client.meta.events.register(
        "provide-client-params.events.PutEvents", lambda params, **_: calls.append(params)
    )


def test_a_device_seen_from_twenty_networks_in_a_minute_raises_one_alert(
    stack: Stack, handler: Any
) -> None:
    twenty_networks(stack)
    events: list[dict[str, Any]] = []
    capture_events(events)

    assert handler({"Records": stack.new_records()}, context()) == {"batchItemFailures": []}

    [alert] = [a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]
    assert alert["jkt"]["S"] == stack.jkt
    assert alert["client_id"]["S"] == stack.client_id
    assert alert["status"]["S"] == "open"
    assert alert["containment"]["S"] == "audit"  # the template's default
    assert alert["summary"]["S"] == "20 networks in 60s (limit 5)"
    assert alert["delivered"]["BOOL"] is True
    assert len(alert["evidence"]["L"]) == 10  # a summary, not the whole set
    # the finding's ledger event
    [record] = stack.ledger_events("sharing_detected")
    assert record["reason"]["S"] == "device_networks"
    assert record["jkt"]["S"] == stack.jkt
    # EventBridge (default bus) and SNS carry it
    entries = [e for call in events for e in call["Entries"]]
    rules = sorted(e["DetailType"] + ":" + e["Source"] for e in entries)
    assert "tokenbroker.sharing:tokenbroker" in rules
    assert any('"device_networks"' in e["Detail"] for e in entries)
    messages = stack.sns_messages()
    assert {m["rule"] for m in messages} >= {"device_networks"}
    # audit: the device is untouched
    assert stack.device_item()["status"]["S"] == "active"


def test_a_retried_batch_raises_no_second_alert_nor_ledger_event(
    stack: Stack, handler: Any
) -> None:
    twenty_networks(stack)
    records = stack.new_records()
    handler({"Records": records}, context())
    before = stack.alert_items()
    handler({"Records": records}, context())
    assert stack.alert_items() == before
    assert len(stack.ledger_events("sharing_detected")) == len(before)


def test_a_later_batch_adds_to_the_same_window(stack: Stack, handler: Any) -> None:
    for i in range(4):
        stack.use(f"203.0.{i}.9", at_ms=T0 + i)
    handler({"Records": stack.new_records()}, context())
    assert not [a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]
    for i in range(4, 6):
        stack.use(f"203.0.{i}.9", at_ms=T0 + 10 + i)
    handler({"Records": stack.new_records()}, context())
    [alert] = [a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]
    assert alert["summary"]["S"].startswith("6 networks")


def test_normal_use_from_one_network_raises_nothing(stack: Stack, handler: Any) -> None:
    for i in range(50):
        stack.use(f"198.51.100.{i}")
    handler({"Records": stack.new_records()}, context())
    assert stack.alert_items() == []


def test_under_revoke_the_flagged_device_is_revoked_with_a_ledger_event(
    stack: Stack, handler: Any
) -> None:
    bootstrap.default().containment.set_mode(stack.client_id, "revoke")
    twenty_networks(stack)
    handler({"Records": stack.new_records()}, context())
    assert stack.device_item()["status"]["S"] == "revoked"
    assert len(stack.ledger_events("device_revoked")) == 1
    assert len(stack.ledger_events("client_containment_changed")) == 1
    alerts = [a for a in stack.alert_items() if a["jkt"]["S"] == stack.jkt]
    assert {a["containment"]["S"] for a in alerts} == {"revoke"}
    # the edge's liveness read now refuses it (within MAX_AGE in a warm edge)
    liveness = bootstrap.build(
        bootstrap.default().settings, aws=bootstrap.default().client
    ).liveness
    from tokenbroker.domain.errors import DeviceRevoked

    with pytest.raises(DeviceRevoked):
        liveness.require_active(stack.client_id, stack.jkt)


def test_under_step_up_the_device_is_flagged_not_revoked(stack: Stack, handler: Any) -> None:
    bootstrap.default().containment.set_mode(stack.client_id, "step_up")
    twenty_networks(stack)
    handler({"Records": stack.new_records()}, context())
    device = stack.device_item()
    assert device["status"]["S"] == "active"
    assert "step_up_at" in device
    assert len(stack.ledger_events("device_step_up_required")) == 1
    # the edge's liveness read refuses the device's current tokens, with its reason
    liveness = bootstrap.build(
        bootstrap.default().settings, aws=bootstrap.default().client
    ).liveness
    with pytest.raises(InvalidToken) as refused:
        liveness.require_active(stack.client_id, stack.jkt)
    assert refused.value.reason == "step_up_required"


def test_denied_uses_from_many_networks_flag_nothing(stack: Stack, handler: Any) -> None:
    from tokenbroker.domain.models import Decision

    bootstrap.default().containment.set_mode(stack.client_id, "revoke")
    for i in range(30):
        stack.use(f"203.0.{i}.9", decision=Decision.DENY, reason="invalid_dpop_proof")
    handler({"Records": stack.new_records()}, context())
    assert stack.alert_items() == []
    assert stack.device_item()["status"]["S"] == "active"


def _fail(operation: str, code: str = "ThrottlingException") -> Any:
    def hook(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        response = AWSResponse("https://x", 400, {}, None)
        return response, {"Error": {"Code": code, "Message": "injected"}}

    return hook


def test_a_sharing_table_failure_fails_the_batch_and_the_retry_completes_it(
    stack: Stack, handler: Any
) -> None:
    twenty_networks(stack)
    records = stack.new_records()
    ddb = bootstrap.default().client("dynamodb")
    ddb.meta.events.register("before-call.dynamodb.UpdateItem", _fail("UpdateItem"), "fault")
    with pytest.raises(TemporarilyUnavailable):
        handler({"Records": records}, context())
    assert stack.alert_items() == []
    ddb.meta.events.unregister("before-call.dynamodb.UpdateItem", unique_id="fault")
    handler({"Records": records}, context())
    assert len([a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]) == 1


def test_a_publish_failure_fails_the_batch_and_the_retry_delivers_the_alert(
    stack: Stack, handler: Any
) -> None:
    bootstrap.default().containment.set_mode(stack.client_id, "revoke")
    twenty_networks(stack)
    records = stack.new_records()
    events = bootstrap.default().client("events")
    events.meta.events.register("before-call.events.PutEvents", _fail("PutEvents"), "fault")
    with pytest.raises(TemporarilyUnavailable):
        handler({"Records": records}, context())
    [written] = [a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]
    assert written["delivered"]["BOOL"] is False
    # containment comes before the notification (the edge's bound starts there)
    assert stack.device_item()["status"]["S"] == "revoked"
    published = len(stack.sns_messages())
    events.meta.events.unregister("before-call.events.PutEvents", unique_id="fault")
    handler({"Records": records}, context())
    [delivered] = [a for a in stack.alert_items() if a["rule"]["S"] == "device_networks"]
    assert delivered["delivered"]["BOOL"] is True
    assert stack.device_item()["status"]["S"] == "revoked"
    assert published == 0
    assert any(m["rule"] == "device_networks" for m in stack.sns_messages())
    assert len(stack.ledger_events("device_revoked")) == 1  # the retry revoked nothing twice
    assert len(stack.ledger_events("sharing_detected")) == len(stack.alert_items())


def test_writes_per_batch_are_per_window_not_per_record(stack: Stack, handler: Any) -> None:
    for i in range(200):
        stack.use(f"198.51.100.{i % 3}", at_ms=T0 + i)
    writes = _sharing_writes(stack)
    handler({"Records": stack.new_records()}, context())
    # device networks + distant networks + the principal's devices: 3 windows, and the
    # burst rule's one hourly-counts update for the principal
    assert writes == {"win": 3, "burst": 1}


def test_a_steady_device_costs_no_window_writes_after_its_first_batch(
    stack: Stack, handler: Any
) -> None:
    writes = _sharing_writes(stack)
    for batch in range(3):  # the same device and network, three batches, one window
        for i in range(10):
            stack.use("198.51.100.7", at_ms=T0 + batch * 100 + i)
        handler({"Records": stack.new_records()}, context())
    # the first batch's three windows, then nothing new; the principal's hourly
    # counts (the burst rule) take one update per batch
    assert writes == {"win": 3, "burst": 3}
    assert stack.alert_items() == []


def _sharing_writes(stack: Stack) -> Counter[str]:
    """UpdateItems on the sharing table by item kind (``win#``, ``burst#``...)."""
    writes: Counter[str] = Counter()

    def count(params: dict[str, Any], **_: Any) -> None:
        if params["TableName"] == stack.table("SharingTable"):
            writes[params["Key"]["pk"]["S"].partition("#")[0]] += 1

    ddb = bootstrap.default().client("dynamodb")
    ddb.meta.events.register("provide-client-params.dynamodb.UpdateItem", count)
    return writes
