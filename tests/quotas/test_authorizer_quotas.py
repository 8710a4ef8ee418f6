"""Quotas at the edge: the real REST authorizer handler on template.yaml's tables in moto
(the stack of tests/edge/test_authorizer_faults.py), and the sample protected functions'
429 with Retry-After."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from botocore.awsrequest import AWSResponse

from edge import _support as s
from edge.test_authorizer_faults import (
    SERVICES,
    STACK,
    SendFault,
    Stack,
    _wire_error,
    app,
    no_backoff,
    no_lean_backoff,
)
from quotas.module_aws import clear_table, module_aws
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.adapters.aws import client as aws_client
from tokenbroker.adapters.quotas import rules_key
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.liveness import MAX_AGE
from tokenbroker.domain.quotas import QuotaLimits
from tokenbroker.local import load_template
from tokenbroker.local.provision import Deployment, provision
from tokenbroker.settings import Settings
from tokenbroker.web import protected

__all__ = ["app", "no_backoff", "no_lean_backoff"]


@pytest.fixture(scope="module")
def _deployment() -> Iterator[Deployment]:
    """The edge stack of tests/edge/test_authorizer_faults.py, provisioned once per module
    (provisioning is most of a test's time); ``stack`` resets what a test changes."""
    with module_aws():
        clients = {name: aws_client(name) for name in SERVICES}
        yield provision(
            load_template(), session_or_clients=clients, stack_name=STACK, region=s.REGION
        )


@pytest.fixture
def stack(_deployment: Deployment, fixed_clock: FixedClock) -> Stack:
    """Per test: fresh clients (a test's injected faults stay with it), empty usage and
    quota tables, a new client with a new device, the fixed clock."""
    clients = {name: aws_client(name) for name in SERVICES}
    refs = _deployment.refs
    clear_table(clients["dynamodb"], refs["UsageTable"], ("id",))
    clear_table(clients["dynamodb"], refs["QuotasTable"], ("pk", "sk"))
    config = Settings.from_mapping(_deployment.environment("AuthorizerFunction"))
    container = bootstrap.build(config, aws=lambda service: clients[service], clock=fixed_clock)
    container.quota_admin.migrate()  # the emptied table: nothing to move, marked migrated
    admin = container.admin
    created = admin.create_client(name="edge tests", scope=f"{s.DEFAULT_SCOPE} model:x:invoke")
    device = DeviceKey.generate("ES256")
    admin.enroll_device(client_id=created.client.client_id, jkt=device.jkt, label="laptop")
    return Stack(
        clock=fixed_clock,
        clients=clients,
        deployment=_deployment,
        config=config,
        admin=admin,
        client_id=created.client.client_id,
        device=device,
        issuer=s.Issuer(client_id=created.client.client_id),
    )


def _event(stack: Stack, device: DeviceKey | None = None) -> dict[str, Any]:
    device = device or stack.device
    token = stack.issuer.token(stack.now, device.jkt)
    return s.rest_event(s.dpop_headers(token, s.proof(device, token, iat=stack.now)))


def _handler(app: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The handler's whole answer (``app`` gives only its kind)."""

    def call(container: Any, event: dict[str, Any]) -> dict[str, Any] | None:
        monkeypatch.setattr(bootstrap, "default", lambda: container)
        return s.call_rest_authorizer(app.module, event, s.LambdaContext())[1]

    return call


def test_a_spent_minute_is_a_recorded_denial_and_a_context_the_function_turns_into_429(
    stack: Stack, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=3))
    for _ in range(3):
        assert app(container, _event(stack)) == "allow"
    # a second device of the same client (a rotation): the same principal's window
    other = DeviceKey.generate("ES256")
    stack.admin.enroll_device(client_id=stack.client_id, jkt=other.jkt, label="new laptop")
    response = _handler(app, monkeypatch)(container, _event(stack, other))
    assert response is not None
    assert response["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    context = response["context"]
    assert context == {
        "quota_exceeded": "quota_exceeded:requests_per_minute",
        "retry_after": str(60 - stack.now % 60),
    }
    assert "principal" not in context  # a function trusting only the grant refuses it
    assert stack.decisions() == [
        ("allow", "ok"),
        ("allow", "ok"),
        ("allow", "ok"),
        ("deny", "quota_exceeded:requests_per_minute"),
    ]
    # the sample functions answer 429 + Retry-After before any work
    proxy = APIGatewayProxyEvent(
        {"requestContext": {"authorizer": context}, "pathParameters": {"model": "x"}, "body": "{}"}
    )
    for answer in (protected.whoami(proxy), protected.invoke_model(proxy)):
        assert answer["statusCode"] == 429
        assert answer["headers"]["Retry-After"] == context["retry_after"]
        assert json.loads(answer["body"])["reason"] == "quota_exceeded:requests_per_minute"


def test_an_allowed_request_carries_its_quota_reference(
    stack: Stack, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_day=10))
    response = _handler(app, monkeypatch)(container, _event(stack))
    assert response is not None
    reference = response["context"]["quota"]
    assert reference.startswith(f"{stack.now // 86_400}/use#")
    assert stack.client_id in reference


def _throttle(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
    parsed = {
        "Error": {"Code": "ThrottlingException", "Message": "injected"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return AWSResponse("https://dynamodb.us-east-1.amazonaws.com/", 400, {}, None), parsed


# BatchGetItem: the liveness read, which the quota rules ride in
@pytest.mark.parametrize("operation", ["UpdateItem", "BatchGetItem"])
def test_a_throttled_quota_store_is_a_401_and_no_allow_record(
    stack: Stack,
    app: Any,
    operation: str,
    no_backoff: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if operation == "UpdateItem":
        # QuotaLeaseFold=single (the default, always, folds every lease): a lease of one
        # rides in the usage write, the environment's second lease (of 2, its first spent
        # within 2 s) is the UpdateItem of its own
        monkeypatch.setattr(stack, "config", replace(stack.config, quota_lease_fold="single"))
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=50))
    if operation == "UpdateItem":
        assert app(container, _event(stack)) == "allow"
    stack.ddb.meta.events.register(f"before-call.dynamodb.{operation}", _throttle)
    decided = stack.decisions()
    assert app(container, _event(stack)) == "401"
    assert stack.decisions() == decided  # fail closed: no record, never an unmetered Allow


def test_a_throttled_folded_lease_is_a_401_and_writes_neither_record_nor_lease(
    stack: Stack, app: Any, no_lean_backoff: list[float]
) -> None:
    """The first request's lease (of one) and its usage record are ONE TransactWriteItems;
    throttled on the wire (every attempt), the edge fails closed: Deny, no record, and
    the counter untouched (a later request still finds the whole minute)."""
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=1))
    fault = SendFault(lambda: _wire_error("ThrottlingException", 400))
    stack.ddb.meta.events.register("before-send.dynamodb.TransactWriteItems", fault)
    assert app(container, _event(stack)) == "401"
    assert fault.sends >= 2  # botocore's standard retries, then fail closed
    assert stack.decisions() == []
    fault.active = False
    assert app(container, _event(stack)) == "allow"  # the minute's one unit was never spent
    assert stack.decisions() == [("allow", "ok")]


def test_a_replayed_proof_spends_no_quota_unit(
    stack: Stack, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=3))
    first = _event(stack)
    assert app(container, first) == "allow"
    for n in range(2):  # the same proof again: refused by the usage write's condition
        replay = dict(first, requestContext={**first["requestContext"], "requestId": f"r{n}"})
        assert app(container, replay) == "401"
    # the replays gave their units back: the minute still has 2 of its 3
    assert app(container, _event(stack)) == "allow"
    assert app(container, _event(stack)) == "allow"
    response = _handler(app, monkeypatch)(container, _event(stack))
    assert response is not None
    assert response["context"]["quota_exceeded"] == "quota_exceeded:requests_per_minute"
    assert sorted(stack.decisions()) == sorted(
        [("allow", "ok")] * 3
        + [("deny", "proof_replayed")] * 2
        + [("deny", "quota_exceeded:requests_per_minute")]
    )


