"""Done means (issue 11, nonces), on the real local stack in process with
RequireDpopNonceAtToken and RequireDpopNonceAtResources on: a proof without a nonce gets
the challenge (400 at the token endpoint, 401 ``WWW-Authenticate: DPoP
error="use_dpop_nonce"`` + ``DPoP-Nonce`` at the API, through the template's
ACCESS_DENIED gateway response) and the SDK's one retry with the nonce succeeds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.dpop import DeviceKey as ProofKey
from tokenbroker import bootstrap
from tokenbroker.client import DeviceKey, DPoPAuth, TokenSource
from tokenbroker.domain.rfc9449 import access_token_hash
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http

NONCES_ON = {"RequireDpopNonceAtToken": "true", "RequireDpopNonceAtResources": "true"}


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
    stack: LocalStack, client: tuple[str, str, ProofKey], nonce: str | None
) -> requests.Response:
    client_id, secret, key = client
    url = f"{stack.api_url}/oauth2/token"
    claims = {"nonce": nonce} if nonce else None
    proof = key.proof("POST", url, iat=int(time.time()), claim_overrides=claims)
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
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
