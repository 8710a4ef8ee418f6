"""Done means (issue 11), on the real local stack in process (the template's routes,
gateway responses and functions): a client with no secret at all gets tokens with
``private_key_jwt`` through the SDK and calls the API with them; a request without an
Authorization header gets API Gateway's own 401, whose challenge names the RFC 9728
metadata the stack serves."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tokenbroker import bootstrap
from tokenbroker.client import DeviceKey, DPoPAuth, TokenSource
from tokenbroker.client.errors import InvalidClientError, MetadataError
from tokenbroker.client.lifecycle import LifecycleClient
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack("127.0.0.1", port=0, stack_name="tokenbroker-lifecycle-e2e") as local:
        yield local


@pytest.fixture
def admin(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> bootstrap.Container:
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    bootstrap.default.cache_clear()
    return bootstrap.default()


def test_a_client_with_only_a_private_key_gets_tokens_and_calls_the_api(
    stack: LocalStack, admin: bootstrap.Container, tmp_path: Path
) -> None:
    created = admin.admin.create_client(name="no secret", scope="model:demo:invoke")
    client_id = created.client.client_id
    device = DeviceKey.generate()
    admin.admin.enroll_device(client_id=client_id, jkt=device.jkt, label="sdk")
    client_key = DeviceKey.generate("client")
    admin.set_client_jwk(client_id, json.dumps(client_key.public_jwk), remove_secret=True)

    source = TokenSource(stack.api_url, client_id=client_id, client_key=client_key, key=device)
    api = requests.Session()
    api.auth = DPoPAuth(source)
    response = api.post(f"{stack.api_url}/v1/models/demo/invoke", json={"prompt": "hi"})
    assert response.status_code == 200, response.text
    # a second token (a new assertion: each jti is single use)
    assert source.token(replacing=source.token().access_token).access_token
    # the same key revokes and introspects (RFC 7009 / RFC 7662)
    lifecycle = LifecycleClient(stack.api_url, client_id=client_id, client_key=client_key)
    token = source.token().access_token
    assert lifecycle.introspect(token)["active"] is True
    # the removed secret gets nothing, with the SDK's invalid_client error
    with pytest.raises(InvalidClientError):
        TokenSource(
            stack.api_url, client_id=client_id, client_secret=created.client_secret, key=device
        ).token()
    # a key nobody registered is refused the same way
    with pytest.raises(InvalidClientError):
        TokenSource(
            stack.api_url, client_id=client_id, client_key=DeviceKey.generate(), key=device
        ).token()


def test_the_sdk_needs_exactly_one_way_to_authenticate(stack: LocalStack) -> None:
    device = DeviceKey.generate()
    with pytest.raises(Exception, match="exactly one"):
        TokenSource(stack.api_url, client_id="tbc_x", key=device)
    with pytest.raises(Exception, match="exactly one"):
        TokenSource(
            stack.api_url, client_id="tbc_x", client_secret="s", client_key=device, key=device
        )


def test_the_sdk_checks_the_metadata_lists_private_key_jwt() -> None:
    from tokenbroker.client.session import parse_metadata

    document = {
        "issuer": "https://broker.example",
        "token_endpoint": "https://broker.example/oauth2/token",
        "dpop_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    }
    with pytest.raises(MetadataError, match="private_key_jwt"):
        parse_metadata(document, "https://broker.example", auth_method="private_key_jwt")
    document["token_endpoint_auth_methods_supported"].append("private_key_jwt")  # type: ignore[attr-defined]
    parse_metadata(document, "https://broker.example", auth_method="private_key_jwt")


def test_the_gateways_own_401_names_the_protected_resource_metadata(
    stack: LocalStack, admin: bootstrap.Container
) -> None:
    response = requests.get(f"{stack.api_url}/v1/whoami", timeout=30)  # no Authorization
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('DPoP error="invalid_token"')
    found = re.search(r'resource_metadata="([^"]+)"', challenge)
    assert found, challenge
    assert found.group(1) == f"{stack.api_url}/.well-known/oauth-protected-resource"
    document = requests.get(found.group(1), timeout=30)
    assert document.status_code == 200
    assert document.json()["dpop_bound_access_tokens_required"] is True
    assert document.json()["authorization_servers"] == [stack.api_url]
