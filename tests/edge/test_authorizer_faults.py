"""The authorizer when its dependencies fail, on the real DynamoDB usage ledger (moto).

Tables, KMS key and the authorizer's environment come from template.yaml through
``tokenbroker.local.provision``; boto3 clients are built by the production factory
(``tokenbroker.adapters.aws.client``: short timeouts, standard retries). moto cannot
throttle or time out, so faults are injected with botocore events (ARCHITECTURE, Known
traps). Whatever fails, the answer is a 401 and no ALLOW record, never an Allow.

The usage write goes through ``tokenbroker.adapters.put_item.LeanPutItem``; its faults
are injected at the HTTP send (``before-send``: an error answer as DynamoDB sends it on
the wire, or the exception botocore's HTTP layer raises), which is the same point for
the lean path and for ``client.put_item``, and the write-fault tests run on both
(``transport``), so the two must fail identically.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import botocore.endpoint
import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerRequestEvent,
)
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from moto import mock_aws
from moto.core.models import botocore_stubber as moto_stubber

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.adapters import put_item
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.put_item import LeanPutItem
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.keycache import KeyCache
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.local import load_template
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.local.template import SAM_FUNCTION
from tokenbroker.services.admin import AdminService
from tokenbroker.services.authorization import DENIALS_PER_MINUTE
from tokenbroker.settings import Settings
from tokenbroker.web import edge

STACK = "edge-faults"
SERVICES = ("dynamodb", "kms", "ssm")


# ---------------------------------------------------------------- the stack


@dataclass
class Stack:
    clock: FixedClock
    clients: dict[str, Any]
    deployment: Deployment
    config: Settings
    admin: AdminService
    client_id: str
    device: DeviceKey
    issuer: s.Issuer  # a local key; see kms_issuer() for tokens signed by moto's KMS key

    @property
    def now(self) -> int:
        return int(self.clock())

    @property
    def ddb(self) -> Any:
        return self.clients["dynamodb"]

    @property
    def usage_table(self) -> str:
        return self.deployment.refs["UsageTable"]

    def kms_issuer(self) -> s.KmsIssuer:
        return s.KmsIssuer(
            self.clients["kms"], self.config.signing_key_id, client_id=self.client_id
        )

    def container(self, *, kms_keys: bool = False, dynamodb: Any = None) -> bootstrap.Container:
        """The authorizer's composition root on these clients. The usage ledger is the
        real DynamoUsageLedger the container builds from the template's environment; the
        key cache is the local issuer's key, or (kms_keys) the real KMS key source."""
        clients = {**self.clients, **({"dynamodb": dynamodb} if dynamodb else {})}

        def aws(service: str) -> Any:
            return clients[service]

        if kms_keys:
            return bootstrap.build(self.config, aws=aws, clock=self.clock)
        return s.build_container(
            self.config,
            clock=self.clock,
            key_cache=self.issuer.key_cache(self.clock),
            usage=None,
            aws=aws,
        )

    def event(
        self, issuer: s.Issuer | None = None, *, token: str | None = None, proof: str = ""
    ) -> dict[str, Any]:
        token = token or (issuer or self.issuer).token(self.now, self.device.jkt)
        proof = proof or s.proof(self.device, token, iat=self.now)
        return s.rest_event(s.dpop_headers(token, proof))

    def usage_items(self) -> list[dict[str, Any]]:
        """The edge's records (event ``request``); the set-up's admin actions are ledger
        records too (event client_created, device_enrolled...), left out here."""
        items = self.ddb.scan(TableName=self.usage_table, ConsistentRead=True)["Items"]
        requests = [i for i in items if i["event"]["S"] == "request"]
        return sorted(requests, key=lambda i: (i["decision"]["S"], i["reason"]["S"]))

    def admin_events(self) -> list[str]:
        items = self.ddb.scan(TableName=self.usage_table, ConsistentRead=True)["Items"]
        return sorted(i["event"]["S"] for i in items if i["event"]["S"] != "request")

    def decisions(self) -> list[tuple[str, str]]:
        return [(i["decision"]["S"], i["reason"]["S"]) for i in self.usage_items()]


