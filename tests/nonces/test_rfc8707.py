"""RFC 8707 resource indicators (domain/rfc8707.py): absolute URIs without fragments,
served by the deployment, allowed to the client."""

from __future__ import annotations

import pytest

from tokenbroker.domain.errors import InvalidTarget
from tokenbroker.domain.rfc8707 import audience_for, check_resources

A = "https://api-a.example/v1"
B = "https://api-b.example/v1"
SERVED = ("urn:tokenbroker:api", A, B)


def refused(resource: str | None, allowed: frozenset[str] = frozenset()) -> str:
    with pytest.raises(InvalidTarget) as caught:
        audience_for(resource, served=SERVED, allowed=allowed)
    assert caught.value.error == "invalid_target"
    return caught.value.reason


def test_no_resource_is_the_deployments_default_audience() -> None:
    assert audience_for(None, served=SERVED, allowed=frozenset()) == SERVED[0]


def test_a_served_resource_is_the_audience() -> None:
    assert audience_for(B, served=SERVED, allowed=frozenset()) == B


def test_a_client_registered_for_a_resource_gets_it_and_nothing_else() -> None:
    assert audience_for(A, served=SERVED, allowed=frozenset({A})) == A
    assert refused(B, frozenset({A})) == "resource_not_allowed"
    assert refused(None, frozenset({A})) == "resource_not_allowed"


def test_a_resource_the_deployment_does_not_serve_is_refused() -> None:
    assert refused("https://elsewhere.example/") == "resource_not_served"
    assert refused("https://elsewhere.example/", frozenset({"https://elsewhere.example/"})) == (
        "resource_not_served"
    )


@pytest.mark.parametrize(
    "resource", ["api-a.example/v1", "/v1", "", "https://a.example/#frag", "x" * 600, "a b:c"]
)
def test_invalid_resource_indicators_are_refused(resource: str) -> None:
    assert refused(resource) == "invalid_resource"


def test_admin_input_is_checked_the_same_way() -> None:
    assert check_resources([A, A, B]) == (A, B)
    with pytest.raises(InvalidTarget):
        check_resources(["https://a.example/#x"])
