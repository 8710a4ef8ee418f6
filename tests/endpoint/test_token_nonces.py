"""RFC 9449 §8 at the token endpoint, through the real Lambda handler on moto: with
RequireDpopNonceAtToken a proof without (or with a stale, forged, other-secret) nonce is
a 400 ``use_dpop_nonce`` with a fresh ``DPoP-Nonce``; the retry with it gets the token
(and the next nonce); the secret unavailable is a 503."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbroker import bootstrap
from tokenbroker.domain.nonces import TOKEN_ENDPOINT, NoncePolicy, NonceService

from ._support import App, Broker, assert_error, error_reply, header, json_body, service_id


@pytest.fixture
def nonces_on(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("DPOP_NONCE_REQUIRED", "true")
    broker.reset()
    return broker


def with_nonce(broker: Broker, app: App, nonce: str) -> dict[str, Any]:
    return broker.issue(app, proof=broker.proof(app.key, claim_overrides={"nonce": nonce}))


def challenge(response: dict[str, Any]) -> str:
    assert_error(response, 400, "use_dpop_nonce")
    nonce = header(response, "DPoP-Nonce")
    assert nonce
    assert header(response, "Cache-Control") == "no-store"
    return nonce


def test_without_the_setting_no_nonce_is_needed_and_none_is_sent(broker: Broker, app: App) -> None:
    response = broker.issue(app)
    assert response["statusCode"] == 200
    assert header(response, "DPoP-Nonce") is None


def test_a_proof_without_a_nonce_gets_the_challenge_and_the_retry_gets_the_token(
    nonces_on: Broker, app: App
) -> None:
    nonce = challenge(nonces_on.issue(app))
    assert not nonces_on.token_records()
    response = with_nonce(nonces_on, app, nonce)
    assert response["statusCode"] == 200
    assert json_body(response)["token_type"] == "DPoP"
    assert header(response, "DPoP-Nonce")  # the next one, for free


def test_a_stale_nonce_is_refused_with_a_fresh_one(nonces_on: Broker, app: App) -> None:
    nonce = challenge(nonces_on.issue(app))
    nonces_on.clock.advance(2 * 300)
    fresh = challenge(with_nonce(nonces_on, app, nonce))
    assert fresh != nonce
    assert json_body(with_nonce(nonces_on, app, fresh))["access_token"]


def test_forged_and_other_secret_nonces_are_refused(nonces_on: Broker, app: App) -> None:
    real = challenge(nonces_on.issue(app))
    step, mac = real.split(".")
    forged = f"{step}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    other = NonceService(
        lambda: (b"x" * 64,), endpoint=TOKEN_ENDPOINT, policy=NoncePolicy(300)
    ).issue(nonces_on.now)
    for bad in (forged, other, "garbage"):
        challenge(with_nonce(nonces_on, app, bad))
    assert not nonces_on.token_records()


def test_the_secret_unavailable_is_a_503_not_a_challenge(nonces_on: Broker, app: App) -> None:
    client = bootstrap.default().client("secretsmanager")
    client.meta.events.register_first(
        f"before-call.{service_id(client)}.GetSecretValue", error_reply("ThrottlingException")
    )
    response = nonces_on.issue(app)
    assert_error(response, 503, "temporarily_unavailable")
    assert header(response, "DPoP-Nonce") is None
    assert not nonces_on.token_records()
