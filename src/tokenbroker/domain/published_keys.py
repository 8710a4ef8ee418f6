"""The broker's token-signing keys as a resource server far from the broker sees them:
its published JWKS (RFC 7517), fetched over HTTPS. The Lambda@Edge authorizer uses this
(functions/edge_authorizer): it has no environment, may run in any region, and must
trust exactly the keys the broker publishes, which a rotation changes
(domain/keyset.py: a new key is published before it signs, the old one stays published
until every token it signed has expired, then it is withdrawn).

Cache rules, as domain/keycache.py's: the set is fetched on first use and again when it
is older than ``max_age``; a token with an unknown ``kid`` fetches again at most once per
``cooldown`` (a penalty box: a flood of invented kids costs one fetch per cool-down); a
failed fetch with nothing cached fails closed and is retried after ``failure_cooldown``.
Unlike keycache.py, a fresh set REPLACES the old one (a withdrawn key is no longer
trusted: SigningKeyRetired), and a failed refresh keeps the last set for at most
``max_stale`` seconds (the longest a token lives), then fails closed too.

A JWKS entry is trusted only if it is an EC P-256 public key (``alg`` ES256 or absent,
``use`` sig or absent, no private members) whose ``kid`` is its RFC 7638 thumbprint,
which is how the broker names its keys (ARCHITECTURE invariant 1); others are skipped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import BrokerError, TemporarilyUnavailable
from tokenbroker.domain.jose import TOKEN_ALGORITHM, load_public_jwk
from tokenbroker.domain.keyset import SigningKeyRetired
from tokenbroker.domain.rfc7638 import jwk_thumbprint
from tokenbroker.domain.rfc9068 import MAX_LIFETIME

MAX_KEYS = 16
MAX_AGE = 60.0
_PRIVATE = ("d", "p", "q", "dp", "dq", "qi", "k")


def trusted_keys(document: object) -> dict[str, Any]:
    """kid -> public key for the broker's signing keys in a JWKS document. Raises
    TemporarilyUnavailable when it is not a JWKS (a broken answer is not an empty set)."""
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list) or len(keys) > MAX_KEYS:
        raise TemporarilyUnavailable("the broker's JWKS has no usable key list")
    found: dict[str, Any] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping) or any(m in jwk for m in _PRIVATE):
            continue
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            continue
        if jwk.get("alg", TOKEN_ALGORITHM) != TOKEN_ALGORITHM or jwk.get("use", "sig") != "sig":
            continue
        try:
            if jwk.get("kid") != jwk_thumbprint(jwk):
                continue
            found[str(jwk["kid"])] = load_public_jwk(jwk, TOKEN_ALGORITHM)
        except ValueError:
            continue
    return found


class PublishedKeys:
    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        *,
        clock: Clock,
        max_age: float = MAX_AGE,
        cooldown: float = 60.0,
        failure_cooldown: float = 2.0,
        max_stale: float = float(MAX_LIFETIME),
    ) -> None:
        """``fetch``: the published set now (kid -> key; TemporarilyUnavailable when it
        cannot be had)."""
        self._fetch = fetch
        self._clock = clock
        self._max_age = max_age
        self._cooldown = cooldown
        self._failure_cooldown = failure_cooldown
        self._max_stale = max_stale
        self._keys: dict[str, Any] = {}
        self._read_at: float | None = None  # when the cached set was fetched
        self._tried_at = float("-inf")  # the last fetch for an unknown kid
        self._retry_at = float("-inf")
        self._withdrawn: set[str] = set()  # kids published once, no longer
        self._lock = threading.Lock()

    def resolve(self, kid: str) -> Any | None:
        """The public key of a published key with this ``kid``; SigningKeyRetired for a
        key this cache saw published that no longer is; None for any other kid."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self._max_age:
            self._refresh(now)
        key = self._keys.get(kid)
        if key is None and kid not in self._withdrawn and self._may_look_again(now):
            self._refresh(now, forced=True)
            key = self._keys.get(kid)
        if key is not None:
            return key
        if kid in self._withdrawn:
            raise SigningKeyRetired("the token was signed by a key the broker withdrew")
        return None

    def _may_look_again(self, now: float) -> bool:
        with self._lock:
            if now - self._tried_at < self._cooldown:
                return False
            self._tried_at = now
            return True

    def _refresh(self, now: float, *, forced: bool = False) -> None:
        with self._lock:
            fresh_enough = self._read_at is not None and now - self._read_at < self._max_age
            if (fresh_enough and not forced) or now < self._retry_at:
                self._check_stale(now)
                return
            try:
                fresh = self._fetch()
            except BrokerError:
                self._retry_at = now + self._failure_cooldown
                self._check_stale(now)  # keep serving the last set, within max_stale
                return
            self._withdrawn = (self._withdrawn | set(self._keys)) - set(fresh)
            self._keys, self._read_at = fresh, now

    def _check_stale(self, now: float) -> None:
        if self._read_at is None or now - self._read_at > self._max_stale:
            self._keys = {}
            raise TemporarilyUnavailable("the broker's published keys are unavailable")
