"""An in-memory cache of token-signing public keys with a penalty box.

A flood of tokens with unknown ``kid``s can trigger at most one refresh per cool-down,
never one per request (compare aws-jwt-verify's penalty box).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import BrokerError, TemporarilyUnavailable


class KeyCache:
    def __init__(
        self,
        fetch: Callable[[], dict[str, Any]],
        *,
        clock: Clock,
        cooldown: float = 60.0,
        failure_cooldown: float = 2.0,
    ) -> None:
        self._failure_cooldown = failure_cooldown
        self._fetch = fetch
        self._clock = clock
        self._cooldown = cooldown
        self._keys: dict[str, Any] = {}
        self._last_fetch: float | None = None
        self._failed_until = float("-inf")
        self._lock = threading.Lock()

    def resolve(self, kid: str) -> Any | None:
        key = self._keys.get(kid)
        if key is None:
            # look again even when this call did not fetch: another thread may have
            # fetched while this one waited for the lock (a cool-down then says "recent")
            self._refresh()
            key = self._keys.get(kid)
        return key

    def _refresh(self) -> bool:
        """Fetch the keys unless that was done within the cool-down; True if fetched."""
        with self._lock:
            now = self._clock()
            if not self._keys and now < self._failed_until:
                # the key source just failed: do not hammer it once per request
                raise TemporarilyUnavailable("token signing keys are unavailable")
            recent = self._last_fetch is not None and now - self._last_fetch < self._cooldown
            if recent:
                return False
            self._last_fetch = now
            try:
                fresh = self._fetch()
            except BrokerError:
                if not self._keys:  # nothing to serve: fail closed, retry after a pause
                    self._last_fetch = None
                    self._failed_until = now + self._failure_cooldown
                    raise
                return False  # keep serving the keys we have
            self._keys = {**self._keys, **fresh}
            return True
