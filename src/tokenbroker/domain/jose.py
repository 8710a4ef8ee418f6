"""RFC 7515 compact JWS parsing with the strictness pyjwt leaves to its callers.

Why not ``jwt.decode``: it (a) accepts padded and non-canonical base64url, (b) keeps the
last of duplicate JSON members, (c) does not reject ``crit`` or ``b64``, and (d) costs
about 1.5-2x a bare signature verification, which a validator doing two verifications per
request cannot afford (see benchmarks/). So we parse once, strictly, here, and verify
signatures with ``cryptography`` directly.

Why not pyjwt's algorithm objects for keys and verification either: importing them costs
~45 ms of the authorizer's cold start and ~25 us per verification, and its JWK decoder
accepts non-canonical coordinates (one key, several thumbprints). Building an EC/OKP
public key from its coordinates and checking an r||s signature are a few calls into
``cryptography``; keys are cached by their members, since device keys repeat.
"""

from __future__ import annotations

import binascii
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tokenbroker.domain.errors import OAuthError
from tokenbroker.domain.pairs import unique_mapping

#: Asymmetric algorithms the broker accepts for DPoP proofs (RFC 9449 §4.3 check 5).
PROOF_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
#: The only algorithm access tokens are signed with (KMS ECC_NIST_P256).
TOKEN_ALGORITHM = "ES256"

_COORDINATE_BYTES = {"ES256": 32, "ES384": 48, "EdDSA": 32}
_EC: dict[str, tuple[str, ec.EllipticCurve, hashes.HashAlgorithm]] = {
    # alg: (JWK crv, curve, hash) -- RFC 7518 §3.4
    "ES256": ("P-256", ec.SECP256R1(), hashes.SHA256()),
    "ES384": ("P-384", ec.SECP384R1(), hashes.SHA384()),
}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_ECDSA = {alg: ec.ECDSA(digest) for alg, (_, _, digest) in _EC.items()}


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
# the url alphabet to the standard one; "+", "/" and "=" to "!", which strict base64
# rejects: one translate pass checks the alphabet and converts it (issue 13: the old
# three ``in`` scans and an extra copy cost ~0.5 us a segment, 4 segments a request)
_URL_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")
# bits of the last character that encode no data, by len % 4 (RFC 4648 §3.5)
_UNUSED_BITS = {0: 0, 2: 0b1111, 3: 0b11}
_PADDING = {0: b"", 2: b"==", 3: b"="}


