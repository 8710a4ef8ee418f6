"""Signing key rotation as admin use cases (``tokenbroker keys list|status|rotate``).

``rotate`` publishes the other template slot's key as ``next`` with its schedule (see
:mod:`tokenbroker.domain.keyset`); the readers move through the states by the clock.
``rotate`` and ``status`` also persist a finished rotation (settle: the outgoing key is
retired), so the stored document never lags far behind the states it implies.

Every change is a ledger record (``key_rotation_started``, ``key_retired``), written
BEFORE the key set: if the key set write then fails, the ledger shows an attempt that
did not happen (the error says so), never a change without its record.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.domain.clock import Clock, IdSource
from tokenbroker.domain.keyset import DEFAULT_PROPAGATION, KeySet, KeyStatus, restricted
from tokenbroker.domain.models import EventType, PublicJwk, UsageRecord

#: the ledger principal of signing key events (they are about no client)
KEYS_PRINCIPAL = "tokenbroker:signing-keys"
RECORD_PREFIX = "key:"


class KeySetStore(Protocol):
    def load(self) -> KeySet | None: ...

    def save(self, keyset: KeySet) -> None: ...


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    kid: str
    state: str
    since: int | None
    until: int | None


@dataclass(frozen=True)
class KeyReport:
    keys: list[KeyRow]
    next_step_at: int | None
    next_step: str
    changed: bool = False


class KeyRotationService:
    def __init__(
        self,
        *,
        store: KeySetStore,
        slots: Sequence[str],
        public_jwk: Callable[[str], PublicJwk],
        record: Callable[[UsageRecord], None],
        clock: Clock,
        actor: str,
        skew: int = 5,
        retention_days: int = 400,
        request_ids: IdSource = lambda: str(uuid.uuid4()),
    ) -> None:
        self._store = store
        self._slots = tuple(slots)
        self._public_jwk = public_jwk
        self._record = record
        self._clock = clock
        self._actor = actor
        self._skew = skew
        self._retention_days = retention_days
        self._request_ids = request_ids

    def _load(self) -> KeySet:
        stored = self._store.load()
        return restricted(stored or KeySet(active=self._slots[0]), self._slots)

    def status(self) -> KeyReport:
        """The states now; a finished rotation is settled (and recorded) on the way."""
        now = self._clock()
        keyset, changed = self._settled(self._load(), now)
        return self._report(keyset, now, changed)

    def rotate(self, *, propagation: int = DEFAULT_PROPAGATION) -> KeyReport:
        """Start a rotation: RotationInProgress while one is under way (nothing
        changes); KMS or SSM unavailable: TemporarilyUnavailable, nothing changes."""
        now = self._clock()
        keyset, _ = self._settled(self._load(), now)
        rotated = keyset.start_rotation(self._slots, now, propagation=propagation, skew=self._skew)
        assert rotated.rotation is not None
        incoming = self._public_jwk(rotated.rotation.key_id)  # KMS reachable before any write
        outgoing = self._public_jwk(rotated.active)
        r = rotated.rotation
        self._event(
            EventType.KEY_ROTATION_STARTED,
            now,
            f"next={incoming.kid} current={outgoing.kid}"
            f" promote_at={r.promote_at} retire_at={r.retire_at}",
        )
        self._store.save(rotated)
        return self._report(rotated, now, True)

    def _settled(self, keyset: KeySet, now: float) -> tuple[KeySet, bool]:
        settled = keyset.settle(now)
        if settled == keyset:
            return keyset, False
        retired = self._public_jwk(keyset.active)
        self._event(EventType.KEY_RETIRED, now, f"retired={retired.kid}")
        self._store.save(settled)
        return settled, True

    def _event(self, event: EventType, at: float, resource: str) -> None:
        request_id = self._request_ids()
        self._record(
            UsageRecord.build(
                at=at,
                retention_days=self._retention_days,
                record_id=RECORD_PREFIX + request_id,
                principal=KEYS_PRINCIPAL,
                client_id="",
                event=event,
                resource=resource,
                request_id=request_id,
                actor=self._actor,
            )
        )

    def _report(self, keyset: KeySet, now: float, changed: bool) -> KeyReport:
        rows = [self._row(s) for s in keyset.statuses(self._slots, now)]
        step = keyset.next_step(now)
        return KeyReport(
            keys=rows,
            next_step_at=step[0] if step else None,
            next_step=step[1] if step else "",
            changed=changed,
        )

    def _row(self, status: KeyStatus) -> KeyRow:
        return KeyRow(
            key_id=status.key_id,
            kid=self._public_jwk(status.key_id).kid,
            state=status.state.value,
            since=status.since,
            until=status.until,
        )
