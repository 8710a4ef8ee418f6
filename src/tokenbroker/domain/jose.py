"""RFC 7515 compact JWS parsing with the strictness pyjwt leaves to its callers.

Why not ``jwt.decode``: it (a) accepts padded and non-canonical base64url, (b) keeps the
last of duplicate JSON members, (c) does not reject ``crit`` or ``b64``, and (d) costs
about 1.5-2x a bare signature verification, which a validator doing two verifications per
request cannot afford (see benchmarks/). So we parse once, strictly, here, and verify
signatures with pyjwt's algorithm objects (which wrap ``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import Algorithm, get_default_algorithms

from tokenbroker.domain.errors import OAuthError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ALGORITHMS: dict[str, Algorithm] = get_default_algorithms()

#: Asymmetric algorithms the broker accepts for DPoP proofs (RFC 9449 §4.3 check 5).
PROOF_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
#: The only algorithm access tokens are signed with (KMS ECC_NIST_P256).
TOKEN_ALGORITHM = "ES256"

_COORDINATE_BYTES = {"ES256": 32, "ES384": 48, "EdDSA": 32}
_CURVE_FOR_ALG: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
}


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Strict RFC 7515 §2 base64url: url alphabet, no padding, canonical trailing bits."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if b64url_encode(raw) != segment:  # non-zero pad bits: a second spelling of the bytes
        raise ValueError("non-canonical base64url")
    return raw


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate member {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def strict_json_object(raw: bytes) -> dict[str, Any]:
    """RFC 7159 object, UTF-8, no duplicate members (RFC 7515 §5.2 step 4), no NaN,
    no lone surrogates (which would later fail to encode)."""
    value = json.loads(
        raw.decode("utf-8"),
        object_pairs_hook=_reject_duplicates,
        parse_constant=_reject_constant,
    )
    if _SURROGATE_ESCAPE.search(raw):  # rare: only then pay for the full check
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@dataclass(frozen=True)
class CompactJws:
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def parse_compact(
    value: object, *, max_length: int, error: type[OAuthError], what: str
) -> CompactJws:
    """Split and decode a compact JWS without trusting anything in it yet.

    Raises ``error`` (e.g. InvalidToken, InvalidDpopProof) with a short description.
    """
    if not isinstance(value, str) or not value:
        raise error(f"{what} is missing")
    if len(value) > max_length:
        raise error(f"{what} is too large")
    parts = value.split(".")
    if len(parts) != 3:
        raise error(f"{what} is not a compact JWS")
    try:
        header = strict_json_object(b64url_decode(parts[0]))
        payload = strict_json_object(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{what} is malformed") from exc
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extensions
        raise error(f"{what} uses unsupported critical header parameters")
    if "b64" in header:  # RFC 7797 unencoded payloads are never acceptable here
        raise error(f"{what} uses an unsupported b64 header parameter")
    return CompactJws(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def load_public_jwk(jwk: Mapping[str, Any], alg: str) -> Any:
    """A public key object for ``alg`` from a JWK; rejects private members and keys that
    do not fit the algorithm. Raises ValueError."""
    if alg not in PROOF_ALGORITHMS and alg != TOKEN_ALGORITHM:
        raise ValueError("algorithm not allowed")
    if any(member in jwk for member in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")):
        raise ValueError("jwk contains private key material")
    # One key, one spelling: coordinates must be canonical base64url of the exact
    # length, or one key would have several thumbprints (pyjwt's decoder is lax).
    size = _COORDINATE_BYTES.get(alg, 0)
    for name in ("x", "y") if alg in _CURVE_FOR_ALG else ("x",):
        value = jwk.get(name)
        if not isinstance(value, str) or len(b64url_decode(value)) != size:
            raise ValueError(f"jwk member {name!r} is not a canonical coordinate")
    try:
        key = _ALGORITHMS[alg].from_jwk(dict(jwk))
    except Exception as exc:  # pyjwt raises several exception types for bad JWKs
        raise ValueError("jwk is not a valid public key") from exc
    if alg == "EdDSA":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ValueError("EdDSA proofs must use an Ed25519 key")
    elif not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, _CURVE_FOR_ALG[alg]
    ):
        raise ValueError(f"key does not match {alg}")
    return key


def verify_signature(jws: CompactJws, alg: str, key: Any) -> bool:
    """True iff ``jws.signature`` is a valid ``alg`` signature by ``key``."""
    return bool(_ALGORITHMS[alg].verify(jws.signing_input, key, jws.signature))


def encode_segment(obj: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())