@pytest.fixture
def stack(fixed_clock: FixedClock) -> Iterator[Stack]:
    with mock_aws():
        clients = {name: aws_client(name) for name in SERVICES}
        deployment = provision(
            load_template(), session_or_clients=clients, stack_name=STACK, region=s.REGION
        )
        config = Settings.from_mapping(deployment.environment("AuthorizerFunction"))
        # the directory the admin CLI uses, on the same tables
        admin = bootstrap.build(
            config, aws=lambda service: clients[service], clock=fixed_clock
        ).admin
        created = admin.create_client(name="edge tests", scope=f"{s.DEFAULT_SCOPE} model:x:invoke")
        client_id = created.client.client_id
        device = DeviceKey.generate("ES256")
        admin.enroll_device(client_id=client_id, jkt=device.jkt, label="laptop")
        yield Stack(
            clock=fixed_clock,
            clients=clients,
            deployment=deployment,
            config=config,
            admin=admin,
            client_id=client_id,
            device=device,
            issuer=s.Issuer(client_id=client_id),
        )


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, dict[str, Any]], Any]:
    """Run the real handler with ``container`` as the execution environment's root."""
    module = s.load_authorizer()
    context = s.LambdaContext()

    def run(container: Any, event: dict[str, Any]) -> str:
        monkeypatch.setattr(bootstrap, "default", lambda: container)
        return s.call_rest_authorizer(module, event, context)[0]

    run.module = module  # type: ignore[attr-defined]
    return run


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's retry back-off sleeps, recorded instead of slept (botocore.endpoint uses
    the time module for nothing else)."""
    sleeps: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=sleeps.append))
    return sleeps


@pytest.fixture(params=["lean", "boto3"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The usage write's transport: LeanPutItem (production) or ``client.put_item``."""
    if request.param == "boto3":
        monkeypatch.setattr(LeanPutItem, "for_client", staticmethod(lambda c: c.put_item))
    return str(request.param)


@pytest.fixture
def no_lean_backoff(monkeypatch: pytest.MonkeyPatch, no_backoff: list[float]) -> list[float]:
    """The same recording for the lean path's back-off (it sleeps with ``time.sleep``)."""
    monkeypatch.setattr(put_item, "time", types.SimpleNamespace(sleep=no_backoff.append))
    return no_backoff


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


_DYNAMODB_ERRORS = {
    "AccessDeniedException": "com.amazon.coral.service#AccessDeniedException",
}


def _wire_error(code: str, status: int) -> AWSResponse:
    """An error answer as DynamoDB puts it on the wire (JSON 1.0 ``__type``)."""
    error_type = _DYNAMODB_ERRORS.get(code, f"com.amazonaws.dynamodb.v20120810#{code}")
    body = json.dumps({"__type": error_type, "message": f"injected {code}"}).encode()
    headers = {
        "x-amzn-requestid": "INJECTED",
        "content-type": "application/x-amz-json-1.0",
        "content-length": str(len(body)),
    }
    return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", status, headers, _Body(body))


class SendFault:
    """A ``before-send`` handler for PutItem: every send (retries included) is counted
    and answered with ``answer()`` (an AWSResponse) or raises what it raises; while
    ``active`` is False, or once ``times`` answers were given, sends go on to moto.

    botocore's endpoint asks every ``before-send`` handler (moto's too, which would
    then write the item) and takes the first answer; so an answered request is first
    re-addressed to a host moto does not emulate, and moto leaves it alone, as if the
    wire had answered. (Each attempt is a new request, on both paths.)
    """

    def __init__(self, answer: Callable[[], AWSResponse], *, times: int | None = None) -> None:
        self._answer = answer
        self._left = times
        self.sends = 0
        self.active = True

    def __call__(self, request: Any, **kwargs: Any) -> AWSResponse | None:
        if not self.active or self._left == 0:
            return None
        request.url = "https://fault.invalid/"
        self.sends += 1
        if self._left is not None:
            self._left -= 1
        return self._answer()

    def on(self, client: Any) -> SendFault:
        client.meta.events.register("before-send.dynamodb.PutItem", self)
        return self


