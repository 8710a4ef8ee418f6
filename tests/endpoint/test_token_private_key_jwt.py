"""RFC 7523 §2.2 ``private_key_jwt`` at the token endpoint, for every grant there
(client_credentials, RFC 8693 token exchange, refresh), through the real token function
on moto. One authenticator (services/client_auth.py) serves them all, so each refusal
below is the same 401 ``invalid_client`` body, and the test also asserts its specific
reason (logged, and in the ledger's refusal record)."""

# ruff: noqa: F811  (the idp and reasons fixtures are imported from other test modules)
from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import jwt
import pytest

from lifecycle.test_private_key_jwt import assertion, reasons, register  # noqa: F401
from support.dpop import DeviceKey, b64url, b64url_json, raw_jws
from support.lambda_events import ISSUER
from tokenbroker.domain.rfc7523 import ASSERTION_TYPE

from ._support import TOKEN_URL, App, Broker, RoundTrips, assert_error, json_body
from ._support import token_event as _token_event
from .test_token_exchange import (  # noqa: F401
    EXCHANGE,
    ID_TOKEN,
    FakeIdp,
    enrolled,
    idp,
    person,
)

REFUSED = {"error": "invalid_client", "error_description": "client authentication failed"}


def token(
    broker: Broker, app: App, value: str, *, device: DeviceKey | None = None, **form: str
) -> dict[str, Any]:
    body = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": value,
        **form,
    }
    return broker.invoke_token(_token_event(body, dpop=broker.proof(device or app.key)))


@pytest.fixture
def client_key(app: App) -> DeviceKey:
    key = DeviceKey.generate("ES256")
    register(app, key, remove_secret=True)
    return key


def refused(response: dict[str, Any], reasons: list[str], reason: str) -> None:
    assert assert_error(response, 401, "invalid_client") == REFUSED
    assert reasons[-1] == reason


# ---- client_credentials -----------------------------------------------------------------


def test_a_client_without_a_secret_gets_a_token_with_an_assertion(
    broker: Broker, app: App, client_key: DeviceKey
) -> None:
    first = token(broker, app, assertion(broker, app, client_key))
    assert first["statusCode"] == 200, first  # (warm: the signing key is cached)
    trips = RoundTrips().attach(broker.container.client("dynamodb"), broker.container.client("kms"))
    broker.clock.advance(1)
    response = token(broker, app, assertion(broker, app, client_key))
    assert response["statusCode"] == 200, response
    # the read of client + device, the assertion's single-use write, Sign, the write
    assert trips.take() == [
        "dynamodb:TransactGetItems",
        "dynamodb:PutItem",
        "kms:Sign",
        "dynamodb:TransactWriteItems",
    ]
    claims = jwt.decode(json_body(response)["access_token"], options={"verify_signature": False})
    assert (claims["client_id"], claims["cnf"]) == (app.client_id, {"jkt": app.key.jkt})
    assert broker.ledger_records("token_issued")[-1]["client_id"] == app.client_id
    # the issuer is an accepted audience too (RFC 7523 §3 C)
    by_issuer = token(broker, app, assertion(broker, app, client_key, aud=ISSUER))
    assert by_issuer["statusCode"] == 200, by_issuer


def test_the_removed_secret_no_longer_gets_a_token(
    broker: Broker, app: App, client_key: DeviceKey
) -> None:
    assert assert_error(broker.issue(app), 401, "invalid_client") == REFUSED
    assert broker.ledger_records("token_denied")[-1]["reason"] == "wrong_secret"


def test_a_client_that_keeps_its_secret_may_use_either(broker: Broker, app: App) -> None:
    key = DeviceKey.generate("EdDSA")
    register(app, key, remove_secret=False)
    assert broker.issue(app)["statusCode"] == 200
    assert token(broker, app, assertion(broker, app, key))["statusCode"] == 200


def test_a_replayed_assertion_is_invalid_client_and_recorded(
    broker: Broker, app: App, client_key: DeviceKey, reasons: list[str]
) -> None:
    value = assertion(broker, app, client_key)
    assert token(broker, app, value)["statusCode"] == 200
    refused(token(broker, app, value), reasons, "assertion_replayed")
    [record] = broker.ledger_records("token_denied")
    assert (record["reason"], record["client_id"]) == ("bad_client_assertion", app.client_id)


