"""Verified access tokens, remembered per execution environment.

A client presents one access token for many requests (it lives up to 15 minutes), each
with a fresh DPoP proof. The token's signature verification (a P-256 verify, about half
of the CPU the edge cannot avoid) gives the same answer every time for the same bytes
and the same key, so it is done once per token: the steady state costs ONE signature
verification per request, the proof's.

Why this is safe (what a cache hit still checks, and why it is enough):

- The key is the exact token string. A dict compares keys by equality after the hash,
  so a token that differs in any bit (header, claims or signature: e.g. the other
  ECDSA spelling ``(r, n-s)`` of a valid signature) is a miss and is verified in full.
  Nothing is keyed on a hash an attacker could collide.
- The entry keeps the key object that verified the signature, and every hit asks the
  key source for the ``kid`` again and requires that very object: a key retired from
  the published set (KeySetView raises SigningKeyRetired or answers None), an unknown
  ``kid`` or a refetched key set is a miss, so the full path (and its denial reason)
  decides. Cached tokens stop the moment their key is no longer trusted.
- The issuer and audience the token was verified against must be the request's.
- What depends on the time (``exp``, ``nbf``, ``iat`` not in the future) is checked on
  every use (:func:`tokenbroker.domain.rfc9068.check_token_times`); an expired entry is
  dropped.
- Revocation, device and client status, scope and quotas are not part of the token's
  verification: the service checks them per request after this (liveness view), as for
  a token seen the first time. The proof, its ``ath`` (bound to these token bytes) and
  the replay guard are checked per request too.
- Only tokens that verified completely are stored (a failing token raises before
  anything is stored), and the size is bounded (oldest entry dropped first), so a flood
  of distinct valid tokens costs memory ``max_entries`` entries at most, and garbage
  costs none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tokenbroker.domain.errors import InvalidToken
from tokenbroker.domain.rfc9068 import AccessTokenClaims, check_token_times, verify_access_token

#: tokens remembered per execution environment (a few hundred bytes each)
MAX_ENTRIES = 512


class VerifiedTokens:
    """:func:`verify_access_token` with the signature check done once per token string.

    ``verify`` takes the same arguments and raises the same errors; see the module
    docstring for what is re-checked on every call."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        #: token -> (claims, kid, the key object that verified its signature)
        self._entries: dict[str, tuple[AccessTokenClaims, str, Any]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def verify(
        self,
        token: object,
        *,
        resolve_key: Callable[[str], Any | None],
        issuer: str,
        audience: str,
        now: float,
        skew: int,
    ) -> AccessTokenClaims:
        entry = self._entries.get(token) if isinstance(token, str) else None
        if entry is not None:
            claims, kid, key = entry
            if claims.iss == issuer and claims.aud == audience and resolve_key(kid) is key:
                try:
                    check_token_times(claims.exp, claims.iat, claims.nbf, now=now, skew=skew)
                except InvalidToken:
                    self._drop(token)  # expired (or not yet valid): decide afresh next time
                    raise
                return claims
            self._drop(token)  # its key is no longer the trusted one: verify in full
        used: list[tuple[str, Any]] = []

        def resolve(kid: str) -> Any | None:
            key = resolve_key(kid)
            used.append((kid, key))
            return key

        claims = verify_access_token(
            token, resolve_key=resolve, issuer=issuer, audience=audience, now=now, skew=skew
        )
        if isinstance(token, str) and len(used) == 1 and used[0][1] is not None:
            self._store(token, (claims, *used[0]))
        return claims

    def _store(self, token: str, entry: tuple[AccessTokenClaims, str, Any]) -> None:
        with self._lock:
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]  # the oldest first
            self._entries[token] = entry

    def _drop(self, token: Any) -> None:
        with self._lock:
            self._entries.pop(token, None)
