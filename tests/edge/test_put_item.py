"""LeanPutItem on a real socket: a loopback HTTP server stands in for DynamoDB.

These tests take the real path end to end (no botocore event answers the send): the
client's URLLib3Session, its keep-alive pool and timeouts, ``AWS_ENDPOINT_URL``,
botocore's SigV4 signer with credentials from the environment provider chain, the
standard retry policy, and botocore's error parser. The server records every request
(with the connection it came on) and answers from a script.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ReadTimeoutError

from tokenbroker.adapters import put_item
from tokenbroker.adapters.aws import LAMBDA_CONFIG, client
from tokenbroker.adapters.put_item import LeanPutItem

PARAMS: dict[str, Any] = {
    "TableName": "usage",
    "Item": {"id": {"S": "r1"}, "at": {"N": "1800000000000"}, "tags": {"SS": ["a", "b"]}},
    "ConditionExpression": "attribute_not_exists(#key)",
    "ExpressionAttributeNames": {"#key": "id"},
}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # id of the server-side connection handler


@dataclass
class FakeDynamoDB:
    """Answers PutItem from ``script`` (status, JSON body, delay); 200 {} when empty."""

    seen: list[Seen] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any], float]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def dynamodb_server() -> Iterator[FakeDynamoDB]:
    fake = FakeDynamoDB()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                fake.seen.append(Seen(self.path, dict(self.headers), body, id(self)))
                status, answer, delay = fake.script.pop(0) if fake.script else (200, {}, 0.0)
            if delay:
                time.sleep(delay)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("x-amzn-RequestId", f"req-{len(fake.seen)}")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that timed out has hung up: nothing to report

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def ddb(dynamodb_server: FakeDynamoDB, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """A DynamoDB client built the production way (standard configuration chain), with
    AWS_ENDPOINT_URL pointing at the fake server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", dynamodb_server.url)

    def make(config: Config = LAMBDA_CONFIG) -> Any:
        return client("dynamodb", session=boto3.Session(), config=config)

    return make


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(put_item, "time", types.SimpleNamespace(sleep=recorded.append))
    return recorded


