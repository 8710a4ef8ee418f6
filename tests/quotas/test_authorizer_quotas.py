"""Quotas at the edge: the real REST authorizer handler on template.yaml's tables in moto
(the stack of tests/edge/test_authorizer_faults.py), and the sample protected functions'
429 with Retry-After."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from botocore.awsrequest import AWSResponse

from edge import _support as s
from edge.test_authorizer_faults import Stack, app, no_backoff, stack
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.quotas import QuotaLimits
from tokenbroker.web import protected

__all__ = ["app", "no_backoff", "stack"]


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


@pytest.mark.parametrize("operation", ["UpdateItem", "Query"])
def test_a_throttled_quota_store_is_a_401_and_no_allow_record(
    stack: Stack, app: Any, operation: str, no_backoff: list[float]
) -> None:
    container = stack.container()
    container.quota_admin.set(stack.client_id, "*", QuotaLimits(requests_per_minute=50))
    stack.ddb.meta.events.register(f"before-call.dynamodb.{operation}", _throttle)
    assert app(container, _event(stack)) == "401"
    assert stack.decisions() == []  # fail closed: no record, never an unmetered Allow


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