def _sends(stack: Stack) -> Counter[str]:
    sent: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        sent[event_name.rsplit(".", 1)[-1]] += 1

    stack.ddb.meta.events.register("before-send.dynamodb", count)
    return sent


def test_the_rules_ride_in_the_liveness_read_and_cost_no_round_trip(stack: Stack, app: Any) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=2))
    sent = _sends(stack)
    for _ in range(3):  # the third an Allow carrying the 429 (the first test says why)
        assert app(container, _event(stack)) == "allow"
    # one liveness read (rules inside), the leases, the usage writes: no rules read
    assert sent["BatchGetItem"] == 1
    assert sent["GetItem"] == sent["Query"] == 0
    # each lease (of one: the limit is 2) rides in its request's usage write, ONE
    # TransactWriteItems per allowed request; the third's was refused by the counter's
    # condition (nothing written), then its denial record is a plain PutItem
    assert sent["TransactWriteItems"] == 3
    assert sent["UpdateItem"] == 0
    assert sent["PutItem"] == 1
    assert stack.decisions()[-1] == ("deny", "quota_exceeded:requests_per_minute")


def test_a_raised_limit_reaches_the_edge_with_the_next_liveness_read(
    stack: Stack, app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = stack.container()
    handler = _handler(app, monkeypatch)

    def spent() -> bool:
        response = handler(container, _event(stack))
        assert response is not None
        return "quota_exceeded" in response["context"]

    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_day=1))
    assert [spent(), spent()] == [False, True]
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_day=3))
    stack.clock.advance(MAX_AGE - 1)  # the liveness view (and the rules) still cached
    assert spent()
    stack.clock.advance(1)  # the next liveness read brings the raised limit
    assert not spent()