def _error(code: str) -> dict[str, str]:
    return {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"}


def _access_key(seen: Seen) -> str:
    # Authorization: AWS4-HMAC-SHA256 Credential=AKID/20270115/us-east-1/dynamodb/aws4_request
    return seen.headers["Authorization"].split("Credential=", 1)[1].split("/", 1)[0]


def _verify_signature(seen: Seen, url: str, secret: str) -> None:
    """Check a received request's SigV4 signature the way AWS does, with botocore's own
    SigV4Auth: canonical request from the signed headers as received, same scope."""
    auth = seen.headers["Authorization"]
    credential = auth.split("Credential=", 1)[1].split(",", 1)[0]
    access_key, day, region, service, _ = credential.split("/")
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    received = {k.lower(): v for k, v in seen.headers.items()}
    request = AWSRequest(
        method="POST",
        url=url + seen.path,
        data=seen.body,
        headers={name: received[name] for name in signed},
    )
    request.context["timestamp"] = received["x-amz-date"]
    signer = SigV4Auth(Credentials(access_key, secret), service, region)
    assert signer.signed_headers(signer.headers_to_sign(request)) == ";".join(signed)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert day == received["x-amz-date"][:8]
    assert auth.endswith(f"Signature={expected}")


def test_puts_go_to_aws_endpoint_url_signed_on_one_kept_alive_connection(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    put = LeanPutItem.for_client(ddb())

    first = put(**PARAMS)
    put(**PARAMS)
    put(**PARAMS)

    assert first["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert first["ResponseMetadata"]["RequestId"] == "req-1"
    assert len(dynamodb_server.seen) == 3
    assert len({s.connection for s in dynamodb_server.seen}) == 1  # keep-alive
    seen = dynamodb_server.seen[0]
    assert seen.path == "/"
    assert json.loads(seen.body) == PARAMS
    assert seen.headers["X-Amz-Target"] == "DynamoDB_20120810.PutItem"
    assert seen.headers["Content-Type"] == "application/x-amz-json-1.0"
    auth = seen.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/dynamodb/aws4_request" in auth
    assert "x-amz-target" in auth.split("SignedHeaders=", 1)[1]
    assert seen.headers["amz-sdk-request"] == "attempt=1; max=2"
    for each in dynamodb_server.seen:
        _verify_signature(each, dynamodb_server.url, "testing")


def test_a_wrong_signature_does_not_verify(dynamodb_server: FakeDynamoDB, ddb: Any) -> None:
    """The verifier above can fail: a tampered body or another secret is caught."""
    LeanPutItem.for_client(ddb())(**PARAMS)
    seen = dynamodb_server.seen[0]
    with pytest.raises(AssertionError):
        _verify_signature(seen, dynamodb_server.url, "another-secret")
    tampered = Seen(seen.path, seen.headers, seen.body.replace(b"r1", b"r2"), seen.connection)
    with pytest.raises(AssertionError):
        _verify_signature(tampered, dynamodb_server.url, "testing")


def test_the_lean_request_is_the_request_botocore_sends(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    c = ddb()
    LeanPutItem.for_client(c)(**PARAMS)
    c.put_item(**PARAMS)

    lean, boto = dynamodb_server.seen
    assert json.loads(lean.body) == json.loads(boto.body)
    for name in ("X-Amz-Target", "Content-Type", "Host", "amz-sdk-request"):
        assert lean.headers[name] == boto.headers[name]
    signed = lean.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]
    assert set(signed.split(";")) >= {"host", "x-amz-date", "x-amz-target", "content-type"}


def test_rotated_credentials_from_the_environment_sign_the_next_put(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda hands a function its role's credentials in the environment; botocore's
    environment provider re-reads them as they near their expiry. The lean writer
    freezes credentials per request from that provider, never once at build time."""

    def credentials(key: str, token: str) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", f"secret-{key}")
        monkeypatch.setenv("AWS_SESSION_TOKEN", token)
        # inside botocore's refresh window: every use re-reads the environment
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 300))
        monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", expiry)

    credentials("ASIAFIRST", "token-first")
    put = LeanPutItem.for_client(ddb())
    put(**PARAMS)
    credentials("ASIASECOND", "token-second")
    put(**PARAMS)

    first, second = dynamodb_server.seen
    _verify_signature(first, dynamodb_server.url, "secret-ASIAFIRST")
    _verify_signature(second, dynamodb_server.url, "secret-ASIASECOND")
    assert (_access_key(first), first.headers["X-Amz-Security-Token"]) == (
        "ASIAFIRST",
        "token-first",
    )
    assert (_access_key(second), second.headers["X-Amz-Security-Token"]) == (
        "ASIASECOND",
        "token-second",
    )


def test_a_new_day_signs_with_the_new_days_scope_and_key(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The date string is kept for its second and the keyed HMAC for its day: a put on
    the next day (or a second later) must not sign with the cached ones."""
    put = LeanPutItem.for_client(ddb())
    start = 1_800_000_000.5  # 2027-01-15T08:00:00Z
    for now in (start, start + 1, start + 86_400):
        monkeypatch.setattr(put_item, "_wall_clock", lambda now=now: now)
        put(**PARAMS)

    dates = [s.headers["X-Amz-Date"] for s in dynamodb_server.seen]
    assert dates == ["20270115T080000Z", "20270115T080001Z", "20270116T080000Z"]
    scopes = [s.headers["Authorization"].split("/")[1] for s in dynamodb_server.seen]
    assert scopes == ["20270115", "20270115", "20270116"]
    for each in dynamodb_server.seen:
        _verify_signature(each, dynamodb_server.url, "testing")


def test_each_put_carries_its_own_version_4_invocation_id(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    put = LeanPutItem.for_client(ddb())
    put(**PARAMS)
    put(**PARAMS)

    ids = [s.headers["amz-sdk-invocation-id"] for s in dynamodb_server.seen]
    parsed = [uuid.UUID(i) for i in ids]
    assert [str(p) for p in parsed] == ids  # canonical text, as str(uuid.uuid4())
    assert {(p.version, p.variant) for p in parsed} == {(4, uuid.RFC_4122)}
    assert ids[0] != ids[1]


def test_throttling_is_retried_once_with_backoff_then_succeeds(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], sleeps: list[float]
) -> None:
    dynamodb_server.script.append((400, _error("ThrottlingException"), 0.0))

    response = LeanPutItem.for_client(ddb())(**PARAMS)

    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    assert [s.headers["amz-sdk-request"] for s in dynamodb_server.seen] == [
        "attempt=1; max=2",
        "attempt=2; max=2",
    ]
    # each attempt is signed anew, with the same invocation id
    assert len({s.headers["amz-sdk-invocation-id"] for s in dynamodb_server.seen}) == 1
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= 1  # standard mode: rand(0, 1) * 1 s for throttling


def test_5xx_twice_is_a_client_error_after_the_last_attempt(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], sleeps: list[float]
) -> None:
    dynamodb_server.script += [(500, _error("InternalServerError"), 0.0)] * 2

    with pytest.raises(ClientError) as caught:
        LeanPutItem.for_client(ddb())(**PARAMS)

    assert caught.value.response["Error"]["Code"] == "InternalServerError"
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1
    assert len(dynamodb_server.seen) == 2


def test_a_conditional_check_failure_is_not_retried_and_raises_the_modeled_error(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], sleeps: list[float]
) -> None:
    dynamodb_server.script.append((400, _error("ConditionalCheckFailedException"), 0.0))
    c = ddb()

    with pytest.raises(c.exceptions.ConditionalCheckFailedException) as caught:
        LeanPutItem.for_client(c)(**PARAMS)

    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert len(dynamodb_server.seen) == 1
    assert sleeps == []


def test_a_conditional_check_failure_carries_the_existing_item_as_botocore_parses_it(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    existing = {"id": {"S": "r1"}, "at": {"N": "1"}}
    answer = {**_error("ConditionalCheckFailedException"), "Item": existing}
    dynamodb_server.script += [(400, answer, 0.0)] * 2
    c = ddb()
    params = {**PARAMS, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}

    with pytest.raises(ClientError) as lean:
        LeanPutItem.for_client(c)(**params)
    with pytest.raises(ClientError) as boto:
        c.put_item(**params)

    assert lean.value.response["Item"] == boto.value.response["Item"] == existing
    assert json.loads(dynamodb_server.seen[0].body) == params


def test_a_stalled_answer_times_out_at_the_clients_read_timeout_on_every_attempt(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any], sleeps: list[float]
) -> None:
    dynamodb_server.script += [(200, {}, 0.5)] * 2
    config = LAMBDA_CONFIG.merge(Config(read_timeout=0.1))

    # the server answers after 0.5 s: a timeout of LAMBDA_CONFIG's 2 s would succeed
    with pytest.raises(ReadTimeoutError):
        LeanPutItem.for_client(ddb(config))(**PARAMS)

    assert len(dynamodb_server.seen) == 2  # and each attempt timed out


def test_anything_but_a_botocore_dynamodb_client_keeps_its_own_put_item() -> None:
    class Wrapper:
        def put_item(self, **kwargs: Any) -> dict[str, Any]:
            return {}

    wrapper = Wrapper()
    assert LeanPutItem.for_client(wrapper) == wrapper.put_item
    kms = client("kms", session=boto3.Session())
    with pytest.raises(AttributeError):
        LeanPutItem.for_client(kms)  # no put_item: not a DynamoDB client


# ---- the usage ledger's body: spelled directly, equal to ledger_items.to_item ---------


def _records() -> list[Any]:
    from tokenbroker.domain.models import Decision, EventType, UsageRecord

    base = UsageRecord.build(
        at=1_800_000_000.123,
        retention_days=400,
        record_id="rid-1",
        principal="user-1",
        client_id="client-1",
        jkt="j" * 43,
        token_jti="at-1",
        proof_jti_hash="h" * 43,
        method="POST",
        route="/v1/models/{model}/invoke",
        resource="llama3:8b",
        source_ip="198.51.100.7",
        user_agent='quote " backslash \\ tab \t caf\u00e9 \U0001f600 \u2028',
        request_id="req-1",
    )
    denial = UsageRecord.build(
        at=1_800_000_061,
        retention_days=30,
        record_id="deny:abc",
        principal="user-1",
        client_id="client-1",
        decision=Decision.DENY,
        reason="scope_not_allowed",
        token_jti="at-1",
    )
    person = UsageRecord.build(  # a person's event: no client id, an actor
        at=1_800_000_000,
        retention_days=400,
        record_id="person-1",
        principal="person:alice",
        client_id="",
        event=EventType.PERSON_ENABLED,
        actor="arn:aws:iam::123456789012:role/admin",
    )
    return [base, denial, person]


@pytest.mark.parametrize("index", range(3))
def test_the_lean_usage_body_holds_exactly_to_items_item(index: int) -> None:
    from tokenbroker.adapters.ledger_items import to_item
    from tokenbroker.adapters.usage import usage_item_json

    record = _records()[index]
    assert json.loads("{" + usage_item_json(record) + "}") == to_item(record)


def test_the_lean_usage_body_spells_odd_values_as_to_item_does() -> None:
    """No retention (no TTL), a value of a type no record holds today (TypeSerializer's
    spelling), empty text left out."""
    from decimal import Decimal

    from tokenbroker.adapters.ledger_items import to_item
    from tokenbroker.adapters.usage import usage_item_json

    odd = dataclasses.replace(_records()[0], retain_until=0, reason=Decimal("5"), route="")
    for window in (None, 30):
        body = json.loads("{" + usage_item_json(odd, hot_window_days=window) + "}")
        assert body == to_item(odd, hot_window_days=window)
        assert body["reason"] == {"N": "5"}
        assert "route" not in body


def test_the_usage_ledger_sends_new_items_put_with_to_items_item_on_the_lean_path(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    from tokenbroker.adapters.aws import new_item
    from tokenbroker.adapters.ledger_items import ID, to_item
    from tokenbroker.adapters.usage import DynamoUsageLedger

    ledger = DynamoUsageLedger(ddb(), usage_table="usage-table")
    assert ledger._put_body is not None  # the lean body path, not client.put_item
    record = _records()[0]
    ledger.record_use(record)

    (seen,) = dynamodb_server.seen
    expected = {
        **new_item("usage-table", to_item(record), ID),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    assert json.loads(seen.body) == expected
    assert seen.headers["X-Amz-Target"] == "DynamoDB_20120810.PutItem"
    _verify_signature(seen, dynamodb_server.url, "testing")


def test_a_conditional_failure_on_the_lean_path_is_a_replay_unless_it_is_our_own_item(
    dynamodb_server: FakeDynamoDB, ddb: Callable[..., Any]
) -> None:
    from tokenbroker.adapters.ledger_items import to_item
    from tokenbroker.adapters.usage import DynamoUsageLedger
    from tokenbroker.domain.errors import ProofReplayed

    record = _records()[0]
    other = {**to_item(record), "request_id": {"S": "another-request"}}
    failed = _error("ConditionalCheckFailedException")
    dynamodb_server.script += [
        (400, {**failed, "Item": other}, 0.0),
        (400, {**failed, "Item": to_item(record)}, 0.0),
    ]
    ledger = DynamoUsageLedger(ddb(), usage_table="usage-table")

    with pytest.raises(ProofReplayed):
        ledger.record_use(record)  # another request's record: a replay
    ledger.record_use(record)  # the very item we sent (a lost answer): our own record
    assert len(dynamodb_server.seen) == 2
