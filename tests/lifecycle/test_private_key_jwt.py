"""RFC 7523 §2.2 ``private_key_jwt`` at the revocation and introspection endpoints: a
client whose public JWK an admin registered (``tokenbroker clients set-jwk``, optionally
removing its secret) authenticates with a signed assertion. Every bad assertion is the
same 401 ``invalid_client`` body (no oracle); each case below proves the refusal AND its
logged reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from endpoint._support import ISSUER, App, Broker, assert_error, json_body
from support.dpop import DeviceKey, b64url, b64url_json, raw_jws
from tokenbroker import bootstrap
from tokenbroker.domain.errors import InvalidClient
from tokenbroker.domain.rfc7523 import ASSERTION_TYPE, MAX_LIFETIME

from ._support import INTROSPECT_PATH, REVOKE_PATH, Lifecycle, lifecycle_event

TOKEN_URL = ISSUER + "/oauth2/token"


def register(app: App, key: DeviceKey, *, remove_secret: bool = False) -> str:
    return bootstrap.default().set_client_jwk(
        app.client_id, json.dumps(key.public_jwk), remove_secret=remove_secret
    )


def assertion(broker: Broker, app: App, key: DeviceKey, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": app.client_id,
        "sub": app.client_id,
        "aud": TOKEN_URL,
        "exp": broker.now + 60,
        "iat": broker.now,
        "jti": str(uuid.uuid4()),
    }
    header: dict[str, Any] = {"alg": key.alg, "typ": "JWT"}
    header.update(overrides.pop("header", {}))
    claims.update(overrides)
    return raw_jws(header, {k: v for k, v in claims.items() if v is not None}, sign_with=key)


def call(life: Lifecycle, path: str, token: str, value: str, **extra: str) -> dict[str, Any]:
    form = {
        "token": token,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": value,
        **extra,
    }
    function = "revocation" if path == REVOKE_PATH else "introspection"
    return life.call(function, lifecycle_event(path, form))


@pytest.fixture
def key(app: App) -> DeviceKey:
    client_key = DeviceKey.generate("ES256")
    register(app, client_key, remove_secret=True)
    return client_key


@pytest.fixture
def reasons(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reason of every InvalidClient raised (logged, never sent)."""
    seen: list[str] = []
    original = InvalidClient.__init__

    def record(self: InvalidClient, *args: Any, **kw: Any) -> None:
        original(self, *args, **kw)
        seen.append(self.reason)

    monkeypatch.setattr(InvalidClient, "__init__", record)
    return seen


def test_a_client_without_a_secret_introspects_and_revokes_with_an_assertion(
    broker: Broker, app: App, life: Lifecycle
) -> None:
    token = life.access_token(app)  # (issued with the secret, still registered here)
    key = DeviceKey.generate("EdDSA")
    assert register(app, key, remove_secret=True) == key.jkt
    answer = json_body(call(life, INTROSPECT_PATH, token, assertion(broker, app, key)))
    assert answer["active"] is True
    assert call(life, REVOKE_PATH, token, assertion(broker, app, key))["statusCode"] == 200
    assert json_body(call(life, INTROSPECT_PATH, token, assertion(broker, app, key))) == {
        "active": False
    }
    # the secret was removed: it no longer authenticates
    assert_error(life.introspect(app, token), 401, "invalid_client")


def refused(life: Lifecycle, value: str, reasons: list[str], reason: str, **extra: str) -> None:
    response = call(life, INTROSPECT_PATH, "x", value, **extra)
    body = assert_error(response, 401, "invalid_client")
    assert body == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert reasons[-1] == reason


def test_a_replayed_assertion_is_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    value = assertion(broker, app, key)
    assert call(life, INTROSPECT_PATH, "x", value)["statusCode"] == 200
    refused(life, value, reasons, "assertion_replayed")


