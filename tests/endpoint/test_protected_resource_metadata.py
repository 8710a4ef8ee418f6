"""RFC 9728 protected resource metadata, served by the discovery Lambda at
``/.well-known/oauth-protected-resource`` from the real template's environment: the
resource is the audience the authorizer accepts (the ``aud`` of the tokens this broker
issues by default), the authorization server is this broker's issuer."""

from __future__ import annotations

import pytest

from tokenbroker.services.protected_resource import WELL_KNOWN_PATH

from ._support import AUDIENCE, ISSUER, App, Broker, assert_error, discovery_event, json_body


def test_the_document_names_the_resource_its_server_and_dpop(broker: Broker) -> None:
    response = broker.invoke_discovery(discovery_event(WELL_KNOWN_PATH))
    assert response["statusCode"] == 200
    document = json_body(response)
    assert document["resource"] == AUDIENCE
    assert document["authorization_servers"] == [ISSUER]
    assert document["bearer_methods_supported"] == ["header"]
    assert document["dpop_bound_access_tokens_required"] is True
    algs = document["dpop_signing_alg_values_supported"]
    assert "ES256" in algs
    assert not {"none", "HS256"} & set(algs)
    # the default routes need "" and model:{model}:invoke: no scope as written
    assert "scopes_supported" not in document


def test_the_documents_resource_is_the_aud_of_issued_tokens(broker: Broker, app: App) -> None:
    import jwt

    token = json_body(broker.issue(app))["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    document = json_body(broker.invoke_discovery(discovery_event(WELL_KNOWN_PATH)))
    assert claims["aud"] == document["resource"]


def test_literal_route_scopes_are_listed(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTE_SCOPES", '{"GET /a": "read", "GET /b/{x}": "b:{x}", "GET /c": ""}')
    broker.reset()
    document = json_body(broker.invoke_discovery(discovery_event(WELL_KNOWN_PATH)))
    assert document["scopes_supported"] == ["read"]


def test_without_an_audience_the_document_is_a_503(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AUDIENCE")
    broker.reset()
    assert_error(
        broker.invoke_discovery(discovery_event(WELL_KNOWN_PATH)), 503, "temporarily_unavailable"
    )
