"""Refresh tokens through the token function on moto: rotation, reuse detection (the
family dies, a ledger event), key binding, exactly one winner of concurrent refreshes,
idle and absolute lifetimes (clock stepped, never slept), and revocation ending a
family."""

# ruff: noqa: F811  (the idp fixture is imported from test_token_exchange)
from __future__ import annotations

import json
import threading
from typing import Any

import jwt
import pytest

from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.models import Status

from ._support import App, Broker, RoundTrips, assert_error, json_body, token_event
from .test_token_exchange import FakeIdp, enrolled, exchange, idp, person  # noqa: F401


def refresh(broker: Broker, app: App, token: str, key: DeviceKey, **form: str) -> dict[str, Any]:
    body = {"grant_type": "refresh_token", "refresh_token": token, **form}
    event = token_event(body, dpop=broker.proof(key), basic=(app.client_id, app.secret))
    return broker.invoke_token(event)


def started(broker: Broker, idp: FakeIdp, app: App) -> tuple[DeviceKey, str]:
    key = enrolled(broker, idp, app)
    response = exchange(broker, app, idp.id_token(groups=["ml"]), key)
    assert response["statusCode"] == 200, response
    return key, json_body(response)["refresh_token"]


def test_a_refresh_rotates_the_token_and_keeps_the_person(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key, first = started(broker, idp, app)
    broker.clock.advance(10)
    trips = RoundTrips().attach(broker.container.client("dynamodb"), broker.container.client("kms"))
    response = refresh(broker, app, first, key)
    assert response["statusCode"] == 200, response
    assert trips.take() == [
        "dynamodb:TransactGetItems",
        "kms:Sign",
        "dynamodb:TransactWriteItems",
    ]
    body = json_body(response)
    second = body["refresh_token"]
    assert second != first
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["sub"], claims["cnf"]) == (person(), {"jkt": key.jkt})
    assert claims["act"] == {"sub": app.client_id}
    assert broker.ledger_records("token_issued")[-1]["principal"] == person()
    # the new one works in turn; narrowing the scope is allowed, widening is not
    broker.clock.advance(10)
    narrowed = refresh(broker, app, second, key, scope="profile")
    assert json_body(narrowed)["scope"] == "profile"
    wider = refresh(
        broker, app, json_body(narrowed)["refresh_token"], key, scope="model:beta:invoke"
    )
    assert_error(wider, 400, "invalid_scope")
    # stored hashed: no refresh token value in any table
    stored = json.dumps(broker.ledger_records(None), default=str) + json.dumps(
        broker.ddb.scan(TableName=broker.table("RefreshTokensTable"))["Items"]
    )
    for value in (first, second):
        assert value.rsplit(".", 1)[1] not in stored


