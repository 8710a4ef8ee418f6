"""The auditors' questions answered end to end: a running local stack (HTTP on
loopback), real requests through the edge, then the auditor's CLI.

N allowed requests, a replayed proof and a wrong-scope call from one client show up in
`audit usage` with their reasons and in `audit summary`; four devices used by one
client make `audit anomalies` flag it; editing one usage record through the AWS API
makes `audit verify` fail for its period."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker import bootstrap
from tokenbroker.cli.main import cli
from tokenbroker.domain.rfc7638 import jwk_thumbprint
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http
N_ALLOWED = 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Device:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        n = self.key.public_key().public_numbers()
        self.jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64(n.x.to_bytes(32, "big")),
            "y": _b64(n.y.to_bytes(32, "big")),
        }
        self.jkt = jwk_thumbprint(self.jwk)

    def proof(self, method: str, url: str, token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if token:
            claims["ath"] = _b64(hashlib.sha256(token.encode()).digest())
        return jwt.encode(
            claims, self.key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self.jwk}
        )


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    # function-scoped: it must start after conftest's fake-AWS environment fixture
    with LocalStack(
        "127.0.0.1", port=0, stack_name="tokenbroker-audit-e2e", schedule_interval=3600
    ) as local:
        yield local


def _audit(stack: LocalStack, *args: str) -> Any:
    command = ["--stack", stack.exports["TOKENBROKER_STACK"], "audit", *args]
    return CliRunner().invoke(cli, command, catch_exceptions=False)


def _token(stack: LocalStack, client_id: str, secret: str, device: Device) -> str:
    url = f"{stack.api_url}/oauth2/token"
    response = requests.post(
        url,
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        headers={"DPoP": device.proof("POST", url)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _get(url: str, token: str, proof: str, method: str = "GET") -> int:
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    return requests.request(method, url, headers=headers, json={}, timeout=10).status_code


def test_auditors_see_uses_denials_sharing_and_tampering(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    # template.yaml gives the authorizers BOTOCORE_DATA (the layer's cut models); the
    # local stack runs the installed package and its botocore: full models, silently
    assert "BOTOCORE_DATA" not in stack.function_environment
    caplog.set_level("WARNING", logger="tokenbroker")
    admin = bootstrap.default().admin
    created = admin.create_client(name="shared", scope="model:demo:invoke", max_devices=5)
    client_id, secret = created.client.client_id, created.client_secret
    devices = [Device() for _ in range(4)]
    for n, device in enumerate(devices):
        admin.enroll_device(client_id=client_id, jkt=device.jkt, label=f"device-{n}")
    whoami = f"{stack.api_url}/v1/whoami"

    # N allowed requests, one replayed proof, one wrong-scope call, from one device
    token = _token(stack, client_id, secret, devices[0])
    proofs = [devices[0].proof("GET", whoami, token) for _ in range(N_ALLOWED)]
    assert [_get(whoami, token, p) for p in proofs] == [200] * N_ALLOWED
    assert _get(whoami, token, proofs[0]) == 401
    other = f"{stack.api_url}/v1/models/secret/invoke"
    assert _get(other, token, devices[0].proof("POST", other, token), "POST") == 403

    # the stream consumers (the archive function's time index, the aggregates) catch up:
    # a record is in `audit usage` once the stream has delivered it
    stack.drain()
    usage = _audit(stack, "usage", "--principal", client_id, "--since", "1h", "-o", "json")
    assert usage.exit_code == 0, usage.output
    requests_seen = [r for r in json.loads(usage.stdout) if r["event"] == "request"]
    assert sorted(r["decision"] for r in requests_seen) == ["allow"] * N_ALLOWED + ["deny"] * 2
    assert sorted(r["reason"] for r in requests_seen if r["decision"] == "deny") == [
        "insufficient_scope",
        "proof_replayed",
    ]

    stack.drain()  # the stream consumer (AggregatesFunction) catches up
    summary = _audit(stack, "summary", "--principal", client_id, "--since", "1h", "-o", "json")
    assert summary.exit_code == 0, summary.output
    (row,) = json.loads(summary.stdout)
    assert (row["requests"], row["allowed"], row["denied"]) == (N_ALLOWED + 2, N_ALLOWED, 2)

    # the same credentials used from four machines within minutes
    for device in devices[1:]:
        other_token = _token(stack, client_id, secret, device)
        assert _get(whoami, other_token, device.proof("GET", whoami, other_token)) == 200
    stack.drain()
    anomalies = _audit(stack, "anomalies", "--since", "1h", "-o", "json")
    assert anomalies.exit_code == 0, anomalies.output
    flagged = [a for a in json.loads(anomalies.stdout) if a["principal"] == client_id]
    kinds = {a["kind"] for a in flagged}
    assert "many_devices" in kinds
    assert "proof_replayed" in kinds

    # seal the victim's period (as the schedule would once it closes), verify, tamper;
    # the period is the victim record's own (locally a minute: the requests above may
    # straddle a boundary, so "the current period" could hold none of them)
    settings = bootstrap.default().settings
    period = settings.digest_period_seconds * 1000
    victim = requests_seen[0]["record_id"]
    victim_at = requests_seen[0]["at_ms"]
    start = victim_at - victim_at % period
    digests = bootstrap.default().digests
    digests.seal(start, now_ms=start + period + settings.digest_grace_seconds * 1000 + 1)
    window = ["--since", _iso(start), "--until", _iso(start + period)]
    intact = _audit(stack, "verify", *window)
    assert intact.exit_code == 0, intact.output

    table = json.loads(_ssm(stack)["Parameter"]["Value"])["USAGE_TABLE"]
    _ddb(stack).update_item(
        TableName=table,
        Key={"id": {"S": victim}},
        UpdateExpression="SET #r = :r",
        ExpressionAttributeNames={"#r": "reason"},
        ExpressionAttributeValues={":r": {"S": "edited"}},
    )
    tampered = _audit(stack, "verify", *window)
    assert tampered.exit_code == 1
    assert victim in tampered.output
    assert [r for r in caplog.records if "botocore data" in r.getMessage()] == []


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def _session(stack: LocalStack) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name=stack.exports["AWS_DEFAULT_REGION"],
    )


def _ddb(stack: LocalStack) -> Any:
    return _session(stack).client("dynamodb", endpoint_url=stack.moto_url)


def _ssm(stack: LocalStack) -> Any:
    name = f"/tokenbroker/{stack.exports['TOKENBROKER_STACK']}/deployment"
    return _session(stack).client("ssm", endpoint_url=stack.moto_url).get_parameter(Name=name)