def _rules_unprocessed(**kwargs: Any) -> dict[str, Any]:
    """The clients' and devices' items found, the quota rules key left unprocessed (what
    DynamoDB answers when the quota table's partition is throttled)."""
    request = json.loads(kwargs["params"]["body"])["RequestItems"]
    quotas = next(t for t in request if "quotas" in t.lower())
    return {
        "Responses": {t: [] for t in request if t != quotas},
        "UnprocessedKeys": {quotas: request[quotas]},
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


def test_an_unprocessed_rules_key_fails_the_liveness_read_closed(stack: Stack, app: Any) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=50))
    stack.ddb.meta.events.register(
        "before-call.dynamodb.BatchGetItem",
        lambda **kw: (AWSResponse("https://dynamodb/", 200, {}, None), _rules_unprocessed(**kw)),
    )
    with pytest.raises(TemporarilyUnavailable, match="unprocessed") as denied:
        container.liveness.current(stack.client_id, stack.device.jkt)
    assert denied.value.reason == "dependency_failure"
    assert app(container, _event(stack)) == "401"
    assert stack.decisions() == []  # fail closed: never an unmetered Allow


def test_a_rule_item_with_an_invalid_limit_is_a_deny_not_a_guess(stack: Stack, app: Any) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=50))
    table = stack.deployment.refs["QuotasTable"]
    stack.ddb.update_item(
        TableName=table,
        Key=rules_key(stack.client_id),
        UpdateExpression="SET #l = :v",
        ExpressionAttributeNames={"#l": "rpm:*"},
        ExpressionAttributeValues={":v": {"S": "lots"}},
    )
    with pytest.raises(TemporarilyUnavailable, match="invalid limit"):
        container.liveness.current(stack.client_id, stack.device.jkt)
    assert app(container, _event(stack)) == "401"
    assert stack.decisions() == []
