"""Admin: register a client's ``private_key_jwt`` public key (RFC 7523), optionally
removing its secret so the client holds no shared secret at all. One transaction with
its ledger record (event ``client_key_set``, ids only; the public key is not secret but
is not copied into the ledger either)."""

from __future__ import annotations

import json
import secrets
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.models import EventType, UsageRecord
from tokenbroker.domain.rfc7523 import registered_jwk
from tokenbroker.domain.rfc7638 import jwk_thumbprint
from tokenbroker.domain.units import CLIENT_ID
from tokenbroker.services.admin import RECORD_PREFIX, InvalidInput


class ClientKeyStore(Protocol):
    def set_jwk(
        self, client_id: str, jwk: str, *, remove_secret: bool, at: int, record: UsageRecord
    ) -> None: ...


def set_client_jwk(
    store: ClientKeyStore,
    *,
    client_id: str,
    jwk_text: str,
    remove_secret: bool,
    clock: Clock,
    actor: str,
    retention_days: int,
) -> str:
    """Validate and register the key; returns its RFC 7638 thumbprint. Raises
    InvalidInput (bad id or key) or NotFound."""
    if not CLIENT_ID.fullmatch(client_id):
        raise InvalidInput("client-id must be a client id (tbc_...)")
    try:
        jwk = registered_jwk(jwk_text)
    except ValueError as exc:
        raise InvalidInput(f"--jwk-file: {exc}") from exc
    now = clock()
    request_id = secrets.token_urlsafe(16)
    record = UsageRecord.build(
        at=now,
        retention_days=retention_days,
        record_id=RECORD_PREFIX + request_id,
        principal=client_id,
        client_id=client_id,
        request_id=request_id,
        event=EventType.CLIENT_KEY_SET,
        actor=actor,
    )
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":"))
    store.set_jwk(client_id, canonical, remove_secret=remove_secret, at=int(now), record=record)
    return jwk_thumbprint(jwk)
