"""Fail closed (invariant 6): every AWS or configuration failure behind the token
endpoint is a 503 ``temporarily_unavailable`` with no token and nothing half-written.

moto cannot throttle, time out or deny: faults are injected with botocore events on the
very clients the composition root builds (``before-call`` answers with an AWS error
instead of calling AWS; ``before-send`` raising ``ReadTimeoutError`` exercises botocore's
retries). Backoff sleeps are recorded, never slept.
"""

from __future__ import annotations

import types
from typing import Any

import botocore.endpoint
import pytest

from tokenbroker import bootstrap
from tokenbroker.local.template import Template

from ._support import (
    REAL_DEFAULT,
    App,
    Broker,
    RoundTrips,
    assert_error,
    error_reply,
    fail_operation,
    json_body,
    service_id,
    time_out,
)

UNAVAILABLE = "temporarily_unavailable"


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's retry backoff (``time.sleep`` in botocore.endpoint), recorded."""
    delays: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=delays.append))
    return delays


def function_timeout(template: Template, function: str) -> float:
    document = template.document()
    default = document.get("Globals", {}).get("Function", {}).get("Timeout", 3)  # SAM: 3 s
    props = document["Resources"][function]["Properties"]
    return float(props.get("Timeout", default))


def assert_unavailable(response: dict[str, Any]) -> None:
    assert_error(response, 503, UNAVAILABLE)
    assert "access_token" not in json_body(response)


def dynamodb(broker: Broker) -> Any:
    return bootstrap.default().client("dynamodb")


def kms(broker: Broker) -> Any:
    return bootstrap.default().client("kms")


def warm_up(broker: Broker, app: App) -> None:
    """One successful issuance: the public key (kid) is cached, one token and one
    ledger record exist."""
    assert broker.issue(app)["statusCode"] == 200
    assert len(broker.token_records()) == 1
    assert len(broker.ledger_records()) == 1


# ================================================================ KMS


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("KMSInvalidStateException", 400),
        ("DisabledException", 400),
        ("KeyUnavailableException", 500),
        ("AccessDeniedException", 400),
        ("ThrottlingException", 400),
        ("KMSInternalException", 500),
    ],
)
def test_a_failing_kms_sign_is_503_and_leaves_no_issuance_record_nor_a_spent_proof(
    broker: Broker, app: App, code: str, status: int
) -> None:
    warm_up(broker, app)
    client = kms(broker)
    event_name = f"before-call.{service_id(client)}.Sign"
    reply = error_reply(code, status)
    client.meta.events.register_first(event_name, reply)
    proof = broker.proof(app.key)

    assert_unavailable(broker.issue(app, proof=proof))
    assert len(broker.token_records()) == 1
    assert len(broker.ledger_records()) == 1  # neither token nor ledger record written

    client.meta.events.unregister(event_name, reply)
    assert broker.issue(app, proof=proof)["statusCode"] == 200  # the proof was not spent
    assert len(broker.token_records()) == 2
    assert len(broker.ledger_records()) == 2


def test_a_kms_sign_that_times_out_is_retried_then_503_without_sleeping(
    broker: Broker, app: App, backoffs: list[float]
) -> None:
    warm_up(broker, app)
    attempts = time_out(kms(broker), "Sign")

    assert_unavailable(broker.issue(app))

    assert len(attempts) > 1  # botocore's standard retry mode retried the timeout
    assert len(backoffs) == len(attempts) - 1
    assert len(broker.token_records()) == 1
    assert len(broker.ledger_records()) == 1


def test_a_hung_dependency_fails_with_a_503_within_the_function_timeout(
    broker: Broker, app: App, backoffs: list[float], template: Template
) -> None:
    warm_up(broker, app)
    client = kms(broker)
    attempts = time_out(client, "Sign")

    assert_unavailable(broker.issue(app))

    # every attempt waited its full read timeout before botocore gave up on it
    elapsed = len(attempts) * client.meta.config.read_timeout + sum(backoffs)
    assert elapsed < function_timeout(template, "TokenFunction")


@pytest.mark.parametrize(
    "code",
    ["KMSInvalidStateException", "DisabledException", "AccessDeniedException", "NotFoundException"],
)
def test_a_failing_kms_get_public_key_on_a_cold_start_is_503_and_writes_nothing(
    broker: Broker, app: App, code: str
) -> None:
    fail_operation(kms(broker), "GetPublicKey", code)

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []
    assert broker.ledger_records() == []


# ================================================================ DynamoDB


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("RequestLimitExceeded", 400),
        ("TransactionCanceledException", 400),
        ("AccessDeniedException", 400),
        ("InternalServerError", 500),
    ],
)
def test_a_failing_read_of_client_and_device_is_503(
    broker: Broker, app: App, code: str, status: int
) -> None:
    fail_operation(dynamodb(broker), "TransactGetItems", code, status)

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []


