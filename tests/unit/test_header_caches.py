"""The protected-header caches of domain/rfc9449.py and domain/rfc9068.py: a header's
checks are done once per distinct header segment, and nothing else is cached (every
claim, the ``kid``'s key and the signature are checked on every call)."""

from __future__ import annotations

from typing import Any

import pytest

from support.dpop import DeviceKey, raw_jws
from tokenbroker.domain.errors import InvalidDpopProof, InvalidToken
from tokenbroker.domain.rfc9068 import verify_access_token
from tokenbroker.domain.rfc9449 import ProofPolicy, verify_proof

NOW = 1_800_000_000
URL = "https://broker.example/v1/whoami"
ISSUER = "https://broker.example"
AUDIENCE = "https://api.example"


def _proof(key: DeviceKey, jti: str, **kw: Any) -> str:
    return key.proof("GET", URL, iat=NOW, jti=jti, **kw)


def _verify_proof(proof: str, policy: ProofPolicy | None = None) -> Any:
    return verify_proof(proof, method="GET", url=URL, now=NOW, policy=policy or ProofPolicy())


def test_a_cached_proof_header_still_gets_its_claims_and_signature_checked() -> None:
    key = DeviceKey.generate("ES256")
    assert _verify_proof(_proof(key, "j-1")).jkt == key.jkt  # the header is now cached
    head, payload, _ = _proof(key, "j-2").split(".")
    forged = f"{head}.{payload}.{_proof(key, 'j-3').split('.')[2]}"  # another proof's sig

    with pytest.raises(InvalidDpopProof, match="signature"):
        _verify_proof(forged)
    with pytest.raises(InvalidDpopProof, match="htu"):
        verify_proof(
            _proof(key, "j-4"),
            method="GET",
            url="https://other.example/",
            now=NOW,
            policy=ProofPolicy(),
        )


def test_the_same_proof_header_under_a_policy_without_its_alg_is_rejected() -> None:
    key = DeviceKey.generate("ES256")
    proof = _proof(key, "j-1")
    assert _verify_proof(proof).jti == "j-1"

    with pytest.raises(InvalidDpopProof, match="alg is not an allowed"):
        _verify_proof(proof, ProofPolicy(algorithms=("EdDSA",)))


def test_a_rejected_proof_header_is_rejected_every_time() -> None:
    key = DeviceKey.generate("ES256")
    proof = _proof(key, "j-1", header_overrides={"kid": "k"})
    for _ in range(2):
        with pytest.raises(InvalidDpopProof, match="must not contain 'kid'"):
            _verify_proof(proof)


def _token(issuer: DeviceKey, jti: str, *, sign_with: DeviceKey | None = None) -> str:
    claims = {
        "iss": ISSUER,
        "sub": "s",
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": jti,
        "client_id": "c",
        "scope": "read",
        "cnf": {"jkt": issuer.jkt},
    }
    header = {"alg": "ES256", "typ": "at+jwt", "kid": issuer.jkt}
    return raw_jws(header, claims, sign_with=sign_with or issuer)


def _verify_token(token: str, keys: dict[str, Any]) -> Any:
    return verify_access_token(
        token, resolve_key=keys.get, issuer=ISSUER, audience=AUDIENCE, now=NOW, skew=5
    )


def test_a_cached_token_header_still_resolves_its_key_and_checks_the_signature() -> None:
    issuer, attacker = DeviceKey.generate("ES256"), DeviceKey.generate("ES256")
    keys = {issuer.jkt: issuer.private_key.public_key()}
    assert _verify_token(_token(issuer, "t-1"), keys).jti == "t-1"  # header cached

    with pytest.raises(InvalidToken, match="signature"):
        _verify_token(_token(issuer, "t-2", sign_with=attacker), keys)
    with pytest.raises(InvalidToken, match="kid is unknown"):
        _verify_token(_token(issuer, "t-3"), {})  # the key was retired: no cache hides it
