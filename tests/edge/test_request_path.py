"""The request path end to end in the three event shapes, for resource names outside
``[A-Za-z0-9._-]`` (issue 8.2): decide completely, build the response, then write.

- A model whose name a scope token can carry (``:``, ``@``, ``~``, ``%``: RFC 6749 §3.3
  NQCHAR) is allowed with exactly one allowed record, and the REST policy is for the
  event's own ``methodArn``, verbatim (Powertools' parser would split it on ``:``).
- A name no scope token can carry (non-ASCII, a space) is a clean 403 with a denial
  record and no allowed record; never a 5xx.

Events are shaped as API Gateway sends them: REST keeps ``path`` and
``requestContext.path`` percent-encoded as the client sent them and decodes
``pathParameters``; HTTP APIs decode ``rawPath`` and ``pathParameters``; CloudFront's
``uri`` is as sent (the adapter decodes the parameters).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
)

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.models import UsageRecord
from tokenbroker.web import edge

#: (model name, the path segment the client sends)
NAMEABLE = [
    pytest.param("team@eu", "team@eu", id="at-sign"),
    pytest.param("team@eu", "team%40eu", id="at-sign-percent-encoded"),
    pytest.param("llama3:8b", "llama3:8b", id="colon"),
    pytest.param("a~b", "a~b", id="tilde"),
    pytest.param("50%", "50%25", id="percent"),
    pytest.param("x!$&'()*+,;=", "x!$&'()*+,;=", id="sub-delims"),
]
UNNAMEABLE = [
    pytest.param("mod\u00e8le", id="non-ascii"),
    pytest.param("a b", id="space"),
    pytest.param('a"b', id="double-quote"),
    pytest.param("a\\b", id="backslash"),
    pytest.param("\u00a0", id="nbsp"),
]


class _Metrics:
    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        pass


@dataclass
class World:
    clock: FixedClock
    issuer: s.Issuer
    device: DeviceKey
    ledger: s.FakeUsageLedger
    container: bootstrap.Container
    rest: Any

    @property
    def now(self) -> int:
        return int(self.clock())

    def token(self, model: str) -> str:
        return self.issuer.token(self.now, self.device.jkt, scope=f"model:{model}:invoke")

    def allowed(self) -> list[UsageRecord]:
        return [r for r in self.ledger.records.values() if r.decision.value == "allow"]

    def authorize(self, request: Any, render: Any) -> Any:
        return edge.authorize(
            lambda: self.container,
            request,
            "",
            Logger(service="tb-request-path-tests"),
            _Metrics(),
            render,
        )


@pytest.fixture
def world(fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> World:
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = s.build_container(
        s.settings(), clock=fixed_clock, key_cache=issuer.key_cache(fixed_clock), usage=ledger
    )
    monkeypatch.setattr(bootstrap, "default", lambda: container)
    return World(
        fixed_clock, issuer, DeviceKey.generate("ES256"), ledger, container, s.load_authorizer()
    )


def _allow_scope(world: World, model: str) -> None:
    world.ledger.client_scopes = frozenset({f"model:{model}:invoke", s.DEFAULT_SCOPE})


def _rest_event(world: World, token: str, segment: str, model: str) -> dict[str, Any]:
    path = f"/v1/models/{segment}/invoke"
    proof = s.proof(world.device, token, htm="POST", htu=s.url_for(path), iat=world.now)
    return s.rest_event(
        s.dpop_headers(token, proof),
        method="POST",
        resource=s.INVOKE,
        path=path,  # percent-encoded as sent; methodArn and requestContext.path too
        path_parameters={"model": model},  # decoded
    )


# ---------------------------------------------------------------- REST API


@pytest.mark.parametrize(("model", "segment"), NAMEABLE)
def test_rest_allows_a_nameable_model_with_the_policy_for_its_own_method_arn(
    world: World, model: str, segment: str
) -> None:
    _allow_scope(world, model)
    event = _rest_event(world, world.token(model), segment, model)
    assert f"/POST/v1/models/{segment}/invoke" in event["methodArn"]

    outcome, response = s.call_rest_authorizer(world.rest, event, s.LambdaContext())

    assert outcome == "allow"
    assert response is not None
    (statement,) = response["policyDocument"]["Statement"]
    assert statement["Resource"] == [event["methodArn"]]  # verbatim, colons and all
    assert response["context"]["scope"] == f"model:{model}:invoke"
    (record,) = world.allowed()
    assert record.resource == model
    assert response["context"]["usage_id"] == record.record_id


@pytest.mark.parametrize("model", UNNAMEABLE)
def test_rest_refuses_a_model_no_scope_can_name_with_a_403_and_no_allowed_record(
    world: World, model: str
) -> None:
    token = world.issuer.token(world.now, world.device.jkt, scope="model:x:invoke")
    event = _rest_event(world, token, quote(model, safe=""), model)

    outcome, response = s.call_rest_authorizer(world.rest, event, s.LambdaContext())

    assert outcome == "403"
    assert response is not None
    assert response["policyDocument"]["Statement"][0]["Resource"] == [event["methodArn"]]
    assert world.allowed() == []
    assert world.ledger.decisions() == [("deny", "resource_not_nameable")]


def test_a_replay_of_a_nameable_model_request_is_refused_with_one_allowed_record(
    world: World,
) -> None:
    _allow_scope(world, "llama3:8b")
    event = _rest_event(world, world.token("llama3:8b"), "llama3:8b", "llama3:8b")
    assert s.call_rest_authorizer(world.rest, event, s.LambdaContext())[0] == "allow"
    # the replay is another request (API Gateway gives it its own request id)
    replay = copy.deepcopy(event)
    replay["requestContext"]["requestId"] = "replayed-request"
    assert s.call_rest_authorizer(world.rest, replay, s.LambdaContext())[0] == "401"
    assert len(world.allowed()) == 1


@pytest.mark.parametrize("arn", [None, "", "not-an-arn", 42])
def test_rest_without_a_usable_method_arn_is_a_401_and_writes_nothing(
    world: World, arn: Any
) -> None:
    _allow_scope(world, "a~b")
    event = _rest_event(world, world.token("a~b"), "a~b", "a~b")
    event["methodArn"] = arn

    assert s.call_rest_authorizer_raw(world.rest, event) == "401"
    assert world.ledger.records == {}


# ---------------------------------------------------------------- decide, build, then write


def test_the_response_is_built_before_the_one_write(world: World) -> None:
    order: list[str] = []
    record_use = world.ledger.record_use

    def write(record: UsageRecord) -> None:
        order.append("write")
        record_use(record)

    world.ledger.record_use = write  # type: ignore[method-assign]
    event = _rest_event(world, world.token("x"), "x", "x")
    _allow_scope(world, "x")
    request, _ = edge.rest_request(_rest(event))

    def render(outcome: edge.Outcome) -> str:
        order.append("allow" if outcome.grant else "deny")
        return "rendered"

    assert world.authorize(request, render) == "rendered"
    assert order == ["allow", "write"]


def test_a_response_that_cannot_be_built_writes_nothing_and_is_a_denial(world: World) -> None:
    _allow_scope(world, "x")
    request, _ = edge.rest_request(_rest(_rest_event(world, world.token("x"), "x", "x")))
    seen: list[edge.Outcome] = []

    def render(outcome: edge.Outcome) -> str:
        seen.append(outcome)
        if outcome.grant is not None:
            raise ValueError("cannot render this")
        return "denied"

    assert world.authorize(request, render) == "denied"
    assert isinstance(seen[-1].error, TemporarilyUnavailable)
    assert world.ledger.records == {}


def test_a_failed_write_drops_the_built_allow_and_answers_a_denial(world: World) -> None:
    _allow_scope(world, "x")

    def down(record: UsageRecord) -> None:
        raise TemporarilyUnavailable("dynamodb:PutItem failed (ThrottlingException)")

    world.ledger.record_use = down  # type: ignore[method-assign]
    event = _rest_event(world, world.token("x"), "x", "x")

    assert s.call_rest_authorizer(world.rest, event, s.LambdaContext())[0] == "401"


# ---------------------------------------------------------------- HTTP API


#: An HTTP API decodes ``rawPath``, so ``team%40eu`` arrives as ``team@eu``, and RFC 3986
#: §6.2.2.2 does not make ``%40`` equal to ``@`` (it is a reserved character): a proof
#: whose htu percent-encodes a character that may appear literally cannot be matched
#: there (a clean 401, see the test below). Clients (httpx, requests, the SDK) send
#: ``@``, ``:``, ``~`` and sub-delims literally.
HTTP_API_NAMEABLE = [p for p in NAMEABLE if p.id != "at-sign-percent-encoded"]


def test_http_api_cannot_match_a_proof_for_an_encoded_reserved_character_and_says_401(
    world: World,
) -> None:
    _allow_scope(world, "team@eu")
    token = world.token("team@eu")
    htu = s.url_for("/v1/models/team%40eu/invoke")
    proof = s.proof(world.device, token, htm="POST", htu=htu, iat=world.now)
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}", "dpop": proof},
        method="POST",
        route=s.INVOKE,
        path="/v1/models/team@eu/invoke",
        path_parameters={"model": "team@eu"},
    )
    request, _ = edge.http_api_request(APIGatewayAuthorizerEventV2(raw))

    assert world.authorize(request, edge.http_api_response) == {"isAuthorized": False}
    assert world.ledger.decisions() == [("deny", "invalid_dpop_proof")]


@pytest.mark.parametrize(("model", "segment"), HTTP_API_NAMEABLE)
def test_http_api_allows_a_nameable_model_from_its_decoded_raw_path(
    world: World, model: str, segment: str
) -> None:
    _allow_scope(world, model)
    token = world.token(model)
    htu = s.url_for(f"/v1/models/{segment}/invoke")
    proof = s.proof(world.device, token, htm="POST", htu=htu, iat=world.now)
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}", "dpop": proof},
        method="POST",
        route=s.INVOKE,
        path=f"/v1/models/{model}/invoke",  # HTTP APIs decode rawPath
        path_parameters={"model": model},
    )
    request, _ = edge.http_api_request(APIGatewayAuthorizerEventV2(raw))

    response = world.authorize(request, edge.http_api_response)

    assert response["isAuthorized"] is True, world.ledger.decisions()
    assert len(world.allowed()) == 1


@pytest.mark.parametrize("model", UNNAMEABLE)
def test_http_api_refuses_a_model_no_scope_can_name(world: World, model: str) -> None:
    token = world.issuer.token(world.now, world.device.jkt, scope="model:x:invoke")
    htu = s.url_for(f"/v1/models/{quote(model, safe='')}/invoke")
    proof = s.proof(world.device, token, htm="POST", htu=htu, iat=world.now)
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}", "dpop": proof},
        method="POST",
        route=s.INVOKE,
        path=f"/v1/models/{model}/invoke",
        path_parameters={"model": model},
    )
    request, _ = edge.http_api_request(APIGatewayAuthorizerEventV2(raw))

    assert world.authorize(request, edge.http_api_response) == {"isAuthorized": False}
    assert world.ledger.decisions() == [("deny", "resource_not_nameable")]


@pytest.mark.parametrize(
    ("decoded", "encoded"),
    [
        ("/prod/v1/models/a b/invoke", "/prod/v1/models/a%20b/invoke"),
        ("/prod/v1/models/50%/invoke", "/prod/v1/models/50%25/invoke"),
        ("/prod/v1/models/team%40eu/invoke", "/prod/v1/models/team%40eu/invoke"),
        ("/prod/v1/models/mod\u00e8le/invoke", "/prod/v1/models/mod%C3%A8le/invoke"),
        ("/prod/v1/models/a?b#c/invoke", "/prod/v1/models/a%3Fb%23c/invoke"),
        ("/prod/v1/models/llama3:8b/invoke", "/prod/v1/models/llama3:8b/invoke"),
    ],
)
def test_http_api_paths_are_encoded_back_where_they_cannot_be_literal(
    decoded: str, encoded: str
) -> None:
    raw = s.http_api_event({}, path="/x")
    raw["rawPath"] = decoded
    request, _ = edge.http_api_request(APIGatewayAuthorizerEventV2(raw))
    assert request.url == f"https://{s.HOST}{encoded}"


# ---------------------------------------------------------------- Lambda@Edge


@pytest.mark.parametrize(("model", "segment"), NAMEABLE)
def test_lambda_at_edge_allows_a_nameable_model_with_decoded_path_parameters(
    world: World, model: str, segment: str
) -> None:
    _allow_scope(world, model)
    token = world.token(model)
    uri = f"/v1/models/{segment}/invoke"
    proof = s.proof(
        world.device, token, htm="POST", htu=f"https://{s.EDGE_HOST}{uri}", iat=world.now
    )
    raw = s.edge_event(s.dpop_headers(token, proof), method="POST", uri=uri)
    request, cf_request = edge.edge_request(raw, dict(s.ROUTE_SCOPES))
    assert request.path_parameters == {"model": model}

    passed = world.authorize(request, lambda o: edge.edge_response(cf_request, o))

    assert "status" not in passed, world.ledger.decisions()
    assert passed["uri"] == uri  # passed on as the viewer sent it
    assert len(world.allowed()) == 1


@pytest.mark.parametrize("model", UNNAMEABLE)
def test_lambda_at_edge_refuses_a_model_no_scope_can_name_with_a_403(
    world: World, model: str
) -> None:
    token = world.issuer.token(world.now, world.device.jkt, scope="model:x:invoke")
    uri = f"/v1/models/{quote(model, safe='')}/invoke"
    proof = s.proof(
        world.device, token, htm="POST", htu=f"https://{s.EDGE_HOST}{uri}", iat=world.now
    )
    raw = s.edge_event(s.dpop_headers(token, proof), method="POST", uri=uri)
    request, cf_request = edge.edge_request(raw, dict(s.ROUTE_SCOPES))

    response = world.authorize(request, lambda o: edge.edge_response(cf_request, o))

    assert response["status"] == "403"
    assert world.ledger.decisions() == [("deny", "resource_not_nameable")]


def test_lambda_at_edge_refuses_a_path_parameter_that_is_not_utf8(world: World) -> None:
    token = world.issuer.token(world.now, world.device.jkt, scope="model:x:invoke")
    uri = "/v1/models/%FF/invoke"
    proof = s.proof(
        world.device, token, htm="POST", htu=f"https://{s.EDGE_HOST}{uri}", iat=world.now
    )
    raw = s.edge_event(s.dpop_headers(token, proof), method="POST", uri=uri)
    request, cf_request = edge.edge_request(raw, dict(s.ROUTE_SCOPES))
    assert request.route == ""

    response = world.authorize(request, lambda o: edge.edge_response(cf_request, o))

    assert response["status"] == "403"
    assert world.ledger.decisions() == [("deny", "route_not_configured")]


def _rest(event: dict[str, Any]) -> Any:
    from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
        APIGatewayAuthorizerRequestEvent,
    )

    return APIGatewayAuthorizerRequestEvent(event)


@pytest.mark.parametrize(
    ("context_path", "path", "base"),
    [
        ("/prod/v1/models/team%40eu/invoke", "/v1/models/team@eu/invoke", "/prod"),
        ("/prod/v1/models/team%40eu/invoke", "/v1/models/team%40eu/invoke", "/prod"),
        ("/v1/models/50%25/invoke", "/v1/models/50%/invoke", ""),
        ("/api/v2/v1/models/mod%C3%A8le/invoke", "/v1/models/mod\u00e8le/invoke", "/api/v2"),
        ("/prod/v1/whoami", "/v1/whoami", "/prod"),
    ],
)
def test_rest_urls_keep_the_encoded_path_and_the_base_whether_path_is_decoded_or_not(
    context_path: str, path: str, base: str
) -> None:
    from tokenbroker.web.events import raw_request_url

    raw = {"path": path, "requestContext": {"path": context_path, "domainName": s.HOST}}
    url, issuer = raw_request_url(raw)
    assert url == f"https://{s.HOST}{context_path}"
    assert issuer == f"https://{s.HOST}{base}"
