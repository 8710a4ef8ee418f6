"""Containment: what happens to a device a sharing rule flagged, per client mode.

- ``audit``: nothing beyond the alert.
- ``revoke``: the device is revoked through the admin service's own revocation (a
  ledger admin event; the edge's liveness view refuses it within ``MAX_AGE`` seconds).
- ``step_up``: the device is flagged (``step_up_at`` on its item, with a ledger event):
  the token endpoint refuses client_credentials and refresh for it with
  ``step_up_required`` until a token exchange (a fresh identity check at a trusted IdP)
  or a re-enrollment clears it, and the edge refuses its current tokens within the same
  liveness bound.

A client's mode is set with ``tokenbroker clients set-containment``; clients without one
get the deployment's default (template parameter ``SharingContainmentDefault``).
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import NotFound
from tokenbroker.domain.models import EventType, UsageRecord
from tokenbroker.domain.sharing import Mode, parse_mode


class ContainmentStore(Protocol):
    def mode(self, client_id: str) -> str: ...

    def set_mode(self, client_id: str, mode: str, record: UsageRecord) -> None: ...

    def require_step_up(self, jkt: str, client_id: str, at: int, record: UsageRecord) -> bool: ...

    def step_up_required(self, jkt: str) -> bool: ...

    def clear_step_up(self, jkt: str) -> None: ...


class DeviceRevoker(Protocol):
    def revoke_device(self, jkt: str) -> object: ...


class ContainmentService:
    def __init__(
        self,
        *,
        store: ContainmentStore,
        revoker: DeviceRevoker,
        clock: Clock,
        default_mode: Mode = Mode.AUDIT,
        actor: str = "tokenbroker:sharing",
        retention_days: int = 400,
    ) -> None:
        self._store = store
        self._revoker = revoker
        self._clock = clock
        self._default = default_mode
        self._actor = actor
        self._retention_days = retention_days

    def mode_of(self, client_id: str) -> Mode:
        """The client's mode, or the default. A stored value that is not a mode (never
        written by us) is treated as the strictest one that needs no guess: ``revoke``
        would act on bad data, so ``step_up``."""
        raw = self._store.mode(client_id)
        if not raw:
            return self._default
        try:
            return Mode(raw)
        except ValueError:
            return Mode.STEP_UP

    def set_mode(self, client_id: str, mode: str) -> Mode:
        """Raises ConfigurationError for a bad mode, NotFound for an unknown client."""
        parsed = parse_mode(mode)
        now = self._clock()
        record = UsageRecord.build(
            at=now,
            retention_days=self._retention_days,
            record_id=f"adm:containment:{client_id}:{parsed}:{int(now * 1000)}",
            principal=client_id,
            client_id=client_id,
            event=EventType.CLIENT_CONTAINMENT_CHANGED,
            resource=f"containment={parsed}",
            actor=self._actor,
        )
        self._store.set_mode(client_id, parsed.value, record)
        return parsed

    def contain(self, *, alert_id: str, client_id: str, jkt: str) -> Mode:
        """Apply the client's mode to a flagged device; idempotent (a retried batch
        finds the device already revoked or flagged). Store failures propagate."""
        mode = self.mode_of(client_id)
        if mode is Mode.REVOKE:
            # NotFound: revoked before (a retry, or an admin was faster)
            with contextlib.suppress(NotFound):
                self._revoker.revoke_device(jkt)
        elif mode is Mode.STEP_UP:
            now = self._clock()
            record = UsageRecord.build(
                at=now,
                retention_days=self._retention_days,
                record_id=f"shr:stepup:{alert_id}",
                principal=client_id,
                client_id=client_id,
                jkt=jkt,
                event=EventType.DEVICE_STEP_UP_REQUIRED,
                resource=alert_id,
                actor=self._actor,
            )
            self._store.require_step_up(jkt, client_id, int(now), record)
        return mode
