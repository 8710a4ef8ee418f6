"""RFC 9449 §8/§9 server-provided DPoP nonces, stateless.

A nonce is ``<step>.<mac>``: ``step`` = floor(now / step_seconds) in decimal, ``mac`` =
base64url(HMAC-SHA256(secret, "tokenbroker-dpop-nonce" | endpoint class | step)) cut to
128 bits. Any execution environment holding the secret verifies any other's nonce with no
shared state and no AWS call per request. The current and the previous step are accepted,
so a nonce lives between one and two steps.

Secrets: the first one signs new nonces; every one verifies (two-secret overlap while a
secret is rotated: the old one keeps verifying until the environments have reloaded).

The endpoint class (``token`` / ``resource``) is in the MAC: a nonce the token endpoint
handed out is no nonce at a resource, and the other way round.

Pure: the clock is passed in, the secrets are bytes the caller fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokenbroker.domain.errors import ConfigurationError, UseDpopNonce
from tokenbroker.domain.jose import b64url_encode

TOKEN_ENDPOINT = "token"
RESOURCE = "resource"
_CLASSES = frozenset({TOKEN_ENDPOINT, RESOURCE})
_LABEL = b"tokenbroker-dpop-nonce"
_MAC_BYTES = 16
MAX_NONCE_LENGTH = 64
_SHAPE = re.compile(r"([0-9]{1,12})\.([A-Za-z0-9_-]{22})")
MIN_SECRET_BYTES = 32
#: reasons a proof's nonce was refused (audit ``reason``)
NONCE_MISSING = "nonce_missing"
NONCE_MALFORMED = "nonce_malformed"
NONCE_EXPIRED = "nonce_expired"
NONCE_INVALID = "nonce_invalid"


class NonceChallenge(UseDpopNonce):
    """RFC 9449 §8/§9 ``use_dpop_nonce``, carrying the fresh nonce to answer with
    (``DPoP-Nonce`` header)."""

    def __init__(self, description: str, *, reason: str, nonce: str) -> None:
        super().__init__(description, reason=reason)
        self.nonce = nonce


@dataclass(frozen=True)
class NoncePolicy:
    step_seconds: int = 300

    def __post_init__(self) -> None:
        if not 10 <= self.step_seconds <= 3600:
            raise ConfigurationError("DPOP_NONCE_STEP_SECONDS must be within 10..3600")


class NonceService:
    """Issues and checks nonces for one endpoint class. ``secrets()`` returns the
    secrets (signing one first); it may raise TemporarilyUnavailable (fail closed)."""

    def __init__(
        self,
        secrets: Callable[[], Sequence[bytes]],
        *,
        endpoint: str,
        policy: NoncePolicy,
    ) -> None:
        if endpoint not in _CLASSES:
            raise ValueError(f"unknown endpoint class {endpoint!r}")
        self._secrets = secrets
        self._endpoint = endpoint.encode()
        self._policy = policy

    def _keys(self) -> Sequence[bytes]:
        keys = self._secrets()
        if not keys or any(len(k) < MIN_SECRET_BYTES for k in keys):
            raise ConfigurationError("the DPoP nonce secret is missing or too short")
        return keys

    def _mac(self, key: bytes, step: int) -> str:
        message = b"\x00".join((_LABEL, self._endpoint, str(step).encode()))
        return b64url_encode(hmac.new(key, message, hashlib.sha256).digest()[:_MAC_BYTES])

    def issue(self, now: float) -> str:
        """A fresh nonce (the current step, the signing secret)."""
        step = int(now // self._policy.step_seconds)
        return f"{step}.{self._mac(self._keys()[0], step)}"

    def check(self, nonce: object, now: float) -> None:
        """Accept a nonce of the current or the previous step under any secret; else
        raise NonceChallenge with a fresh nonce and the reason."""
        keys = self._keys()  # first: an unavailable secret fails closed, never "no nonce"
        reason = self._refusal(nonce, now, keys)
        if reason is None:
            return
        description = {
            NONCE_MISSING: "a DPoP nonce is required",
            NONCE_MALFORMED: "the DPoP nonce is malformed",
            NONCE_EXPIRED: "the DPoP nonce has expired",
            NONCE_INVALID: "the DPoP nonce is not one this server issued",
        }[reason]
        raise NonceChallenge(description, reason=reason, nonce=self.issue(now))

    def _refusal(self, nonce: object, now: float, keys: Sequence[bytes]) -> str | None:
        if nonce is None:
            return NONCE_MISSING
        if not isinstance(nonce, str) or len(nonce) > MAX_NONCE_LENGTH:
            return NONCE_MALFORMED
        match = _SHAPE.fullmatch(nonce)
        if match is None:
            return NONCE_MALFORMED
        step, mac = int(match.group(1)), match.group(2)
        # MAC first, with every secret (constant time each): an expired nonce must be ours
        # to be called expired, so a forged one never learns anything from the answer
        if not any(hmac.compare_digest(mac, self._mac(k, step)) for k in keys):
            return NONCE_INVALID
        current = int(now // self._policy.step_seconds)
        if step not in (current, current - 1):
            return NONCE_EXPIRED
        return None
