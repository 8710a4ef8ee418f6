"""RFC 7662 introspection at /oauth2/introspect: the claims of a live token for the
client it was issued to (or a resource server's client holding
``tokenbroker:introspect``); ``{"active": false}`` for garbage, expired, revoked, a
disabled client, a revoked device, or another client's token."""

from __future__ import annotations

from typing import Any

from endpoint._support import AUDIENCE, ISSUER, LIFETIME, SKEW, App, Broker, assert_error, json_body
from tokenbroker import bootstrap
from tokenbroker.services.introspection import INTROSPECT_SCOPE

from ._support import INTROSPECT_PATH, Lifecycle, lifecycle_event


def body(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] == 200, response
    assert response["headers"]["Cache-Control"] == "no-store"
    return json_body(response)


def test_a_live_token_is_active_with_its_claims(broker: Broker, app: App, life: Lifecycle) -> None:
    token = life.access_token(app)
    (issued,) = broker.ledger_records("token_issued")
    answer = body(life.introspect(app, token, basic=True))
    assert answer == {
        "active": True,
        "scope": " ".join(app.scopes),
        "client_id": app.client_id,
        "sub": app.client_id,
        "exp": broker.now + LIFETIME,
        "iat": broker.now,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "jti": issued["token_jti"],
        "token_type": "DPoP",
        "cnf": {"jkt": app.key.jkt},
    }


def test_a_revoked_token_is_inactive_at_once(broker: Broker, app: App, life: Lifecycle) -> None:
    token = life.access_token(app)
    assert body(life.introspect(app, token))["active"] is True
    assert life.revoke(app, token)["statusCode"] == 200
    assert body(life.introspect(app, token)) == {"active": False}  # no 5 s cache here


def test_garbage_and_expired_tokens_are_inactive(broker: Broker, app: App, life: Lifecycle) -> None:
    token = life.access_token(app)
    for garbage in ("x", "a.b.c", token[:-4] + "AAAA", "x" * 5000):
        assert body(life.introspect(app, garbage)) == {"active": False}
    broker.clock.advance(LIFETIME + SKEW)
    assert body(life.introspect(app, token)) == {"active": False}


def test_a_disabled_client_or_revoked_device_makes_the_token_inactive(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    resource_server = broker.new_app([INTROSPECT_SCOPE])
    token = life.access_token(app)
    bootstrap.default().admin.revoke_device(jkt=app.key.jkt)
    assert body(life.introspect(resource_server, token)) == {"active": False}

    other = broker.new_app()
    token = life.access_token(other)
    bootstrap.default().admin.disable_client(client_id=other.client_id)
    assert body(life.introspect(resource_server, token)) == {"active": False}


def test_another_clients_token_is_inactive_unless_the_caller_may_introspect(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)
    stranger = broker.new_app()
    assert body(life.introspect(stranger, token)) == {"active": False}
    resource_server = broker.new_app([INTROSPECT_SCOPE])
    assert body(life.introspect(resource_server, token))["client_id"] == app.client_id


def test_a_bad_client_is_invalid_client(broker: Broker, app: App, life: Lifecycle) -> None:
    token = life.access_token(app)
    event = lifecycle_event(
        INTROSPECT_PATH, {"token": token, "client_id": app.client_id, "client_secret": "no"}
    )
    assert_error(life.call("introspection", event), 401, "invalid_client")
