"""``tokenbroker token`` and ``tokenbroker call`` against the fake broker: the secret
only from the environment or a hidden prompt, output like curl, exit codes and
one-line errors like the admin CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import requests
from click.testing import CliRunner, Result

from client.fake_broker import API, CLIENT_ID, ISSUER, SECRET, FakeBroker
from tokenbroker.cli import client as cli_client
from tokenbroker.client import DeviceKey, TokenSource
from tokenbroker.domain.clock import FixedClock

INVOKE = f"{API}/v1/models/demo/invoke"
ENV = {
    "TOKENBROKER_ISSUER": ISSUER,
    "TOKENBROKER_CLIENT_ID": CLIENT_ID,
    "TOKENBROKER_CLIENT_SECRET": SECRET,
}


@pytest.fixture
def wired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixed_clock: FixedClock) -> FakeBroker:
    """A stored key enrolled at the fake; the commands' HTTP goes to the fake."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    key = DeviceKey.create()
    broker = FakeBroker(fixed_clock, enrolled={key.jkt})
    real_source = cli_client.token_source

    def token_source(issuer: str, client_id: str, key_name: str, scope: str | None) -> TokenSource:
        source = real_source(issuer, client_id, key_name, scope)
        source.clock = fixed_clock
        source._http = httpx.Client(transport=broker.transport())
        return source

    def http_session() -> requests.Session:
        session = requests.Session()
        session.mount("https://", broker.adapter())
        return session

    monkeypatch.setattr(cli_client, "token_source", token_source)
    monkeypatch.setattr(cli_client, "http_session", http_session)
    return broker


def run(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    command = {"token": cli_client.token, "call": cli_client.call}[args[0]]
    return CliRunner().invoke(command, args[1:], env=ENV if env is None else env, input=stdin)


def test_token_prints_the_token_response_as_json(wired: FakeBroker) -> None:
    result = run(["token", "--scope", "model:demo:invoke"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["token_type"] == "DPoP"
    assert body["scope"] == "model:demo:invoke"
    assert wired.token_fetches == 1


def test_token_takes_an_output_format_like_every_command(wired: FakeBroker) -> None:
    result = run(["token", "--output", "table"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "access_token",
        "token_type",
        "expires_in",
        "scope",
    ]
    assert lines[1].split()[1] == "DPoP"
    assert run(["token", "--output", "xml"]).exit_code == 2


def test_without_a_terminal_a_missing_secret_is_a_clear_error_not_a_prompt(
    wired: FakeBroker,
) -> None:
    result = run(["token"], env={**ENV, "TOKENBROKER_CLIENT_SECRET": ""}, stdin="")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "Error: no client secret: set TOKENBROKER_CLIENT_SECRET (there is no terminal to prompt on)"
    )
    assert "Aborted" not in result.output
    assert "GetPassWarning" not in result.output
    assert wired.token_fetches == 0


def test_the_secret_is_prompted_for_without_echo_when_the_environment_has_none(
    wired: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tokenbroker.cli.client._interactive", lambda: True)  # a terminal
    env = {**ENV, "TOKENBROKER_CLIENT_SECRET": ""}
    result = run(["token"], env=env, stdin=SECRET + "\n")
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output  # hidden input is not echoed
    assert "Client secret" in result.stderr
    assert json.loads(result.stdout)["token_type"] == "DPoP"


@pytest.mark.parametrize("option", ["--client-secret", "--secret", "--password"])
def test_there_is_no_command_line_option_for_the_secret(wired: FakeBroker, option: str) -> None:
    for command in ("token", "call"):
        extra = ["GET", INVOKE] if command == "call" else []
        result = run([command, *extra, option, SECRET])
        assert result.exit_code == 2
        assert "No such option" in result.stderr


def test_a_wrong_secret_is_a_one_line_error_without_the_secret(wired: FakeBroker) -> None:
    result = run(["token"], env={**ENV, "TOKENBROKER_CLIENT_SECRET": "wrong"})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the broker rejected the client credentials")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wrong" not in result.stderr


def test_a_missing_issuer_is_a_usage_error(wired: FakeBroker) -> None:
    env = {k: v for k, v in ENV.items() if k != "TOKENBROKER_ISSUER"}
    result = run(["token"], env={**env, "TOKENBROKER_ISSUER": ""})
    assert result.exit_code == 2
    assert "--issuer" in result.stderr


def test_a_missing_key_is_a_configuration_error_naming_keygen(wired: FakeBroker) -> None:
    result = run(["token", "--key", "nope"])
    assert result.exit_code == 2
    assert "tokenbroker keygen --name nope" in result.stderr


def test_call_prints_status_and_body_and_exits_0_for_2xx(wired: FakeBroker) -> None:
    result = run(["call", "POST", INVOKE, "--data", '{"prompt": "hi"}', "-H", "X-Trace: 1"])
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "HTTP 200 OK"
    assert json.loads(result.stdout) == {
        "ok": True,
        "path": "/v1/models/demo/invoke",
        "method": "POST",
    }
    (call,) = wired.api_calls()
    assert call.headers["content-type"] == "application/json"
    assert call.headers["x-trace"] == "1"
    assert call.body == b'{"prompt": "hi"}'
    assert call.outcome == "allowed"


def test_call_reads_the_body_from_a_file(wired: FakeBroker, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"prompt": "from a file"}')
    result = run(["call", "post", INVOKE, "--data", f"@{body}"])
    assert result.exit_code == 0, result.output
    assert wired.api_calls()[0].body == b'{"prompt": "from a file"}'


def test_call_exits_1_for_a_non_2xx_answer_and_still_prints_it(wired: FakeBroker) -> None:
    wired.refuse_all_tokens = True
    result = run(["call", "GET", INVOKE])
    assert result.exit_code == 1
    assert result.stderr.strip() == "HTTP 401 Unauthorized"
    assert result.stdout.strip() == '{"message":"Unauthorized"}'


def test_call_resolves_a_path_against_the_issuer(wired: FakeBroker) -> None:
    result = run(["call", "GET", "/v1/whoami"])
    assert result.exit_code == 1  # the fake broker serves no API: 404
    assert result.stderr.strip() == "HTTP 404 Not Found"
    assert wired.seen[-1].url == f"{ISSUER}/v1/whoami"


def test_call_rejects_a_malformed_header(wired: FakeBroker) -> None:
    result = run(["call", "GET", INVOKE, "-H", "no colon here"])
    assert result.exit_code == 2
    assert "Name: value" in result.stderr


def test_a_client_key_file_stands_in_for_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """private_key_jwt (RFC 7523): with TOKENBROKER_CLIENT_KEY_FILE no secret is asked for
    (without a terminal the secret's absence would be an error)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    DeviceKey.create()  # the device key
    client_key = DeviceKey.create("client")
    monkeypatch.delenv("TOKENBROKER_CLIENT_SECRET", raising=False)
    monkeypatch.setenv("TOKENBROKER_CLIENT_KEY_FILE", str(client_key.location))
    source = cli_client.token_source(ISSUER, CLIENT_ID, "default", None)
    assert isinstance(source, TokenSource)
    monkeypatch.delenv("TOKENBROKER_CLIENT_KEY_FILE")
    with pytest.raises(cli_client.ConfigProblem, match="no client secret"):
        cli_client.token_source(ISSUER, CLIENT_ID, "default", None)
