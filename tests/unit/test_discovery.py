"""RFC 8414 authorization server metadata and the JWKS that serves the signing key."""

from __future__ import annotations

import jwt
import pytest
from joserfc.jwk import ECKey

from support.fakes import FakeSigner
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.services.discovery import DiscoveryService

ISSUER = "https://broker.example/prod"


def service(signer: FakeSigner, issuer: str = ISSUER) -> DiscoveryService:
    return DiscoveryService(
        signer=signer, issuer=issuer, token_path="/oauth2/token", jwks_path="/.well-known/jwks.json"
    )


def test_the_metadata_names_the_issuer_and_its_endpoints() -> None:
    metadata = service(FakeSigner()).metadata("https://ignored.example")
    assert metadata["issuer"] == ISSUER
    assert metadata["token_endpoint"] == ISSUER + "/oauth2/token"
    assert metadata["jwks_uri"] == ISSUER + "/.well-known/jwks.json"


def test_the_metadata_has_every_field_rfc_8414_requires_and_the_dpop_algorithms() -> None:
    metadata = service(FakeSigner()).metadata(ISSUER)
    for required in ("issuer", "response_types_supported"):  # RFC 8414 §2 REQUIRED
        assert required in metadata
    assert metadata["grant_types_supported"] == [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:token-exchange",
        "refresh_token",
    ]
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {  # type: ignore[arg-type]
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert metadata["dpop_signing_alg_values_supported"] == ["ES256", "ES384", "EdDSA"]


def test_no_symmetric_or_unsigned_algorithm_is_advertised_for_proofs() -> None:
    algs = service(FakeSigner()).metadata(ISSUER)["dpop_signing_alg_values_supported"]
    assert not {a.lower() for a in algs} & {"none", "hs256", "hs384", "hs512"}  # type: ignore[union-attr]


def test_without_a_configured_issuer_the_request_issuer_is_used() -> None:
    metadata = service(FakeSigner(), issuer="").metadata("https://abc.execute-api.example/dev")
    assert metadata["issuer"] == "https://abc.execute-api.example/dev"
    assert metadata["token_endpoint"] == "https://abc.execute-api.example/dev/oauth2/token"


def test_the_jwks_serves_the_signing_key_with_its_rfc_7638_thumbprint_as_kid() -> None:
    signer = FakeSigner()
    (served,) = service(signer).jwks()["keys"]  # type: ignore[misc]
    public = {k: served[k] for k in ("kty", "crv", "x", "y")}
    assert served["kid"] == ECKey.import_key(public).thumbprint()
    assert served["kid"] == signer.public_jwk().kid
    assert (served["use"], served["alg"], served["kty"], served["crv"]) == (
        "sig",
        "ES256",
        "EC",
        "P-256",
    )
    assert "d" not in served


def test_a_token_signed_by_the_signer_verifies_with_the_served_key() -> None:
    signer = FakeSigner()
    (served,) = service(signer).jwks()["keys"]  # type: ignore[misc]
    key = jwt.PyJWK(served)
    token = jwt.encode({"sub": "x"}, signer.private_key, algorithm="ES256")
    assert jwt.decode(token, key, algorithms=["ES256"]) == {"sub": "x"}


def test_the_jwks_fails_closed_when_the_key_cannot_be_read() -> None:
    signer = FakeSigner()
    signer.fail_with()
    with pytest.raises(TemporarilyUnavailable):
        service(signer).jwks()


def test_the_registered_endpoints_are_published_with_their_auth_methods() -> None:
    metadata = DiscoveryService(
        signer=FakeSigner(),
        issuer=ISSUER,
        token_path="/oauth2/token",
        jwks_path="/.well-known/jwks.json",
        endpoint_paths={
            "revocation_endpoint_path": "/oauth2/revoke",
            "introspection_endpoint_path": "/oauth2/introspect",
            "device_enrollment_path": "",  # not configured: not listed
        },
    ).metadata(ISSUER)
    assert metadata["revocation_endpoint"] == ISSUER + "/oauth2/revoke"
    assert metadata["introspection_endpoint"] == ISSUER + "/oauth2/introspect"
    assert "device_enrollment_endpoint" not in metadata
    for name in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert metadata[f"{name}_auth_methods_supported"] == [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ]
