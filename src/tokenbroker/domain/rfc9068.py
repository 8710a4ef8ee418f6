"""RFC 9068 JWT access tokens: building the claims and verifying a presented token.

One verify path, and it checks everything: header (typ, alg, kid), every claim, then
the signature. There is no decode-only helper.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from tokenbroker.domain.errors import InvalidToken
from tokenbroker.domain.jose import (
    TOKEN_ALGORITHM,
    b64url_encode,
    decoded_header,
    encode_segment,
    parse_compact,
    verify_signature,
)
from tokenbroker.domain.rfc7638 import is_thumbprint

MAX_TOKEN_LENGTH = 4096
MAX_LIFETIME = 900  # hard cap, seconds (ARCHITECTURE: 15 min)
TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 §4 step 1


class AccessTokenClaims(NamedTuple):
    # a NamedTuple (immutable, like the frozen dataclass it was): built for every new
    # token at the edge, ~1.5 us cheaper (issue 13; a frozen dataclass's __init__ sets
    # each of its 11 fields with object.__setattr__)
    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    jti: str
    client_id: str
    scope: tuple[str, ...]
    jkt: str  # cnf.jkt (RFC 9449 §6.1)
    #: RFC 8693 §4.1: the client acting for the person ``sub`` ("" = no delegation)
    act: str = ""
    #: RFC 7519 ``nbf`` when the token has one (re-checked on every use of the token)
    nbf: int | None = None

    def to_jwt_claims(self) -> dict[str, Any]:
        claims = {
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "exp": self.exp,
            "iat": self.iat,
            "jti": self.jti,
            "client_id": self.client_id,
            "scope": " ".join(self.scope),
            "cnf": {"jkt": self.jkt},
        }
        if self.act:
            claims["act"] = {"sub": self.act}
        return claims


def signing_input(claims: AccessTokenClaims, kid: str) -> bytes:
    header = {"alg": TOKEN_ALGORITHM, "typ": "at+jwt", "kid": kid}
    return f"{encode_segment(header)}.{encode_segment(claims.to_jwt_claims())}".encode("ascii")


def assemble(signing_input_: bytes, signature: bytes) -> str:
    return f"{signing_input_.decode('ascii')}.{b64url_encode(signature)}"


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    # RFC 7519 NumericDate; we accept integers only (no floats, strings, bools, bignums)
    if type(value) is not int or not 0 <= value < 2**40:
        raise InvalidToken(f"token claim {name!r} must be an integer NumericDate")
    return value


def _str_claim(claims: Mapping[str, Any], name: str, max_len: int = 256) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidToken(f"token claim {name!r} is missing or invalid")
    return value


def verify_access_token(
    token: object,
    *,
    resolve_key: Callable[[str], Any | None],
    issuer: str,
    audience: str,
    now: float,
    skew: int,
) -> AccessTokenClaims:
    """Verify a presented access token. Raises InvalidToken (never anything else for
    bad input). ``resolve_key`` maps a ``kid`` to a public key or None."""
    jws = parse_compact(token, max_length=MAX_TOKEN_LENGTH, error=InvalidToken, what="access token")
    claims = jws.payload
    segment = jws.header_segment
    kid = _cached_kid(segment) if segment else _header_kid(jws.header)

    if claims.get("iss") != issuer:
        raise InvalidToken("access token issuer is not trusted")
    aud = claims.get("aud")
    if not (
        aud == audience
        or (isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud))
    ):
        raise InvalidToken("access token audience does not match", reason="wrong_audience")
    exp = _int_claim(claims, "exp")
    iat = _int_claim(claims, "iat")
    nbf = _int_claim(claims, "nbf") if "nbf" in claims else None
    check_token_times(exp, iat, nbf, now=now, skew=skew)
    if exp - iat > MAX_LIFETIME or exp <= iat:
        raise InvalidToken("access token lifetime exceeds the maximum")
    sub = _str_claim(claims, "sub")
    client_id = _str_claim(claims, "client_id")
    jti = _str_claim(claims, "jti")
    scope = claims.get("scope")
    if not isinstance(scope, str) or len(scope) > 2048:
        raise InvalidToken("access token scope is invalid")
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    if not isinstance(jkt, str) or not is_thumbprint(jkt):
        raise InvalidToken("access token is not bound to a DPoP key (cnf.jkt)")

    key = resolve_key(kid)
    if key is None:
        raise InvalidToken("access token kid is unknown")
    if not verify_signature(jws, TOKEN_ALGORITHM, key):
        raise InvalidToken("access token signature is invalid")
    return AccessTokenClaims(
        iss=issuer,
        sub=sub,
        aud=audience,
        exp=exp,
        iat=iat,
        jti=jti,
        client_id=client_id,
        scope=tuple(scope.split()),
        jkt=jkt,
        nbf=nbf,
    )


def check_token_times(exp: int, iat: int, nbf: int | None, *, now: float, skew: int) -> None:
    """The checks of a token that depend on the time (RFC 7519 §4.1.4, §4.1.5; iat not in
    the future): run on every use, also of a token verified before (domain/token_cache.py)."""
    if exp <= now - skew:
        raise InvalidToken("access token has expired")
    if iat > now + skew or (nbf is not None and nbf > now + skew):
        raise InvalidToken("access token is not valid yet")


@functools.lru_cache(maxsize=64)
def _cached_kid(segment: str) -> str:
    """:func:`_header_kid` of a header segment as sent: every token of one signing key
    carries the same one (a failing header raises and is not cached)."""
    return _header_kid(decoded_header(segment))


def _header_kid(header: Mapping[str, Any]) -> str:
    """The protected header's checks (RFC 9068 §4 steps 1-2): its ``kid``."""
    if header.get("typ") not in TOKEN_TYPES:
        raise InvalidToken("access token typ must be at+jwt")
    if header.get("alg") != TOKEN_ALGORITHM:
        raise InvalidToken("access token alg must be ES256")
    for forbidden in ("jwk", "jku", "x5u", "x5c"):
        if forbidden in header:
            raise InvalidToken(f"access token header must not contain {forbidden!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not is_thumbprint(kid):
        raise InvalidToken("access token kid is missing or malformed")
    return kid