def _error_response(code: str, status: int = 400, **extra: Any) -> tuple[AWSResponse, dict]:
    """What a ``before-call`` handler returns to stand in for the service's answer."""
    parsed = {
        "Error": {"Code": code, "Message": f"injected {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **extra,
    }
    return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", status, {}, None), parsed


def _count_sends(*clients: Any) -> Counter[str]:
    """Every HTTP request the clients send (retries included), by operation."""
    sent: Counter[str] = Counter()

    def count(event_name: str, **kwargs: Any) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    for c in clients:
        c.meta.events.register("before-send", count)
    return sent


# ---------------------------------------------------------------- DynamoDB faults


def test_the_stack_allows_a_valid_request_and_records_it(stack: Stack, app: Any) -> None:
    assert app(stack.container(), stack.event()) == "allow"
    assert stack.decisions() == [("allow", "ok")]


@pytest.mark.parametrize(
    ("code", "status", "sends"),
    [
        # retryable (botocore standard mode): one try + one retry (total_max_attempts=2)
        pytest.param("ProvisionedThroughputExceededException", 400, 2, id="throughput"),
        pytest.param("ThrottlingException", 400, 2, id="throttling"),
        pytest.param("RequestLimitExceeded", 400, 2, id="request-limit"),
        pytest.param("InternalServerError", 500, 2, id="internal-error"),
        pytest.param("ServiceUnavailable", 503, 2, id="unavailable"),
        # not retryable: one send
        pytest.param("AccessDeniedException", 400, 1, id="access-denied"),
        pytest.param("ResourceNotFoundException", 400, 1, id="missing-table"),
        pytest.param("ItemCollectionSizeLimitExceededException", 400, 1, id="size-limit"),
        pytest.param("ValidationException", 400, 1, id="validation"),
    ],
)
def test_a_failing_usage_write_is_a_401_and_writes_nothing(
    stack: Stack,
    app: Any,
    transport: str,
    no_lean_backoff: list[float],
    code: str,
    status: int,
    sends: int,
) -> None:
    fault = SendFault(lambda: _wire_error(code, status)).on(stack.ddb)

    assert app(stack.container(), stack.event()) == "401"
    assert stack.usage_items() == []
    assert fault.sends == sends
    assert len(no_lean_backoff) == sends - 1


def test_a_usage_write_answered_with_a_bare_502_page_is_retried_then_a_401(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    fault = SendFault(
        lambda: AWSResponse(
            "https://dynamodb.us-east-1.amazonaws.com/",
            502,
            {"content-type": "text/html", "content-length": str(len(page))},
            _Body(page),
        )
    ).on(stack.ddb)

    assert app(stack.container(), stack.event()) == "401"
    assert fault.sends == 2
    assert stack.usage_items() == []


def test_a_usage_write_that_succeeds_on_its_retry_is_allowed_and_recorded_once(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    fault = SendFault(lambda: _wire_error("ThrottlingException", 400), times=1).on(stack.ddb)

    assert app(stack.container(), stack.event()) == "allow"
    assert stack.decisions() == [("allow", "ok")]
    assert fault.sends == 1
    assert len(no_lean_backoff) == 1


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ReadTimeoutError(endpoint_url="https://dynamodb"), id="read-timeout"),
        pytest.param(ConnectTimeoutError(endpoint_url="https://dynamodb"), id="connect-timeout"),
    ],
)
def test_a_timed_out_usage_write_is_retried_a_bounded_number_of_times_then_a_401(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float], error: Exception
) -> None:
    attempts = 0

    def time_out(**kwargs: Any) -> None:
        nonlocal attempts
        attempts += 1
        raise error

    stack.ddb.meta.events.register("before-send.dynamodb.PutItem", time_out)

    assert app(stack.container(), stack.event()) == "401"
    # LAMBDA_CONFIG: standard mode, total_max_attempts=2: 1 try + 1 retry
    assert attempts == 2
    assert len(no_lean_backoff) == 1
    assert stack.usage_items() == []


