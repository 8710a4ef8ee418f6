"""Containment ``step_up`` at the token endpoint: a flagged device gets no new tokens by
client_credentials until the flag is cleared (token exchange or re-enrollment)."""

from __future__ import annotations

from tokenbroker import bootstrap
from tokenbroker.adapters.alerts import DynamoContainmentStore
from tokenbroker.domain.models import EventType, UsageRecord

from ._support import App, Broker, assert_error, json_body


def _store(broker: Broker) -> DynamoContainmentStore:
    s = bootstrap.default().settings
    return DynamoContainmentStore(
        broker.ddb,
        clients_table=s.clients_table,
        devices_table=s.devices_table,
        usage_table=s.usage_table,
    )


def _flag(broker: Broker, app: App) -> None:
    record = UsageRecord.build(
        at=broker.now,
        retention_days=1,
        record_id="shr:stepup:test",
        principal=app.client_id,
        client_id=app.client_id,
        jkt=app.key.jkt,
        event=EventType.DEVICE_STEP_UP_REQUIRED,
    )
    assert _store(broker).require_step_up(app.key.jkt, app.client_id, broker.now, record)


def test_a_device_under_step_up_is_refused_new_tokens_with_the_specific_reason(
    broker: Broker, app: App
) -> None:
    _flag(broker, app)
    body = assert_error(broker.issue(app), 400, "invalid_grant")
    assert "fresh identity check" in body["error_description"]
    (record,) = broker.ledger_records("token_denied")
    assert (record["reason"], record["jkt"]) == ("step_up_required", app.key.jkt)
    assert broker.token_records() == []


def test_clearing_the_step_up_lets_the_device_obtain_tokens_again(broker: Broker, app: App) -> None:
    _flag(broker, app)
    _store(broker).clear_step_up(app.key.jkt)
    response = broker.issue(app)
    assert response["statusCode"] == 200, response
    assert json_body(response)["token_type"] == "DPoP"


def test_step_up_of_a_revoked_device_changes_nothing(broker: Broker, app: App) -> None:
    bootstrap.default().admin.revoke_device(app.key.jkt)
    record = UsageRecord.build(
        at=broker.now,
        retention_days=1,
        record_id="shr:stepup:revoked",
        principal=app.client_id,
        client_id=app.client_id,
        jkt=app.key.jkt,
        event=EventType.DEVICE_STEP_UP_REQUIRED,
    )
    assert not _store(broker).require_step_up(app.key.jkt, app.client_id, broker.now, record)
    assert broker.ledger_records("device_step_up_required") == []
