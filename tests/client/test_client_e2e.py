"""Done means, end to end against the real local stack (in process): keygen, an admin
enrolls the printed jkt, then the README's ten-line example and ``tokenbroker call``
both reach ``POST /v1/models/demo/invoke`` with 200; every request carries its own proof;
a revoked device surfaces as InvalidGrantError."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from click.testing import CliRunner

from tokenbroker import bootstrap
from tokenbroker.cli.client import call, keygen, token
from tokenbroker.client import DPoPAuth, DPoPHttpxAuth, InvalidGrantError
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack("127.0.0.1", port=0, stack_name="tokenbroker-client-e2e") as local:
        yield local


@pytest.fixture
def enrolled(stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """keygen into a fresh config dir; an admin creates a client and enrolls the jkt it
    printed. Returns the environment a developer's shell would have."""
    # the suite's autouse fixture removed AWS_ENDPOINT_URL after the stack set it
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    bootstrap.default.cache_clear()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    generated = CliRunner().invoke(keygen, ["--output", "json"])
    assert generated.exit_code == 0, generated.output
    jkt = json.loads(generated.stdout)["jkt"]
    admin = bootstrap.default().admin
    created = admin.create_client(name="e2e", scope="model:demo:invoke", max_devices=2)
    admin.enroll_device(client_id=created.client.client_id, jkt=jkt, label="laptop")
    env = {
        "TOKENBROKER_ISSUER": stack.api_url,
        "TOKENBROKER_CLIENT_ID": created.client.client_id,
        "TOKENBROKER_CLIENT_SECRET": created.client_secret,
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "JKT": jkt,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _jti(proof: str) -> str:
    payload = proof.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return str(claims["jti"])


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_the_readme_example_calls_the_model_with_a_device_bound_token(
    enrolled: dict[str, str],
) -> None:
    proofs: list[str] = []

    def record(response: requests.Response, **_: Any) -> None:
        proofs.append(response.request.headers["DPoP"])

    # ---- the README example, line for line -------------------------------------
    import os

    import requests as http

    from tokenbroker.client import DeviceKey, TokenSource

    source = TokenSource.from_env(DeviceKey.load("default"), scope="model:demo:invoke")
    api = http.Session()
    api.auth = DPoPAuth(source)
    api.hooks["response"].append(record)  # (test only: keep the proofs)
    url = f"{os.environ['TOKENBROKER_ISSUER']}/v1/models/demo/invoke"
    response = api.post(url, json={"prompt": "Hello"})
    print(response.status_code, response.json())
    # ---------------------------------------------------------------------------

    assert response.status_code == 200, response.text
    assert response.json()["model"] == "demo"
    for _ in range(2):
        assert api.post(url, json={"prompt": "again"}).status_code == 200
    whoami = api.get(f"{os.environ['TOKENBROKER_ISSUER']}/v1/whoami")
    assert whoami.status_code == 200
    assert whoami.json()["jkt"] == enrolled["JKT"]
    assert len(proofs) == 4
    assert len({_jti(p) for p in proofs}) == 4  # every request carried its own proof


def test_the_httpx_auth_calls_the_model_from_asyncio(enrolled: dict[str, str]) -> None:
    from tokenbroker.client import DeviceKey, TokenSource

    source = TokenSource.from_env(DeviceKey.load(), scope="model:demo:invoke")
    url = f"{enrolled['TOKENBROKER_ISSUER']}/v1/models/demo/invoke"

    async def main() -> list[int]:
        async with httpx.AsyncClient(auth=DPoPHttpxAuth(source), timeout=30) as client:
            responses = await asyncio.gather(*(client.post(url, json={}) for _ in range(3)))
        return [r.status_code for r in responses]

    assert asyncio.run(main()) == [200, 200, 200]


def test_tokenbroker_call_reaches_the_model_with_200(enrolled: dict[str, str]) -> None:
    result = CliRunner().invoke(
        call, ["POST", "/v1/models/demo/invoke", "--data", '{"prompt": "Hello"}']
    )
    assert result.exit_code == 0, result.output
    assert _last_line(result.stderr) == "HTTP 200 OK"  # the stack logs in-process too
    assert json.loads(result.stdout)["model"] == "demo"


def test_tokenbroker_token_prints_a_dpop_token_response(enrolled: dict[str, str]) -> None:
    result = CliRunner().invoke(token, ["--scope", "model:demo:invoke"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["token_type"], body["scope"]) == ("DPoP", "model:demo:invoke")
    assert enrolled["TOKENBROKER_CLIENT_SECRET"] not in result.output


def test_a_revoked_device_surfaces_as_invalid_grant_error(enrolled: dict[str, str]) -> None:
    from tokenbroker.client import DeviceKey, TokenSource

    source = TokenSource.from_env(DeviceKey.load(), scope="model:demo:invoke")
    api = requests.Session()
    api.auth = DPoPAuth(source)
    url = f"{enrolled['TOKENBROKER_ISSUER']}/v1/models/demo/invoke"
    assert api.post(url, json={}).status_code == 200
    bootstrap.default().admin.revoke_device(enrolled["JKT"])
    # the edge refuses the revoked device within its staleness bound; the SDK then
    # renews once, and the token endpoint says why
    deadline = time.monotonic() + MAX_AGE + 2
    with pytest.raises(InvalidGrantError, match="revoked") as caught:  # noqa: PT012
        while time.monotonic() < deadline:
            assert api.post(url, json={}).status_code == 200
            time.sleep(0.5)
    assert enrolled["TOKENBROKER_CLIENT_SECRET"] not in repr(caught.value)
    refused = CliRunner().invoke(call, ["POST", "/v1/models/demo/invoke", "--data", "{}"])
    assert refused.exit_code == 1
    assert _last_line(refused.stderr).startswith("Error: the broker refused this device key")
