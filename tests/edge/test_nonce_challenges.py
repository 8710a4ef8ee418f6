"""RFC 9449 §9 at the edge (REST authorizer handler): with nonces required, a proof
without a valid nonce is a Deny whose context carries the ``use_dpop_nonce`` challenge
and a fresh nonce (the ACCESS_DENIED gateway response maps them into ``WWW-Authenticate``
and ``DPoP-Nonce``, 401: template.yaml); the retry with it is allowed; expired, forged and
other-secret nonces are refused with a fresh one; the secret unavailable is a 401 Deny."""

from __future__ import annotations

from typing import Any

import pytest

from edge import _support as s
from support.dpop import DeviceKey
from tokenbroker import bootstrap
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.nonces import RESOURCE, TOKEN_ENDPOINT, NoncePolicy, NonceService

SECRET = b"k" * 48


class World:
    def __init__(self, clock: FixedClock, secrets: Any) -> None:
        self.clock = clock
        self.issuer = s.Issuer()
        self.ledger = s.FakeUsageLedger()
        self.device = DeviceKey.generate("ES256")
        self.container = s.build_container(
            s.settings(dpop_nonce_required="true", dpop_nonce_secret_arn="arn:secret"),
            clock=clock,
            key_cache=self.issuer.key_cache(clock),
            usage=self.ledger,
        )
        # the Secrets Manager adapter's place, filled by a fake (tests/nonces covers it)
        self.container._overrides["nonce_secrets"] = secrets
        self.rest = s.load_authorizer()

    def call(self, nonce: str | None) -> tuple[str, dict[str, Any] | None]:
        now = int(self.clock())
        token = self.issuer.token(now, self.device.jkt)
        claims = {"nonce": nonce} if nonce is not None else None
        proof = s.proof(self.device, token, iat=now, claims=claims)
        event = s.rest_event(s.dpop_headers(token, proof))
        return s.call_rest_authorizer(self.rest, event, s.LambdaContext())


@pytest.fixture
def world(fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> World:
    w = World(fixed_clock, lambda: (SECRET,))
    monkeypatch.setattr(bootstrap, "default", lambda: w.container)
    return w


def challenged(outcome: tuple[str, dict[str, Any] | None]) -> str:
    status, response = outcome
    assert status == "403"  # a Deny: the gateway response answers 401 (nonces on)
    assert response is not None
    context = response["context"]
    assert context["challenge"].startswith('DPoP error="use_dpop_nonce"')
    assert s.context_is_flat_strings(context)
    return str(context["dpop_nonce"])


def test_a_proof_without_a_nonce_is_challenged_and_the_retry_is_allowed(world: World) -> None:
    nonce = challenged(world.call(None))
    assert not [r for r in world.ledger.records.values() if r.decision.value == "allow"]
    status, response = world.call(nonce)
    assert status == "allow"
    assert response is not None
    assert response["context"]["client_id"] == s.CLIENT_ID
    # the next nonce rides along for the protected function to answer (web/protected.py)
    nonces = world.container.resource_nonces
    assert nonces is not None
    nonces.check(response["context"]["dpop_nonce"], world.clock())


def test_an_expired_nonce_is_refused_with_a_fresh_one(world: World) -> None:
    old = challenged(world.call(None))
    world.clock.advance(2 * 300)
    fresh = challenged(world.call(old))
    assert fresh != old
    assert world.call(fresh)[0] == "allow"


def test_forged_other_secret_and_token_endpoint_nonces_are_refused(world: World) -> None:
    real = challenged(world.call(None))
    step, mac = real.split(".")
    now = world.clock()
    forged = f"{step}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"
    other = NonceService(lambda: (b"o" * 48,), endpoint=RESOURCE, policy=NoncePolicy()).issue(now)
    token_class = NonceService(
        lambda: (SECRET,), endpoint=TOKEN_ENDPOINT, policy=NoncePolicy()
    ).issue(now)
    for bad in (forged, other, token_class):
        challenged(world.call(bad))


def test_the_secret_unavailable_is_a_401_deny_not_a_challenge(
    fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> tuple[bytes, ...]:
        raise TemporarilyUnavailable("reading the DPoP nonce secret failed (Throttling)")

    w = World(fixed_clock, down)
    monkeypatch.setattr(bootstrap, "default", lambda: w.container)
    assert w.call(None) == ("401", None)
    good = NonceService(lambda: (SECRET,), endpoint=RESOURCE, policy=NoncePolicy())
    assert w.call(good.issue(fixed_clock())) == ("401", None)


def test_insufficient_scope_denials_carry_their_own_challenge(world: World) -> None:
    now = int(world.clock())
    nonce = challenged(world.call(None))
    token = world.issuer.token(now, world.device.jkt, scope="profile")
    path = f"/v1/models/{s.MODEL}/invoke"
    proof = s.proof(
        world.device, token, htm="POST", htu=s.url_for(path), iat=now, claims={"nonce": nonce}
    )
    event = s.rest_event(
        s.dpop_headers(token, proof),
        method="POST",
        resource=s.INVOKE,
        path=path,
        path_parameters={"model": s.MODEL},
    )
    status, response = s.call_rest_authorizer(world.rest, event, s.LambdaContext())
    assert status == "403"
    assert response is not None
    assert response["context"]["challenge"].startswith('DPoP error="insufficient_scope"')
    assert "dpop_nonce" not in response["context"]
