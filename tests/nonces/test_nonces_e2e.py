"""Done means (issue 11, nonces), on the real local stack in process with
RequireDpopNonceAtToken and RequireDpopNonceAtResources on: a proof without a nonce gets
the challenge (400 at the token endpoint, 401 ``WWW-Authenticate: DPoP
error="use_dpop_nonce"`` + ``DPoP-Nonce`` at the API, through the template's
ACCESS_DENIED gateway response) and the SDK's one retry with the nonce succeeds."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests

from support.dpop import DeviceKey as ProofKey
from tokenbroker import bootstrap
from tokenbroker.client import DeviceKey, DPoPAuth, TokenSource
from tokenbroker.domain.rfc9449 import access_token_hash
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http

OTHER_API = "https://api-b.example/v1"
NONCES_ON = {
    "RequireDpopNonceAtToken": "true",
    "RequireDpopNonceAtResources": "true",
    # two resources: this stack's API (the first, the authorizer's) and another one
    "AllowedAudiences": f"urn:tokenbroker:api,{OTHER_API}",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        "127.0.0.1", port=0, stack_name="tokenbroker-nonces-e2e", parameters=NONCES_ON
    ) as local:
        yield local


@pytest.fixture
def client(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, ProofKey]:
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    bootstrap.default.cache_clear()
    key = ProofKey.generate("ES256")
    admin = bootstrap.default().admin
    created = admin.create_client(name="nonces", scope="model:demo:invoke")
    admin.enroll_device(client_id=created.client.client_id, jkt=key.jkt, label="k")
    return created.client.client_id, created.client_secret, key


def _token_request(
    stack: LocalStack, client: tuple[str, str, ProofKey], nonce: str | None, **extra: str
) -> requests.Response:
    client_id, secret, key = client
    url = f"{stack.api_url}/oauth2/token"
    claims = {"nonce": nonce} if nonce else None
    proof = key.proof("POST", url, iat=int(time.time()), claim_overrides=claims)
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": secret,
        **extra,
    }
    return requests.post(url, data=form, headers={"DPoP": proof}, timeout=30)


def test_the_token_endpoint_challenges_then_issues_with_the_nonce(
    stack: LocalStack, client: tuple[str, str, ProofKey]
) -> None:
    first = _token_request(stack, client, None)
    assert first.status_code == 400
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = _token_request(stack, client, nonce)
    assert second.status_code == 200, second.text
    assert second.json()["token_type"] == "DPoP"
    assert second.headers["DPoP-Nonce"]


def test_the_api_challenges_with_a_401_and_the_nonce(
    stack: LocalStack, client: tuple[str, str, ProofKey]
) -> None:
    token_nonce = _token_request(stack, client, None).headers["DPoP-Nonce"]
    token = _token_request(stack, client, token_nonce).json()["access_token"]
    _, _, key = client
    url = f"{stack.api_url}/v1/whoami"
    proof = key.proof("GET", url, iat=int(time.time()), ath=access_token_hash(token))
    response = requests.get(
        url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=30
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('DPoP error="use_dpop_nonce"')
    nonce = response.headers["DPoP-Nonce"]
    proof = key.proof(
        "GET",
        url,
        iat=int(time.time()),
        ath=access_token_hash(token),
        claim_overrides={"nonce": nonce},
    )
    again = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=30)
    assert again.status_code == 200, again.text
    assert again.headers["DPoP-Nonce"]  # the next one, on the successful answer too


def test_the_sdk_retries_once_with_each_servers_nonce_and_succeeds(
    stack: LocalStack,
    client: tuple[str, str, ProofKey],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    client_id, secret, _ = client
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    device = DeviceKey.create("default")
    admin = bootstrap.default().admin
    admin.enroll_device(client_id=client_id, jkt=device.jkt, label="sdk")
    monkeypatch.setenv("TOKENBROKER_ISSUER", stack.api_url)
    monkeypatch.setenv("TOKENBROKER_CLIENT_ID", client_id)
    monkeypatch.setenv("TOKENBROKER_CLIENT_SECRET", secret)
    capfd.readouterr()
    api = requests.Session()
    source = TokenSource.from_env(DeviceKey.load("default"), scope="model:demo:invoke")
    api.auth = DPoPAuth(source)
    response = api.post(f"{stack.api_url}/v1/models/demo/invoke", json={"prompt": "hi"})
    assert response.status_code == 200, response.text
    assert json.loads(response.text)["model"] == "demo"
    # the local API's access log: each challenge, then the one retry that passed
    log = [line for line in capfd.readouterr().err.splitlines() if line.startswith(("GET", "POST"))]
    assert [line.rsplit(" ", 1)[0] for line in log if "/.well-known/" not in line] == [
        "POST /oauth2/token 400",
        "POST /oauth2/token 200",
        "POST /v1/models/demo/invoke 401",
        "POST /v1/models/demo/invoke 200",
    ]


def _token(stack: LocalStack, client: tuple[str, str, ProofKey], **extra: str) -> str:
    nonce = _token_request(stack, client, None, **extra).headers["DPoP-Nonce"]
    response = _token_request(stack, client, nonce, **extra)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _whoami(stack: LocalStack, key: ProofKey, token: str) -> requests.Response:
    url = f"{stack.api_url}/v1/whoami"
    first = requests.get(
        url,
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": key.proof("GET", url, iat=int(time.time()), ath=access_token_hash(token)),
        },
        timeout=30,
    )
    nonce = first.headers.get("DPoP-Nonce")
    if first.status_code != 401 or nonce is None:
        return first
    proof = key.proof(
        "GET",
        url,
        iat=int(time.time()),
        ath=access_token_hash(token),
        claim_overrides={"nonce": nonce},
    )
    return requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=30)


def test_the_challenges_metadata_url_serves_the_document_of_this_resource(
    stack: LocalStack, client: tuple[str, str, ProofKey]
) -> None:
    token = _token(stack, client)
    _, _, key = client
    url = f"{stack.api_url}/v1/whoami"
    proof = key.proof("GET", url, iat=int(time.time()), ath=access_token_hash(token))
    challenged = requests.get(
        url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=30
    )
    assert challenged.status_code == 401
    found = re.search(r'resource_metadata="([^"]+)"', challenged.headers["WWW-Authenticate"])
    assert found, challenged.headers["WWW-Authenticate"]
    document = requests.get(found.group(1), timeout=30)
    assert document.status_code == 200
    body = document.json()
    assert body["resource"] == "urn:tokenbroker:api"  # the authorizer's audience
    assert body["authorization_servers"] == [stack.api_url]
    assert body["dpop_bound_access_tokens_required"] is True
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == body["resource"]


def test_a_token_for_another_resource_is_refused_here(
    stack: LocalStack, client: tuple[str, str, ProofKey]
) -> None:
    _, _, key = client
    assert _whoami(stack, key, _token(stack, client)).status_code == 200
    other = _token(stack, client, resource=OTHER_API)
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == OTHER_API
    refused = _whoami(stack, key, other)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')
