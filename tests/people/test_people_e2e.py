"""Done means, end to end over HTTP on the local stack with its Cognito user pool: a
test user signs in, enrolls their own device under the per-person cap, exchanges the ID
token for a DPoP-bound token whose ``sub`` is the person, calls the model, and the audit
view shows the person; a second person cannot use the first one's device."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from click.testing import CliRunner

from tokenbroker import bootstrap
from tokenbroker.cli.main import cli
from tokenbroker.client import DeviceKey, DPoPAuth, InvalidGrantError, TokenSource
from tokenbroker.client.people import DeviceLimitError, enroll_device, subject_token_from_file
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http
CAP = 2


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(
        "127.0.0.1",
        port=0,
        stack_name="tokenbroker-people-e2e",
        parameters={"MaxDevicesPerPerson": str(CAP)},
    ) as local:
        yield local


@pytest.fixture
def env(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in stack.exports.items():
        monkeypatch.setenv(name, value)
    bootstrap.default.cache_clear()
    return dict(stack.exports)


def _cognito(env: dict[str, str]) -> Any:
    return boto3.client("cognito-idp", endpoint_url=env["AWS_ENDPOINT_URL"])


def sign_in(env: dict[str, str], username: str) -> str:
    """What a script does with the AWS SDK alone: create a user, get an ID token."""
    cognito, pool = _cognito(env), env["TOKENBROKER_DEV_USER_POOL_ID"]
    password = "Test-pass1!"
    cognito.admin_create_user(UserPoolId=pool, Username=username, MessageAction="SUPPRESS")
    cognito.admin_set_user_password(
        UserPoolId=pool, Username=username, Password=password, Permanent=True
    )
    result = cognito.admin_initiate_auth(
        UserPoolId=pool,
        ClientId=env["TOKENBROKER_DEV_USER_POOL_CLIENT_ID"],
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return str(result["AuthenticationResult"]["IdToken"])


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_a_person_enrolls_a_device_exchanges_an_id_token_and_is_the_audited_principal(
    env: dict[str, str], stack: LocalStack, tmp_path: Path
) -> None:
    admin = bootstrap.default().admin
    app = admin.create_client(name="people-app", scope="model:demo:invoke", max_devices=1)
    issuer = env["TOKENBROKER_ISSUER"]
    id_token_file = tmp_path / "id_token"
    id_token_file.write_text(sign_in(env, "alice"))
    subject = subject_token_from_file(id_token_file)
    person = (
        f"{_claims(id_token_file.read_text())['iss']}|{_claims(id_token_file.read_text())['sub']}"
    )
    creds = {"client_id": app.client.client_id, "client_secret": app.client_secret}

    keys = [DeviceKey.generate() for _ in range(CAP + 1)]
    for n, key in enumerate(keys[:CAP], start=1):
        enrolled = enroll_device(issuer, **creds, key=key, subject_token=subject, label=f"d{n}")
        assert (enrolled["principal"], enrolled["jkt"]) == (person, key.jkt)
        assert (enrolled["active_devices"], enrolled["max_devices"]) == (n, CAP)
    # the cap: the (N+1)th is refused, naming the cap and how to revoke one
    with pytest.raises(DeviceLimitError) as refused:
        enroll_device(issuer, **creds, key=keys[CAP], subject_token=subject)
    assert f"{CAP} of {CAP}" in str(refused.value)
    assert "tokenbroker devices revoke" in str(refused.value)

    source = TokenSource(issuer, **creds, key=keys[0], subject_token=subject)
    token = source.token()
    claims = _claims(token.access_token)
    assert claims["sub"] == person
    assert claims["client_id"] == app.client.client_id
    assert claims["act"] == {"sub": app.client.client_id}
    assert token.response["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"

    session = requests.Session()
    session.auth = DPoPAuth(source)
    answer = session.post(f"{issuer}/v1/models/demo/invoke", json={"prompt": "hi"}, timeout=10)
    assert answer.status_code == 200, answer.text

    # across an expiry (a token the API refused, or one past renew_at) the SDK refreshes:
    # a refresh grant, not a new exchange, and the refresh token is rotated
    renewed = source.token(replacing=token.access_token)
    assert "issued_token_type" not in renewed.response
    assert renewed.response["refresh_token"] != token.response["refresh_token"]
    assert _claims(renewed.access_token)["sub"] == person
    again = session.post(f"{issuer}/v1/models/demo/invoke", json={"prompt": "hi"}, timeout=10)
    assert again.status_code == 200, again.text

    stack.drain()  # the archive function's time index has the records (stream lag)
    usage = CliRunner().invoke(
        cli,
        [
            "--stack",
            env["TOKENBROKER_STACK"],
            "audit",
            "usage",
            "--principal",
            person,
            "--since",
            "1h",
            "-o",
            "json",
        ],
        catch_exceptions=False,
    )
    assert usage.exit_code == 0, usage.output
    rows = json.loads(usage.stdout)
    assert {r["principal"] for r in rows} == {person}
    assert {r["event"] for r in rows} >= {"request", "token_issued", "device_enrolled"}
    invoked = [r for r in rows if r["event"] == "request"]
    assert invoked[0]["decision"] == "allow"
    assert invoked[0]["jkt"] == keys[0].jkt

    # an admin revokes one of the person's devices: the slot is free again
    admin.revoke_device(keys[1].jkt)
    enroll_device(issuer, **creds, key=keys[CAP], subject_token=subject)


def test_a_second_person_cannot_use_the_first_ones_device(
    env: dict[str, str], tmp_path: Path
) -> None:
    admin = bootstrap.default().admin
    app = admin.create_client(name="people-app-2", scope="model:demo:invoke", max_devices=1)
    issuer = env["TOKENBROKER_ISSUER"]
    creds = {"client_id": app.client.client_id, "client_secret": app.client_secret}
    bob, carol = sign_in(env, "bob"), sign_in(env, "carol")
    key = DeviceKey.generate()
    enroll_device(issuer, **creds, key=key, subject_token=lambda: bob)
    thief = TokenSource(issuer, **creds, key=key, subject_token=lambda: carol)
    with pytest.raises(InvalidGrantError, match="enrolled to someone else"):
        thief.token()


def _cli(env: dict[str, str], *args: str) -> Any:
    command = ["--stack", env["TOKENBROKER_STACK"], *args]
    return CliRunner().invoke(cli, command, catch_exceptions=False)


def test_the_cli_enrolls_a_person_device_and_exchanges_a_subject_token_file(
    env: dict[str, str], stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = bootstrap.default().admin.create_client(
        name="people-cli", scope="model:demo:invoke", max_devices=1
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("TOKENBROKER_CLIENT_SECRET", app.client_secret)
    key = json.loads(_cli(env, "keygen", "--name", "laptop", "-o", "json").stdout)
    id_token = tmp_path / "id_token"
    id_token.write_text(sign_in(env, "dave"))
    common = ["--client-id", app.client.client_id, "--issuer", env["TOKENBROKER_ISSUER"]]
    enrolled = _cli(
        env,
        "devices",
        "enroll",
        "--self",
        *common,
        "--key",
        "laptop",
        "--subject-token-file",
        str(id_token),
        "-o",
        "json",
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert json.loads(enrolled.stdout)["jkt"] == key["jkt"]
    again = _cli(
        env,
        "devices",
        "enroll",
        "--self",
        *common,
        "--key",
        "laptop",
        "--subject-token-file",
        str(id_token),
    )
    assert again.exit_code == 1
    assert "Error: this key is already enrolled\n" in again.output
    issued = _cli(env, "token", *common, "--key", "laptop", "--subject-token-file", str(id_token))
    assert issued.exit_code == 0, issued.output
    assert _claims(json.loads(issued.stdout)["access_token"])["sub"].endswith(
        "|" + _claims(id_token.read_text())["sub"]
    )
    principal = _claims(json.loads(issued.stdout)["access_token"])["sub"]
    assert _cli(env, "people", "disable", "--principal", principal).exit_code == 0
    refused = _cli(env, "token", *common, "--key", "laptop", "--subject-token-file", str(id_token))
    assert refused.exit_code == 1
    assert "this person is disabled" in refused.output
    assert _cli(env, "people", "enable", "--principal", principal).exit_code == 0
    again = _cli(env, "token", *common, "--key", "laptop", "--subject-token-file", str(id_token))
    assert again.exit_code == 0, again.output
    stack.drain()  # the archive function's time index has the records (stream lag)
    events = [
        r["event"]
        for r in json.loads(
            _cli(
                env, "audit", "usage", "--principal", principal, "--since", "1h", "-o", "json"
            ).stdout
        )
    ]
    assert {"person_disabled", "person_enabled", "device_enrolled"} <= set(events)
    missing = _cli(env, "devices", "enroll", "--self", *common)
    assert missing.exit_code == 2
    assert "--subject-token-file" in missing.output


def test_idps_are_added_listed_and_removed_with_the_cli(env: dict[str, str]) -> None:
    issuer = "https://login.example.com/tenant-cli"
    added = _cli(
        env,
        "idps",
        "add",
        "--issuer",
        issuer,
        "--audience",
        "app1",
        "--scope",
        "model:demo:invoke",
        "--require",
        "groups=ml",
        "-o",
        "json",
    )
    assert added.exit_code == 0, added.output
    listed = json.loads(_cli(env, "idps", "list", "-o", "json").stdout)
    [entry] = [i for i in listed if i["issuer"] == issuer]
    assert entry["required_claims"] == ["groups=ml"]
    assert entry["discovery_url"] == issuer + "/.well-known/openid-configuration"
    twice = _cli(env, "idps", "add", "--issuer", issuer, "--audience", "a", "--scope", "x")
    assert twice.exit_code == 1
    assert "already trusted" in twice.output
    bad = _cli(
        env, "idps", "add", "--issuer", "http://evil.example", "--audience", "a", "--scope", "x"
    )
    assert bad.exit_code == 2  # a bad option value is a usage error (the CLI convention)
    assert "https" in bad.output
    assert _cli(env, "idps", "remove", "--issuer", issuer).exit_code == 0
    gone = _cli(env, "idps", "remove", "--issuer", issuer)
    assert gone.exit_code == 1
    assert "not trusted" in gone.output