def test_reusing_a_refresh_token_revokes_its_whole_family_and_is_recorded(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key, first = started(broker, idp, app)
    second = json_body(refresh(broker, app, first, key))["refresh_token"]
    body = assert_error(refresh(broker, app, first, key), 400, "invalid_grant")
    assert "already used" in body["error_description"]
    [event] = broker.ledger_records("refresh_reused")
    assert (event["principal"], event["decision"], event["jkt"]) == (person(), "deny", key.jkt)
    # the thief's replay killed the legitimate holder's newest token too
    body = assert_error(refresh(broker, app, second, key), 400, "invalid_grant")
    assert "revoked" in body["error_description"]
    # a second replay is refused (and recorded) the same way, never a 503
    assert_error(refresh(broker, app, first, key), 400, "invalid_grant")
    assert len(broker.ledger_records("refresh_reused")) == 2


def test_a_refresh_token_with_another_keys_proof_is_refused(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    _, first = started(broker, idp, app)
    other = enrolled(broker, idp, app)  # even the same person's other device
    body = assert_error(refresh(broker, app, first, other), 400, "invalid_grant")
    assert "bound to another DPoP key" in body["error_description"]
    body = assert_error(refresh(broker, app, first, DeviceKey.generate()), 400, "invalid_grant")
    assert "bound to another DPoP key" in body["error_description"]


def test_another_client_or_a_forged_token_is_refused(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key, first = started(broker, idp, app)
    other_app = broker.new_app()
    assert_error(refresh(broker, other_app, first, key), 400, "invalid_grant")
    principal_part, family, secret = first.split(".")
    for forged in (f"{principal_part}.{family}.x{secret}", "a.b.c", "nope", first + ".x"):
        body = assert_error(refresh(broker, app, forged, key), 400, "invalid_grant")
        assert "refresh token is invalid" in body["error_description"]
    assert refresh(broker, app, first, key)["statusCode"] == 200  # untouched by the above


def test_concurrent_refreshes_of_one_token_have_exactly_one_winner(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key, first = started(broker, idp, app)
    ddb = broker.container.client("dynamodb")
    moto_lock = threading.Lock()  # moto is not atomic across threads; DynamoDB is
    original = ddb.transact_write_items
    reads_done = threading.Barrier(2, timeout=20)

    def serialised(**kw: Any) -> Any:
        reads_done.wait()  # both have read the token as active before either writes
        with moto_lock:
            return original(**kw)

    ddb.transact_write_items = serialised
    events = [
        token_event(
            {"grant_type": "refresh_token", "refresh_token": first},
            dpop=broker.proof(key),
            basic=(app.client_id, app.secret),
        )
        for _ in range(2)
    ]
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda e=e: statuses.append(broker.invoke_token(e)["statusCode"]))
        for e in events
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400]


def test_idle_and_absolute_lifetimes_end_a_family(broker: Broker, idp: FakeIdp, app: App) -> None:
    settings = broker.container.settings
    key, token = started(broker, idp, app)
    broker.clock.advance(settings.refresh_idle_seconds - 1)
    token = json_body(refresh(broker, app, token, key))["refresh_token"]
    broker.clock.advance(settings.refresh_idle_seconds)
    body = assert_error(refresh(broker, app, token, key), 400, "invalid_grant")
    assert "expired (idle)" in body["error_description"]
    # refreshed often enough, a family still ends at its absolute lifetime
    key, token = started(broker, idp, app)
    start = broker.now
    while (
        broker.now + settings.refresh_idle_seconds // 2 < start + settings.refresh_absolute_seconds
    ):
        broker.clock.advance(settings.refresh_idle_seconds // 2)
        response = refresh(broker, app, token, key)
        if broker.now >= start + settings.refresh_absolute_seconds:
            break
        assert response["statusCode"] == 200, response
        token = json_body(response)["refresh_token"]
    broker.clock.advance(settings.refresh_idle_seconds // 2)
    body = assert_error(refresh(broker, app, token, key), 400, "invalid_grant")
    assert "has expired" in body["error_description"]


def test_revoking_the_device_or_disabling_the_person_or_client_ends_the_family(
    broker: Broker, idp: FakeIdp, app: App
) -> None:
    key, token = started(broker, idp, app)
    bootstrap.default().admin.revoke_device(key.jkt)
    body = assert_error(refresh(broker, app, token, key), 400, "invalid_grant")
    assert "device was revoked" in body["error_description"]
    key, token = started(broker, idp, app)
    broker.container.people.set_person_status(person(), Status.DISABLED, broker.now)
    body = assert_error(refresh(broker, app, token, key), 400, "invalid_grant")
    assert "person is disabled" in body["error_description"]
    broker.container.people.set_person_status(person(), Status.ACTIVE, broker.now)
    bootstrap.default().admin.disable_client(app.client_id)
    assert_error(refresh(broker, app, token, key), 401, "invalid_client")


@pytest.mark.parametrize("missing", ["refresh_token"])
def test_a_refresh_without_its_token_is_invalid_request(
    broker: Broker, app: App, missing: str
) -> None:
    event = token_event(
        {"grant_type": "refresh_token"},
        dpop=broker.proof(app.key),
        basic=(app.client_id, app.secret),
    )
    body = assert_error(broker.invoke_token(event), 400, "invalid_request")
    assert missing in body["error_description"]
