"""Stateless DPoP server nonces (domain/nonces.py): steps, secrets, endpoint classes,
and the proof check that asks for one (RFC 9449 §4.3 check 10). Fixed clocks only."""

from __future__ import annotations

import pytest

from support.dpop import DeviceKey
from tokenbroker.domain.errors import ConfigurationError, TemporarilyUnavailable
from tokenbroker.domain.nonces import (
    RESOURCE,
    TOKEN_ENDPOINT,
    NonceChallenge,
    NoncePolicy,
    NonceService,
)
from tokenbroker.domain.rfc9449 import ProofPolicy, verify_proof

STEP = 300
T0 = 1_800_000_000 - (1_800_000_000 % STEP)  # the start of a step
SECRET = b"s" * 32
OTHER = b"o" * 32


def service(*secrets: bytes, endpoint: str = TOKEN_ENDPOINT) -> NonceService:
    keys = secrets or (SECRET,)
    return NonceService(lambda: keys, endpoint=endpoint, policy=NoncePolicy(STEP))


def refusal(svc: NonceService, nonce: object, now: float) -> NonceChallenge:
    with pytest.raises(NonceChallenge) as caught:
        svc.check(nonce, now)
    return caught.value


def test_a_nonce_is_accepted_in_its_step_and_the_next_one() -> None:
    svc = service()
    nonce = svc.issue(T0)
    svc.check(nonce, T0)
    svc.check(nonce, T0 + STEP - 1)
    svc.check(nonce, T0 + 2 * STEP - 1)


def test_a_nonce_two_steps_old_is_expired_and_the_refusal_carries_a_fresh_one() -> None:
    svc = service()
    nonce = svc.issue(T0)
    later = T0 + 2 * STEP
    error = refusal(svc, nonce, later)
    assert (error.error, error.reason) == ("use_dpop_nonce", "nonce_expired")
    assert error.nonce != nonce
    svc.check(error.nonce, later)  # the fresh one is good


def test_a_nonce_from_the_future_is_refused() -> None:
    svc = service()
    assert refusal(svc, svc.issue(T0 + 2 * STEP), T0).reason == "nonce_expired"


def test_a_missing_nonce_is_asked_for() -> None:
    error = refusal(service(), None, T0)
    assert error.reason == "nonce_missing"
    service().check(error.nonce, T0)


@pytest.mark.parametrize(
    "nonce", ["", "abc", "1.2", 7, "9" * 13 + ".AAAAAAAAAAAAAAAAAAAAAA", "x" * 65, "1 .a"]
)
def test_malformed_nonces_are_refused(nonce: object) -> None:
    assert refusal(service(), nonce, T0).reason == "nonce_malformed"


def test_a_forged_mac_is_refused_as_invalid() -> None:
    svc = service()
    step, mac = svc.issue(T0).split(".")
    forged = f"{step}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    assert refusal(svc, forged, T0).reason == "nonce_invalid"


def test_a_nonce_made_with_another_secret_is_refused() -> None:
    assert refusal(service(SECRET), service(OTHER).issue(T0), T0).reason == "nonce_invalid"


def test_an_expired_forgery_is_invalid_not_expired() -> None:
    forged = service(OTHER).issue(T0 - 10 * STEP)
    assert refusal(service(SECRET), forged, T0).reason == "nonce_invalid"


def test_a_token_endpoint_nonce_is_no_nonce_at_a_resource() -> None:
    nonce = service(endpoint=TOKEN_ENDPOINT).issue(T0)
    assert refusal(service(endpoint=RESOURCE), nonce, T0).reason == "nonce_invalid"


def test_rotation_overlap_the_previous_secret_still_verifies_and_the_new_one_signs() -> None:
    old_nonce = service(SECRET).issue(T0)
    rotated = service(OTHER, SECRET)  # AWSCURRENT first, AWSPREVIOUS second
    rotated.check(old_nonce, T0)
    fresh = rotated.issue(T0)
    service(OTHER).check(fresh, T0)  # signed with the new secret
    assert refusal(service(OTHER), old_nonce, T0).reason == "nonce_invalid"  # overlap over


def test_an_unavailable_secret_fails_closed_never_as_a_challenge() -> None:
    def down() -> tuple[bytes, ...]:
        raise TemporarilyUnavailable("reading the DPoP nonce secret failed (Throttling)")

    svc = NonceService(down, endpoint=TOKEN_ENDPOINT, policy=NoncePolicy(STEP))
    with pytest.raises(TemporarilyUnavailable) as caught:
        svc.check(None, T0)
    assert not isinstance(caught.value, NonceChallenge)
    with pytest.raises(TemporarilyUnavailable):
        svc.issue(T0)


@pytest.mark.parametrize("secrets", [(), (b"short",)])
def test_a_missing_or_short_secret_is_a_configuration_error(secrets: tuple[bytes, ...]) -> None:
    svc = NonceService(lambda: secrets, endpoint=TOKEN_ENDPOINT, policy=NoncePolicy(STEP))
    with pytest.raises(ConfigurationError):
        svc.check(None, T0)


@pytest.mark.parametrize("step", [0, 9, 3601])
def test_the_step_length_is_bounded(step: int) -> None:
    with pytest.raises(ConfigurationError):
        NoncePolicy(step)


# ---- the proof check (RFC 9449 §4.3 check 10) ------------------------------------------

URL = "https://broker.example/prod/oauth2/token"


def policy(svc: NonceService) -> ProofPolicy:
    return ProofPolicy(check_nonce=svc.check)


def test_a_proof_without_a_nonce_gets_the_challenge() -> None:
    svc = service()
    proof = DeviceKey.generate("ES256").proof("POST", URL, iat=T0)
    with pytest.raises(NonceChallenge) as caught:
        verify_proof(proof, method="POST", url=URL, now=T0, policy=policy(svc))
    assert caught.value.reason == "nonce_missing"


def test_a_proof_with_the_servers_nonce_passes() -> None:
    svc = service()
    proof = DeviceKey.generate("ES256").proof(
        "POST", URL, iat=T0, claim_overrides={"nonce": svc.issue(T0)}
    )
    assert verify_proof(proof, method="POST", url=URL, now=T0, policy=policy(svc)).jti


def test_a_proof_with_a_stale_nonce_is_refused_with_a_fresh_one() -> None:
    svc = service()
    now = T0 + 2 * STEP
    proof = DeviceKey.generate("ES256").proof(
        "POST", URL, iat=now, claim_overrides={"nonce": svc.issue(T0)}
    )
    with pytest.raises(NonceChallenge) as caught:
        verify_proof(proof, method="POST", url=URL, now=now, policy=policy(svc))
    assert caught.value.reason == "nonce_expired"
    svc.check(caught.value.nonce, now)


def test_without_a_nonce_policy_a_proof_needs_no_nonce() -> None:
    proof = DeviceKey.generate("ES256").proof("POST", URL, iat=T0)
    assert verify_proof(proof, method="POST", url=URL, now=T0, policy=ProofPolicy()).jti
