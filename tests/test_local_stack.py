"""End to end: `tokenbroker dev` as a real process, the admin CLI as real processes, and
HTTP with requests: discovery, a DPoP-bound token from the token endpoint, replay."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.local.stack import LocalStack

pytestmark = pytest.mark.http

TOKENBROKER = [sys.executable, "-c", "from tokenbroker.cli.main import main; main()"]
EXPORT_NAMES = [
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "TOKENBROKER_STACK",
    "TOKENBROKER_ISSUER",
    "TOKENBROKER_DEV_USER_POOL_ID",
    "TOKENBROKER_DEV_USER_POOL_CLIENT_ID",
]
STARTUP_TIMEOUT = 90
#: settings of the developer's shell that must not leak into the stack or the CLI
_FOREIGN = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")


# ----------------------------------------------------------------- a tiny DPoP client


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class DeviceKey:
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @property
    def public_jwk(self) -> dict[str, str]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": b64url(numbers.x.to_bytes(32, "big")),
            "y": b64url(numbers.y.to_bytes(32, "big")),
        }

    @property
    def thumbprint(self) -> str:
        """RFC 7638: SHA-256 of the required members, sorted, no whitespace."""
        jwk = self.public_jwk
        canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        return b64url(hashlib.sha256(canonical.encode()).digest())

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = b64url(hashlib.sha256(access_token.encode()).digest())
        headers = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk}
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers=headers)


# ------------------------------------------------------------------------ the process


@dataclass
class RunningStack:
    process: subprocess.Popen[str]
    stdout_lines: list[str]
    exports: dict[str, str]
    api_url: str
    log: Path

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
        return {**base, **self.exports}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TOKENBROKER, *args], env=self.env(), capture_output=True, text=True, timeout=60
        )


def _reader(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _start(log: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*TOKENBROKER, "dev", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    assert process.stdout is not None
    received: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_reader, args=(process.stdout, received), daemon=True).start()
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not (lines and lines[-1].startswith("Local API: ")):
        try:
            line = received.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            process.wait()
            pytest.fail(f"`tokenbroker dev` did not become ready:\n{log.read_text()}")
        lines.append(line)
    return process, lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    log = tmp_path_factory.mktemp("local-stack") / "stderr.log"
    process, lines = _start(log)
    try:
        exports = {}
        for line in lines[:-1]:
            match = re.fullmatch(r"export ([A-Z_]+)=(\S+)", line)
            assert match, f"unexpected line on stdout: {line!r}"
            exports[match.group(1)] = match.group(2)
        api_url = lines[-1].removeprefix("Local API: ")
        yield RunningStack(process, lines, exports, api_url, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def metadata(stack: RunningStack) -> dict[str, Any]:
    response = requests.get(f"{stack.api_url}/.well-known/oauth-authorization-server", timeout=10)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _cli_ready(stack: RunningStack) -> None:
    probe = stack.cli("clients", "create", "--help")
    if probe.returncode != 0:
        pytest.skip(f"admin CLI not ready: `clients create --help` failed: {probe.stderr[-300:]}")
    probe = stack.cli("devices", "enroll", "--help")
    if probe.returncode != 0:
        pytest.skip(f"admin CLI not ready: `devices enroll --help` failed: {probe.stderr[-300:]}")


# ----------------------------------------------------------------------------- tests


def test_prints_the_exports_and_the_local_api_url(stack: RunningStack) -> None:
    assert [line.split("=")[0].removeprefix("export ") for line in stack.stdout_lines[:-1]] == (
        EXPORT_NAMES
    )
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", stack.api_url)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", stack.exports["AWS_ENDPOINT_URL"])
    assert stack.exports["AWS_ENDPOINT_URL"] != stack.api_url
    assert stack.exports["AWS_DEFAULT_REGION"] == "us-east-1"
    assert stack.exports["TOKENBROKER_STACK"] == "tokenbroker-local"
    assert stack.exports["TOKENBROKER_ISSUER"] == stack.api_url


def test_discovery_documents_name_the_local_issuer(
    stack: RunningStack, metadata: dict[str, Any]
) -> None:
    assert metadata["issuer"] == stack.api_url
    assert metadata["token_endpoint"] == f"{stack.api_url}/oauth2/token"
    assert metadata["jwks_uri"] == f"{stack.api_url}/.well-known/jwks.json"
    jwks = requests.get(metadata["jwks_uri"], timeout=10)
    assert jwks.status_code == 200
    (key,) = jwks.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")


def test_unknown_routes_are_403_like_api_gateway(stack: RunningStack) -> None:
    for method, path in (("GET", "/nope"), ("GET", "/oauth2/token"), ("DELETE", "/")):
        response = requests.request(method, f"{stack.api_url}{path}", timeout=10)
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}


def test_a_dpop_bound_token_from_a_client_the_admin_cli_created(
    stack: RunningStack, metadata: dict[str, Any]
) -> None:
    _cli_ready(stack)
    created = stack.cli(
        "clients", "create", "--name", "demo", "--scope", "model:demo:invoke", "--output", "json"
    )
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    device = DeviceKey.generate()
    enrolled = stack.cli(
        "devices",
        "enroll",
        "--client-id",
        client["client_id"],
        "--jkt",
        device.thumbprint,
        "--output",
        "json",
    )
    assert enrolled.returncode == 0, enrolled.stderr

    token_url = metadata["token_endpoint"]
    proof = device.proof("POST", token_url)

    def token_request() -> requests.Response:
        return requests.post(
            token_url,
            data={"grant_type": "client_credentials"},
            auth=(client["client_id"], client["client_secret"]),
            headers={"DPoP": proof},
            timeout=10,
        )

    response = token_request()
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "DPoP"
    access_token = body["access_token"]

    jwks = requests.get(metadata["jwks_uri"], timeout=10).json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    assert jwt.get_unverified_header(access_token)["kid"] == jwks["keys"][0]["kid"]
    claims = jwt.decode(
        access_token,
        key.key,
        algorithms=["ES256"],
        issuer=stack.api_url,
        options={"verify_aud": False, "require": ["exp", "iat", "jti", "sub"]},
    )
    assert claims["cnf"] == {"jkt": device.thumbprint}
    assert claims["client_id"] == client["client_id"]
    assert claims["scope"] == "model:demo:invoke"

    replayed = token_request()
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_dpop_proof"

    log = stack.log.read_text()
    assert "POST /oauth2/token 200 " in log
    for secret in (client["client_secret"], access_token, proof):
        assert secret not in log


def _client_with_device(stack: RunningStack, scope: str) -> tuple[dict[str, Any], DeviceKey]:
    created = stack.cli("clients", "create", "--name", "edge", "--scope", scope, "-o", "json")
    assert created.returncode == 0, created.stderr
    client: dict[str, Any] = json.loads(created.stdout)
    device = DeviceKey.generate()
    enrolled = stack.cli(
        "devices", "enroll", "--client-id", client["client_id"], "--jkt", device.thumbprint
    )
    assert enrolled.returncode == 0, enrolled.stderr
    return client, device


def _token(stack: RunningStack, client: dict[str, Any], device: DeviceKey) -> str:
    token_url = f"{stack.api_url}/oauth2/token"
    response = requests.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
        headers={"DPoP": device.proof("POST", token_url)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def _call(method: str, url: str, token: str, proof: str, scheme: str = "DPoP") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}", "DPoP": proof}
    return requests.request(method, url, headers=headers, json={"prompt": "hi"}, timeout=10)


def _usage_items(stack: RunningStack, client_id: str) -> list[dict[str, Any]]:
    import boto3

    env = stack.env()
    session = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    endpoint = env["AWS_ENDPOINT_URL"]
    ssm = session.client("ssm", endpoint_url=endpoint)
    name = f"/tokenbroker/{env['TOKENBROKER_STACK']}/deployment"
    table = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])["USAGE_TABLE"]
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    items = ddb.scan(TableName=table)["Items"]
    return [i for i in items if i["client_id"]["S"] == client_id]


def test_the_edge_allows_fresh_proofs_and_refuses_replays_other_keys_and_revoked_devices(
    stack: RunningStack,
) -> None:
    _cli_ready(stack)
    client, device = _client_with_device(stack, "model:demo:invoke")
    token = _token(stack, client, device)
    whoami = f"{stack.api_url}/v1/whoami"
    invoke = f"{stack.api_url}/v1/models/demo/invoke"

    proof = device.proof("GET", whoami, token)
    allowed = _call("GET", whoami, token, proof)
    assert allowed.status_code == 200, allowed.text
    me = allowed.json()
    assert (me["principal"], me["client_id"], me["jkt"], me["scope"]) == (
        client["client_id"],
        client["client_id"],
        device.thumbprint,
        ["model:demo:invoke"],
    )

    replayed = _call("GET", whoami, token, proof)
    assert replayed.status_code == 401
    assert replayed.headers["WWW-Authenticate"].startswith('DPoP error="invalid_token"')

    thief = DeviceKey.generate()  # a copied token, proofs from another machine's key
    assert _call("GET", whoami, token, thief.proof("GET", whoami, token)).status_code == 401
    bearer = _call("GET", whoami, token, device.proof("GET", whoami, token), scheme="Bearer")
    assert bearer.status_code == 401

    model = _call("POST", invoke, token, device.proof("POST", invoke, token))
    assert model.status_code == 200, model.text
    assert model.json()["model"] == "demo"
    other = f"{stack.api_url}/v1/models/secret/invoke"
    wrong_scope = _call("POST", other, token, device.proof("POST", other, token))
    assert wrong_scope.status_code == 403
    assert 'error="insufficient_scope"' in wrong_scope.headers["WWW-Authenticate"]

    revoked = stack.cli("devices", "revoke", "--jkt", device.thumbprint)
    assert revoked.returncode == 0, revoked.stderr
    # the edge refuses a revoked device within its stated staleness bound (5 s)
    deadline = time.monotonic() + MAX_AGE + 2
    allowed_while_stale = 0
    while True:
        after = _call("GET", whoami, token, device.proof("GET", whoami, token))
        if after.status_code != 200 or time.monotonic() > deadline:
            break
        allowed_while_stale += 1
        time.sleep(0.5)
    assert after.status_code == 401

    items = [i for i in _usage_items(stack, client["client_id"]) if i["event"]["S"] == "request"]
    allows = [i for i in items if i["decision"]["S"] == "allow"]
    denies = sorted(i["reason"]["S"] for i in items if i["decision"]["S"] == "deny")
    assert len(allows) == 2 + allowed_while_stale  # exactly one record per allowed request
    assert {i["route"]["S"] for i in allows} == {"/v1/whoami", "/v1/models/{model}/invoke"}
    assert denies == sorted(
        ["proof_replayed", "proof_key_mismatch", "insufficient_scope", "device_revoked"]
    )
    for item in items:
        assert token not in json.dumps(item)
    # no quota applies to this client, yet the model's units are in the ledger against
    # the request's usage record (issue 12: report_usage records them either way)
    units = [
        i
        for i in _usage_items(stack, client["client_id"])
        if i["id"]["S"] == ("units:" + model.json()["usage_id"])
    ]
    assert [(i["event"]["S"], i["reason"]["S"]) for i in units] == [
        ("units_reported", f"units:{model.json()['units']}")
    ]
    log = stack.log.read_text()
    assert token not in log
    assert proof not in log


#: (model, path segment as the client sends it) for names outside [A-Za-z0-9._-]
_ODD_MODELS = [
    ("team@eu", "team@eu"),
    ("llama3:8b", "llama3:8b"),
    ("a~b", "a~b"),
    ("50%", "50%25"),
]


def test_models_with_odd_names_are_allowed_once_each_and_unnameable_ones_are_a_403(
    stack: RunningStack,
) -> None:
    # issue 8.2 over HTTP: a name a scope can carry is a 200 with exactly one allowed
    # record (never a 500, never an allowed record for a refused request); a name no
    # scope token can carry (non-ASCII) is a clean 403 with no allowed record
    _cli_ready(stack)
    scope = " ".join(f"model:{model}:invoke" for model, _ in _ODD_MODELS)
    client, device = _client_with_device(stack, scope)
    token = _token(stack, client, device)

    for model, segment in _ODD_MODELS:
        url = f"{stack.api_url}/v1/models/{segment}/invoke"
        response = _call("POST", url, token, device.proof("POST", url, token))
        assert response.status_code == 200, (model, response.status_code, response.text)
        assert response.json()["model"] == model

    unnameable = f"{stack.api_url}/v1/models/mod%C3%A8le/invoke"
    refused = _call("POST", unnameable, token, device.proof("POST", unnameable, token))
    assert refused.status_code == 403, refused.text

    items = [i for i in _usage_items(stack, client["client_id"]) if i["event"]["S"] == "request"]
    allowed = sorted(i["resource"]["S"] for i in items if i["decision"]["S"] == "allow")
    assert allowed == sorted(model for model, _ in _ODD_MODELS)
    denied = [i["reason"]["S"] for i in items if i["decision"]["S"] == "deny"]
    assert denied == ["resource_not_nameable"]


def _slow_token(stack: RunningStack, client: dict[str, Any], device: DeviceKey) -> str:
    token_url = f"{stack.api_url}/oauth2/token"
    response = requests.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=(client["client_id"], client["client_secret"]),
        headers={"DPoP": device.proof("POST", token_url)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def test_a_key_rotation_on_the_local_stack_refuses_no_request(stack: RunningStack) -> None:
    """``tokenbroker keys rotate`` against ``tokenbroker dev`` (issue 11): both key slots
    are ECC keys there too; tokens signed before and after the rotation are accepted."""
    _cli_ready(stack)
    client, device = _client_with_device(stack, "model:demo:invoke")
    whoami = f"{stack.api_url}/v1/whoami"
    # generous timeouts: the stack may be busy with a scheduled function (digest sealing)
    before = _slow_token(stack, client, device)

    rotated = stack.cli("keys", "rotate", "--propagation-seconds", "1", "-o", "json")
    assert rotated.returncode == 0, rotated.stderr
    states = sorted(row["state"] for row in json.loads(rotated.stdout))
    assert states == ["current", "next"]
    again = stack.cli("keys", "rotate", "--propagation-seconds", "1")
    assert again.returncode == 2, again.stderr
    assert again.stderr.startswith("Error: a key rotation is already in progress")
    assert "Traceback" not in again.stderr

    time.sleep(1.5)  # past the propagation interval: the new key may sign now
    after = _slow_token(stack, client, device)
    for token in (before, after):
        headers = {"Authorization": f"DPoP {token}", "DPoP": device.proof("GET", whoami, token)}
        allowed = requests.get(whoami, headers=headers, timeout=60)
        assert allowed.status_code == 200, allowed.text

    status = stack.cli("keys", "status", "-o", "json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert sorted(row["state"] for row in body["keys"]) == ["current", "retiring"]
    assert body["next_step_at_ms"] / 1000 > time.time()
    published = requests.get(f"{stack.api_url}/.well-known/jwks.json", timeout=60).json()
    assert jwt.get_unverified_header(before)["kid"] in {k["kid"] for k in published["keys"]}


def test_sigterm_stops_the_stack_cleanly(stack: RunningStack) -> None:
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(timeout=30) == 0  # a clean stop, not a fast one (loaded CI)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.api_url}/.well-known/jwks.json", timeout=2)


# ------------------------------------------------------------------- in-process use


def test_local_stack_as_a_context_manager() -> None:
    before = dict(os.environ)
    with LocalStack("127.0.0.1", port=0, stack_name="tokenbroker-inproc") as local:
        assert local.exports["TOKENBROKER_ISSUER"] == local.api_url
        assert os.environ["AWS_ENDPOINT_URL"] == local.moto_url
        response = requests.get(
            f"{local.api_url}/.well-known/oauth-authorization-server", timeout=10
        )
        assert response.status_code == 200
        assert response.json()["issuer"] == local.api_url
        assert local.export_lines()[-1] == f"Local API: {local.api_url}"
    assert dict(os.environ) == before
