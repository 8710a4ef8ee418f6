"""Is a presented access token one of ours, still alive? (RFC 7009 §2.1 and RFC 7662
§2.2 both start here.) One verify path: :func:`tokenbroker.domain.rfc9068.verify_access_token`
checks header, every claim and the signature; this module only picks which of the
broker's audiences to check it against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenbroker.domain.errors import InvalidToken
from tokenbroker.domain.jose import parse_compact
from tokenbroker.domain.rfc9068 import MAX_TOKEN_LENGTH, AccessTokenClaims, verify_access_token


@dataclass(frozen=True)
class TokenCheck:
    resolve_key: Callable[[str], Any | None]
    issuer: str  # "" = the issuer derived from the request URL
    audiences: tuple[str, ...]
    skew: int

    def verify(self, token: str, *, now: float, request_issuer: str) -> AccessTokenClaims | None:
        """The token's verified claims, or None for anything that is not a live access
        token of ours (malformed, forged, expired, another issuer or audience)."""
        issuer = self.issuer or request_issuer
        try:
            unverified = parse_compact(
                token, max_length=MAX_TOKEN_LENGTH, error=InvalidToken, what="access token"
            ).payload
            aud = unverified.get("aud")
            # which audience to verify against: one of ours the token names (then checked)
            audience = next((a for a in self.audiences if a == aud), "")
            if not audience or not issuer:
                return None
            return verify_access_token(
                token,
                resolve_key=self.resolve_key,
                issuer=issuer,
                audience=audience,
                now=now,
                skew=self.skew,
            )
        except InvalidToken:
            return None
