"""The SDK sends a token only where it belongs (issue 8): the issuer's origin by default,
plus an explicit allow-list; plain HTTP only to loopback; redirects elsewhere carry
neither the token nor a proof, with requests and with httpx."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import requests

from client.fake_broker import API, ELSEWHERE, ISSUER, FakeBroker
from tokenbroker.client import DPoPAuth, DPoPHttpxAuth, TokenDestinationError, TokenSource
from tokenbroker.client.origins import OriginPolicy, origin_of


def _requests(broker: FakeBroker, auth: DPoPAuth) -> requests.Session:
    session = requests.Session()
    session.mount("https://", broker.adapter())
    session.auth = auth
    return session


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://API.test/x?y", ("https", "api.test", 443)),
        ("https://api.test:443/", ("https", "api.test", 443)),
        ("https://api.test:8443/", ("https", "api.test", 8443)),
        ("http://127.0.0.1:8787/v1", ("http", "127.0.0.1", 8787)),
        ("http://[::1]/", ("http", "::1", 80)),
        ("http://localhost/", ("http", "localhost", 80)),
        ("http://api.test/", None),  # plain HTTP to a host that is not loopback
        ("http://127.0.0.1.evil.test/", None),
        ("https://user@api.test/", None),  # userinfo: never a destination for a token
        ("ftp://api.test/", None),
        ("/relative", None),
        ("https://api.test:99999/", None),
    ],
)
def test_origins_are_scheme_host_and_port_and_http_only_for_loopback(
    url: str, origin: tuple[str, str, int] | None
) -> None:
    assert origin_of(url) == origin


def test_an_allow_list_entry_over_plain_http_to_another_host_is_refused() -> None:
    with pytest.raises(TokenDestinationError, match="http only for loopback"):
        OriginPolicy(ISSUER, ["http://api.test"])
    assert OriginPolicy(ISSUER, ["http://127.0.0.1:8787"]).permits("http://127.0.0.1:8787/a")


def test_requests_to_an_origin_not_configured_sends_nothing(
    broker: FakeBroker, source: TokenSource
) -> None:
    with _requests(broker, DPoPAuth(source)) as session:
        with pytest.raises(TokenDestinationError, match=r"https://api\.test"):
            session.get(f"{API}/v1/whoami")
        with pytest.raises(TokenDestinationError):
            session.get(f"{API}:8443/v1/whoami")  # same host, another port
    assert broker.seen == []  # not even a token request
    assert broker.token_fetches == 0


def test_requests_to_the_issuers_origin_carry_the_token_by_default(
    broker: FakeBroker, source: TokenSource
) -> None:
    with _requests(broker, DPoPAuth(source)) as session:
        session.get(f"{ISSUER}/v1/whoami")
    assert broker.seen[-1].headers["authorization"].startswith("DPoP ")
    assert broker.seen[-1].headers["dpop"]


def test_requests_redirected_to_a_foreign_origin_carry_neither_token_nor_proof(
    broker: FakeBroker, source: TokenSource
) -> None:
    with _requests(broker, DPoPAuth(source, origins=[API])) as session:
        response = session.get(f"{API}/redirect-other")
    assert response.json() == {"authorization": False, "dpop": False}
    assert broker.seen[-1].url == f"{ELSEWHERE}/landing"


def test_httpx_to_an_origin_not_configured_sends_nothing(
    broker: FakeBroker, source: TokenSource
) -> None:
    auth = DPoPHttpxAuth(source)
    client = httpx.Client(transport=broker.transport(), auth=auth)
    with client, pytest.raises(TokenDestinationError):
        client.get(f"{API}/v1/whoami")

    async def call() -> None:
        async with httpx.AsyncClient(transport=broker.async_transport(), auth=auth) as client:
            await client.get(f"{ELSEWHERE}/x")

    with pytest.raises(TokenDestinationError):
        asyncio.run(call())
    assert broker.seen == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_httpx_clients_from_the_auth_follow_a_foreign_redirect_without_token_or_proof(
    broker: FakeBroker, source: TokenSource, mode: str
) -> None:
    auth = DPoPHttpxAuth(source, origins=[API])
    if mode == "sync":
        with auth.client(transport=broker.transport(), follow_redirects=True) as client:
            response = client.get(f"{API}/redirect-other")
    else:

        async def call() -> httpx.Response:
            async with auth.async_client(
                transport=broker.async_transport(), follow_redirects=True
            ) as client:
                return await client.get(f"{API}/redirect-other")

        response = asyncio.run(call())
    assert response.json() == {"authorization": False, "dpop": False}
    assert broker.seen[-1].url == f"{ELSEWHERE}/landing"


def test_httpx_clients_from_the_auth_still_re_sign_same_origin_redirects(
    broker: FakeBroker, source: TokenSource
) -> None:
    auth = DPoPHttpxAuth(source, origins=[API])
    with auth.client(transport=broker.transport(), follow_redirects=True) as client:
        response = client.post(f"{API}/redirect-same", json={})
    assert response.status_code == 200
    assert [c.outcome for c in broker.api_calls()] == ["allowed", "allowed"]


def test_httpx_following_a_foreign_redirect_without_the_hooks_is_an_error(
    broker: FakeBroker, source: TokenSource
) -> None:
    # httpx strips Authorization on the cross-origin hop but re-sends the DPoP header:
    # the auth cannot prevent it without its hooks, so it refuses the result loudly
    auth = DPoPHttpxAuth(source, origins=[API])
    client = httpx.Client(transport=broker.transport(), auth=auth, follow_redirects=True)
    with client, pytest.raises(TokenDestinationError, match="redirect to another origin"):
        client.get(f"{API}/redirect-other")
    assert "authorization" not in broker.seen[-1].headers  # httpx's own stripping