def b64url_encode(data: bytes) -> str:
    encoded = binascii.b2a_base64(data, newline=False).translate(_STD_TO_URL)
    return encoded.rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Strict RFC 7515 §2 base64url: url alphabet, no padding, canonical trailing bits
    (non-zero unused bits would be a second spelling of the same bytes)."""
    rem = len(segment) % 4
    if rem == 1:
        raise ValueError("not base64url")
    if rem and _VALUE.get(segment[-1], 0) & _UNUSED_BITS[rem]:
        raise ValueError("non-canonical base64url")
    try:
        # strict_mode: anything outside the (translated) alphabet is an error
        return binascii.a2b_base64(
            segment.encode("ascii").translate(_URL_TO_STD) + _PADDING[rem], strict_mode=True
        )
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError("not base64url") from exc


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # the JSON decoder's object_pairs_hook (it passes a list): the common case is one
    # C-level dict() and a length compare; a repeat is named by the shared rule
    obj = dict(pairs)
    if len(obj) != len(pairs):
        unique_mapping(pairs, lambda key: ValueError(f"duplicate member {key!r}"))
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call (json.loads with hooks builds a new one each time).
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_reject_constant)
# its C scanner, called directly: JSONDecoder.decode adds two whitespace regex matches
# and two Python calls around it (~1 us a payload); a text with whitespace around the
# value, or trailing data, takes the full decode (and its errors)
# (typeshed does not declare the attribute JSONDecoder.__init__ sets)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def strict_json_object(raw: bytes) -> dict[str, Any]:
    """RFC 7159 object, UTF-8, no duplicate members (RFC 7515 §5.2 step 4), no NaN,
    no lone surrogates (which would later fail to encode)."""
    text = raw.decode("utf-8")
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:  # not a value at offset 0 (e.g. leading whitespace)
        end = -1
    if end != len(text):
        value = _DECODER.decode(text)
    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw):  # rare: only then the full check
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@functools.lru_cache(maxsize=256)
def _header(segment: str) -> dict[str, Any]:
    """A decoded protected header. Cached: every token of one signing key, and every
    proof of one device key, carries the same header segment; a segment that fails
    raises and is not cached. Callers only read the result."""
    return strict_json_object(b64url_decode(segment))


#: a protected header segment decoded (cached; callers only read the result)
decoded_header = _header


class CompactJws(NamedTuple):
    # a NamedTuple, not a frozen dataclass: built for every token and proof, and a
    # frozen dataclass's __init__ (object.__setattr__ per field) costs ~1 us more
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes
    #: the protected header as sent (base64url): what header checks may be cached on
    header_segment: str = ""


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
        header = _header(parts[0])
        payload = strict_json_object(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{what} is malformed") from exc
    if "crit" in header:  # RFC 7515 §4.1.11: we understand no extensions
        raise error(f"{what} uses unsupported critical header parameters")
    if "b64" in header:  # RFC 7797 unencoded payloads are never acceptable here
        raise error(f"{what} uses an unsupported b64 header parameter")
    return CompactJws(
        header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature, parts[0]
    )


def load_public_jwk(jwk: Mapping[str, Any], alg: str) -> Any:
    """A public key object for ``alg`` from a JWK; rejects private members and keys that
    do not fit the algorithm. Raises ValueError."""
    if alg not in PROOF_ALGORITHMS and alg != TOKEN_ALGORITHM:
        raise ValueError("algorithm not allowed")
    if any(member in jwk for member in _PRIVATE_MEMBERS):
        raise ValueError("jwk contains private key material")
    kty, crv, x, y = (jwk.get(m) for m in ("kty", "crv", "x", "y"))
    if not all(isinstance(v, str) for v in (kty, crv, x)) or (
        alg in _EC and not isinstance(y, str)
    ):
        raise ValueError("jwk members kty, crv, x (and y for EC) are required")
    return _public_key(alg, kty, crv, x, y if alg in _EC else None)


@functools.lru_cache(maxsize=1024)
def _public_key(alg: str, kty: str, crv: str, x: str, y: str | None) -> Any:
    # One key, one spelling: coordinates must be canonical base64url of the exact
    # length, or one key would have several thumbprints.
    size = _COORDINATE_BYTES[alg]
    xb = b64url_decode(x)
    if len(xb) != size:
        raise ValueError("jwk member 'x' is not a canonical coordinate")
    if alg == "EdDSA":
        if (kty, crv) != ("OKP", "Ed25519"):
            raise ValueError("EdDSA proofs must use an Ed25519 key")
        return ed25519.Ed25519PublicKey.from_public_bytes(xb)
    expected_crv, curve, _ = _EC[alg]
    if (kty, crv) != ("EC", expected_crv):
        raise ValueError(f"key does not match {alg}")
    yb = b64url_decode(y or "")
    if len(yb) != size:
        raise ValueError("jwk member 'y' is not a canonical coordinate")
    numbers = ec.EllipticCurvePublicNumbers(
        int.from_bytes(xb, "big"), int.from_bytes(yb, "big"), curve
    )
    try:
        return numbers.public_key()  # checks the point is on the curve
    except ValueError as exc:
        raise ValueError("jwk is not a valid public key") from exc


# key types seen to be EllipticCurvePublicKey: an ABC isinstance costs ~0.6 us a call,
# and the answer for a type never changes (ABC registration cannot be undone)
_EC_KEY_TYPES: set[type] = set()


def verify_signature(jws: CompactJws, alg: str, key: Any) -> bool:
    """True iff ``jws.signature`` is a valid ``alg`` signature by ``key`` (JWS
    signatures are raw r||s for ECDSA, RFC 7518 §3.4)."""
    signature = jws.signature
    try:
        if alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                return False
            key.verify(signature, jws.signing_input)
            return True
        _, curve, _ = _EC[alg]
        size = _COORDINATE_BYTES[alg]
        if type(key) not in _EC_KEY_TYPES:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return False
            _EC_KEY_TYPES.add(type(key))
        if key.curve.name != curve.name or len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        key.verify(encode_dss_signature(r, s), jws.signing_input, _ECDSA[alg])
        return True
    except (InvalidSignature, KeyError):
        return False


def encode_segment(obj: Mapping[str, Any]) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())
