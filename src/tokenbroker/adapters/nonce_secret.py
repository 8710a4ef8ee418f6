"""The DPoP nonce secret (domain/nonces.py) from AWS Secrets Manager.

Read once per execution environment and kept for ``ttl`` seconds (bounded, so a rotation
reaches every environment within ``ttl``): ``AWSCURRENT`` signs new nonces, and
``AWSPREVIOUS`` (when the secret has one) still verifies, which is the two-secret overlap
of a rotation. Rotating is one command (``put-secret-value`` moves AWSCURRENT to
AWSPREVIOUS); see README "DPoP server nonces".

Any failure to read AWSCURRENT is TemporarilyUnavailable: the token endpoint answers 503
and the edge denies (fail closed). A missing AWSPREVIOUS (a secret never rotated) is not a
failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.domain.errors import ConfigurationError

DEFAULT_TTL = 300


class SecretsManagerNonceSecrets:
    def __init__(
        self,
        client: Any,
        secret_id: str,
        *,
        clock: Callable[[], float],
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._client = client
        self._secret_id = secret_id
        self._clock = clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[bytes, ...] = ()
        self._until = float("-inf")

    def __call__(self) -> tuple[bytes, ...]:
        """The secrets, signing one first."""
        now = self._clock()
        with self._lock:
            if now < self._until and self._cached:
                return self._cached
            current = self._read("AWSCURRENT")
            if current is None:
                raise ConfigurationError("the DPoP nonce secret has no current version")
            previous = self._read("AWSPREVIOUS")
            self._cached = (current,) if previous in (None, current) else (current, previous)
            self._until = now + self._ttl
            return self._cached

    def _read(self, stage: str) -> bytes | None:
        with failing_closed("reading the DPoP nonce secret"):
            try:
                answer = self._client.get_secret_value(SecretId=self._secret_id, VersionStage=stage)
            except ClientError as exc:
                if stage == "AWSPREVIOUS" and error_code(exc) == "ResourceNotFoundException":
                    return None  # never rotated: only the current secret
                raise
        value = answer.get("SecretString")
        if not isinstance(value, str) or not value:
            if stage == "AWSPREVIOUS":
                return None
            raise ConfigurationError("the DPoP nonce secret has no SecretString")
        return value.encode("utf-8")
