"""RFC 7523 §2.2 / RFC 7521 §4.2: ``private_key_jwt`` client authentication. The client
signs a short JWT with its own private key; the broker holds only the public JWK an admin
registered (``tokenbroker clients set-jwk``), so the client holds no shared secret.

Checks (every failure is the same ``invalid_client``; the reason is for logs only):
size before parsing, strict JSON (duplicate keys, ``crit`` rejected: domain/jose.py),
an asymmetric ``alg`` (ES256, ES384, EdDSA: never ``none`` or HS*), no key in the header,
``iss`` = ``sub`` = the client id (RFC 7523 §3 B), ``aud`` = the endpoint URL or the
issuer (§3 C), integer ``exp`` in the future and at most ``MAX_LIFETIME`` away (§3 D),
``iat``/``nbf`` not in the future, a ``jti`` (single use is the caller's conditional
write, keyed by client and jti, kept until ``exp`` + skew), and the signature by the
registered key. Parsing the key happens once per client key (jose.py caches it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenbroker.domain.errors import InvalidClient
from tokenbroker.domain.jose import (
    PROOF_ALGORITHMS,
    load_public_jwk,
    parse_compact,
    verify_signature,
)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION = 4096
MAX_LIFETIME = 300  # seconds from now to exp (and from iat to exp)
MAX_JTI = 256
MAX_JWK = 1024
#: algorithms a client key may use (asymmetric only, the DPoP proof set)
ASSERTION_ALGORITHMS: tuple[str, ...] = PROOF_ALGORITHMS
_ALG_FOR = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("OKP", "Ed25519"): "EdDSA"}


@dataclass(frozen=True)
class VerifiedAssertion:
    client_id: str
    jti: str
    exp: int


def _fail(reason: str) -> InvalidClient:
    return InvalidClient(reason=reason)


def unverified_issuer(assertion: str) -> str:
    """The client id the assertion claims (to look the client up); verified later."""
    claims = parse_compact(
        assertion, max_length=MAX_ASSERTION, error=InvalidClient, what="client assertion"
    ).payload
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss or len(iss) > 64:
        raise _fail("assertion_issuer")
    return iss


def registered_jwk(text: str) -> dict[str, str]:
    """Validate a public JWK for registration: public members only, a supported curve,
    a valid point. Raises ValueError with a one-line reason."""
    if len(text) > MAX_JWK:
        raise ValueError("the JWK is too large")
    try:
        jwk = json.loads(text)
    except ValueError as exc:
        raise ValueError("the JWK is not JSON") from exc
    if not isinstance(jwk, dict):
        raise ValueError("the JWK must be a JSON object")
    alg = _ALG_FOR.get((jwk.get("kty"), jwk.get("crv")))  # type: ignore[arg-type]
    if alg is None:
        raise ValueError("the JWK must be an EC P-256/P-384 or Ed25519 public key")
    load_public_jwk(jwk, alg)  # raises ValueError for private members or a bad point
    keep = ("kty", "crv", "x", "y")
    return {k: str(jwk[k]) for k in keep if k in jwk}


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    jwk: Mapping[str, Any] | None,
    audiences: tuple[str, ...],
    now: float,
    skew: int,
) -> VerifiedAssertion:
    jws = parse_compact(
        assertion, max_length=MAX_ASSERTION, error=InvalidClient, what="client assertion"
    )
    header, claims = jws.header, jws.payload
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise _fail("assertion_alg")
    if any(h in header for h in ("jwk", "jku", "x5u", "x5c")):
        raise _fail("assertion_header_key")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise _fail("assertion_subject")
    aud = claims.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in named):
        raise _fail("assertion_audience")
    exp = _time(claims, "exp")
    if exp is None or exp <= now - skew:
        raise _fail("assertion_expired")
    if exp > now + MAX_LIFETIME + skew:
        raise _fail("assertion_lifetime")
    for name in ("iat", "nbf"):
        if name in claims:
            at = _time(claims, name)
            if at is None or at > now + skew or (name == "iat" and exp - at > MAX_LIFETIME):
                raise _fail(f"assertion_{name}")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI:
        raise _fail("assertion_jti")
    if not jwk:
        raise _fail("assertion_no_key")
    try:
        key = load_public_jwk(jwk, str(alg))
    except ValueError as exc:
        raise _fail("assertion_key_alg") from exc
    if not verify_signature(jws, str(alg), key):
        raise _fail("assertion_signature")
    return VerifiedAssertion(client_id=client_id, jti=jti, exp=exp)


def _time(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    return value if type(value) is int and 0 <= value < 2**40 else None
