"""The two other event shapes the edge core serves: API Gateway HTTP API payload 2.0
authorizers (simple responses) and CloudFront Lambda@Edge viewer requests.

Each test turns a realistic event into a ResourceRequest with the adapter under test,
runs the real ``edge.authorize`` against the real AuthorizationService (local signing
key, in-memory usage ledger), and checks the adapter's response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.api_gateway_authorizer_event import (
    APIGatewayAuthorizerEventV2,
)

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker.domain.clock import FixedClock
from tokenbroker.web import edge

EDGE_URL = f"https://{s.EDGE_HOST}"
INVOKE_PATH = f"/v1/models/{s.MODEL}/invoke"


@dataclass
class MetricsRecorder:
    """Stands in for Powertools Metrics (whose metric set is shared process-wide)."""

    names: list[str] = field(default_factory=list)

    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        self.names.append(name)


@dataclass
class Edge:
    clock: FixedClock
    issuer: s.Issuer
    device: DeviceKey
    ledger: s.FakeUsageLedger
    container: Any
    metrics: MetricsRecorder
    logger: Logger

    @property
    def now(self) -> int:
        return int(self.clock())

    def token(self, **kw: Any) -> str:
        return self.issuer.token(self.now, self.device.jkt, **kw)

    def proof(self, token: str | None, **kw: Any) -> str:
        kw.setdefault("iat", self.now)
        return s.proof(self.device, token, **kw)

    def _authorize(
        self, request: Any, issuer: str, render: Callable[[edge.Outcome], dict[str, Any]]
    ) -> dict[str, Any]:
        return edge.authorize(
            lambda: self.container, request, issuer, self.logger, self.metrics, render
        )

    def http_api(self, raw: dict[str, Any]) -> dict[str, Any]:
        request, issuer = edge.http_api_request(APIGatewayAuthorizerEventV2(raw))
        return self._authorize(request, issuer, edge.http_api_response)

    def lambda_at_edge(self, raw: dict[str, Any]) -> dict[str, Any]:
        request, cf_request = edge.edge_request(raw, dict(s.ROUTE_SCOPES))
        return self._authorize(request, "", lambda o: edge.edge_response(cf_request, o))


@pytest.fixture
def kit(fixed_clock: FixedClock) -> Edge:
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = s.build_container(
        s.settings(), clock=fixed_clock, key_cache=issuer.key_cache(fixed_clock), usage=ledger
    )
    return Edge(
        clock=fixed_clock,
        issuer=issuer,
        device=DeviceKey.generate("ES256"),
        ledger=ledger,
        container=container,
        metrics=MetricsRecorder(),
        logger=Logger(service="tokenbroker"),
    )


# ---------------------------------------------------------------- HTTP API v2


def test_an_http_api_request_with_a_valid_token_and_proof_is_authorized_with_its_context(
    kit: Edge,
) -> None:
    token = kit.token()
    raw = s.http_api_event({"authorization": f"DPoP {token}", "dpop": kit.proof(token)})

    response = kit.http_api(raw)

    assert response["isAuthorized"] is True
    context = response["context"]
    assert s.context_is_flat_strings(context)
    assert context["principal"] == s.PRINCIPAL
    assert context["client_id"] == s.CLIENT_ID
    assert context["jkt"] == kit.device.jkt
    assert context["scope"] == s.DEFAULT_SCOPE
    assert kit.ledger.decisions() == [("allow", "ok")]
    assert kit.metrics.names == ["RequestsAllowed"]


def test_an_http_api_invoke_with_the_right_scope_fills_the_model_from_the_path(
    kit: Edge,
) -> None:
    token = kit.token(scope=s.INVOKE_SCOPE)
    proof = kit.proof(token, htm="POST", htu=s.url_for(INVOKE_PATH))
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}", "dpop": proof},
        method="POST",
        route=s.INVOKE,
        path=INVOKE_PATH,
        path_parameters={"model": s.MODEL},
    )

    response = kit.http_api(raw)

    assert response["isAuthorized"] is True
    assert response["context"]["scope"] == s.INVOKE_SCOPE


def test_an_http_api_request_with_a_forged_token_is_refused_without_context_or_record(
    kit: Edge,
) -> None:
    token = kit.issuer.token(kit.now, kit.device.jkt, sign_with=DeviceKey.generate("ES256"))
    raw = s.http_api_event({"authorization": f"DPoP {token}", "dpop": kit.proof(token)})

    assert kit.http_api(raw) == {"isAuthorized": False}
    assert kit.ledger.decisions() == []
    assert kit.metrics.names == ["UnauthenticatedRequests"]


def test_an_http_api_request_with_two_comma_joined_dpop_headers_is_refused(kit: Edge) -> None:
    token = kit.token()
    joined = f"{kit.proof(token)},{kit.proof(token)}"  # how HTTP APIs deliver repeats
    raw = s.http_api_event({"authorization": f"DPoP {token}", "dpop": joined})

    assert kit.http_api(raw) == {"isAuthorized": False}
    assert kit.ledger.decisions() == []


def test_an_http_api_request_with_two_comma_joined_authorization_headers_is_refused(
    kit: Edge,
) -> None:
    token = kit.token()
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}, DPoP {token}", "dpop": kit.proof(token)}
    )

    assert kit.http_api(raw) == {"isAuthorized": False}


def test_an_http_api_bearer_downgrade_is_refused(kit: Edge) -> None:
    token = kit.token()
    raw = s.http_api_event({"authorization": f"Bearer {token}", "dpop": kit.proof(token)})

    assert kit.http_api(raw) == {"isAuthorized": False}


def test_an_http_api_event_without_headers_is_refused(kit: Edge) -> None:
    assert kit.http_api(s.http_api_event(None)) == {"isAuthorized": False}


def test_an_http_api_request_with_the_wrong_scope_is_refused_and_recorded(kit: Edge) -> None:
    token = kit.token(scope="model:other:invoke")
    proof = kit.proof(token, htm="POST", htu=s.url_for(INVOKE_PATH))
    raw = s.http_api_event(
        {"authorization": f"DPoP {token}", "dpop": proof},
        method="POST",
        route=s.INVOKE,
        path=INVOKE_PATH,
        path_parameters={"model": s.MODEL},
    )

    assert kit.http_api(raw) == {"isAuthorized": False}
    assert kit.ledger.decisions() == [("deny", "insufficient_scope")]
    assert kit.metrics.names == ["RequestsDenied"]


def test_an_http_api_proof_for_a_url_without_the_stage_is_refused(kit: Edge) -> None:
    token = kit.token()
    proof = kit.proof(token, htu=f"https://{s.HOST}{s.WHOAMI}")
    raw = s.http_api_event({"authorization": f"DPoP {token}", "dpop": proof})

    assert kit.http_api(raw) == {"isAuthorized": False}
    assert kit.ledger.decisions() == [("deny", "invalid_dpop_proof")]


def test_an_http_api_replayed_proof_is_refused_the_second_time(kit: Edge) -> None:
    token = kit.token()
    headers = {"authorization": f"DPoP {token}", "dpop": kit.proof(token)}

    first = kit.http_api(s.http_api_event(headers))
    second = kit.http_api(s.http_api_event(headers))

    assert first["isAuthorized"] is True
    assert second == {"isAuthorized": False}
    assert kit.ledger.decisions() == [("allow", "ok"), ("deny", "proof_replayed")]


# ---------------------------------------------------------------- Lambda@Edge


def _edge_headers(kit: Edge, *, htm: str = "GET", path: str = s.WHOAMI, **token_kw: Any):
    token = kit.token(**token_kw)
    return [
        ("Authorization", f"DPoP {token}"),
        ("DPoP", kit.proof(token, htm=htm, htu=f"{EDGE_URL}{path}")),
    ]


def _header(response: dict[str, Any], name: str) -> str:
    (entry,) = response["headers"][name]
    return str(entry["value"])


def test_lambda_at_edge_passes_an_authorized_request_on_with_the_grant_headers(
    kit: Edge,
) -> None:
    raw = s.edge_event(_edge_headers(kit))

    forwarded = kit.lambda_at_edge(raw)

    assert "status" not in forwarded
    assert forwarded["uri"] == s.WHOAMI
    assert _header(forwarded, "x-tokenbroker-principal") == s.PRINCIPAL
    assert _header(forwarded, "x-tokenbroker-client-id") == s.CLIENT_ID
    assert _header(forwarded, "x-tokenbroker-jkt") == kit.device.jkt
    assert _header(forwarded, "x-tokenbroker-scope") == s.DEFAULT_SCOPE
    for name, entries in forwarded["headers"].items():
        if name.startswith("x-tokenbroker-"):
            assert entries[0]["key"] == name
            assert isinstance(entries[0]["value"], str)
    assert kit.ledger.decisions() == [("allow", "ok")]


def test_lambda_at_edge_strips_grant_headers_the_client_sent_itself(kit: Edge) -> None:
    forged = [
        ("X-TokenBroker-Principal", "admin"),
        ("x-tokenbroker-scope", "model:gpt-secret:invoke"),
        ("x-tokenbroker-anything", "1"),
    ]
    raw = s.edge_event([*_edge_headers(kit), *forged])

    forwarded = kit.lambda_at_edge(raw)

    assert _header(forwarded, "x-tokenbroker-principal") == s.PRINCIPAL
    assert _header(forwarded, "x-tokenbroker-scope") == s.DEFAULT_SCOPE
    assert "x-tokenbroker-anything" not in forwarded["headers"]


def test_lambda_at_edge_denial_strips_forged_grant_headers_too(kit: Edge) -> None:
    raw = s.edge_event([("x-tokenbroker-principal", "admin")])
    cf_request = raw["Records"][0]["cf"]["request"]

    response = kit.lambda_at_edge(raw)

    assert response["status"] == "401"
    assert "uri" not in response  # an answer, not the request passed on
    assert not [h for h in response["headers"] if h.startswith("x-tokenbroker-")]
    assert cf_request["headers"]["x-tokenbroker-principal"]  # the event is not modified


@pytest.mark.parametrize(
    ("make_headers", "error"),
    [
        pytest.param(lambda kit: [], "invalid_token", id="no-credentials"),
        pytest.param(
            lambda kit: [
                ("Authorization", f"Bearer {kit.token()}"),
                ("DPoP", kit.proof(kit.token())),
            ],
            "invalid_token",
            id="bearer-downgrade",
        ),
        pytest.param(
            lambda kit: _edge_headers(kit, iss="https://evil.example/prod"),
            "invalid_token",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda kit: _edge_headers(kit, htm="POST"), "invalid_dpop_proof", id="htm-mismatch"
        ),
        pytest.param(
            lambda kit: [
                ("Authorization", f"DPoP {kit.token()}"),
                ("DPoP", kit.proof(None, htu=f"{s.url_for(s.WHOAMI)}")),
            ],
            "invalid_dpop_proof",
            id="proof-for-the-api-gateway-url",
        ),
    ],
)
def test_lambda_at_edge_answers_an_unauthenticated_request_with_a_dpop_401(
    kit: Edge, make_headers: Callable[[Edge], list[tuple[str, str]]], error: str
) -> None:
    raw = s.edge_event(make_headers(kit))

    response = kit.lambda_at_edge(raw)

    assert response["status"] == "401"
    assert response["statusDescription"] == "Unauthorized"
    challenge = _header(response, "www-authenticate")
    assert challenge.startswith("DPoP ")
    assert f'error="{error}"' in challenge
    assert 'algs="ES256' in challenge
    assert _header(response, "cache-control") == "no-store"
    assert response["headers"]["www-authenticate"][0]["key"] == "WWW-Authenticate"


def test_lambda_at_edge_answers_the_wrong_scope_with_a_403(kit: Edge) -> None:
    raw = s.edge_event(
        _edge_headers(kit, htm="POST", path=INVOKE_PATH, scope="model:other:invoke"),
        method="POST",
        uri=INVOKE_PATH,
    )

    response = kit.lambda_at_edge(raw)

    assert response["status"] == "403"
    assert 'error="insufficient_scope"' in _header(response, "www-authenticate")
    assert kit.ledger.decisions() == [("deny", "insufficient_scope")]


def test_lambda_at_edge_allows_invoke_with_the_scope_for_the_model_in_the_uri(
    kit: Edge,
) -> None:
    raw = s.edge_event(
        _edge_headers(kit, htm="POST", path=INVOKE_PATH, scope=s.INVOKE_SCOPE),
        method="POST",
        uri=INVOKE_PATH,
    )

    forwarded = kit.lambda_at_edge(raw)

    assert "status" not in forwarded
    assert _header(forwarded, "x-tokenbroker-scope") == s.INVOKE_SCOPE


def test_lambda_at_edge_refuses_a_uri_that_matches_no_configured_route(kit: Edge) -> None:
    raw = s.edge_event(_edge_headers(kit, path="/v1/admin"), uri="/v1/admin")

    response = kit.lambda_at_edge(raw)

    assert response["status"] == "403"
    assert kit.ledger.decisions() == [("deny", "route_not_configured")]


def test_lambda_at_edge_refuses_two_dpop_headers(kit: Edge) -> None:
    headers = _edge_headers(kit)
    token = headers[0][1].removeprefix("DPoP ")
    raw = s.edge_event([*headers, ("DPoP", kit.proof(token, htu=f"{EDGE_URL}{s.WHOAMI}"))])

    response = kit.lambda_at_edge(raw)

    assert response["status"] == "401"
    assert 'error="invalid_dpop_proof"' in _header(response, "www-authenticate")
    assert kit.ledger.decisions() == []
