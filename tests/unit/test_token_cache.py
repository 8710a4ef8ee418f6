"""The verified-token cache (domain/token_cache.py): one signature check per token, and
a hit is refused exactly when the full verification would refuse the token now."""

from __future__ import annotations

from typing import Any

import pytest

from support.dpop import DeviceKey, malleate_ecdsa, raw_jws
from tokenbroker.domain.clock import FixedClock
from tokenbroker.domain.errors import InvalidToken
from tokenbroker.domain.keyset import KeySet, KeySetView, SigningKeyRetired
from tokenbroker.domain.models import PublicJwk
from tokenbroker.domain.token_cache import VerifiedTokens

NOW = 1_800_000_000
ISSUER = "https://broker.example"
AUDIENCE = "https://api.example"
SKEW = 5
A, B = "arn:key/a", "arn:key/b"


def token(issuer: DeviceKey, jti: str = "at-1", **claims: Any) -> str:
    body = {
        "iss": ISSUER,
        "sub": "s",
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "iat": NOW,
        "jti": jti,
        "client_id": "c",
        "scope": "read",
        "cnf": {"jkt": issuer.jkt},
        **claims,
    }
    return raw_jws({"alg": "ES256", "typ": "at+jwt", "kid": issuer.jkt}, body, sign_with=issuer)


class Keys:
    """A trusted key set the test changes: kid -> public key, counting lookups."""

    def __init__(self, *keys: DeviceKey) -> None:
        self.trusted = {k.jkt: k.private_key.public_key() for k in keys}
        self.lookups = 0

    def resolve(self, kid: str) -> Any | None:
        self.lookups += 1
        return self.trusted.get(kid)


def verify(cache: VerifiedTokens, value: str, resolve: Any, now: float = NOW, **kw: Any) -> Any:
    args = {"issuer": ISSUER, "audience": AUDIENCE, **kw}
    return cache.verify(value, resolve_key=resolve, now=now, skew=SKEW, **args)


def test_a_token_used_again_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenbroker.domain import token_cache

    issuer = DeviceKey.generate()
    keys, cache, calls = Keys(issuer), VerifiedTokens(), []
    full = token_cache.verify_access_token

    def counted(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        return full(*args, **kw)

    monkeypatch.setattr(token_cache, "verify_access_token", counted)
    value = token(issuer)
    first = verify(cache, value, keys.resolve)
    for _ in range(3):
        assert verify(cache, value, keys.resolve) == first
    assert len(calls) == 1
    assert keys.lookups == 4  # the key's trust is asked on every use


def test_a_token_with_one_flipped_bit_is_not_served_from_the_cache() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer)
    verify(cache, value, keys.resolve)
    head, payload, sig = value.split(".")
    for i, part in ((1, payload), (2, sig)):
        flipped = chr(ord(part[5]) ^ 1)
        parts = [head, payload, sig]
        parts[i] = part[:5] + flipped + part[6:]
        with pytest.raises(InvalidToken):
            verify(cache, ".".join(parts), keys.resolve)
    assert len(cache) == 1  # nothing that failed was stored


def test_the_other_ecdsa_spelling_of_a_cached_token_is_verified_in_full() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer)
    verify(cache, value, keys.resolve)
    other = malleate_ecdsa(value)
    assert other != value
    # a distinct string: a miss, and the full verification decides (here: valid too)
    assert verify(cache, other, keys.resolve).jti == "at-1"
    assert len(cache) == 2


def test_a_cached_token_stops_when_its_key_leaves_the_trusted_set() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer)
    verify(cache, value, keys.resolve)
    del keys.trusted[issuer.jkt]
    with pytest.raises(InvalidToken, match="kid is unknown"):
        verify(cache, value, keys.resolve)
    assert len(cache) == 0


def test_a_cached_token_stops_when_its_key_is_replaced_under_the_same_kid() -> None:
    issuer, impostor = DeviceKey.generate(), DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer)
    verify(cache, value, keys.resolve)
    keys.trusted[issuer.jkt] = impostor.private_key.public_key()
    with pytest.raises(InvalidToken, match="signature is invalid"):
        verify(cache, value, keys.resolve)


class SlotKeys:
    """KMS slots A and B: their public keys under RFC 7638 kids."""

    def __init__(self) -> None:
        self.device = {A: DeviceKey.generate(), B: DeviceKey.generate()}

    def public(self, key_id: str) -> tuple[PublicJwk, Any]:
        key = self.device[key_id]
        return PublicJwk(kid=key.jkt, jwk=key.public_jwk), key.private_key.public_key()


class Store:
    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset

    def load(self) -> KeySet:
        return self.keyset


def test_a_key_retired_from_the_published_set_stops_its_cached_tokens() -> None:
    slots, clock = SlotKeys(), FixedClock(NOW)
    store = Store(KeySet(active=A))
    view = KeySetView(store.load, slots.public, (A, B), clock=clock, max_age=60, recheck=5)
    cache = VerifiedTokens()
    value = token(slots.device[A])
    assert verify(cache, value, view.resolve).jti == "at-1"
    assert verify(cache, value, view.resolve).jti == "at-1"  # served from the cache
    store.keyset = KeySet(active=B)  # A is no longer published
    clock.advance(61)  # the view re-reads the set; the token itself is still in date
    with pytest.raises(SigningKeyRetired) as refused:
        verify(cache, value, view.resolve, now=clock())
    assert refused.value.reason == "signing_key_retired"


def test_expiry_and_not_before_are_checked_on_every_use() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer, nbf=NOW + 60)
    with pytest.raises(InvalidToken, match="not valid yet"):
        verify(cache, value, keys.resolve)
    assert verify(cache, value, keys.resolve, now=NOW + 60).jti == "at-1"
    with pytest.raises(InvalidToken, match="not valid yet"):
        verify(cache, value, keys.resolve, now=NOW)  # cached, but before nbf again
    assert verify(cache, value, keys.resolve, now=NOW + 300 + SKEW - 1).jti == "at-1"
    with pytest.raises(InvalidToken, match="expired"):
        verify(cache, value, keys.resolve, now=NOW + 300 + SKEW)
    assert len(cache) == 0  # an expired token is dropped


def test_a_cached_token_is_refused_for_another_issuer_or_audience() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens()
    value = token(issuer)
    verify(cache, value, keys.resolve)
    with pytest.raises(InvalidToken, match="issuer is not trusted"):
        verify(cache, value, keys.resolve, issuer="https://other.example")
    with pytest.raises(InvalidToken, match="audience"):
        verify(cache, value, keys.resolve, audience="https://other-api.example")


def test_the_cache_is_bounded_oldest_first() -> None:
    issuer = DeviceKey.generate()
    keys, cache = Keys(issuer), VerifiedTokens(max_entries=3)
    values = [token(issuer, jti=f"at-{i}") for i in range(5)]
    for value in values:
        verify(cache, value, keys.resolve)
    assert len(cache) == 3
    assert set(cache._entries) == set(values[2:])
