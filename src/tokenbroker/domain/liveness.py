"""A bounded-staleness view of whether a token's client and device may still be used.

Why not check liveness inside the usage write (a TransactWriteItems with ConditionChecks
on the device and client items)? Two reasons found while sizing it: (1) DynamoDB
cancels concurrent transactions that touch the same item (TransactionConflict), so a
client sending parallel requests from one device would be refused at random; (2) every
ConditionCheck is a transactional write on the device item, so one busy device would
hit a single partition's write limit. So the edge keeps, per execution environment, what
it last read about each (client, device) pair for at most ``MAX_AGE`` seconds: a revoked
device or disabled client is refused within that bound, and a steady stream of requests
costs one read per pair per ``MAX_AGE`` plus its one usage write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ClientDisabled, DeviceRevoked

#: the stated staleness bound: a revocation takes effect at the edge within this
MAX_AGE = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Liveness:
    client_active: bool
    device_active: bool  # enrolled to this client and not revoked


class LivenessView:
    def __init__(
        self,
        fetch: Callable[[str, str], Liveness],
        *,
        clock: Clock,
        max_age: float = MAX_AGE,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._max_age = max_age
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, Liveness]] = {}
        self._lock = threading.Lock()

    def require_active(self, client_id: str, jkt: str) -> None:
        """Raise DeviceRevoked / ClientDisabled, from a view at most ``max_age`` old.
        A failed read propagates (TemporarilyUnavailable): fail closed."""
        key = (client_id, jkt)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is None or not 0 <= now - cached[0] < self._max_age:
            state = self._fetch(client_id, jkt)
            with self._lock:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()  # bounded memory; the next reads refill it
                self._entries[key] = (now, state)
        else:
            state = cached[1]
        if not state.device_active:
            raise DeviceRevoked("the device key has been revoked")
        if not state.client_active:
            raise ClientDisabled("the client has been disabled")
