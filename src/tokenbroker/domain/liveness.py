"""A bounded-staleness view of what a token's client and device may still do.

A token is worth no more than its client is allowed **now** (ARCHITECTURE invariant 9):
the client still active, the device still enrolled to it and not revoked, every scope of
the token still one of the client's scopes, and the token issued no earlier than the
client's ``tokens_not_before`` (set by ``tokenbroker clients revoke-tokens``). A token
signed straight through KMS for a scope its client never had is refused here.

Why not check liveness inside the usage write (a TransactWriteItems with ConditionChecks
on the device and client items)? Two reasons found while sizing it: (1) DynamoDB
cancels concurrent transactions that touch the same item (TransactionConflict), so a
client sending parallel requests from one device would be refused at random; (2) every
ConditionCheck is a transactional write on the device item, so one busy device would
hit a single partition's write limit. So the edge keeps, per execution environment, what
it last read about each (client, device) pair for at most ``MAX_AGE`` seconds: a revoked
device, a disabled client, a removed scope or a token revocation takes effect within that
bound, and a steady stream of requests costs one read per pair per ``MAX_AGE`` plus its
one usage write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ClientDisabled, DeviceRevoked, InvalidToken
from tokenbroker.domain.policy import scope_exceeds

#: the stated staleness bound: a revocation takes effect at the edge within this
MAX_AGE = 5.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Liveness:
    client_active: bool
    device_active: bool  # enrolled to this client and not revoked
    #: the client's scopes now (a token may carry no other); empty = none (fail closed)
    client_scopes: frozenset[str] = frozenset()
    #: tokens whose ``iat`` is earlier than this (epoch seconds) are refused
    tokens_not_before: int = 0
    #: RFC 7009: jtis of this device's still-alive tokens revoked one by one (the device
    #: item holds them, bounded, pruned on write: adapters/revocations.py)
    revoked_jtis: frozenset[str] = frozenset()
    #: the device's own not-before (set when its revoked-jti list overflows)
    device_tokens_not_before: int = 0
    #: containment step_up: the device's tokens are refused until it is cleared
    step_up_required: bool = False


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

    def current(self, client_id: str, jkt: str) -> Liveness:
        """What is known about (client, device), read at most ``max_age`` ago. A failed
        read propagates (TemporarilyUnavailable): fail closed."""
        key = (client_id, jkt)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and 0 <= now - cached[0] < self._max_age:
            return cached[1]
        state = self._fetch(client_id, jkt)
        with self._lock:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()  # bounded memory; the next reads refill it
            self._entries[key] = (now, state)
        return state

    def require_active(
        self,
        client_id: str,
        jkt: str,
        *,
        scope: tuple[str, ...] = (),
        issued_at: int = 0,
        jti: str = "",
    ) -> None:
        """Raise DeviceRevoked / ClientDisabled / InvalidToken (``scope_not_allowed``,
        ``token_revoked``) unless a token with ``scope``, issued at ``issued_at``, for
        this client and device, is still worth what it says."""
        check_liveness(self.current(client_id, jkt), scope=scope, issued_at=issued_at, jti=jti)


def check_liveness(
    state: Liveness, *, scope: tuple[str, ...] = (), issued_at: int = 0, jti: str = ""
) -> None:
    """The checks of :meth:`LivenessView.require_active` on a state already read
    (introspection reads it fresh)."""
    if not state.device_active:
        raise DeviceRevoked("the device key has been revoked")
    if not state.client_active:
        raise ClientDisabled("the client has been disabled")
    if state.step_up_required:
        raise InvalidToken(
            "the device must pass a fresh identity check (sharing containment)",
            reason="step_up_required",
        )
    if scope_exceeds(scope, state.client_scopes):
        raise InvalidToken(
            "the token carries a scope its client is not allowed", reason="scope_not_allowed"
        )
    if issued_at < state.tokens_not_before:
        raise InvalidToken(
            "the client's tokens issued before this were revoked", reason="token_revoked"
        )
    if (jti and jti in state.revoked_jtis) or issued_at < state.device_tokens_not_before:
        raise InvalidToken("the token was revoked (RFC 7009)", reason="token_revoked")
