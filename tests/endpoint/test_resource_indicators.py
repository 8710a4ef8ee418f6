"""RFC 8707 at the token endpoint (real handler, moto): the token's ``aud`` is the
requested resource when the deployment serves it and the client may use it; otherwise
``invalid_target`` with no token."""

from __future__ import annotations

import jwt
import pytest

from tokenbroker import bootstrap

from ._support import AUDIENCE, App, Broker, assert_error, json_body

A = "https://api-a.example/v1"
B = "https://api-b.example/v1"


@pytest.fixture
def two_apis(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Broker:
    monkeypatch.setenv("AUDIENCES", f"{AUDIENCE},{A},{B}")
    broker.reset()
    return broker


def aud(response: dict[str, object]) -> object:
    token = json_body(response)["access_token"]
    return jwt.decode(token, options={"verify_signature": False})["aud"]


def test_the_token_is_for_the_requested_resource(two_apis: Broker, app: App) -> None:
    assert aud(two_apis.issue(app, resource=A)) == A
    assert aud(two_apis.issue(app)) == AUDIENCE


def test_a_client_registered_for_a_resource_cannot_get_another(two_apis: Broker, app: App) -> None:
    bootstrap.default().admin.update_client_resources(app.client_id, [A])
    assert aud(two_apis.issue(app, resource=A)) == A
    assert_error(two_apis.issue(app, resource=B), 400, "invalid_target")
    assert_error(two_apis.issue(app), 400, "invalid_target")


@pytest.mark.parametrize("resource", ["https://api-a.example/v1#x", "not a uri", "relative/path"])
def test_invalid_resource_indicators_are_invalid_target(
    two_apis: Broker, app: App, resource: str
) -> None:
    assert_error(two_apis.issue(app, resource=resource), 400, "invalid_target")
    assert not two_apis.token_records()


def test_a_resource_the_deployment_does_not_serve_is_invalid_target(
    two_apis: Broker, app: App
) -> None:
    assert_error(two_apis.issue(app, resource="https://other.example/"), 400, "invalid_target")


def test_registered_resources_survive_the_directory_round_trip(two_apis: Broker, app: App) -> None:
    admin = bootstrap.default().admin
    admin.update_client_resources(app.client_id, [A, B])
    assert admin.get_client(app.client_id).resources == {A, B}
    created = admin.create_client(name="r", scope="profile", resources=[B])
    assert admin.get_client(created.client.client_id).resources == {B}