def test_a_read_of_client_and_device_that_times_out_is_retried_then_503(
    broker: Broker, app: App, backoffs: list[float]
) -> None:
    attempts = time_out(dynamodb(broker), "TransactGetItems")

    assert_unavailable(broker.issue(app))
    assert len(attempts) > 1
    assert len(backoffs) == len(attempts) - 1
    assert broker.token_records() == []


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ProvisionedThroughputExceededException", 400),
        ("ThrottlingException", 400),
        ("AccessDeniedException", 400),
        ("ResourceNotFoundException", 400),
        ("InternalServerError", 500),
        ("TransactionConflictException", 400),
    ],
)
def test_a_failing_issuance_record_write_is_503_and_returns_no_token(
    broker: Broker, app: App, code: str, status: int
) -> None:
    signs = RoundTrips().attach(kms(broker))
    fail_operation(dynamodb(broker), "TransactWriteItems", code, status)

    response = broker.issue(app)

    assert_unavailable(response)
    assert "kms:Sign" in signs.calls  # the token was signed, and then withheld
    assert broker.token_records() == []
    assert broker.ledger_records() == []


def test_a_missing_tokens_table_is_503_and_returns_no_token(broker: Broker, app: App) -> None:
    broker.ddb.delete_table(TableName=broker.table("TokensTable"))

    assert_unavailable(broker.issue(app))
    assert broker.ledger_records() == []


def test_a_missing_usage_table_is_503_and_writes_no_token(broker: Broker, app: App) -> None:
    broker.ddb.delete_table(TableName=broker.table("UsageTable"))

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []  # the token item is in the same transaction


@pytest.mark.parametrize("table", ["ClientsTable", "DevicesTable"])
def test_a_missing_clients_or_devices_table_is_503(broker: Broker, app: App, table: str) -> None:
    broker.ddb.delete_table(TableName=broker.table(table))

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []


# ================================================================ configuration


@pytest.mark.parametrize(
    "name", ["TOKENS_TABLE", "CLIENTS_TABLE", "DEVICES_TABLE", "USAGE_TABLE", "SIGNING_KEY_ID"]
)
def test_a_missing_setting_is_503(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.delenv(name)
    broker.reset()

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []


def test_a_missing_audiences_setting_is_503(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIENCES")
    broker.reset()

    assert_unavailable(broker.issue(app))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_LIFETIME_SECONDS", "five minutes"),
        ("TOKEN_LIFETIME_SECONDS", "3600"),
        ("PROOF_MAX_AGE_SECONDS", "0"),
        ("CLOCK_SKEW_SECONDS", "-1"),
    ],
)
def test_an_invalid_setting_is_503(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    broker.reset()

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []


def test_the_genuine_composition_root_without_tokens_table_is_503(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "default", REAL_DEFAULT)
    monkeypatch.delenv("TOKENS_TABLE")
    REAL_DEFAULT.cache_clear()

    assert_unavailable(broker.issue(app))
    assert broker.token_records() == []


# ================================================================ round trips


def test_an_issuance_costs_three_aws_round_trips_once_the_public_key_is_cached(
    broker: Broker, app: App
) -> None:
    trips = RoundTrips().attach(dynamodb(broker), kms(broker))

    assert broker.issue(app)["statusCode"] == 200
    assert trips.take() == [
        "dynamodb:TransactGetItems",
        "kms:GetPublicKey",
        "kms:Sign",
        "dynamodb:TransactWriteItems",
    ]
    for _ in range(2):
        assert broker.issue(app)["statusCode"] == 200
        assert trips.take() == [
            "dynamodb:TransactGetItems",
            "kms:Sign",
            "dynamodb:TransactWriteItems",  # the token and its ledger record, together
        ]
    assert len(broker.ledger_records()) == 3


def test_rejected_requests_cost_the_one_read_and_at_most_the_refusal_record(
    broker: Broker, app: App
) -> None:
    trips = RoundTrips().attach(dynamodb(broker), kms(broker))

    assert broker.issue(app, proof=broker.proof(app.key, htm="GET"))["statusCode"] == 400
    assert trips.take() == []  # a bad proof costs no AWS call
    assert broker.issue(app, secret="wrong")["statusCode"] == 401
    # the read, then the refusal's conditional put (rate-bounded; never a Sign)
    assert trips.take() == ["dynamodb:TransactGetItems", "dynamodb:PutItem"]
    assert broker.issue(app, scope="admin")["statusCode"] == 400
    assert trips.take() == ["dynamodb:TransactGetItems"]
