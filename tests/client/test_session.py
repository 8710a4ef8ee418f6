"""The SDK against a fake broker: discovery, token requests, proofs (verified with
joserfc), renewal on a fixed clock, nonces, retries, redirects and typed errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests

from client.conftest import make_source
from client.fake_broker import (
    API,
    CLIENT_ID,
    ELSEWHERE,
    ISSUER,
    LIFETIME,
    SECRET,
    TOKEN_URL,
    FakeBroker,
    expected_htu,
    json_reply,
)
from tokenbroker.client import (
    AccessToken,
    BrokerClientError,
    BrokerUnavailable,
    ClockSkewError,
    DeviceKey,
    DPoPAuth,
    DPoPHttpxAuth,
    InvalidClientError,
    InvalidGrantError,
    MetadataError,
    TokenRequestError,
    TokenSource,
)
from tokenbroker.client.proofs import ResourceAttempts, challenges, htu, origin
from tokenbroker.domain.clock import FixedClock

INVOKE = f"{API}/v1/models/demo/invoke"


def ath(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


# ---- proofs and their parts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.test/v1/x?q=1#frag", "https://api.test/v1/x"),
        ("HTTPS://API.test:8443/a/b?x", "https://api.test:8443/a/b"),
        ("https://user:pw@api.test/p", "https://api.test/p"),
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787/"),
    ],
)
def test_htu_drops_query_fragment_and_userinfo(url: str, expected: str) -> None:
    assert htu(url) == expected


def test_origins_ignore_default_ports_and_paths() -> None:
    assert origin("https://api.test:443/a?b") == origin("https://API.test/c") == "https://api.test"
    assert origin("http://[::1]:8080/x") == "http://[::1]:8080"


def test_www_authenticate_challenges_are_parsed_per_scheme() -> None:
    parsed = challenges(
        'Basic realm="x", DPoP error="use_dpop_nonce", error_description="a \\"b\\"", '
        "algs=ES256, Bearer"
    )
    assert parsed == {
        "basic": {"realm": "x"},
        "dpop": {"error": "use_dpop_nonce", "error_description": 'a "b"', "algs": "ES256"},
        "bearer": {},
    }


def test_a_resource_gets_one_nonce_retry_and_one_token_retry_then_nothing() -> None:
    attempts = ResourceAttempts()
    nonce = {"www-authenticate": 'DPoP error="use_dpop_nonce"'}
    invalid = {"www-authenticate": 'DPoP error="invalid_token"'}
    assert attempts.after(401, nonce, nonce_saved=True) == "nonce"
    assert attempts.after(401, nonce, nonce_saved=True) is None
    assert attempts.after(401, invalid, nonce_saved=False) == "token"
    assert attempts.after(401, invalid, nonce_saved=False) is None
    assert ResourceAttempts().after(401, nonce, nonce_saved=False) is None  # no nonce sent
    assert ResourceAttempts().after(403, invalid, nonce_saved=False) is None
    assert ResourceAttempts().after(401, {"www-authenticate": "Basic"}, nonce_saved=False) is None


# ---- discovery ----------------------------------------------------------------------


def test_the_token_endpoint_is_discovered_from_rfc8414_metadata(source: TokenSource) -> None:
    metadata = source.metadata()
    assert metadata.issuer == ISSUER
    assert metadata.token_endpoint == TOKEN_URL
    assert "ES256" in metadata.dpop_signing_alg_values_supported


@pytest.mark.parametrize("field", ["issuer", "token_endpoint", "dpop_signing_alg_values_supported"])
def test_metadata_missing_a_required_field_is_a_metadata_error(
    broker: FakeBroker, source: TokenSource, field: str
) -> None:
    del broker.metadata[field]
    with pytest.raises(MetadataError, match=field):
        source.token()
    assert broker.token_fetches == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", "https://evil.test", "another issuer"),
        ("token_endpoint", "http://broker.test/oauth2/token", "https"),
        ("dpop_signing_alg_values_supported", ["RS256"], "ES256"),
        ("grant_types_supported", ["authorization_code"], "client_credentials"),
        ("token_endpoint_auth_methods_supported", ["private_key_jwt"], "client_secret_basic"),
    ],
)
def test_metadata_the_client_cannot_use_is_a_metadata_error(
    broker: FakeBroker, source: TokenSource, field: str, value: object, message: str
) -> None:
    broker.metadata[field] = value
    with pytest.raises(MetadataError, match=message):
        source.metadata()


def test_no_metadata_at_the_issuer_is_a_metadata_error_naming_the_url(
    broker: FakeBroker, source: TokenSource
) -> None:
    broker.canned["metadata"] = json_reply(403, {"message": "Missing Authentication Token"})
    with pytest.raises(MetadataError, match=r"oauth-authorization-server.*check the issuer URL"):
        source.metadata()


@pytest.mark.parametrize("issuer", ["http://broker.test", "ftp://x", "broker.test"])
def test_an_issuer_must_be_https_unless_it_is_loopback(key: DeviceKey, issuer: str) -> None:
    with pytest.raises(MetadataError, match="https"):
        TokenSource(issuer, client_id=CLIENT_ID, client_secret=SECRET, key=key)
    TokenSource("http://127.0.0.1:8787", client_id=CLIENT_ID, client_secret=SECRET, key=key)


# ---- the token request ----------------------------------------------------------------


def test_the_token_request_is_client_credentials_with_basic_auth_and_a_joserfc_verified_proof(
    broker: FakeBroker, source: TokenSource, key: DeviceKey, fixed_clock: FixedClock
) -> None:
    token = source.token()

    (request,) = [s for s in broker.seen if s.url == TOKEN_URL]
    assert request.outcome == "issued"
    form = dict(p.split("=") for p in request.body.decode().split("&"))
    assert form == {"grant_type": "client_credentials", "scope": "model%3Ademo%3Ainvoke"}
    assert request.headers["authorization"].startswith("Basic ")
    assert request.proof is not None
    assert request.proof.header["typ"] == "dpop+jwt"
    assert request.proof.header["jwk"] == key.public_jwk
    assert request.proof.jkt == key.jkt  # joserfc's thumbprint equals the SDK's
    claims = request.proof.claims
    assert set(claims) == {"jti", "htm", "htu", "iat"}
    assert (claims["htm"], claims["htu"], claims["iat"]) == ("POST", TOKEN_URL, fixed_clock.now)
    assert len(claims["jti"]) >= 22  # 16 random bytes
    assert token.token_type == "DPoP"
    assert token.expires_at == fixed_clock.now + LIFETIME
    assert token.response["access_token"] == token.access_token


def test_a_token_is_reused_until_it_nears_expiry_and_then_renewed(
    broker: FakeBroker, source: TokenSource, fixed_clock: FixedClock
) -> None:
    first = source.token()
    fixed_clock.advance(LIFETIME - 30 - 1)  # 31 s left: still good
    assert source.token() is first
    fixed_clock.advance(1)  # 30 s left: renewed before any request could use it
    second = source.token()
    assert second.access_token != first.access_token
    assert broker.token_fetches == 2


@pytest.mark.parametrize(
    ("lifetime", "renew_after"), [(300, 270), (900, 810), (3600, 3240), (40, 20), (10, 5)]
)
def test_renewal_leads_expiry_by_30_s_or_a_tenth_of_the_lifetime_but_never_more_than_half(
    lifetime: int, renew_after: float
) -> None:
    token = AccessToken("t", "DPoP", lifetime, None, obtained_at=1000.0, response={})
    assert token.renew_at == 1000.0 + renew_after


def test_use_dpop_nonce_at_the_token_endpoint_is_retried_once_with_the_nonce(
    broker: FakeBroker, source: TokenSource
) -> None:
    broker.token_nonce = "n-123"
    source.token()
    attempts = [s for s in broker.seen if s.url == TOKEN_URL]
    assert [a.outcome for a in attempts] == ["use_dpop_nonce", "issued"]
    assert attempts[1].proof is not None
    assert attempts[1].proof.claims["nonce"] == "n-123"
    assert source.nonces.get(TOKEN_URL) == "n-123"


def test_a_token_endpoint_that_keeps_asking_for_new_nonces_is_not_retried_again(
    broker: FakeBroker, source: TokenSource
) -> None:
    broker.token_nonce, broker.rotate_token_nonce = "n-1", True
    with pytest.raises(TokenRequestError) as caught:
        source.token()
    assert caught.value.error == "use_dpop_nonce"
    assert len([s for s in broker.seen if s.url == TOKEN_URL]) == 2


def test_a_bearer_token_response_is_refused(broker: FakeBroker, source: TokenSource) -> None:
    broker.token_type = "Bearer"
    with pytest.raises(TokenRequestError, match="Bearer token, not a DPoP-bound one"):
        source.token()


# ---- errors ---------------------------------------------------------------------------


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def test_an_unreachable_broker_is_broker_unavailable(key: DeviceKey) -> None:
    source = TokenSource(
        ISSUER,
        client_id=CLIENT_ID,
        client_secret=SECRET,
        key=key,
        http_client=httpx.Client(transport=httpx.MockTransport(_unreachable)),
    )
    with pytest.raises(BrokerUnavailable, match=r"cannot reach the broker at https://broker\.test"):
        source.token()


def test_a_5xx_from_the_token_endpoint_is_broker_unavailable_with_its_code(
    broker: FakeBroker, source: TokenSource
) -> None:
    broker.canned["token"] = json_reply(503, {"error": "temporarily_unavailable"})
    with pytest.raises(BrokerUnavailable, match="answered 503") as caught:
        source.token()
    assert caught.value.error == "temporarily_unavailable"


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [("metadata", 200), ("metadata", 502), ("token", 200), ("token", 400), ("token", 502)],
)
def test_a_body_that_is_not_json_is_broker_unavailable(
    broker: FakeBroker, source: TokenSource, endpoint: str, status: int
) -> None:
    broker.canned[endpoint] = (status, {"Content-Type": "text/html"}, b"<html>oops</html>")
    with pytest.raises(BrokerUnavailable):
        source.token()


def test_a_wrong_secret_is_invalid_client_error(
    broker: FakeBroker, key: DeviceKey, fixed_clock: FixedClock
) -> None:
    source = make_source(broker, key, fixed_clock, secret="not-the-secret")
    with pytest.raises(InvalidClientError, match="check the client id") as caught:
        source.token()
    assert caught.value.error == "invalid_client"


@pytest.mark.parametrize("state", ["revoked", "not enrolled"])
def test_a_revoked_or_unknown_device_is_invalid_grant_error_naming_its_jkt(
    broker: FakeBroker, source: TokenSource, key: DeviceKey, state: str
) -> None:
    if state == "revoked":
        broker.revoked.add(key.jkt)
    else:
        broker.enrolled.clear()
    with pytest.raises(InvalidGrantError, match=key.jkt) as caught:
        source.token()
    assert caught.value.error == "invalid_grant"
    assert state.split()[-1] in str(caught.value)


@pytest.mark.parametrize(("offset", "relation"), [(600, "ahead of"), (-600, "behind")])
def test_a_proof_rejected_for_its_iat_is_clock_skew_error(
    broker: FakeBroker, key: DeviceKey, fixed_clock: FixedClock, offset: int, relation: str
) -> None:
    skewed = FixedClock(fixed_clock.now + offset)
    source = make_source(broker, key, skewed)
    with pytest.raises(ClockSkewError, match="check this machine's clock") as caught:
        source.token()
    assert f"600 s {relation} the broker's" in str(caught.value)
    assert caught.value.error == "invalid_dpop_proof"


def _errors_from_every_fault(
    broker: FakeBroker, key: DeviceKey, fixed_clock: FixedClock
) -> list[BaseException]:
    faults: list[Callable[[FakeBroker], Any]] = [
        lambda b: b.metadata.pop("token_endpoint"),
        lambda b: b.canned.__setitem__("token", json_reply(500, {"error": SECRET})),
        lambda b: b.canned.__setitem__(
            "token", json_reply(400, {"error": "invalid_request", "error_description": SECRET})
        ),
        lambda b: b.revoked.add(key.jkt),
        lambda b: setattr(b, "token_type", SECRET),
    ]
    errors: list[BaseException] = []
    for fault in faults:
        fresh = FakeBroker(fixed_clock, enrolled={key.jkt})
        fault(fresh)
        with pytest.raises(BrokerClientError) as caught:
            make_source(fresh, key, fixed_clock).token()
        errors.append(caught.value)
    for source in (
        make_source(broker, key, fixed_clock, secret=SECRET + "x"),
        make_source(broker, key, FixedClock(fixed_clock.now - 3600)),
        TokenSource(
            ISSUER,
            client_id=CLIENT_ID,
            client_secret=SECRET,
            key=key,
            http_client=httpx.Client(transport=httpx.MockTransport(_unreachable)),
        ),
    ):
        with pytest.raises(BrokerClientError) as caught:
            source.token()
        errors.append(caught.value)
    return errors


def test_no_error_message_or_repr_contains_the_secret_or_the_basic_credentials(
    broker: FakeBroker, key: DeviceKey, fixed_clock: FixedClock, source: TokenSource
) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    errors = _errors_from_every_fault(broker, key, fixed_clock)
    assert len({type(e) for e in errors}) >= 6
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:  # the message, the repr, and anything chained
            for text in (str(chain), repr(chain), repr(chain.args)):
                assert SECRET not in text
                assert basic not in text
            chain = chain.__cause__ or chain.__context__
    token = source.token()
    for text in (repr(source), str(source), repr(token), repr(DPoPAuth(source, origins=[API]))):
        assert SECRET not in text
        assert token.access_token not in text


# ---- requests -------------------------------------------------------------------------


def test_every_requests_call_carries_the_token_and_a_fresh_verified_proof_with_ath(
    broker: FakeBroker, api: requests.Session
) -> None:
    urls = [INVOKE, f"{INVOKE}?stream=1#part", f"{API}/v1/whoami"]
    for url in urls:
        response = api.post(url, json={"prompt": "hi"})
        assert response.status_code == 200, response.text
    calls = broker.api_calls()
    assert [c.outcome for c in calls] == ["allowed"] * 3
    token = calls[0].headers["authorization"].removeprefix("DPoP ")
    for call, url in zip(calls, urls, strict=True):
        assert call.proof is not None
        assert call.proof.claims["htu"] == expected_htu(url)  # no query, no fragment
        assert "?" not in call.proof.claims["htu"]
        assert "#" not in call.proof.claims["htu"]
        assert call.proof.claims["ath"] == ath(token)
        assert call.proof.claims["htm"] == "POST"
    jtis = [c.proof.claims["jti"] for c in calls if c.proof]
    assert len(set(jtis)) == len(jtis) == 3
    assert broker.token_fetches == 1


def test_a_resource_nonce_is_retried_once_and_then_sent_up_front_to_that_origin(
    broker: FakeBroker, api: requests.Session
) -> None:
    broker.api_nonce = "api-nonce-1"
    first = api.post(INVOKE, json={})
    assert first.status_code == 200
    assert [r.status_code for r in first.history] == [401]
    second = api.post(INVOKE, json={})
    assert second.status_code == 200
    assert not second.history
    outcomes = [c.outcome for c in broker.api_calls()]
    assert outcomes == ["denied: nonce", "allowed", "allowed"]
    assert all(
        c.proof and c.proof.claims.get("nonce") == "api-nonce-1" for c in broker.api_calls()[1:]
    )
    assert broker.token_fetches == 1  # a nonce retry keeps the token


def test_a_401_invalid_token_gets_a_new_token_once_and_one_retry(
    broker: FakeBroker, api: requests.Session, source: TokenSource
) -> None:
    stale = source.token().access_token
    broker.refused_tokens.add(stale)
    response = api.post(INVOKE, json={})
    assert response.status_code == 200
    calls = broker.api_calls()
    assert [c.outcome for c in calls] == ["denied: token", "allowed"]
    assert calls[1].headers["authorization"] != f"DPoP {stale}"
    assert broker.token_fetches == 2


def test_a_resource_that_keeps_refusing_gets_one_retry_and_never_a_loop(
    broker: FakeBroker, api: requests.Session
) -> None:
    broker.refuse_all_tokens = True
    response = api.post(INVOKE, json={})
    assert response.status_code == 401
    assert len(broker.api_calls()) == 2
    assert broker.token_fetches == 2


def test_a_device_revoked_while_calling_surfaces_as_invalid_grant_error(
    broker: FakeBroker, api: requests.Session, source: TokenSource, key: DeviceKey
) -> None:
    assert api.post(INVOKE, json={}).status_code == 200
    broker.revoked.add(key.jkt)
    broker.refuse_all_tokens = True  # the edge refuses the revoked device's token
    with pytest.raises(InvalidGrantError, match="revoked"):
        api.post(INVOKE, json={})


def test_a_requests_redirect_carries_a_fresh_proof_for_its_own_method_and_url(
    broker: FakeBroker, api: requests.Session
) -> None:
    response = api.post(f"{API}/redirect-same", json={"a": 1})
    assert response.status_code == 200, response.text
    assert [r.status_code for r in response.history] == [303]
    first, second = broker.api_calls()
    assert (first.outcome, second.outcome) == ("allowed", "allowed")
    assert first.proof
    assert second.proof
    assert (second.method, second.proof.claims["htm"]) == ("GET", "GET")  # 303: POST -> GET
    assert second.proof.claims["htu"] == f"{API}/final"
    assert second.proof.claims["jti"] != first.proof.claims["jti"]
    assert second.headers["authorization"] == first.headers["authorization"]


def test_a_requests_redirect_to_another_host_carries_neither_token_nor_proof(
    broker: FakeBroker, api: requests.Session
) -> None:
    response = api.get(f"{API}/redirect-other")
    assert response.json() == {"authorization": False, "dpop": False}
    assert response.history[0].status_code == 302


def test_without_following_redirects_the_redirect_response_is_returned_as_is(
    broker: FakeBroker, api: requests.Session
) -> None:
    response = api.get(f"{API}/redirect-same", allow_redirects=False)
    assert response.status_code == 303
    assert len(broker.api_calls()) == 1


# ---- httpx ----------------------------------------------------------------------------


def _httpx_client(broker: FakeBroker, auth: DPoPHttpxAuth, **kw: Any) -> httpx.Client:
    return httpx.Client(transport=broker.transport(), auth=auth, **kw)


def _async_client(broker: FakeBroker, auth: DPoPHttpxAuth, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=broker.async_transport(), auth=auth, **kw)


def test_httpx_sync_and_async_calls_carry_fresh_verified_proofs(
    broker: FakeBroker, source: TokenSource
) -> None:
    auth = DPoPHttpxAuth(source, origins=[API])
    with _httpx_client(broker, auth) as client:
        assert client.post(f"{INVOKE}?q=1", json={}).status_code == 200
        assert client.get(f"{API}/v1/whoami").status_code == 200

    async def calls() -> list[int]:
        async with _async_client(broker, auth) as client:
            responses = await asyncio.gather(*(client.post(INVOKE, json={}) for _ in range(3)))
        return [r.status_code for r in responses]

    assert asyncio.run(calls()) == [200] * 3
    calls_seen = broker.api_calls()
    assert [c.outcome for c in calls_seen] == ["allowed"] * 5
    jtis = {c.proof.claims["jti"] for c in calls_seen if c.proof}
    assert len(jtis) == 5
    assert calls_seen[0].proof
    assert calls_seen[0].proof.claims["htu"] == INVOKE
    assert broker.token_fetches == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_httpx_retries_a_nonce_once_and_an_invalid_token_once(
    broker: FakeBroker, source: TokenSource, mode: str
) -> None:
    broker.api_nonce = "nonce-x"
    broker.refused_tokens.add(source.token().access_token)
    auth = DPoPHttpxAuth(source, origins=[API])
    if mode == "sync":
        with _httpx_client(broker, auth) as client:
            response = client.post(INVOKE, json={"x": 1})
    else:

        async def call() -> httpx.Response:
            async with _async_client(broker, auth) as client:
                return await client.post(INVOKE, json={"x": 1})

        response = asyncio.run(call())
    assert response.status_code == 200
    # the stale token is refused first; the new token then needs the nonce
    assert [c.outcome for c in broker.api_calls()] == ["denied: token", "denied: nonce", "allowed"]
    assert broker.token_fetches == 2


def test_httpx_never_loops_on_a_resource_that_keeps_refusing(
    broker: FakeBroker, source: TokenSource
) -> None:
    broker.refuse_all_tokens = True
    with _httpx_client(broker, DPoPHttpxAuth(source, origins=[API])) as client:
        assert client.get(INVOKE).status_code == 401
    assert len(broker.api_calls()) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_httpx_redirects_followed_with_the_event_hooks_get_a_fresh_proof_per_hop(
    broker: FakeBroker, source: TokenSource, mode: str
) -> None:
    auth = DPoPHttpxAuth(source, origins=[API])
    if mode == "sync":
        with _httpx_client(
            broker, auth, follow_redirects=True, event_hooks=auth.event_hooks
        ) as client:
            response = client.post(f"{API}/redirect-same", json={})
    else:

        async def call() -> httpx.Response:
            async with _async_client(
                broker, auth, follow_redirects=True, event_hooks=auth.async_event_hooks
            ) as client:
                return await client.post(f"{API}/redirect-same", json={})

        response = asyncio.run(call())
    assert response.status_code == 200, response.text
    first, second = broker.api_calls()
    assert (first.outcome, second.outcome) == ("allowed", "allowed")
    assert second.proof
    assert second.proof.claims["htu"] == f"{API}/final"
    assert second.proof.claims["htm"] == "GET"


def test_httpx_redirects_sent_on_with_next_request_get_a_fresh_proof_without_hooks(
    broker: FakeBroker, source: TokenSource
) -> None:
    with _httpx_client(broker, DPoPHttpxAuth(source, origins=[API])) as client:
        first = client.post(f"{API}/redirect-same", json={})
        assert first.status_code == 303
        assert first.next_request is not None
        second = client.send(first.next_request)
    assert second.status_code == 200
    assert [c.outcome for c in broker.api_calls()] == ["allowed", "allowed"]


def test_httpx_redirect_to_another_origin_drops_the_proof_with_the_token(
    broker: FakeBroker, source: TokenSource
) -> None:
    auth = DPoPHttpxAuth(source, origins=[API])
    with _httpx_client(broker, auth, follow_redirects=True, event_hooks=auth.event_hooks) as c:
        response = c.get(f"{API}/redirect-other")
    assert response.json() == {"authorization": False, "dpop": False}
    assert broker.seen[-1].url == f"{ELSEWHERE}/landing"


def test_httpx_redirect_without_hooks_is_not_retried_with_a_new_token(
    broker: FakeBroker, source: TokenSource
) -> None:
    with _httpx_client(
        broker, DPoPHttpxAuth(source, origins=[API]), follow_redirects=True
    ) as client:
        response = client.post(f"{API}/redirect-same", json={})
    assert response.status_code == 401  # httpx re-sent the first proof to /final
    assert [c.outcome for c in broker.api_calls()] == [
        "allowed",
        "denied: DPoP proof replayed",
    ]
    assert broker.token_fetches == 1


def test_from_env_reads_the_issuer_client_and_secret(key: DeviceKey) -> None:
    env = {
        "TOKENBROKER_ISSUER": ISSUER,
        "TOKENBROKER_CLIENT_ID": CLIENT_ID,
        "TOKENBROKER_CLIENT_SECRET": SECRET,
    }
    source = TokenSource.from_env(key, environ=env)
    assert (source.issuer, source.client_id, source.key) == (ISSUER, CLIENT_ID, key)
    with pytest.raises(BrokerClientError, match="set TOKENBROKER_CLIENT_SECRET"):
        TokenSource.from_env(key, environ={**env, "TOKENBROKER_CLIENT_SECRET": ""})


def test_token_responses_keep_the_broker_json_for_the_cli(source: TokenSource) -> None:
    body = source.token().response
    assert json.loads(json.dumps(body))["token_type"] == "DPoP"
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
