"""The SDK's LifecycleClient and the ``tokenbroker revoke`` / ``introspect`` commands,
against the real Lambda handlers (an httpx transport turns each HTTP request into the
API Gateway event of its route)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from endpoint._support import ISSUER, METADATA_PATH, App, Broker, discovery_event, rest_event
from tokenbroker.cli.main import cli
from tokenbroker.client import lifecycle as sdk
from tokenbroker.client.errors import InvalidClientError
from tokenbroker.domain.liveness import MAX_AGE

from ._support import INTROSPECT_PATH, REVOKE_PATH, Lifecycle


def transport(broker: Broker, life: Lifecycle) -> httpx.MockTransport:
    functions = {REVOKE_PATH: "revocation", INTROSPECT_PATH: "introspection"}
    stage = urlsplit(ISSUER).path

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(stage)
        if path == METADATA_PATH:
            response = broker.invoke_discovery(discovery_event(METADATA_PATH))
        else:
            headers = {k.title(): v for k, v in request.headers.items() if k != "host"}
            event = rest_event("POST", path, headers=headers, body=request.content.decode())
            response = life.call(functions[path], event)
        return httpx.Response(response["statusCode"], content=response["body"].encode())

    return httpx.MockTransport(handle)


@pytest.fixture
def http(broker: Broker, life: Lifecycle, monkeypatch: pytest.MonkeyPatch) -> httpx.Client:
    client = httpx.Client(transport=transport(broker, life))
    monkeypatch.setattr(sdk.httpx, "Client", lambda **_: client)
    return client


def test_the_sdk_introspects_and_revokes(
    broker: Broker, app: App, life: Lifecycle, http: httpx.Client
) -> None:
    token = life.access_token(app)
    client = sdk.LifecycleClient(ISSUER, client_id=app.client_id, client_secret=app.secret)
    assert client.introspect(token)["active"] is True
    client.revoke(token, token_type_hint="access_token")
    assert client.introspect(token) == {"active": False}
    broker.clock.advance(MAX_AGE)
    assert life.at_edge(app, token) == "401"
    assert app.secret not in repr(client)


def test_the_sdk_raises_invalid_client_for_a_wrong_secret(
    app: App, life: Lifecycle, http: httpx.Client
) -> None:
    client = sdk.LifecycleClient(ISSUER, client_id=app.client_id, client_secret="wrong")
    with pytest.raises(InvalidClientError):
        client.revoke("x")


def run(args: list[str], secret: str, stdin: str = "") -> Any:
    env = {"TOKENBROKER_CLIENT_SECRET": secret}
    return CliRunner().invoke(cli, args, input=stdin, env=env)


def test_the_cli_introspects_then_revokes_a_token_from_stdin(
    broker: Broker, app: App, life: Lifecycle, http: httpx.Client, tmp_path: Path
) -> None:
    token = life.access_token(app)
    common = ["--issuer", ISSUER, "--client-id", app.client_id, "--token-file", "-"]
    result = run(["introspect", *common], app.secret, token)
    assert result.exit_code == 0, result.output
    assert '"active": true' in result.output
    result = run(["revoke", *common, "--hint", "access_token"], app.secret, token)
    assert result.exit_code == 0, result.output
    result = run(["introspect", *common], app.secret, token)
    assert '"active": false' in result.output


def test_the_cli_refuses_bad_input_with_exit_code_2(app: App, http: httpx.Client) -> None:
    common = ["--issuer", ISSUER, "--client-id", app.client_id, "--token-file", "-"]
    empty = run(["revoke", *common], app.secret, "")
    assert empty.exit_code == 2
    assert "Error: the token file must hold one token" in empty.output
    assert "Traceback" not in empty.output
    hint = run(["revoke", *common, "--hint", "id_token"], app.secret, "x")
    assert hint.exit_code == 2
    wrong = run(["revoke", *common], "wrong-secret", "x")
    assert wrong.exit_code == 1
    assert "invalid_client" in wrong.output
