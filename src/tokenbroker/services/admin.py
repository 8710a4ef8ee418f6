"""Administer clients and devices (used by the ``tokenbroker`` CLI).

Every change is a ledger record (event ``client_created``, ``client_disabled``,
``client_scopes_changed``, ``client_tokens_revoked``, ``device_enrolled``,
``device_revoked``) naming who acted, written by the directory in
the same transaction as the change: no change without its record, no record without it.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tokenbroker.domain.clock import Clock, IdSource
from tokenbroker.domain.errors import AdminError, NotFound
from tokenbroker.domain.models import (
    Client,
    Device,
    EventType,
    Status,
    UsageRecord,
)
from tokenbroker.domain.policy import parse_scope
from tokenbroker.domain.ports import ClientDirectory
from tokenbroker.domain.rfc7638 import is_thumbprint
from tokenbroker.domain.secrets import SECRET_BYTES, hash_secret
from tokenbroker.domain.units import CLIENT_ID

DEFAULT_MAX_DEVICES = 3
MAX_DEVICES_LIMIT = 100
_LABEL = re.compile(r"[\w .@:/+-]{0,64}")
#: ledger record ids of admin actions: this prefix + the action's request id
RECORD_PREFIX = "adm:"


def new_client_id() -> str:
    return "tbc_" + secrets.token_hex(12)


def new_client_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_request_id() -> str:
    return str(uuid.uuid4())


class InvalidInput(AdminError):
    """A command argument is malformed."""

    error = "invalid_input"


@dataclass(frozen=True)
class CreatedClient:
    client: Client
    client_secret: str  # shown once, never stored


class AdminService:
    def __init__(
        self,
        *,
        directory: ClientDirectory,
        clock: Clock,
        actor: str,
        retention_days: int = 400,
        client_ids: IdSource = new_client_id,
        client_secrets: IdSource = new_client_secret,
        request_ids: IdSource = new_request_id,
    ) -> None:
        """``actor``: who acts (the caller's IAM ARN), named in every ledger record;
        ``retention_days``: how long those records are kept (the usage table's TTL)."""
        self._directory = directory
        self._clock = clock
        self._actor = actor
        self._retention_days = retention_days
        self._client_ids = client_ids
        self._client_secrets = client_secrets
        self._request_ids = request_ids

    def _record(
        self, event: EventType, at: float, client_id: str, jkt: str = "", principal: str = ""
    ) -> UsageRecord:
        """The ledger record of one admin action: ids only, never a secret or its hash."""
        request_id = self._request_ids()
        return UsageRecord.build(
            at=at,
            retention_days=self._retention_days,
            record_id=RECORD_PREFIX + request_id,
            principal=principal or client_id,  # a person's own device names the person
            client_id=client_id,
            jkt=jkt,
            request_id=request_id,
            event=event,
            actor=self._actor,
        )

    def create_client(
        self,
        *,
        name: str,
        scope: str,
        max_devices: int = DEFAULT_MAX_DEVICES,
        resources: Sequence[str] = (),
    ) -> CreatedClient:
        name = name.strip()
        if not name or len(name) > 128 or not name.isprintable():
            raise InvalidInput("name must be 1-128 printable characters")
        scopes = _parse_scopes(scope)
        allowed = _parse_resources(resources)
        if type(max_devices) is not int or not 1 <= max_devices <= MAX_DEVICES_LIMIT:
            raise InvalidInput(f"max-devices must be within 1..{MAX_DEVICES_LIMIT}")
        secret = self._client_secrets()
        now = self._clock()
        client = Client(
            client_id=self._client_ids(),
            name=name,
            secret_hash=hash_secret(secret),
            scopes=scopes,
            max_devices=max_devices,
            status=Status.ACTIVE,
            created_at=int(now),
            resources=allowed,
        )
        self._directory.create_client(
            client, self._record(EventType.CLIENT_CREATED, now, client.client_id)
        )
        return CreatedClient(client, secret)

    def list_clients(self) -> Iterator[Client]:
        return self._directory.list_clients()

    def get_client(self, client_id: str) -> Client:
        client = self._directory.get_client(_check_client_id(client_id))
        if client is None:
            raise NotFound(f"client {client_id} does not exist")
        return client

    def disable_client(self, client_id: str) -> Client:
        client_id = _check_client_id(client_id)
        now = self._clock()
        return self._directory.set_client_status(
            client_id,
            Status.DISABLED,
            int(now),
            self._record(EventType.CLIENT_DISABLED, now, client_id),
        )

    def update_client_scopes(self, client_id: str, scope: str) -> Client:
        """Replace a client's scopes. New tokens get only these at once; tokens already
        issued with a removed scope stop working at the edge within its liveness bound
        (``tokenbroker.domain.liveness.MAX_AGE``)."""
        client_id = _check_client_id(client_id)
        scopes = _parse_scopes(scope)
        now = self._clock()
        return self._directory.set_client_scopes(
            client_id,
            scopes,
            int(now),
            self._record(EventType.CLIENT_SCOPES_CHANGED, now, client_id),
        )

    def update_client_resources(self, client_id: str, resources: Sequence[str]) -> Client:
        """RFC 8707: replace the resources (token audiences) the client may ask for.
        Recorded as a ``client_scopes_changed`` event (the client's allowance changed)."""
        client_id = _check_client_id(client_id)
        allowed = _parse_resources(resources)
        now = self._clock()
        return self._directory.set_client_resources(
            client_id,
            allowed,
            int(now),
            self._record(EventType.CLIENT_SCOPES_CHANGED, now, client_id),
        )

    def revoke_client_tokens(self, client_id: str) -> Client:
        """Refuse every access token of the client issued up to now (its ``iat`` is
        earlier than the next second), within the edge's liveness bound; tokens issued
        from the next second on work."""
        client_id = _check_client_id(client_id)
        now = self._clock()
        return self._directory.set_tokens_not_before(
            client_id,
            int(now) + 1,
            int(now),
            self._record(EventType.CLIENT_TOKENS_REVOKED, now, client_id),
        )

    def enroll_device(self, *, client_id: str, jkt: str, label: str = "") -> Device:
        if not is_thumbprint(jkt):
            raise InvalidInput("jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url chars)")
        if not _LABEL.fullmatch(label):
            raise InvalidInput("label must be at most 64 letters, digits, spaces or .@:/+-_")
        now = self._clock()
        device = Device(
            jkt=jkt,
            client_id=_check_client_id(client_id),
            label=label,
            status=Status.ACTIVE,
            enrolled_at=int(now),
        )
        self._directory.enroll_device(
            device, self._record(EventType.DEVICE_ENROLLED, now, device.client_id, jkt)
        )
        return device

    def list_devices(self, client_id: str) -> Iterator[Device]:
        self.get_client(client_id)
        return self._directory.list_devices(client_id)

    def revoke_device(self, jkt: str) -> Device:
        if not is_thumbprint(jkt):
            raise InvalidInput("jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url chars)")
        current = self._directory.get_device(jkt)
        if current is None or not current.active:
            raise NotFound(f"no active device with key {jkt}")
        now = self._clock()
        return self._directory.revoke_device(
            current,
            int(now),
            self._record(EventType.DEVICE_REVOKED, now, current.client_id, jkt, current.principal),
        )


def _parse_resources(resources: Sequence[str]) -> frozenset[str]:
    from tokenbroker.domain.errors import InvalidTarget
    from tokenbroker.domain.rfc8707 import check_resources

    try:
        return frozenset(check_resources(resources))
    except InvalidTarget as exc:
        raise InvalidInput(f"--resource: {exc.description}") from exc


def _parse_scopes(scope: str) -> frozenset[str]:
    if not scope.strip():
        raise InvalidInput("at least one scope is required")
    try:
        return frozenset(parse_scope(scope.strip()))
    except Exception as exc:
        raise InvalidInput(str(exc)) from exc


def _check_client_id(client_id: str) -> str:
    if not CLIENT_ID.fullmatch(client_id):
        raise InvalidInput("client id must be 1-64 letters, digits, '-' or '_'")
    return client_id
