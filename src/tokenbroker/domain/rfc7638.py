"""RFC 7638 JWK thumbprints (SHA-256, base64url), used as ``jkt`` and ``kid``.

pyjwt has no thumbprint function; the computation is a few lines of the RFC itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from tokenbroker.domain.jose import b64url_encode

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
    values = []
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"jwk member {name!r} missing")
        values.append(value)
    return _thumbprint(members, tuple(values))


@functools.lru_cache(maxsize=1024)  # device keys repeat on every request
def _thumbprint(members: tuple[str, ...], values: tuple[str, ...]) -> str:
    subset = dict(zip(members, values, strict=True))
    canonical = json.dumps(subset, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


_JKT_LENGTH = 43  # base64url of 32 bytes


# 43 base64url characters = 258 bits: the last character's 2 unused bits must be zero
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def is_thumbprint(value: object) -> bool:
    """Whether ``value`` is the canonical base64url of 32 bytes (a SHA-256 thumbprint)."""
    return isinstance(value, str) and _THUMBPRINT.fullmatch(value) is not None
