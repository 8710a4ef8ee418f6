"""The discovery Lambda: RFC 8414 metadata and the JWKS (the KMS public key), from
genuine API Gateway events on a moto deployment of template.yaml."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from joserfc.jwk import ECKey

from ._support import (
    HOST,
    ISSUER,
    JWKS_PATH,
    METADATA_PATH,
    App,
    Broker,
    assert_error,
    discovery_event,
    fail_operation,
    header,
    json_body,
)

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
CONFIGURED_ISSUER = "https://auth.example.com/tenant-a"


def ok(response: dict[str, Any]) -> dict[str, Any]:
    assert response["statusCode"] == 200, response
    assert header(response, "Content-Type") == "application/json"
    assert header(response, "Cache-Control") == "public, max-age=300"
    return json_body(response)


def metadata(broker: Broker, event: dict[str, Any] | None = None) -> dict[str, Any]:
    return ok(broker.invoke_discovery(event or discovery_event(METADATA_PATH)))


def test_the_metadata_describes_this_deployment_per_rfc_8414(broker: Broker) -> None:
    document = metadata(broker)

    assert document["issuer"] == ISSUER == f"https://{HOST}/prod"
    assert document["token_endpoint"] == ISSUER + "/oauth2/token"
    assert document["jwks_uri"] == ISSUER + JWKS_PATH
    assert "client_credentials" in document["grant_types_supported"]
    assert set(document["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",  # RFC 7523, with its asymmetric algorithms only
    }
    assert document["token_endpoint_auth_signing_alg_values_supported"] == [
        "ES256",
        "ES384",
        "EdDSA",
    ]
    algs = document["dpop_signing_alg_values_supported"]
    assert "ES256" in algs
    assert not {"none", "HS256", "HS384", "HS512"} & set(algs)
    assert "response_types_supported" in document


def test_the_metadata_issuer_is_the_iss_of_issued_tokens(broker: Broker, app: App) -> None:
    token = json_body(broker.issue(app))["access_token"]

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == metadata(broker)["issuer"]


def test_behind_a_custom_domain_base_path_the_issuer_follows_the_called_url(
    broker: Broker,
) -> None:
    event = discovery_event(METADATA_PATH)
    event["requestContext"].update(
        domainName="auth.example.com", path="/v2/.well-known/oauth-authorization-server"
    )

    document = metadata(broker, event)

    assert document["issuer"] == "https://auth.example.com/v2"
    assert document["token_endpoint"] == "https://auth.example.com/v2/oauth2/token"


def test_with_issuer_configured_the_metadata_and_the_tokens_use_it(
    broker: Broker, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISSUER", CONFIGURED_ISSUER)
    broker.reset()

    document = metadata(broker)

    assert document["issuer"] == CONFIGURED_ISSUER
    assert document["token_endpoint"] == CONFIGURED_ISSUER + "/oauth2/token"
    assert document["jwks_uri"] == CONFIGURED_ISSUER + JWKS_PATH
    token = json_body(broker.issue(app))["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == CONFIGURED_ISSUER


def test_the_jwks_is_one_public_p256_key_whose_kid_is_its_rfc_7638_thumbprint(
    broker: Broker,
) -> None:
    jwks = ok(broker.invoke_discovery(discovery_event(JWKS_PATH)))

    assert set(jwks) == {"keys"}
    [jwk] = jwks["keys"]
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    assert jwk["alg"] == "ES256"
    assert jwk["use"] == "sig"
    assert not PRIVATE_MEMBERS & set(jwk)
    assert (
        jwk["kid"] == ECKey.import_key({k: jwk[k] for k in ("kty", "crv", "x", "y")}).thumbprint()
    )


def test_the_jwks_key_is_the_kms_signing_keys_public_key(broker: Broker) -> None:
    [jwk] = broker.jwks()["keys"]

    der = broker.kms.get_public_key(KeyId=broker.key_id)["PublicKey"]
    kms_key = load_der_public_key(der)
    assert isinstance(kms_key, ec.EllipticCurvePublicKey)
    published = ECKey.import_key(jwk).public_key
    assert isinstance(published, ec.EllipticCurvePublicKey)
    assert published.public_numbers() == kms_key.public_numbers()


@pytest.mark.parametrize(
    "code", ["KMSInvalidStateException", "DisabledException", "AccessDeniedException"]
)
def test_a_kms_failure_makes_the_jwks_503_temporarily_unavailable(
    broker: Broker, code: str
) -> None:
    fail_operation(broker.container.client("kms"), "GetPublicKey", code)

    response = broker.invoke_discovery(discovery_event(JWKS_PATH))

    assert_error(response, 503, "temporarily_unavailable")
    assert metadata(broker)["issuer"] == ISSUER  # the metadata needs no KMS call


def test_a_missing_signing_key_setting_makes_discovery_503(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIGNING_KEY_ID")
    broker.reset()

    for path in (JWKS_PATH, METADATA_PATH):
        assert_error(broker.invoke_discovery(discovery_event(path)), 503, "temporarily_unavailable")
