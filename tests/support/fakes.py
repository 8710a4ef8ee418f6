"""In-memory fakes of the ports in ``tokenbroker.domain.ports``.

Fakes, not mocks: each class implements the port's contract (the same conditions and
the same errors as the DynamoDB/KMS adapters), so a test states what happened in the
world ("the ledger holds one record") rather than which methods were called with which
return shapes. Each fake counts its calls (``calls``: the issuance budget counts round
trips) and can be told to fail like an unavailable backend (``fail_with``), so fail-closed
behaviour is testable without botocore.

Like the adapters, the directory and the token ledger write each change together with
its ledger record (``records``: record id -> UsageRecord), atomically: both or neither.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey

from tokenbroker.domain.errors import (
    BrokerError,
    Conflict,
    DeviceLimitReached,
    NotFound,
    ProofReplayed,
    TemporarilyUnavailable,
)
from tokenbroker.domain.liveness import Liveness
from tokenbroker.domain.models import (
    Client,
    Device,
    IssuedToken,
    PublicJwk,
    Status,
    UsageRecord,
)


class _Fake:
    """Call counting and injected backend failures, shared by every fake."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._failure: BrokerError | None = None
        self._failing_methods: frozenset[str] | None = None
        self._lock = threading.Lock()

    def fail_with(
        self,
        error: BrokerError | None = None,
        *,
        methods: tuple[str, ...] | None = None,
    ) -> None:
        """From now on, ``methods`` (default: all) raise ``error`` (default:
        TemporarilyUnavailable), as an adapter does when its backend fails."""
        self._failure = error or TemporarilyUnavailable("injected backend failure")
        self._failing_methods = frozenset(methods) if methods is not None else None

    def recover(self) -> None:
        self._failure = None
        self._failing_methods = None

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        if self._failure is not None and (
            self._failing_methods is None or method in self._failing_methods
        ):
            raise self._failure


class _Ledger:
    """The usage table's part of a transaction: ``attribute_not_exists(id)``."""

    def __init__(self) -> None:
        self.records: dict[str, UsageRecord] = {}

    def check_new(self, record: UsageRecord) -> None:
        """Call before changing anything (the whole transaction is cancelled)."""
        if record.record_id in self.records:
            # the adapters re-raise this cancellation: failing_closed -> unavailable
            raise TemporarilyUnavailable("ledger record id already exists")

    def add(self, record: UsageRecord) -> None:
        self.records[record.record_id] = record