def test_an_expired_or_too_long_lived_assertion_is_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    refused(life, assertion(broker, app, key, exp=broker.now - 10), reasons, "assertion_expired")
    far = broker.now + MAX_LIFETIME + 60
    refused(life, assertion(broker, app, key, exp=far), reasons, "assertion_lifetime")
    refused(life, assertion(broker, app, key, exp="soon"), reasons, "assertion_expired")


def test_an_assertion_for_another_audience_is_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    other = assertion(broker, app, key, aud="https://other.example/oauth2/token")
    refused(life, other, reasons, "assertion_audience")
    refused(life, assertion(broker, app, key, aud=None), reasons, "assertion_audience")


def test_an_assertion_by_an_unregistered_key_is_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    stranger = DeviceKey.generate("ES256")
    refused(life, assertion(broker, app, stranger), reasons, "assertion_signature")
    unregistered = broker.new_app()
    refused(life, assertion(broker, unregistered, stranger), reasons, "assertion_no_key")


def test_hs256_and_none_assertions_are_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    claims = json.loads(base64.urlsafe_b64decode(assertion(broker, app, key).split(".")[1] + "=="))
    signing_input = f"{b64url_json({'alg': 'HS256'})}.{b64url_json(claims)}"
    mac = hmac.new(b"guess", signing_input.encode(), hashlib.sha256).digest()
    refused(life, f"{signing_input}.{b64url(mac)}", reasons, "assertion_alg")
    refused(life, raw_jws({"alg": "none"}, claims), reasons, "assertion_alg")


def test_a_secret_and_an_assertion_together_are_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    value = assertion(broker, app, key)
    refused(life, value, reasons, "two_auth_methods", client_secret="anything")


def test_other_subjects_wrong_types_and_duplicate_keys_are_refused(
    broker: Broker, app: App, life: Lifecycle, key: DeviceKey, reasons: list[str]
) -> None:
    refused(life, assertion(broker, app, key, sub="someone"), reasons, "assertion_subject")
    refused(life, assertion(broker, app, key), reasons, "assertion_subject", client_id="tbc_other")
    refused(life, assertion(broker, app, key, jti=None), reasons, "assertion_jti")
    embedded = assertion(broker, app, key, header={"jwk": key.public_jwk})
    refused(life, embedded, reasons, "assertion_header_key")
    response = life.call(
        "introspection",
        lifecycle_event(
            INTROSPECT_PATH,
            {"token": "x", "client_assertion_type": "urn:other", "client_assertion": "a.b.c"},
        ),
    )
    assert_error(response, 401, "invalid_client")
    assert reasons[-1] == "assertion_type"
    dup = raw_jws(
        {"alg": "ES256"},
        f'{{"iss":"{app.client_id}","iss":"{app.client_id}","sub":"{app.client_id}"}}',
        sign_with=key,
    )
    assert_error(call(life, INTROSPECT_PATH, "x", dup), 401, "invalid_client")
    big = assertion(broker, app, key, pad="x" * 5000)
    assert_error(call(life, INTROSPECT_PATH, "x", big), 401, "invalid_client")


def test_the_admin_command_registers_a_key_and_rejects_private_keys(
    broker: Broker, app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbroker.cli import deployment
    from tokenbroker.cli.main import cli

    monkeypatch.setattr(deployment.CliState, "container", lambda self: bootstrap.default())
    key = DeviceKey.generate("ES256")
    public = tmp_path / "client.jwk"
    public.write_text(json.dumps(key.public_jwk))
    result = CliRunner().invoke(
        cli, ["clients", "set-jwk", "--client-id", app.client_id, "--jwk-file", str(public)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == key.jkt
    private = tmp_path / "private.jwk"
    private.write_text(json.dumps(key.private_jwk))
    result = CliRunner().invoke(
        cli, ["clients", "set-jwk", "--client-id", app.client_id, "--jwk-file", str(private)]
    )
    assert result.exit_code == 2
    assert "private key material" in result.output
    assert "Traceback" not in result.output
    assert len(broker.ledger_records("client_key_set")) == 1
