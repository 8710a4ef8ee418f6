# ruff: noqa: F811  (the stack and session fixtures come from test_rotation_walk)
"""The Lambda@Edge authorizer through a whole key rotation, tokens of both keys in flight.

The edge trusts the broker's published JWKS (functions/edge_authorizer,
domain/published_keys.py), fetched over HTTPS; here the fetch is answered by the
discovery function's own ``jwks()`` (what ``jwks_uri`` serves) on the moto deployment of
test_rotation_walk.py, under one fixed clock. Before this, the edge trusted key slot A
alone, so B's tokens were refused from the moment B signed."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tokenbroker.adapters.jwks import JwksSource
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.keyset import KEYSET_MAX_AGE, SigningKeyRetired
from tokenbroker.domain.published_keys import MAX_AGE, PublishedKeys
from tokenbroker.domain.rfc9068 import MAX_LIFETIME, AccessTokenClaims, verify_access_token

from .test_rotation_walk import (
    AUDIENCE,
    ISSUER,
    NOW,
    PROPAGATION,
    Stack,
    _signed_by,
    kid_of,
    session,  # noqa: F401
    stack,  # noqa: F401
)

ROOT = Path(__file__).resolve().parents[2]
JWKS_URL = ISSUER + "/.well-known/jwks.json"


class Jwks:
    """The broker's jwks_uri as the edge reaches it (counts GETs; can be made to fail)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.gets = 0
        self.down = False

    def get(self, url: str, *, timeout: float) -> bytes:
        assert url == JWKS_URL
        self.gets += 1
        if self.down:
            raise TemporarilyUnavailable("issuer keys unreachable (URLError)")
        return json.dumps(self.stack.discovery.discovery.jwks()).encode()  # type: ignore[attr-defined]


def edge_keys(stack: Stack, jwks: Jwks) -> PublishedKeys:
    return PublishedKeys(JwksSource(JWKS_URL, get=jwks.get).fetch, clock=stack.clock)


def check(stack: Stack, keys: PublishedKeys, token: str) -> AccessTokenClaims:
    return verify_access_token(
        token, resolve_key=keys.resolve, issuer=ISSUER, audience=AUDIENCE, now=stack.clock(), skew=5
    )


def test_the_edge_accepts_every_live_token_through_a_rotation_then_refuses_the_old_key(
    stack: Stack,
) -> None:
    jwks = Jwks(stack)
    edge = edge_keys(stack, jwks)
    first = stack.issue(lifetime=MAX_LIFETIME)
    check(stack, edge, first)
    kid_a = kid_of(first)
    stack.admin().key_rotation.rotate(propagation=PROPAGATION)

    live: list[tuple[int, str]] = [(NOW + MAX_LIFETIME, first)]
    kids: set[str] = set()
    end = NOW + PROPAGATION + MAX_LIFETIME + 5 + KEYSET_MAX_AGE + 120
    while stack.clock() < end:
        stack.clock.advance(30)
        now = int(stack.clock())
        token = stack.issue(lifetime=MAX_LIFETIME)
        kids.add(kid_of(token))
        live = [(exp, t) for exp, t in live if exp > now] + [(now + MAX_LIFETIME, token)]
        for _, t in live:
            check(stack, edge, t)  # nothing refused, whichever key signed it
    kid_b = next(iter(kids - {kid_a}))
    assert kids == {kid_a, kid_b}
    # the set is re-read once per MAX_AGE (plus the cold start), not per request
    assert jwks.gets <= (end - NOW) / MAX_AGE + 2

    # A is withdrawn from the JWKS: the edge refuses a fresh token of A, with its reason
    _, late = _signed_by(stack, stack.slots[0])
    with pytest.raises(SigningKeyRetired) as refused:
        check(stack, edge, late)
    assert refused.value.reason == "signing_key_retired"
    check(stack, edge, stack.issue())  # B's still pass


def test_a_next_key_is_trusted_as_soon_as_it_is_published(stack: Stack) -> None:
    jwks = Jwks(stack)
    # a long re-read interval, so that only the unknown-kid look-up can find B
    edge = PublishedKeys(JwksSource(JWKS_URL, get=jwks.get).fetch, clock=stack.clock, max_age=900)
    check(stack, edge, stack.issue())  # the edge has cached {A}
    stack.admin().key_rotation.rotate(propagation=PROPAGATION)
    stack.clock.advance(KEYSET_MAX_AGE + 1)  # the discovery function publishes {A, B}
    _, by_b = _signed_by(stack, stack.slots[1])  # (B is published, not yet signing)
    assert jwks.gets == 1
    assert check(stack, edge, by_b).sub == "tbc_walk"  # an unknown kid looks again
    assert jwks.gets == 2
    # a flood of invented kids costs no fetch within the cool-down (the penalty box)
    for n in range(50):
        assert edge.resolve(f"invented-{n}") is None
    assert jwks.gets == 2


def test_an_unreachable_jwks_fails_closed_and_a_stale_set_expires(
    stack: Stack,
) -> None:
    jwks = Jwks(stack)
    jwks.down = True
    edge = edge_keys(stack, jwks)
    token = stack.issue()
    with pytest.raises(TemporarilyUnavailable):
        check(stack, edge, token)  # cold start, nothing cached: Deny
    jwks.down = False
    stack.clock.advance(3)  # after the failure cool-down
    check(stack, edge, token)
    jwks.down = True
    stack.clock.advance(MAX_AGE + 1)
    check(stack, edge, stack.issue())  # a failed refresh keeps the last set ...
    stack.clock.advance(MAX_LIFETIME)
    with pytest.raises(TemporarilyUnavailable):
        check(stack, edge, stack.issue())  # ... for at most the longest token lifetime


def test_the_edge_function_fetches_the_jwks_beside_its_issuer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fn_edge_rotation", ROOT / "functions" / "edge_authorizer" / "app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    config = {"AUDIENCE": AUDIENCE, "ISSUER": ISSUER + "/", "AWS_REGION": "us-east-1"}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setattr(app, "CONFIG", tmp_path / "config.json")
    asked: list[str] = []

    def unreachable(request: Any, timeout: float) -> Any:
        asked.append(request.full_url)
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    keys = app.container().key_cache
    assert isinstance(keys, PublishedKeys)
    with pytest.raises(TemporarilyUnavailable):
        keys.resolve("any-kid")
    assert asked == [JWKS_URL]