class FakeClientDirectory(_Fake):
    """Clients and devices in dicts, with the DynamoDB adapter's conditions:

    - client ids are unique (Conflict);
    - a key is enrolled at most once, ever: a revoked key is not re-enrollable (Conflict),
      and this check wins over the client checks, as in the adapter's transaction;
    - enrolment needs an existing (NotFound), active (Conflict) client with fewer than
      ``max_devices`` active devices (DeviceLimitReached); counter and device change
      together under one lock, like the TransactWriteItems;
    - revocation of an unknown or already revoked key (or one the caller read as
      another client's) is NotFound;
    - every change writes its ledger record (``records``) with it, under the same lock;
      a failed change writes none.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[str, Client] = {}
        self.devices: dict[str, Device] = {}
        self._ledger = _Ledger()

    @property
    def records(self) -> dict[str, UsageRecord]:
        """The ledger records written by admin changes, by record id."""
        return self._ledger.records

    # test set-up helpers (not part of the port; never counted)
    def add_client(self, client: Client) -> Client:
        self.clients[client.client_id] = replace(client, active_devices=0)
        return self.clients[client.client_id]

    def add_device(self, device: Device) -> Device:
        """Store a device as is (any status), bypassing enrolment rules."""
        self.devices[device.jkt] = device
        if device.active and device.client_id in self.clients:
            c = self.clients[device.client_id]
            self.clients[c.client_id] = replace(c, active_devices=c.active_devices + 1)
        return device

    # ---- the port ------------------------------------------------------------------
    def get_client_and_device(
        self, client_id: str, jkt: str
    ) -> tuple[Client | None, Device | None]:
        self._call("get_client_and_device")
        return self.clients.get(client_id), self.devices.get(jkt)

    def get_client(self, client_id: str) -> Client | None:
        self._call("get_client")
        return self.clients.get(client_id)

    def create_client(self, client: Client, record: UsageRecord) -> None:
        self._call("create_client")
        with self._lock:
            if client.client_id in self.clients:
                raise Conflict(f"client {client.client_id} already exists")
            self._ledger.check_new(record)
            self.clients[client.client_id] = replace(client, active_devices=0)
            self._ledger.add(record)

    def list_clients(self) -> Iterator[Client]:
        self._call("list_clients")
        return iter(list(self.clients.values()))

    def set_client_status(
        self, client_id: str, status: str, at: int, record: UsageRecord
    ) -> Client:
        self._call("set_client_status")
        with self._lock:
            current = self.clients.get(client_id)
            if current is None:
                raise NotFound(f"client {client_id} does not exist")
            self._ledger.check_new(record)
            updated = replace(current, status=Status(status))
            self.clients[client_id] = updated
            self._ledger.add(record)
            return updated

    def set_client_scopes(
        self, client_id: str, scopes: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        self._call("set_client_scopes")
        return self._update(client_id, record, scopes=frozenset(scopes))

    def set_client_resources(
        self, client_id: str, resources: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        self._call("set_client_resources")
        return self._update(client_id, record, resources=frozenset(resources))

    def set_tokens_not_before(
        self, client_id: str, not_before: int, at: int, record: UsageRecord
    ) -> Client:
        self._call("set_tokens_not_before")
        return self._update(client_id, record, tokens_not_before=not_before)

    def _update(self, client_id: str, record: UsageRecord, **changes: Any) -> Client:
        with self._lock:
            current = self.clients.get(client_id)
            if current is None:
                raise NotFound(f"client {client_id} does not exist")
            self._ledger.check_new(record)
            updated = replace(current, **changes)
            self.clients[client_id] = updated
            self._ledger.add(record)
            return updated

    def enroll_device(self, device: Device, record: UsageRecord) -> None:
        self._call("enroll_device")
        with self._lock:
            if device.jkt in self.devices:
                raise Conflict(f"key {device.jkt} is already enrolled")
            client = self.clients.get(device.client_id)
            if client is None:
                raise NotFound(f"client {device.client_id} does not exist")
            if not client.active:
                raise Conflict(f"client {device.client_id} is disabled")
            if client.active_devices >= client.max_devices:
                raise DeviceLimitReached(
                    f"client {client.client_id} already has {client.active_devices} of "
                    f"{client.max_devices} active devices; revoke one first"
                )
            self._ledger.check_new(record)
            self.clients[client.client_id] = replace(
                client, active_devices=client.active_devices + 1
            )
            self.devices[device.jkt] = replace(device, revoked_at=None)
            self._ledger.add(record)

    def revoke_device(self, device: Device, at: int, record: UsageRecord) -> Device:
        self._call("revoke_device")
        jkt = device.jkt
        with self._lock:
            current = self.devices.get(jkt)
            if current is None or not current.active or current.client_id != device.client_id:
                raise NotFound(f"no active device with key {jkt}")
            client = self.clients.get(current.client_id)
            if client is None or client.active_devices <= 0:
                raise NotFound(f"no active device with key {jkt}")  # transaction cancelled
            self._ledger.check_new(record)
            self.clients[client.client_id] = replace(
                client, active_devices=client.active_devices - 1
            )
            revoked = replace(current, status=Status.REVOKED, revoked_at=at)
            self.devices[jkt] = revoked
            self._ledger.add(record)
            return revoked

    def get_device(self, jkt: str) -> Device | None:
        self._call("get_device")
        return self.devices.get(jkt)

    def list_devices(self, client_id: str) -> Iterator[Device]:
        self._call("list_devices")
        mine = [d for d in self.devices.values() if d.client_id == client_id]
        return iter(sorted(mine, key=lambda d: d.enrolled_at))  # GSI sort key


class FakeTokenLedger(_Fake):
    """Issued tokens by jti (``tokens``; the conditional put is the replay guard) and
    their ledger records (``records``), written together or not at all."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: dict[str, IssuedToken] = {}
        self._ledger = _Ledger()

    @property
    def records(self) -> dict[str, UsageRecord]:
        """The ledger records of the issuances, by record id."""
        return self._ledger.records

    def record_issuance(self, token: IssuedToken, record: UsageRecord) -> None:
        self._call("record_issuance")
        with self._lock:
            if token.jti in self.tokens:
                raise ProofReplayed("DPoP proof has already been used")
            self._ledger.check_new(record)
            self.tokens[token.jti] = token
            self._ledger.add(record)

    def record_refusal(self, record: UsageRecord) -> bool:
        self._call("record_refusal")
        with self._lock:
            if record.record_id in self._ledger.records:
                return False
            self._ledger.add(record)
            return True


