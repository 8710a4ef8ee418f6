"""Client secrets: server-generated, 256 bits, stored only as a hash.

The secret is a uniformly random 256-bit value, so a fast cryptographic hash is the
right storage (a slow password KDF protects low-entropy human passwords and would only
add latency here). Comparison is constant time, and an unknown client is compared
against a dummy hash so its timing matches a wrong secret.
"""

from __future__ import annotations

import hashlib
import hmac

_PREFIX = "sha256:"
SECRET_BYTES = 32
DUMMY_HASH = _PREFIX + "0" * 64


def hash_secret(secret: str) -> str:
    return _PREFIX + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def secret_matches(secret: str, stored_hash: str | None) -> bool:
    candidate = hash_secret(secret)
    expected = stored_hash if stored_hash and stored_hash.startswith(_PREFIX) else DUMMY_HASH
    return hmac.compare_digest(candidate.encode(), expected.encode()) and stored_hash is not None
