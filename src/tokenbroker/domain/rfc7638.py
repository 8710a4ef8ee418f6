"""RFC 7638 JWK thumbprints (SHA-256, base64url), used as ``jkt`` and ``kid``.

pyjwt has no thumbprint function; the computation is a few lines of the RFC itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tokenbroker.domain.jose import b64url_decode, b64url_encode

# RFC 7638 §3.2: the required members of each key type, nothing else.
_REQUIRED_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The base64url SHA-256 thumbprint of a public JWK. Raises ValueError."""
    kty = jwk.get("kty")
    members = _REQUIRED_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError("unsupported key type")
    subset = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"jwk member {name!r} missing")
        subset[name] = value
    canonical = json.dumps(subset, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


_JKT_LENGTH = 43  # base64url of 32 bytes


def is_thumbprint(value: object) -> bool:
    """Whether ``value`` looks like a SHA-256 thumbprint (for CLI/authorizer input)."""
    if not isinstance(value, str) or len(value) != _JKT_LENGTH:
        return False
    try:
        return len(b64url_decode(value)) == 32
    except ValueError:
        return False