def test_a_write_that_landed_but_whose_answer_was_lost_is_allowed_on_its_retry(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    """The retry's conditional put fails (the first attempt's item is there), and the
    item DynamoDB returns is the one this request sent: its own record, not a replay."""
    sends = 0

    def land_then_lose_the_answer(request: Any, event_name: str, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        if sends == 1:
            moto_stubber(event_name=event_name, request=request)  # DynamoDB writes it
            raise ReadTimeoutError(endpoint_url=request.url)  # the answer never arrives

    stack.ddb.meta.events.register("before-send.dynamodb.PutItem", land_then_lose_the_answer)

    assert app(stack.container(), stack.event()) == "allow"
    assert sends == 2
    assert stack.decisions() == [("allow", "ok")]


def test_a_hung_usage_write_is_given_up_within_the_authorizer_timeout(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    attempts = 0

    def hang(**kwargs: Any) -> None:
        nonlocal attempts
        attempts += 1
        raise ReadTimeoutError(endpoint_url="https://dynamodb")

    stack.ddb.meta.events.register("before-send.dynamodb.PutItem", hang)

    assert app(stack.container(), stack.event()) == "401"
    # each attempt of a hung call waits its full read timeout before botocore gives up
    assert attempts == 2
    worst_case = attempts * stack.ddb.meta.config.read_timeout + sum(no_lean_backoff)
    timeout = load_template().sam_properties("AuthorizerFunction", SAM_FUNCTION)["Timeout"]
    assert worst_case < int(timeout)


@pytest.mark.parametrize("table", ["UsageTable", "DevicesTable", "ClientsTable"])
def test_a_missing_table_is_a_401_and_never_an_allow(
    stack: Stack, app: Any, transport: str, table: str
) -> None:
    stack.ddb.delete_table(TableName=stack.deployment.refs[table])

    assert app(stack.container(), stack.event()) == "401"
    if table != "UsageTable":
        assert stack.usage_items() == []


def test_a_throttled_write_does_not_burn_the_proof_for_its_retry(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    event = stack.event()
    fault = SendFault(lambda: _wire_error("ThrottlingException", 400)).on(stack.ddb)
    container = stack.container()
    assert app(container, event) == "401"
    fault.active = False

    retry = dict(event, requestContext={**event["requestContext"], "requestId": "retry"})
    assert app(container, retry) == "allow"
    assert stack.decisions() == [("allow", "ok")]


def test_a_replayed_proof_is_a_conditional_check_failure_on_the_wire_and_a_401(
    stack: Stack, app: Any, transport: str
) -> None:
    container = stack.container()
    event = stack.event()
    sent = _count_sends(stack.ddb)
    assert app(container, event) == "allow"

    replay = dict(event, requestContext={**event["requestContext"], "requestId": "replay"})
    assert app(container, replay) == "401"
    # the allow, the replay's conditional put (refused by DynamoDB), the denial record
    assert sent["PutItem"] == 3
    assert stack.decisions() == [("allow", "ok"), ("deny", "proof_replayed")]


# ---------------------------------------------------------------- KMS at cold start


@pytest.mark.parametrize(
    "code", ["KMSInternalException", "DisabledException", "AccessDeniedException"]
)
def test_kms_failing_at_cold_start_is_a_401_and_a_request_after_the_cool_down_recovers(
    stack: Stack, app: Any, code: str
) -> None:
    kms = stack.clients["kms"]
    issuer = stack.kms_issuer()  # signs (and reads the key) before the fault is injected
    kms.meta.events.register(
        "before-call.kms.GetPublicKey",
        lambda **kwargs: _error_response(code),
        unique_id="kms-down",
    )
    container = stack.container(kms_keys=True)

    assert app(container, stack.event(issuer)) == "401"
    assert stack.usage_items() == []

    kms.meta.events.unregister("before-call.kms.GetPublicKey", unique_id="kms-down")
    stack.clock.advance(61)  # recovery within one key-cache cool-down, whatever its policy
    assert app(container, stack.event(issuer)) == "allow"
    assert stack.decisions() == [("allow", "ok")]


# ---------------------------------------------------------------- revocation


def test_a_device_revoked_after_issue_is_denied_on_its_next_request_and_recorded(
    stack: Stack, app: Any
) -> None:
    container = stack.container()
    token = stack.issuer.token(stack.now, stack.device.jkt)
    assert app(container, stack.event(token=token)) == "allow"

    stack.admin.revoke_device(stack.device.jkt)
    # the edge's liveness view may be up to MAX_AGE old: refused once it is
    stack.clock.advance(MAX_AGE)

    assert app(container, stack.event(token=token)) == "401"
    assert stack.decisions() == [("allow", "ok"), ("deny", "device_revoked")]
    denial = next(i for i in stack.usage_items() if i["decision"]["S"] == "deny")
    assert denial["jkt"]["S"] == stack.device.jkt
    assert denial["client_id"]["S"] == stack.client_id


def test_a_client_disabled_after_issue_is_denied_on_its_next_request_and_recorded(
    stack: Stack, app: Any
) -> None:
    container = stack.container()
    token = stack.issuer.token(stack.now, stack.device.jkt)
    assert app(container, stack.event(token=token)) == "allow"

    stack.admin.disable_client(stack.client_id)
    stack.clock.advance(MAX_AGE)

    assert app(container, stack.event(token=token)) == "401"
    assert stack.decisions() == [("allow", "ok"), ("deny", "client_disabled")]


def test_a_revoked_device_is_denied_even_when_the_denial_record_cannot_be_written(
    stack: Stack, app: Any, transport: str, no_lean_backoff: list[float]
) -> None:
    stack.admin.revoke_device(stack.device.jkt)
    SendFault(lambda: _wire_error("ThrottlingException", 400)).on(stack.ddb)

    assert app(stack.container(), stack.event()) == "401"
    assert stack.usage_items() == []


def test_a_device_enrolled_to_another_client_cannot_use_this_clients_token(
    stack: Stack, app: Any
) -> None:
    other = stack.admin.create_client(name="other", scope=s.DEFAULT_SCOPE).client.client_id
    intruder = DeviceKey.generate("ES256")
    stack.admin.enroll_device(client_id=other, jkt=intruder.jkt)
    # a token naming this client but bound to the other client's device
    token = stack.issuer.token(stack.now, intruder.jkt)
    event = s.rest_event(s.dpop_headers(token, s.proof(intruder, token, iat=stack.now)))

    assert app(stack.container(), event) == "401"
    assert stack.decisions() == [("deny", "device_revoked")]


# ---------------------------------------------------------------- concurrency


class SerialisedDynamoDB:
    """The moto DynamoDB client with its writes serialised.

    moto's conditional writes are not atomic across threads (two threads can both see
    "attribute_not_exists" before either inserts); in AWS, DynamoDB itself makes each
    conditional TransactWriteItems atomic. Serialising the calls here models AWS, so the
    test checks the authorizer's logic, not moto's locking.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.transact_write_items(**kwargs)

    def put_item(self, **kwargs: Any) -> Any:  # the denial records: same reason
        with self._lock:
            return self._client.put_item(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class _Metrics:
    names: list[str]

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.names.append(name)


def test_one_proof_used_32_times_at_once_is_allowed_exactly_once(stack: Stack) -> None:
    container = stack.container(dynamodb=SerialisedDynamoDB(stack.ddb))
    token = stack.issuer.token(stack.now, stack.device.jkt)
    proof = s.proof(stack.device, token, iat=stack.now)
    # 32 requests (each its own API Gateway request id) carrying the same proof
    events = [s.rest_event(s.dpop_headers(token, proof)) for _ in range(32)]
    logger, metrics = Logger(service="tokenbroker"), _Metrics([])
    barrier = threading.Barrier(32, timeout=60)

    def authorize(event: dict[str, Any]) -> str:
        # the handler minus Powertools' decorators (its metric flush is process-wide)
        request, issuer = edge.rest_request(APIGatewayAuthorizerRequestEvent(event))
        barrier.wait()
        outcomes: list[edge.Outcome] = []

        def render(outcome: edge.Outcome) -> dict[str, Any]:
            outcomes.append(outcome)
            return edge.rest_response(APIGatewayAuthorizerRequestEvent(event), outcome)

        try:
            response = edge.authorize(lambda: container, request, issuer, logger, metrics, render)
        except edge.Unauthorized:
            error = outcomes[-1].error
            return f"401 {error.reason if error else ''}"
        return str(response["policyDocument"]["Statement"][0]["Effect"])

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = Counter(pool.map(authorize, events))

    assert outcomes == {"Allow": 1, "401 proof_replayed": 31}
    # 31 denials of one token in one minute: the ledger keeps the first few (the bound)
    assert Counter(stack.decisions()) == {
        ("allow", "ok"): 1,
        ("deny", "proof_replayed"): DENIALS_PER_MINUTE,
    }
    assert Counter(metrics.names) == {"RequestsAllowed": 1, "RequestsDenied": 31}


# ---------------------------------------------------------------- budgets


def test_each_allowed_request_writes_one_record_in_one_aws_call_once_keys_are_cached(
    stack: Stack, app: Any
) -> None:
    issuer = stack.kms_issuer()
    events = [stack.event(issuer) for _ in range(5)]  # signed by KMS before counting
    container = stack.container(kms_keys=True)
    sent = _count_sends(stack.ddb, stack.clients["kms"])

    assert app(container, events[0]) == "allow"  # cold: the key is fetched once
    # cold: the key is fetched once, and the liveness view is read (then fresh for 5 s),
    # with the client's quota rules inside it (none: no lease, no counter)
    assert sent == {"GetPublicKey": 1, "BatchGetItem": 1, "PutItem": 1}

    for n, event in enumerate(events[1:], start=2):
        sent.clear()
        assert app(container, event) == "allow"
        assert sent == {"PutItem": 1}
        assert len(stack.usage_items()) == n


def test_a_revocation_takes_effect_within_the_stated_staleness_and_not_later(
    stack: Stack, app: Any
) -> None:
    container = stack.container()
    token = stack.issuer.token(stack.now, stack.device.jkt)
    assert app(container, stack.event(token=token)) == "allow"
    stack.admin.revoke_device(stack.device.jkt)
    stack.clock.advance(MAX_AGE - 1)
    # still inside the bound: the view may be stale, the write is still the only call
    assert app(container, stack.event(token=token)) in ("allow", "401")
    stack.clock.advance(1)
    assert app(container, stack.event(token=token)) == "401"
    assert app(container, stack.event(token=token)) == "401"


def test_the_liveness_read_failing_is_a_401_and_writes_nothing(stack: Stack, app: Any) -> None:
    stack.ddb.meta.events.register(
        "before-call.dynamodb.BatchGetItem",
        lambda **kwargs: _error_response("ProvisionedThroughputExceededException"),
    )
    assert app(stack.container(), stack.event()) == "401"
    assert stack.usage_items() == []


def test_unprocessed_liveness_keys_fail_closed(stack: Stack, app: Any) -> None:
    def unprocessed(**kwargs: Any) -> Any:
        response = AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 200, {}, None)
        keys = {stack.deployment.refs["DevicesTable"]: {"Keys": [{"jkt": {"S": "x"}}]}}
        return response, {"Responses": {}, "UnprocessedKeys": keys}

    stack.ddb.meta.events.register("before-call.dynamodb.BatchGetItem", unprocessed)
    assert app(stack.container(), stack.event()) == "401"
    assert stack.usage_items() == []


def test_denied_garbage_costs_no_aws_call_once_keys_are_cached(stack: Stack, app: Any) -> None:
    container = stack.container(kms_keys=True)
    issuer = stack.kms_issuer()
    assert app(container, stack.event(issuer)) == "allow"
    sent = _count_sends(stack.ddb, stack.clients["kms"])

    forged = issuer.token(stack.now, stack.device.jkt, sign_with=DeviceKey.generate("ES256"))
    for _ in range(20):
        assert app(container, stack.event(token=forged)) == "401"

    assert sent == {}
    assert len(stack.usage_items()) == 1


# ---------------------------------------------------------------- log hygiene


def test_no_token_proof_or_segment_of_them_is_ever_logged(
    stack: Stack,
    app: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    # Powertools logs JSON to the stdout it found when the logger was first configured;
    # point it at this test's captured stdout, and log everything (allowed requests are
    # logged at DEBUG).
    monkeypatch.setattr(app.module.logger.registered_handler, "stream", sys.stdout)
    service_logger = logging.getLogger(app.module.logger.name)
    request.addfinalizer(functools.partial(service_logger.setLevel, service_logger.level))
    service_logger.setLevel(logging.DEBUG)
    container = stack.container()
    secrets_seen: list[str] = []

    def send(token: str, proof: str, expected: str) -> None:
        secrets_seen.extend([token, proof, *token.split("."), *proof.split(".")])
        event = s.rest_event(s.dpop_headers(token, proof))
        assert app(container, event) == expected

    now, jkt = stack.now, stack.device.jkt
    token = stack.issuer.token(now, jkt)
    proof = s.proof(stack.device, token, iat=now)
    send(token, proof, "allow")
    send(token, proof, "401")  # replay
    other = stack.issuer.token(now, jkt)
    send(other, s.proof(stack.device, other, iat=now, htm="POST"), "401")
    forged = stack.issuer.token(now, jkt, sign_with=DeviceKey.generate("ES256"))
    send(forged, s.proof(stack.device, forged, iat=now), "401")
    expired = stack.issuer.token(now, jkt, iat=now - 400, exp=now - 100)
    send(expired, s.proof(stack.device, expired, iat=now), "401")
    bearer = stack.issuer.token(now, jkt)
    event = s.rest_event(
        [("Authorization", f"Bearer {bearer}"), ("DPoP", s.proof(stack.device, bearer, iat=now))]
    )
    secrets_seen.extend([bearer, *bearer.split(".")])
    assert app(container, event) == "401"

    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert output.count('"request allowed"') == 1
    assert output.count('"request denied"') == 5
    leaked = sorted({secret for secret in secrets_seen if secret and secret in output})
    # the token header segment is the same for every token of one key: it is no
    # secret, but it must not be logged either
    assert leaked == []


# ---------------------------------------------------------------- composition root


# Found while writing this suite: Container.__init__ accepted usage= and key_cache= but
# dropped them, so build(..., usage=fake) silently built the DynamoDB ledger from settings.
def test_the_composition_root_uses_the_usage_ledger_and_key_cache_it_is_given(
    fixed_clock: FixedClock,
) -> None:
    usage = s.FakeUsageLedger()
    key_cache = KeyCache(dict, clock=fixed_clock)
    container = bootstrap.build(
        s.settings(),
        aws=lambda service: pytest.fail(f"no AWS client expected, got {service}"),
        clock=fixed_clock,
        usage=usage,
        key_cache=key_cache,
    )

    assert container.usage is usage
    assert container.key_cache is key_cache


# ------------------------------------------- the authorizers' cut botocore data (issue 13)


@pytest.fixture
def cut_ddb(tmp_path: Any) -> Any:
    """A DynamoDB client as the authorizers build it (BOTOCORE_DATA: the layer's data cut
    to their operations, adapters/aws_models.py), on moto like the stack's."""
    from tokenbroker.adapters.aws import edge_session
    from tokenbroker.adapters.aws_models import generate

    generate(tmp_path)
    session = edge_session.__wrapped__(str(tmp_path))  # new: moto's send hook registered
    assert session is not None
    made = aws_client("dynamodb", session=session)
    assert "Scan" not in made.meta.service_model.operation_names  # the cut data, not the full
    return made


@pytest.mark.parametrize(
    ("code", "status", "sends"),
    [
        pytest.param("ThrottlingException", 400, 2, id="throttling"),
        pytest.param("ServiceUnavailable", 503, 2, id="unavailable"),
        pytest.param("AccessDeniedException", 400, 1, id="access-denied"),
        pytest.param("ResourceNotFoundException", 400, 1, id="missing-table"),
    ],
)
def test_the_cut_data_client_fails_closed_like_the_full_one(
    stack: Stack,
    app: Any,
    no_lean_backoff: list[float],
    cut_ddb: Any,
    code: str,
    status: int,
    sends: int,
) -> None:
    assert app(stack.container(dynamodb=cut_ddb), stack.event()) == "allow"
    assert stack.decisions() == [("allow", "ok")]

    fault = SendFault(lambda: _wire_error(code, status)).on(cut_ddb)
    assert app(stack.container(dynamodb=cut_ddb), stack.event()) == "401"
    assert stack.decisions() == [("allow", "ok")]  # the denied request wrote nothing
    assert fault.sends == sends
    assert len(no_lean_backoff) == sends - 1
