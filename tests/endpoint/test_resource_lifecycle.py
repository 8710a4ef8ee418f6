"""RFC 8707 across the token lifecycle (real token function, moto): a token refreshed
from a resource-bound grant keeps that resource as its ``aud`` (never the deployment's
default), a refresh cannot switch resources, and a request naming several resources is
``invalid_target`` (README: one token, one audience)."""

# ruff: noqa: F811  (the idp fixture is imported from test_token_exchange)
from __future__ import annotations

from typing import Any

import jwt
import pytest

from ._support import AUDIENCE, App, Broker, assert_error, json_body, token_event
from .test_refresh_tokens import refresh
from .test_token_exchange import FakeIdp, enrolled, exchange, idp  # noqa: F401

A = "https://api-a.example/v1"
B = "https://api-b.example/v1"


@pytest.fixture
def apis(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("AUDIENCES", f"{AUDIENCE},{A},{B}")
    broker.reset()
    return broker


@pytest.fixture
def people(apis: Broker, idp: FakeIdp) -> FakeIdp:
    """(after ``apis``: the idp fixture builds the container from the environment)"""
    return idp


def aud(response: dict[str, Any]) -> object:
    assert response["statusCode"] == 200, response
    token = json_body(response)["access_token"]
    return jwt.decode(token, options={"verify_signature": False})["aud"]


def test_a_refreshed_token_keeps_the_resource_of_its_grant(
    apis: Broker, people: FakeIdp, app: App
) -> None:
    key = enrolled(apis, people, app)
    first = exchange(apis, app, people.id_token(groups=["ml"]), key, resource=A)
    assert aud(first) == A
    apis.clock.advance(5)
    second = refresh(apis, app, json_body(first)["refresh_token"], key)
    assert aud(second) == A  # not AUDIENCE, the default
    apis.clock.advance(5)
    third = refresh(apis, app, json_body(second)["refresh_token"], key, resource=A)
    assert aud(third) == A


def test_a_refresh_cannot_switch_to_another_resource(
    apis: Broker, people: FakeIdp, app: App
) -> None:
    key = enrolled(apis, people, app)
    first = exchange(apis, app, people.id_token(groups=["ml"]), key, resource=A)
    value = json_body(first)["refresh_token"]
    apis.clock.advance(5)
    body = assert_error(refresh(apis, app, value, key, resource=B), 400, "invalid_target")
    assert "resource of its grant" in body["error_description"]
    # refused before the rotation: the refresh token still works, for A
    assert aud(refresh(apis, app, value, key)) == A


def test_several_resources_in_one_request_are_invalid_target(apis: Broker, app: App) -> None:
    form = [
        ("grant_type", "client_credentials"),
        ("client_id", app.client_id),
        ("client_secret", app.secret),
        ("resource", A),
        ("resource", B),
    ]
    response = apis.invoke_token(token_event(form, dpop=apis.proof(app.key)))
    body = assert_error(response, 400, "invalid_target")
    assert body["error_description"] == (
        "one resource per token request: request a token for each resource"
    )
    assert not apis.token_records()
    # the same resource twice is still two resource parameters
    twice = [*form[:3], ("resource", A), ("resource", A)]
    response = apis.invoke_token(token_event(twice, dpop=apis.proof(app.key)))
    assert_error(response, 400, "invalid_target")
    # other repeated parameters stay invalid_request (RFC 6749 §3.2)
    scope_twice = [*form[:3], ("scope", "profile"), ("scope", "profile")]
    response = apis.invoke_token(token_event(scope_twice, dpop=apis.proof(app.key)))
    assert_error(response, 400, "invalid_request")