def test_bad_assertions_are_invalid_client_with_their_reason(
    broker: Broker, app: App, client_key: DeviceKey, reasons: list[str]
) -> None:
    def ask(value: str) -> dict[str, Any]:
        return token(broker, app, value)

    refused(ask(assertion(broker, app, client_key, exp=None)), reasons, "assertion_expired")
    refused(
        ask(assertion(broker, app, client_key, exp=broker.now - 30)), reasons, "assertion_expired"
    )
    refused(
        ask(assertion(broker, app, client_key, exp=broker.now + 3600)),
        reasons,
        "assertion_lifetime",
    )
    other = "https://other.example/oauth2/token"
    refused(ask(assertion(broker, app, client_key, aud=other)), reasons, "assertion_audience")
    refused(ask(assertion(broker, app, DeviceKey.generate())), reasons, "assertion_signature")
    refused(ask(assertion(broker, app, client_key, jti=None)), reasons, "assertion_jti")


def test_none_and_hs256_signed_with_the_public_key_are_refused(
    broker: Broker, app: App, client_key: DeviceKey, reasons: list[str]
) -> None:
    claims = {
        "iss": app.client_id,
        "sub": app.client_id,
        "aud": TOKEN_URL,
        "exp": broker.now + 60,
        "jti": str(uuid.uuid4()),
    }
    refused(token(broker, app, raw_jws({"alg": "none"}, claims)), reasons, "assertion_alg")
    # the key-confusion attack: HMAC keyed with the (public) registered key
    signing_input = f"{b64url_json({'alg': 'HS256'})}.{b64url_json(claims)}"
    public = json.dumps(client_key.public_jwk).encode()
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    refused(token(broker, app, f"{signing_input}.{b64url(mac)}"), reasons, "assertion_alg")


def test_an_unregistered_client_key_and_a_secret_beside_an_assertion_are_refused(
    broker: Broker, app: App, client_key: DeviceKey, reasons: list[str]
) -> None:
    stranger = broker.new_app()  # has no registered key
    refused(
        token(broker, stranger, assertion(broker, stranger, DeviceKey.generate())),
        reasons,
        "assertion_no_key",
    )
    both = token(broker, app, assertion(broker, app, client_key), client_secret="x")
    refused(both, reasons, "two_auth_methods")
    unknown = App("tbc_nobody", "", app.key, app.scopes)
    nobody = token(broker, app, assertion(broker, unknown, client_key))
    assert assert_error(nobody, 401, "invalid_client") == REFUSED
    assert broker.ledger_records("token_denied")[-1]["reason"] == "unknown_client"


# ---- token exchange and refresh ---------------------------------------------------------------


def test_exchange_and_refresh_authenticate_with_an_assertion_too(
    broker: Broker, idp: FakeIdp, app: App, reasons: list[str]
) -> None:
    device = enrolled(broker, idp, app)  # (enrollment with the secret, still registered)
    key = DeviceKey.generate("ES384")
    register(app, key, remove_secret=True)
    body = {
        "grant_type": EXCHANGE,
        "subject_token_type": ID_TOKEN,
        "subject_token": idp.id_token(groups=["ml"]),
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(broker, app, key),
    }
    exchanged = broker.invoke_token(_token_event(body, dpop=broker.proof(device)))
    assert exchanged["statusCode"] == 200, exchanged
    claims = jwt.decode(json_body(exchanged)["access_token"], options={"verify_signature": False})
    assert claims["sub"] == person()
    refresh_token = json_body(exchanged)["refresh_token"]

    def refresh(value: str) -> dict[str, Any]:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": value,
        }
        return broker.invoke_token(_token_event(form, dpop=broker.proof(device)))

    # refused first (nothing rotated), then accepted
    stale = assertion(broker, app, key, exp=broker.now - 30)
    refused(refresh(stale), reasons, "assertion_expired")
    refreshed = refresh(assertion(broker, app, key))
    assert refreshed["statusCode"] == 200, refreshed
    # the secret alone no longer refreshes (it was removed)
    form = {"grant_type": "refresh_token", "refresh_token": json_body(refreshed)["refresh_token"]}
    with_secret = _token_event(form, dpop=broker.proof(device), basic=(app.client_id, app.secret))
    refused(broker.invoke_token(with_secret), reasons, "wrong_secret")
