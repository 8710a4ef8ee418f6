"""Test-side harness for the token and discovery Lambdas.

- the Lambda modules, loaded by path under unique names (every function folder has its
  own ``app.py``);
- genuine API Gateway REST API (v1, proxy integration) events and a Lambda context;
- ``Broker``: a deployment provisioned from the real template.yaml into moto, with a
  composition root built on a fixed clock (it stands in for ``bootstrap.default``);
- AWS fault injection through botocore events (moto cannot throttle or time out) and a
  round-trip counter;
- capture of what the functions log (Powertools writes JSON to its own stream handler).

Proofs come from ``support.dpop`` (joserfc + cryptography), never from tokenbroker.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote_plus, urlencode

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ReadTimeoutError

from support import lambda_events
from support.dpop import DeviceKey
from support.lambda_events import ACCOUNT as ACCOUNT  # re-exported for the endpoint tests
from support.lambda_events import API_ID as API_ID
from support.lambda_events import HOST, ISSUER, REGION
from support.lambda_events import STAGE as STAGE
from tokenbroker import bootstrap
from tokenbroker.adapters import aws
from tokenbroker.domain.clock import FixedClock
from tokenbroker.local.provision import Deployment
from tokenbroker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
TOKEN_APP = ROOT / "functions" / "token_endpoint" / "app.py"
DISCOVERY_APP = ROOT / "functions" / "discovery" / "app.py"

TOKEN_PATH = "/oauth2/token"
TOKEN_URL = ISSUER + TOKEN_PATH
METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/.well-known/jwks.json"
AUDIENCE = "urn:tokenbroker:api"
FORM = "application/x-www-form-urlencoded"
APP_SCOPES = ("model:alpha:invoke", "model:beta:invoke", "profile")
LIFETIME = 300
PROOF_MAX_AGE = 60
SKEW = 5

#: the real composition root, captured before any test replaces it
REAL_DEFAULT = bootstrap.default

_session: list[boto3.Session] = []


def shared_session() -> boto3.Session:
    """One boto3 Session for the whole run: each new Session parses botocore's service
    models again (~0.2 s per client), which would dominate these tests."""
    if not _session:
        _session.append(boto3.Session(region_name=REGION))
    return _session[0]


def lambda_client(service: str) -> Any:
    """What ``bootstrap.lambda_clients`` builds (the Lambda botocore config: timeouts,
    standard retries), from the shared session."""
    return aws.client(service, session=shared_session())


# ---------------------------------------------------------------- Lambda plumbing


@dataclass
class LambdaContext(lambda_events.LambdaContext):
    function_name: str = "TokenFunction"
    memory_limit_in_mb: int = 256


def load_function(path: Path) -> ModuleType:
    """A Lambda ``app.py`` as a fresh module under a unique name."""
    return lambda_events.load_function(path, "_tb_endpoint")


HeaderValues = str | Sequence[str]


def rest_event(
    method: str,
    resource: str,
    *,
    headers: Mapping[str, HeaderValues] | None = None,
    body: str | None = None,
    is_base64: bool = False,
    query: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API proxy-integration event as API Gateway sends it for
    ``https://{HOST}/{STAGE}{resource}`` (no path parameters on these routes)."""
    given: dict[str, list[str]] = {
        "Accept": ["*/*"],
        "Host": [HOST],
        "User-Agent": ["tokenbroker-tests/1.0"],
        "X-Amzn-Trace-Id": [f"Root=1-00000000-{uuid.uuid4().hex[:24]}"],
        "X-Forwarded-For": ["198.51.100.7"],
        "X-Forwarded-Port": ["443"],
        "X-Forwarded-Proto": ["https"],
    }
    for name, value in (headers or {}).items():
        given[name] = [value] if isinstance(value, str) else list(value)
    single, multi = lambda_events.header_maps(
        (name, value) for name, values in given.items() for value in values
    )
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": dict(query) if query else None,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": lambda_events.rest_request_context(
            method,
            resource,
            resource,
            source_ip="198.51.100.7",
            user_agent="tokenbroker-tests/1.0",
        ),
        "body": body,
        "isBase64Encoded": is_base64,
    }


Form = Mapping[str, str] | Sequence[tuple[str, str]] | str | bytes | None


