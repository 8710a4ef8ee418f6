"""RFC 9449 (DPoP) proof validation: the twelve checks of §4.3, in one call.

Cheap structural and claim checks run before the signature verification, so garbage
costs no public-key operation. Replay (§11.1) is the caller's conditional write, keyed
by :func:`replay_key`, and is done only after every check here has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import rfc3986
from rfc3986.exceptions import ValidationError
from rfc3986.validators import Validator

from tokenbroker.domain.errors import InvalidDpopProof
from tokenbroker.domain.jose import (
    PROOF_ALGORITHMS,
    b64url_encode,
    load_public_jwk,
    parse_compact,
    verify_signature,
)
from tokenbroker.domain.rfc7638 import jwk_thumbprint

MAX_PROOF_LENGTH = 4096
MAX_JTI_LENGTH = 128
_DEFAULT_PORTS = {"http": 80, "https": 443}
_VALIDATOR = (
    Validator()
    .require_presence_of("scheme", "host")
    .check_validity_of("scheme", "host", "port", "path")
)
_PCT_UNRESERVED = re.compile(r"%(?:2[DdEe]|3[0-9]|[46][1-9A-Fa-f]|[57][0-9Aa]|5[Ff]|7[Ee])")


@dataclass(frozen=True)
class ProofPolicy:
    """Local policy for accepting proofs (RFC 9449 §11.1 acceptance window)."""

    max_age: int = 60  # seconds a proof is accepted after its iat
    skew: int = 5  # tolerated clock difference, both directions
    algorithms: tuple[str, ...] = PROOF_ALGORITHMS

    @property
    def replay_window(self) -> int:
        """How long a replay-guard entry must live past the proof's iat."""
        return self.max_age + 2 * self.skew


@dataclass(frozen=True)
class DpopProof:
    jkt: str  # RFC 7638 thumbprint of the proof key
    jti: str
    iat: int
    htm: str
    htu: str


def normalize_htu(url: str) -> str:
    """RFC 9449 §4.3 check 9: RFC 3986 §6.2.2/§6.2.3 normalisation, without query and
    fragment. Raises ValueError for anything that is not an absolute http(s) URI."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        raise ValueError("not a URI")
    # §6.2.2.2 first: percent-encoded unreserved characters are decoded, so that
    # dot-segment removal (§6.2.2.3) sees "/a/%2E%2E/b" as "/a/../b"
    ref = rfc3986.uri_reference(_PCT_UNRESERVED.sub(lambda m: unquote(m.group(0)), url))
    try:
        _VALIDATOR.validate(ref)
    except ValidationError as exc:
        raise ValueError("not an absolute URI") from exc
    ref = ref.normalize()  # case of scheme/host/%XX, dot segments
    scheme = ref.scheme
    if scheme not in _DEFAULT_PORTS or not ref.host or ref.userinfo:
        raise ValueError("not an http(s) URI")
    port = ref.port
    if port in (None, "") or int(port) == _DEFAULT_PORTS[scheme]:
        authority = ref.host
    else:
        authority = f"{ref.host}:{int(port)}"
    path = ref.path or "/"  # §6.2.3: an empty path is "/"
    return f"{scheme}://{authority}{path}"


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url(SHA-256(ASCII(access token)))."""
    return b64url_encode(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def replay_key(jkt: str, jti: str) -> str:
    """Key of the replay guard: the proof key and the proof's jti. Never the proof bytes
    (ECDSA signatures are malleable: (r, n-s) verifies too)."""
    return b64url_encode(hashlib.sha256(f"{jkt}\x00{jti}".encode()).digest())


def _require_int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:  # bool is an int subclass; floats and strings are not allowed
        raise InvalidDpopProof(f"DPoP proof claim {name!r} must be an integer NumericDate")
    return value


def verify_proof(
    proof: object,
    *,
    method: str,
    url: str,
    now: float,
    policy: ProofPolicy,
    access_token: str | None = None,
) -> DpopProof:
    """Validate one DPoP proof (RFC 9449 §4.3). ``url`` is the URL the client called,
    as the server sees it. Raises InvalidDpopProof with a description of the first
    failed check."""
    jws = parse_compact(
        proof, max_length=MAX_PROOF_LENGTH, error=InvalidDpopProof, what="DPoP proof"
    )
    header, claims = jws.header, jws.payload
    # check 4: explicit type
    if header.get("typ") != "dpop+jwt":
        raise InvalidDpopProof("DPoP proof typ must be dpop+jwt")
    # check 5: asymmetric, supported, never none/HS*
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise InvalidDpopProof("DPoP proof alg is not an allowed asymmetric algorithm")
    # check 3 + 7: a public jwk
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDpopProof("DPoP proof header must contain a jwk")
    for forbidden in ("jku", "x5u", "x5c", "kid"):
        if forbidden in header:
            raise InvalidDpopProof(f"DPoP proof header must not contain {forbidden!r}")
    try:
        key = load_public_jwk(jwk, alg)
        jkt = jwk_thumbprint(jwk)
    except ValueError as exc:
        raise InvalidDpopProof(f"DPoP proof jwk is not acceptable: {exc}") from exc
    # check 3: required claims
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidDpopProof("DPoP proof must contain a jti")
    if len(jti) > MAX_JTI_LENGTH:
        raise InvalidDpopProof("DPoP proof jti is too long")
    htm = claims.get("htm")
    if not isinstance(htm, str):
        raise InvalidDpopProof("DPoP proof must contain htm")
    htu = claims.get("htu")
    if not isinstance(htu, str):
        raise InvalidDpopProof("DPoP proof must contain htu")
    iat = _require_int(claims, "iat")
    # check 8: method (HTTP methods are case-sensitive, RFC 9110 §9.1)
    if htm != method:
        raise InvalidDpopProof("DPoP proof htm does not match the request method")
    # check 9: URI without query and fragment, normalised
    try:
        matches = normalize_htu(htu) == normalize_htu(url)
    except ValueError:
        matches = False
    if not matches:
        raise InvalidDpopProof("DPoP proof htu does not match the request URI")
    # check 11: acceptance window (check 10, nonce, applies only when we issue nonces)
    if iat > now + policy.skew:
        raise InvalidDpopProof("DPoP proof iat is in the future")
    if iat < now - policy.max_age - policy.skew:
        raise InvalidDpopProof("DPoP proof is too old")
    # check 12 (first half): ath at protected resources
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode(), access_token_hash(access_token).encode()
        ):
            raise InvalidDpopProof("DPoP proof ath does not match the access token")
    # check 6: the signature, last because it is the expensive one
    if not verify_signature(jws, alg, key):
        raise InvalidDpopProof("DPoP proof signature is invalid")
    return DpopProof(jkt=jkt, jti=jti, iat=iat, htm=htm, htu=htu)
