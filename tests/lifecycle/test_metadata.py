"""RFC 8414 metadata lists every endpoint, grant and auth method that exists and nothing
that does not: the expectation is derived from the code's registry
(services/registry.py, which the token endpoint dispatches from) AND from template.yaml's
routes (every route under /oauth2 is listed; nothing listed is not routed)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from endpoint._support import ISSUER, METADATA_PATH, Broker, discovery_event, json_body
from tokenbroker import bootstrap
from tokenbroker.local.template import Template
from tokenbroker.services import registry


@pytest.fixture
def document(broker: Broker) -> dict[str, object]:
    response = broker.invoke_discovery(discovery_event(METADATA_PATH))
    assert response["statusCode"] == 200, response
    return json_body(response)


def test_every_oauth2_route_is_in_the_metadata_and_nothing_else(
    document: dict[str, object], template: Template
) -> None:
    routed = {r.path for r in template.routes() if r.path.startswith("/oauth2/")}
    listed = {
        urlsplit(str(document[e.metadata_name])).path.removeprefix(urlsplit(ISSUER).path)
        for e in registry.ENDPOINTS
        if e.metadata_name in document
    }
    assert routed == listed
    assert {e.metadata_name for e in registry.ENDPOINTS} <= set(document)
    urls = {k: v for k, v in document.items() if k.endswith("_endpoint")}
    assert set(urls) == {e.metadata_name for e in registry.ENDPOINTS}


def test_every_route_listed_is_served_by_a_post_route(template: Template) -> None:
    methods = {r.path: r.method for r in template.routes() if r.path.startswith("/oauth2/")}
    assert set(methods.values()) == {"POST"}


def test_the_grants_listed_are_the_grants_the_token_endpoint_dispatches(
    document: dict[str, object], broker: Broker
) -> None:
    assert document["grant_types_supported"] == [g.grant_type for g in registry.GRANTS]
    container = bootstrap.default()
    for grant in registry.GRANTS:  # each registration names a real service method
        assert callable(getattr(getattr(container, grant.service), grant.method))
    assert registry.grant_handler("nonsense") is registry.GRANTS[0]  # it answers 400


def test_the_auth_methods_listed_are_the_ones_the_parsers_accept(
    document: dict[str, object],
) -> None:
    assert document["token_endpoint_auth_methods_supported"] == list(registry.CLIENT_AUTH_METHODS)
    # RFC 7523 at the token endpoint too (every grant: services/client_auth.py)
    assert "private_key_jwt" in registry.CLIENT_AUTH_METHODS
    for endpoint in ("token_endpoint", "revocation_endpoint", "introspection_endpoint"):
        assert document[f"{endpoint}_auth_methods_supported"] == [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ]
        assert document[f"{endpoint}_auth_signing_alg_values_supported"] == [
            "ES256",
            "ES384",
            "EdDSA",
        ]
    assert "none" not in registry.CLIENT_AUTH_METHODS  # every lifecycle call authenticates


def test_the_dpop_algorithms_are_asymmetric_only(document: dict[str, object]) -> None:
    algs = document["dpop_signing_alg_values_supported"]
    assert algs == list(registry.DPOP_ALGORITHMS)
    assert not {a.lower() for a in algs} & {"none", "hs256", "hs384", "hs512"}  # type: ignore[union-attr]
