"""RFC 8693 token exchange: verifying a subject token from a trusted external OIDC issuer.

One verify path, and it checks everything, in this order: size, strict JOSE parsing
(:func:`~tokenbroker.domain.jose.parse_compact`: canonical base64url, no duplicate JSON
members, no ``crit``), the header (alg allow-list RS256/ES256 -- never ``none`` or HS*,
no embedded or remote keys), the claims (iss, aud, exp, iat, nbf as integer NumericDates,
``token_use`` where the issuer sets it, the person claim, required claims), and last
the signature against a key the issuer's JWKS publishes under the header's ``kid``.

Why not ``jwt.decode``: it keeps the last of duplicate JSON members and accepts
non-canonical base64url (see :mod:`tokenbroker.domain.jose`); the signature itself is
checked with pyjwt's algorithm objects (RSA PKCS#1 v1.5 and ECDSA with raw r||s), whose
key types the JWKS adapter already fixed per ``kid``.

Errors follow RFC 8693 §2.2.2: an unacceptable subject token is ``invalid_request``
(with a specific audit ``reason``); an unreachable issuer is ``temporarily_unavailable``
(raised by the key source, never turned into a token).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tokenbroker.domain.errors import InvalidRequest
from tokenbroker.domain.jose import parse_compact

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
SUBJECT_TOKEN_TYPES = (ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE)
#: RFC 8693 §2.2.1: what the broker issues
ISSUED_TOKEN_TYPE = ACCESS_TOKEN_TYPE
ALGORITHMS = ("RS256", "ES256")
MAX_SUBJECT_TOKEN = 8192
MAX_PRINCIPAL = 256
MIN_RSA_BITS = 2048
_VERIFIERS: dict[str, Any] = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
}
#: Cognito-style ``token_use`` expected per subject token type (checked when present)
_TOKEN_USE = {ID_TOKEN_TYPE: "id", ACCESS_TOKEN_TYPE: "access"}


class SubjectTokenRejected(InvalidRequest):
    """RFC 8693 §2.2.2 ``invalid_request``: the subject token is invalid or unacceptable."""

    reason = "subject_token_invalid"


@dataclass(frozen=True)
class TrustedIssuer:
    """An external OIDC issuer whose ID tokens (or JWT access tokens) name people."""

    issuer: str  # exactly the tokens' ``iss``
    audiences: tuple[str, ...]  # accepted ``aud`` (ID tokens) / ``client_id`` values
    #: scopes a person from this issuer may be granted (intersected with the app's)
    scopes: frozenset[str]
    subject_claim: str = "sub"
    #: claim -> value the token must carry (a list claim must contain the value)
    required_claims: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: where the OIDC discovery document is ("" = issuer + /.well-known/openid-configuration)
    discovery_url: str = ""
    created_at: int = 0

    @property
    def discovery(self) -> str:
        return self.discovery_url or self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class Person:
    """A verified person: ``principal`` = ``<issuer>|<subject>`` (stable, unambiguous:
    the issuer is a URL and never contains ``|``... and if it did, the issuer part is
    fixed by configuration, not by the token)."""

    issuer: str
    subject: str
    principal: str
    token_id: str  # the subject token's jti, or "" (for the ledger: never the token)


def principal_of(issuer: str, subject: str) -> str:
    return f"{issuer}|{subject}"


def unverified_issuer(token: object) -> str:
    """The ``iss`` a subject token claims, to look up its configuration. Nothing else
    may be read from an unverified token."""
    jws = parse_compact(
        token, max_length=MAX_SUBJECT_TOKEN, error=SubjectTokenRejected, what="subject token"
    )
    iss = jws.payload.get("iss")
    if not isinstance(iss, str) or not iss or len(iss) > 512:
        raise SubjectTokenRejected("subject token has no issuer", reason="subject_token_invalid")
    return iss


def _reject(description: str, reason: str) -> SubjectTokenRejected:
    return SubjectTokenRejected(description, reason=reason)


def _numeric_date(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int or not 0 <= value < 2**40:
        raise _reject(
            f"subject token claim {name!r} must be an integer NumericDate", "subject_token_invalid"
        )
    return value


def _claim_holds(value: object, expected: str) -> bool:
    if isinstance(value, list):
        return expected in value
    return isinstance(value, str) and value == expected


def verify_subject_token(
    token: object,
    *,
    token_type: str | None,
    trusted: TrustedIssuer,
    resolve_key: Callable[[str], Any | None],
    now: float,
    skew: int,
    max_age: int = 86_400,
) -> Person:
    """Verify ``token`` as a subject token of ``trusted``. ``resolve_key(kid)`` returns
    the issuer's public key for ``kid`` (``cryptography`` RSA/EC public key) or None; it
    raises TemporarilyUnavailable when the issuer's JWKS cannot be fetched."""
    if token_type is None:
        raise InvalidRequest("subject_token_type is required", reason="subject_token_type_missing")
    if token_type not in SUBJECT_TOKEN_TYPES:
        raise _reject(
            "subject_token_type must name an ID token, an access token or a JWT (RFC 8693 §3)",
            "subject_token_type_unsupported",
        )
    jws = parse_compact(
        token, max_length=MAX_SUBJECT_TOKEN, error=SubjectTokenRejected, what="subject token"
    )
    header, claims = jws.header, jws.payload
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _reject("subject token alg must be RS256 or ES256", "subject_token_alg")
    for forbidden in ("jwk", "jku", "x5u", "x5c"):
        if forbidden in header:
            raise _reject(
                f"subject token header must not contain {forbidden!r}", "subject_token_invalid"
            )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise _reject("subject token kid is missing", "subject_token_invalid")

    if claims.get("iss") != trusted.issuer:
        raise _reject("subject token issuer is not trusted", "subject_token_issuer")
    _check_audience(claims, token_type, trusted)
    exp = _numeric_date(claims, "exp")
    iat = _numeric_date(claims, "iat")
    nbf = _numeric_date(claims, "nbf") if "nbf" in claims else None
    if exp <= now - skew:
        raise _reject("subject token has expired", "subject_token_expired")
    if iat > now + skew or (nbf is not None and nbf > now + skew):
        raise _reject("subject token is not valid yet", "subject_token_not_yet_valid")
    if now - iat > max_age:
        raise _reject("subject token is too old", "subject_token_expired")
    expected_use = _TOKEN_USE.get(token_type)
    if "token_use" in claims and expected_use and claims["token_use"] != expected_use:
        raise _reject(
            f"subject token is not an {'ID' if expected_use == 'id' else 'access'} token",
            "subject_token_type_mismatch",
        )
    subject = claims.get(trusted.subject_claim)
    if not isinstance(subject, str) or not subject or len(subject) > 128 or "|" in subject:
        raise _reject(
            f"subject token claim {trusted.subject_claim!r} does not name a person",
            "subject_token_invalid",
        )
    for name, expected in trusted.required_claims.items():
        if not _claim_holds(claims.get(name), expected):
            raise _reject(
                f"subject token lacks the required claim {name}={expected}",
                "subject_token_claims",
            )
    token_id = claims.get("jti")

    key = resolve_key(kid)
    if key is None:
        raise _reject(
            "subject token is signed by a key the issuer does not publish", "subject_token_key"
        )
    if not _signature_valid(alg, key, jws.signing_input, jws.signature):
        raise _reject("subject token signature is invalid", "subject_token_signature")
    principal = principal_of(trusted.issuer, subject)
    if len(principal) > MAX_PRINCIPAL:
        raise _reject("subject token names a person too long to record", "subject_token_invalid")
    return Person(
        issuer=trusted.issuer,
        subject=subject,
        principal=principal,
        token_id=token_id if isinstance(token_id, str) and len(token_id) <= 128 else "",
    )


def _check_audience(claims: Mapping[str, Any], token_type: str, trusted: TrustedIssuer) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if token_type == ACCESS_TOKEN_TYPE and not audiences:
        # Cognito access tokens name their app client in client_id, not aud
        client_id = claims.get("client_id")
        audiences = [client_id] if isinstance(client_id, str) else []
    if not audiences or not all(isinstance(a, str) for a in audiences):
        raise _reject("subject token has no audience", "subject_token_audience")
    if not any(a in trusted.audiences for a in audiences):
        raise _reject("subject token audience is not accepted", "subject_token_audience")


def _signature_valid(alg: str, key: Any, signing_input: bytes, signature: bytes) -> bool:
    verifier = _VERIFIERS[alg]
    try:
        # the key must be of the algorithm's type (an RSA key never verifies ES256)
        verifier.prepare_key(key)
        return bool(verifier.verify(signing_input, key, signature))
    except Exception:  # noqa: BLE001 - wrong key type or malformed signature
        return False