class FakeSigner(_Fake):
    """ES256 with a local P-256 key, standing in for KMS (raw r||s signatures).

    ``public_jwk().kid`` is the RFC 7638 thumbprint, computed by joserfc.
    """

    def __init__(self) -> None:
        super().__init__()
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECKey.import_key(self.private_key.public_key())
        self._jwk = {k: str(v) for k, v in jwk.as_dict(private=False).items()}
        self._kid = jwk.thumbprint()

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> PublicJwk:
        self._call("public_jwk")
        return PublicJwk(kid=self._kid, jwk=dict(self._jwk))

    def sign(self, signing_input: bytes) -> bytes:
        self._call("sign")
        r, s = decode_dss_signature(self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class FakeUsageLedger:
    """The UsageLedger port in memory, with the DynamoDB adapter's condition: the
    allowed-request insert fails (and writes nothing) if the record id (the proof's replay
    key) already exists. As ``fetch`` it is also the liveness source ``DynamoLiveness``
    is (domain/liveness.py): device revoked, client disabled, the client's scopes now and
    its tokens-not-before.

    Liveness comes from ``revoked``/``disabled``/``client_scopes``/``tokens_not_before``
    (tests set them directly) and, when given, from ``directory`` (a device not active for
    the client, a client not active there, and that client's scopes and not-before: what
    the adapter reads from the tables)."""

    def __init__(
        self,
        directory: FakeClientDirectory | None = None,
        *,
        client_scopes: frozenset[str] = frozenset(),
    ) -> None:
        self.records: dict[str, UsageRecord] = {}
        self.revoked: set[str] = set()
        self.disabled: set[str] = set()
        self.client_scopes = client_scopes
        self.tokens_not_before = 0
        self.calls: Counter[str] = Counter()
        self.directory = directory
        self._lock = threading.Lock()

    def fetch(self, client_id: str, jkt: str) -> Liveness:
        with self._lock:
            self.calls["fetch"] += 1
            device_active, client_active = jkt not in self.revoked, client_id not in self.disabled
            scopes, not_before = self.client_scopes, self.tokens_not_before
            if self.directory is not None:
                device = self.directory.devices.get(jkt)
                client = self.directory.clients.get(client_id)
                device_active = device_active and (
                    device is not None and device.active and device.client_id == client_id
                )
                client_active = client_active and client is not None and client.active
                if client is not None:
                    scopes = frozenset(client.scopes)
                    not_before = max(not_before, client.tokens_not_before)
            return Liveness(
                client_active=client_active,
                device_active=device_active,
                client_scopes=scopes,
                tokens_not_before=not_before,
            )

    def record_use(self, record: UsageRecord) -> None:
        with self._lock:
            self.calls["record_use"] += 1
            existing = self.records.get(record.record_id)
            if existing is not None:
                if record.request_id and existing == record:
                    return  # the adapter's retry of its own write: the same record
                raise ProofReplayed("the DPoP proof has already been used")
            self.records[record.record_id] = record

    def record_denial(self, record: UsageRecord) -> None:
        with self._lock:
            self.calls["record_denial"] += 1
            self.records.setdefault(record.record_id, record)

    def decisions(self) -> list[tuple[str, str]]:
        """(decision, reason) of every record, in insertion order."""
        return [(r.decision.value, r.reason) for r in self.records.values()]
