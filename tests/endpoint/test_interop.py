"""Interoperability: DPoP proofs produced by an independent JOSE library (joserfc, used
directly here, not through the test toolkit) are accepted, and the access tokens the
broker issues verify with that library against the published JWKS."""

from __future__ import annotations

import json
import secrets
import warnings
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, KeySet, OKPKey

from tokenbroker import bootstrap

from ._support import (
    AUDIENCE,
    ISSUER,
    LIFETIME,
    TOKEN_URL,
    Broker,
    assert_error,
    discovery_event,
    json_body,
    token_event,
)

GENERATORS: dict[str, Any] = {
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
    "Ed25519": lambda: OKPKey.generate_key("Ed25519"),
}


def joserfc_proof(key: ECKey | OKPKey, alg: str, iat: int, htu: str = TOKEN_URL) -> str:
    """A DPoP proof straight from joserfc: compact JWS, public JWK as joserfc exports it."""
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    claims = {"jti": secrets.token_urlsafe(18), "htm": "POST", "htu": htu, "iat": iat}
    payload = json.dumps(claims).encode()
    with warnings.catch_warnings():
        # joserfc flags "EdDSA" as deprecated by RFC 9864; RFC 9449 deployments use it
        warnings.simplefilter("ignore", SecurityWarning)
        return jws.serialize_compact(header, payload, key, algorithms=[alg])


def register(broker: Broker, key: ECKey | OKPKey, scope: str = "profile") -> tuple[str, str]:
    admin = bootstrap.default().admin
    created = admin.create_client(name="interop", scope=scope)
    admin.enroll_device(client_id=created.client.client_id, jkt=key.thumbprint())
    return created.client.client_id, created.client_secret


def request_token(broker: Broker, key: ECKey | OKPKey, alg: str) -> dict[str, Any]:
    client_id, secret = register(broker, key)
    form = {"grant_type": "client_credentials", "scope": "profile"}
    event = token_event(form, basic=(client_id, secret), dpop=joserfc_proof(key, alg, broker.now))
    return broker.invoke_token(event)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA"])
def test_a_proof_made_by_joserfc_gets_a_token_that_joserfc_verifies_with_the_jwks(
    broker: Broker, alg: str
) -> None:
    key = GENERATORS[alg]()

    response = request_token(broker, key, alg)

    assert response["statusCode"] == 200, response
    body = json_body(response)
    assert body["token_type"] == "DPoP"
    keys = KeySet.import_key_set(broker.jwks())
    token = jwt.decode(body["access_token"], keys, algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    assert token.header["kid"] == keys.keys[0].kid
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": AUDIENCE},
        sub={"essential": True},
        jti={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(token.claims)
    assert token.claims["cnf"] == {"jkt": key.thumbprint()}
    assert token.claims["exp"] - token.claims["iat"] == LIFETIME


def test_the_rfc_9864_ed25519_alg_name_is_not_advertised_and_is_invalid_dpop_proof(
    broker: Broker,
) -> None:
    """Consistency with the metadata: only the advertised algorithms are accepted."""
    key = GENERATORS["Ed25519"]()
    metadata = json_body(broker.invoke_discovery(discovery_event()))
    assert "Ed25519" not in metadata["dpop_signing_alg_values_supported"]

    assert_error(request_token(broker, key, "Ed25519"), 400, "invalid_dpop_proof")