def basic_authorization(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode id and secret, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


def token_event(
    form: Form,
    *,
    dpop: str | Sequence[str] | None = None,
    basic: tuple[str, str] | None = None,
    authorization: str | None = None,
    content_type: str | None = FORM,
    headers: Mapping[str, HeaderValues] | None = None,
    base64_body: bool = False,
    method: str = "POST",
) -> dict[str, Any]:
    """A POST /oauth2/token event. ``form`` as a mapping or pairs (urlencoded), text
    (sent as is) or bytes (sent base64-encoded, as API Gateway does for binary)."""
    all_headers: dict[str, HeaderValues] = {}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if basic is not None:
        all_headers["Authorization"] = basic_authorization(*basic)
    if authorization is not None:
        all_headers["Authorization"] = authorization
    if dpop is not None:
        all_headers["DPoP"] = dpop
    all_headers.update(headers or {})
    body: str | None
    if form is None:
        body = None
    elif isinstance(form, bytes):
        body, base64_body = base64.b64encode(form).decode("ascii"), True
    elif isinstance(form, str):
        body = form
    else:
        body = urlencode(list(form.items()) if isinstance(form, Mapping) else list(form))
    if base64_body and isinstance(form, str):
        body = base64.b64encode(form.encode("utf-8")).decode("ascii")
    return rest_event(method, TOKEN_PATH, headers=all_headers, body=body, is_base64=base64_body)


def discovery_event(resource: str = METADATA_PATH) -> dict[str, Any]:
    return rest_event("GET", resource)


# ---------------------------------------------------------------- responses


def header(response: Mapping[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def json_body(response: Mapping[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert isinstance(body, dict)
    return body


def assert_error(response: Mapping[str, Any], status: int, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the status, exactly this ``error``, no token, no-store."""
    assert response["statusCode"] == status, response
    assert header(response, "Cache-Control") == "no-store", response
    assert header(response, "Content-Type") == "application/json", response
    body = json_body(response)
    assert body.get("error") == error, body
    assert set(body) <= {"error", "error_description"}, body
    assert "access_token" not in response["body"]
    return body


# ---------------------------------------------------------------- the deployment


@dataclass(frozen=True)
class App:
    """A registered client with one enrolled device key."""

    client_id: str
    secret: str
    key: DeviceKey
    scopes: tuple[str, ...]


_deserializer = TypeDeserializer()


class Broker:
    """One provisioned deployment; ``default`` replaces ``bootstrap.default``.

    The container is built lazily from ``os.environ`` (like the real one) but with a
    fixed clock and clients from one shared session (same Lambda config); ``reset``
    drops it so the next invocation reads the environment again.
    """

    def __init__(self, deployment: Deployment, clock: FixedClock) -> None:
        self.deployment = deployment
        self.clock = clock
        self._container: bootstrap.Container | None = None
        self.ddb = shared_session().client("dynamodb")
        self.kms = shared_session().client("kms")
        self.token_app = token_module()
        self.discovery_app = discovery_module()

    # composition root -----------------------------------------------------------------
    def default(self) -> bootstrap.Container:
        if self._container is None:
            settings = Settings.from_mapping(os.environ)
            self._container = bootstrap.build(settings, aws=lambda_client, clock=self.clock)
        return self._container

    def reset(self) -> None:
        self._container = None

    @property
    def container(self) -> bootstrap.Container:
        return self.default()

    @property
    def now(self) -> int:
        return int(self.clock())

    def table(self, logical_id: str) -> str:
        return str(self.deployment.refs[logical_id])

    @property
    def key_id(self) -> str:
        return str(self.deployment.refs["SigningKey"])

    # invocations ----------------------------------------------------------------------
    def invoke_token(self, event: Any) -> dict[str, Any]:
        response = self.token_app.handler(event, LambdaContext())
        assert isinstance(response, dict)
        return response

    def invoke_discovery(self, event: Any) -> dict[str, Any]:
        context = LambdaContext(function_name="DiscoveryFunction")
        response = self.discovery_app.handler(event, context)
        assert isinstance(response, dict)
        return response

    # clients and devices ----------------------------------------------------------------
    def new_app(self, scopes: Sequence[str] = APP_SCOPES, *, alg: str = "ES256") -> App:
        admin = bootstrap.default().admin
        created = admin.create_client(name="endpoint tests", scope=" ".join(scopes))
        key = DeviceKey.generate(alg)
        admin.enroll_device(client_id=created.client.client_id, jkt=key.jkt, label="test")
        return App(created.client.client_id, created.client_secret, key, tuple(scopes))

    def proof(self, key: DeviceKey, htm: str = "POST", htu: str = TOKEN_URL, **kw: Any) -> str:
        kw.setdefault("iat", self.now)
        return key.proof(htm, htu, **kw)

    def request(
        self,
        app: App,
        *,
        auth: str = "post",
        proof: str | Sequence[str] | None = None,
        key: DeviceKey | None = None,
        secret: str | None = None,
        client_id: str | None = None,
        **params: str,
    ) -> dict[str, Any]:
        """A valid token request for ``app`` (unless told otherwise): a fresh proof by
        ``key`` (default: the app's device), client_secret_post or _basic."""
        cid = app.client_id if client_id is None else client_id
        sec = app.secret if secret is None else secret
        form = {"grant_type": "client_credentials", **params}
        basic = None
        if auth == "basic":
            basic = (cid, sec)
        else:
            form.update(client_id=cid, client_secret=sec)
        if proof is None:
            proof = self.proof(key or app.key)
        return token_event(form, dpop=proof, basic=basic)

    def issue(self, app: App, **kw: Any) -> dict[str, Any]:
        return self.invoke_token(self.request(app, **kw))

    # inspection -------------------------------------------------------------------------
    def token_records(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.table("TokensTable"), ConsistentRead=True)["Items"]
        return [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in items]

    def ledger_records(self, event: str | None = "token_issued") -> list[dict[str, Any]]:
        """UsageTable records (plain values) of ``event`` (None: every event; the app
        fixture's admin actions are records too: client_created, device_enrolled)."""
        items = self.ddb.scan(TableName=self.table("UsageTable"), ConsistentRead=True)["Items"]
        records = [{k: _deserializer.deserialize(v) for k, v in item.items()} for item in items]
        return [r for r in records if event is None or r["event"] == event]

    def jwks(self) -> dict[str, Any]:
        response = self.invoke_discovery(discovery_event(JWKS_PATH))
        assert response["statusCode"] == 200, response
        return json_body(response)


_modules: dict[Path, ModuleType] = {}


def _module(path: Path) -> ModuleType:
    if path not in _modules:
        _modules[path] = load_function(path)
    return _modules[path]


def token_module() -> ModuleType:
    """The token function's module, loaded once per test session (Lambda reuses it)."""
    return _module(TOKEN_APP)


def discovery_module() -> ModuleType:
    return _module(DISCOVERY_APP)


# ---------------------------------------------------------------- AWS faults


def service_id(client: Any) -> str:
    return str(client.meta.service_model.service_id.hyphenize())


def error_reply(code: str, status: int = 400) -> Callable[..., Any]:
    """A ``before-call`` handler answering with an AWS error instead of calling AWS."""

    def reply(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        http = AWSResponse("https://injected.invalid/", status, {}, None)
        parsed = {
            "Error": {"Code": code, "Message": f"injected {code}"},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "injected"},
        }
        return http, parsed

    return reply


def fail_operation(client: Any, operation: str, code: str, status: int = 400) -> None:
    client.meta.events.register_first(
        f"before-call.{service_id(client)}.{operation}", error_reply(code, status)
    )


def time_out(client: Any, operation: str) -> list[str]:
    """Every HTTP attempt of ``operation`` times out; returns the list of attempts."""
    attempts: list[str] = []

    def timeout(request: Any, **_: Any) -> None:
        attempts.append(operation)
        raise ReadTimeoutError(endpoint_url=str(request.url))

    client.meta.events.register_first(f"before-send.{service_id(client)}.{operation}", timeout)
    return attempts


class RoundTrips:
    """Counts HTTP sends (retries included) per ``service:Operation``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        self.calls.append(f"{service}:{operation}")

    def attach(self, *clients: Any) -> RoundTrips:
        for client in clients:
            # first: moto answers on ``before-send`` and would stop the chain before us
            client.meta.events.register_first(f"before-send.{service_id(client)}", self)
        return self

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


# ---------------------------------------------------------------- logs


class CapturedOutput:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self._stream = io.StringIO()
        self._records: list[str] = []

    def text(self) -> str:
        out, err = self._capsys.readouterr()
        self._records.append(out + err)
        return self._stream.getvalue() + "".join(self._records)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.append(f"{record.getMessage()} {record.__dict__!r}")


@contextmanager
def captured_output(capsys: pytest.CaptureFixture[str]) -> Iterator[CapturedOutput]:
    """Everything the functions print or log while active: the Powertools JSON lines
    (its handler's stream is swapped; the service logger is set to DEBUG), EMF metrics
    (printed to stdout), and every record reaching the root logger, with all its
    attributes (so ``extra`` fields are included)."""
    token_module()
    discovery_module()
    captured = CapturedOutput(capsys)
    service = logging.getLogger("tokenbroker")
    handler = getattr(service, "powertools_handler", None)
    assert isinstance(handler, logging.StreamHandler)
    old_stream = handler.setStream(captured._stream)
    old_level = service.level
    root = logging.getLogger()
    everything = _ListHandler(captured._records)
    root.addHandler(everything)
    service.setLevel(logging.DEBUG)
    capsys.readouterr()
    try:
        yield captured
    finally:
        service.setLevel(old_level)
        root.removeHandler(everything)
        if old_stream is not None:
            handler.setStream(old_stream)
