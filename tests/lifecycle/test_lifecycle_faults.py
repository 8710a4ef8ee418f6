"""AWS faults at revocation and introspection fail closed: a throttled, timed-out or
missing store is a 503 ``temporarily_unavailable`` (a revocation never silently does not
happen; introspection never answers ``active: true`` or a 500)."""

from __future__ import annotations

import types
from typing import Any

import botocore.endpoint
import pytest

from endpoint._support import App, Broker, assert_error, fail_operation, time_out
from tokenbroker.domain.liveness import MAX_AGE

from ._support import Lifecycle

CODES = [
    ("ProvisionedThroughputExceededException", 400),
    ("ThrottlingException", 400),
    ("ResourceNotFoundException", 400),
    ("InternalServerError", 500),
]


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


def ddb(broker: Broker) -> Any:
    return broker.container.client("dynamodb")


@pytest.mark.parametrize(("code", "status"), CODES)
def test_a_failing_revocation_write_is_503_and_records_nothing(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float], code: str, status: int
) -> None:
    token = life.access_token(app)
    fail_operation(ddb(broker), "TransactWriteItems", code, status)
    assert_error(life.revoke(app, token), 503, "temporarily_unavailable")
    assert broker.ledger_records("token_revoked") == []


def test_a_revocation_read_that_times_out_is_503(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float]
) -> None:
    token = life.access_token(app)
    attempts = time_out(ddb(broker), "GetItem")
    assert_error(life.revoke(app, token), 503, "temporarily_unavailable")
    assert attempts  # the client read (authentication) itself failed closed


def test_after_a_failed_revocation_a_retry_revokes(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float]
) -> None:
    token = life.access_token(app)
    client = ddb(broker)
    from endpoint._support import error_reply, service_id

    reply = error_reply("ThrottlingException")
    event = f"before-call.{service_id(client)}.TransactWriteItems"
    client.meta.events.register_first(event, reply)
    assert_error(life.revoke(app, token), 503, "temporarily_unavailable")
    client.meta.events.unregister(event, reply)
    assert life.revoke(app, token)["statusCode"] == 200
    broker.clock.advance(MAX_AGE)
    assert life.at_edge(app, token) == "401"
    assert life.denials() == ["token_revoked"]


@pytest.mark.parametrize(("code", "status"), CODES)
def test_a_failing_liveness_read_at_introspection_is_503_not_active(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float], code: str, status: int
) -> None:
    token = life.access_token(app)
    fail_operation(ddb(broker), "BatchGetItem", code, status)
    assert_error(life.introspect(app, token), 503, "temporarily_unavailable")


def test_an_introspection_whose_client_read_times_out_is_503(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float]
) -> None:
    token = life.access_token(app)
    time_out(ddb(broker), "GetItem")
    assert_error(life.introspect(app, token), 503, "temporarily_unavailable")


def test_kms_down_at_introspection_is_503(
    broker: Broker, app: App, life: Lifecycle, backoffs: list[float]
) -> None:
    token = life.access_token(app)
    broker.reset()  # a fresh execution environment: the public key is not cached yet
    fail_operation(broker.container.client("kms"), "GetPublicKey", "KMSInternalException", 500)
    assert_error(life.introspect(app, token), 503, "temporarily_unavailable")
