"""The edge accepts only tokens for its own resource (RFC 8707: a token for model API A
is refused at B, reason ``wrong_audience``), and its challenges name the RFC 9728
metadata URL (``resource_metadata``, §5.1)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools import Logger

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import InsufficientScope, InvalidToken
from tokenbroker.services.authorization import ResourceRequest
from tokenbroker.web import edge

METADATA = f"{s.url_for('')}/.well-known/oauth-protected-resource"


class _Metrics:
    def add_metric(self, *, name: str, unit: Any, value: float) -> None:
        pass


@pytest.fixture
def world(fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> Any:
    issuer = s.Issuer()
    ledger = s.FakeUsageLedger()
    container = s.build_container(
        s.settings(), clock=fixed_clock, key_cache=issuer.key_cache(fixed_clock), usage=ledger
    )
    monkeypatch.setattr(bootstrap, "default", lambda: container)
    return issuer, ledger, container, DeviceKey.generate("ES256")


def _whoami(token: str, device: DeviceKey, now: int) -> dict[str, Any]:
    return s.rest_event(s.dpop_headers(token, s.proof(device, token, iat=now)))


def test_a_token_for_another_resource_is_refused_as_wrong_audience(
    world: Any, fixed_clock: FixedClock
) -> None:
    issuer, _, container, device = world
    now = int(fixed_clock())
    token = issuer.token(now, device.jkt, aud="https://api-b.example/v1")
    request, _ = edge.rest_request(_whoami(token, device, now))
    with pytest.raises(InvalidToken) as caught:
        container.authorization.authorize(request, request_issuer=s.ISSUER)
    assert caught.value.reason == "wrong_audience"
    outcome, _ = s.call_rest_authorizer(
        s.load_authorizer(), _whoami(token, device, now), s.LambdaContext()
    )
    assert outcome == "401"


def test_the_same_token_for_this_resource_is_allowed(world: Any, fixed_clock: FixedClock) -> None:
    issuer, _, _, device = world
    now = int(fixed_clock())
    token = issuer.token(now, device.jkt)
    outcome, _ = s.call_rest_authorizer(
        s.load_authorizer(), _whoami(token, device, now), s.LambdaContext()
    )
    assert outcome == "allow"


def test_challenges_name_the_metadata_beside_the_api_called(world: Any) -> None:
    _, _, container, _ = world
    request = ResourceRequest(authorization=(), dpop=(), method="GET", url="", route="")
    outcome = edge.authorize(
        lambda: container, request, s.ISSUER, Logger(service="t"), _Metrics(), lambda o: o
    )
    assert outcome.resource_metadata == METADATA
    challenge = edge.www_authenticate(InsufficientScope(), outcome.resource_metadata)
    assert challenge.endswith(f'resource_metadata="{METADATA}"')
    context = edge.challenge_context(InsufficientScope(), outcome.resource_metadata)
    assert context["challenge"] == challenge


def test_a_configured_metadata_url_wins(fixed_clock: FixedClock) -> None:
    issuer = s.Issuer()
    configured = "https://meta.example/.well-known/oauth-protected-resource"
    container = s.build_container(
        s.settings(resource_metadata_url=configured),
        clock=fixed_clock,
        key_cache=issuer.key_cache(fixed_clock),
        usage=s.FakeUsageLedger(),
    )
    request = ResourceRequest(authorization=(), dpop=(), method="GET", url="", route="")
    outcome = edge.authorize(
        lambda: container, request, s.ISSUER, Logger(service="t"), _Metrics(), lambda o: o
    )
    assert outcome.resource_metadata == configured


def test_a_url_that_would_break_the_header_is_left_out() -> None:
    assert "resource_metadata" not in edge.www_authenticate(InvalidToken(), 'https://x/"')
