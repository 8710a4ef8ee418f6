"""Ports: what the services need from the outside world. One adapter per backend
implements each (DynamoDB/KMS in :mod:`tokenbroker.adapters`, in-memory fakes in the
tests); a contract test runs against both so the fake cannot drift.

Every adapter raises :class:`~tokenbroker.domain.errors.TemporarilyUnavailable` when
its backend fails, never a backend-specific exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from tokenbroker.domain.aggregates import Page, PrincipalSummary
from tokenbroker.domain.digest_format import Ref, Version
from tokenbroker.domain.models import Client, Device, IssuedToken, PublicJwk, UsageRecord


class ClientDirectory(Protocol):
    """Clients and their devices."""

    def get_client_and_device(
        self, client_id: str, jkt: str
    ) -> tuple[Client | None, Device | None]:
        """Both records in ONE consistent round trip (the issuance budget counts it)."""
        ...

    def get_client(self, client_id: str) -> Client | None: ...

    def create_client(self, client: Client, record: UsageRecord) -> None:
        """Stores the client and its ledger record in ONE transaction. Raises Conflict
        if the id exists (then nothing is written)."""
        ...

    def list_clients(self) -> Iterator[Client]: ...

    def set_client_status(
        self, client_id: str, status: str, at: int, record: UsageRecord
    ) -> Client:
        """Sets the status and writes the ledger record in ONE transaction. Raises
        NotFound (then nothing is written)."""
        ...

    def set_client_scopes(
        self, client_id: str, scopes: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        """Replaces the client's scopes and writes the ledger record in ONE transaction.
        Raises NotFound (then nothing is written)."""
        ...

    def set_client_resources(
        self, client_id: str, resources: frozenset[str], at: int, record: UsageRecord
    ) -> Client:
        """RFC 8707: replaces the resources the client may ask tokens for, with the
        ledger record, in ONE transaction. Raises NotFound (then nothing is written)."""
        ...

    def set_tokens_not_before(
        self, client_id: str, not_before: int, at: int, record: UsageRecord
    ) -> Client:
        """Sets the client's tokens-not-before (the edge refuses its tokens issued
        earlier) with the ledger record in ONE transaction. Raises NotFound."""
        ...

    def enroll_device(self, device: Device, record: UsageRecord) -> None:
        """Atomically, with the ledger record: the client exists and is active, the key
        is not enrolled yet, and the client has fewer than ``max_devices`` active
        devices. Raises NotFound, Conflict or DeviceLimitReached (nothing written)."""
        ...

    def revoke_device(self, device: Device, at: int, record: UsageRecord) -> Device:
        """Atomically, with the ledger record: ``device`` (as read by the caller) is
        still active and enrolled to ``device.client_id``; it becomes revoked and frees
        its slot. Raises NotFound (unknown or already revoked; nothing written)."""
        ...

    def get_device(self, jkt: str) -> Device | None: ...

    def list_devices(self, client_id: str) -> Iterator[Device]: ...


class TokenLedger(Protocol):
    """Issued tokens and their ledger records; the write is also the token endpoint's
    proof replay guard."""

    def record_issuance(self, token: IssuedToken, record: UsageRecord) -> None:
        """ONE transaction: the token keyed by ``token.jti`` (raises ProofReplayed if the
        key exists: the jti is derived from the proof's jkt and jti) and its ledger
        ``record``. Both or neither are written."""
        ...

    def record_refusal(self, record: UsageRecord) -> bool:
        """Insert the ledger record of a refused token request unless a record with its
        id exists (the id is time-bucketed: that is the rate bound). False if it did."""
        ...


class Signer(Protocol):
    """Signs JWS signing inputs with ES256 (raw r||s) and publishes its public key."""

    def public_jwk(self) -> PublicJwk:
        """Cached in memory after the first call."""
        ...

    def sign(self, signing_input: bytes) -> bytes:
        """Returns the 64-byte raw ES256 signature."""
        ...


class UsageLedger(Protocol):
    """Usage records; the allowed-request write is also the replay guard."""

    def record_use(self, record: UsageRecord) -> None:
        """Insert ``record`` only if ``record.record_id`` is new (else ProofReplayed),
        and only if device ``record.jkt`` is active for ``record.client_id`` (else
        DeviceRevoked) and the client is active (else ClientDisabled), as seen within
        the last ``tokenbroker.domain.liveness.MAX_AGE`` seconds. At most one write;
        at most one read per (client, device) per MAX_AGE."""
        ...

    def record_denial(self, record: UsageRecord) -> None:
        """Best-effort insert of a denial of an authentic token (a second write, only on
        the deny path)."""
        ...


class PublicKeySource(Protocol):
    """Where the edge gets the token-signing public keys (kid -> key)."""

    def fetch(self) -> dict[str, Any]: ...


# ------------------------------------------------------------- tamper evidence
class LedgerReader(Protocol):
    """The ledger as the digests read it: a time range splits into independently
    readable segments (today the ``by_hour`` index's shards), each read in time order,
    so sealing and verifying stream one segment at a time in bounded memory."""

    def segments(self, start_ms: int, end_ms: int) -> Sequence[str]:
        """The segment names of [start_ms, end_ms) (a range inside one UTC hour); the
        same names for every range of one deployment."""
        ...

    def segment_records(self, segment: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """Every record of ``segment`` with ``start_ms <= time < end_ms`` as plain values
        (what :func:`~tokenbroker.domain.ledger.record_hash` hashes), in ascending time
        (records of the same millisecond in any order), paginated by the adapter."""
        ...


class DigestUpload(Protocol):
    """A streaming upload: nothing is visible until ``commit``."""

    def write(self, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class DigestStore(Protocol):
    """The digest objects, versioned (S3 with Object Lock). Versions and delete markers
    are visible: an object that was ever written is never "absent" to the sealer."""

    def versions(self, ref: Ref) -> list[Version]:
        """Every version and delete marker of ``ref``, newest first ([] if never written)."""
        ...

    def get(self, ref: Ref, version_id: str | None = None) -> bytes | None:
        """The current (or given) version's bytes; None if absent or a delete marker."""
        ...

    def chunks(self, ref: Ref, version_id: str | None = None) -> Iterator[bytes]:
        """The bytes streamed in chunks (nothing if absent)."""
        ...

    def put(self, ref: Ref, body: bytes) -> None: ...

    def put_new(self, ref: Ref, body: bytes) -> bool:
        """Write unless a current version exists; False if one did."""
        ...

    def upload(self, ref: Ref) -> DigestUpload: ...

    def parts(self, period_start_ms: int) -> list[bytes]:
        """The bodies of the period's working parts (see ``digest_format.encode_part``)."""
        ...

    def latest_sealed(self, *, before_ms: int, not_before_ms: int) -> int | None:
        """The newest period in [not_before_ms, before_ms) with any statement version,
        deleted ones included."""
        ...


class DigestSigner(Protocol):
    """Signs statements (the digest function) or only verifies them (auditors)."""

    key_id: str
    algorithm: str

    def sign(self, message: bytes) -> bytes: ...
    def verify(self, message: bytes, signature: bytes) -> bool: ...
    def names(self) -> frozenset[str]:
        """Every spelling of this key a statement's ``key_id`` may use (id, ARN)."""
        ...


class DigestDispatcher(Protocol):
    """Hands segments of an hour's due periods to another sealing invocation."""

    def dispatch(self, periods: Sequence[int], segments: Sequence[str]) -> None: ...


# ---- the ledger's read side and the aggregates (audit CLI, stream function) ----------


class AggregatesStore(Protocol):
    """Where a batch's pages are kept (the DynamoDB adapter; a fake in tests)."""

    def write(self, page: Page) -> bool:
        """Keep ``page`` in place of any page of the same hour, shard and name; False if
        that page (same ``writer``) was kept before. Raises TemporarilyUnavailable if the
        store fails (the retried batch writes the page again)."""
        ...


class AggregateSource(Protocol):
    """Per principal counters kept from the ledger's stream (adapter:
    ``adapters.aggregates.AggregatesReader``). Ranges widen to whole UTC hours."""

    def summaries(
        self, since_ms: int, until_ms: int, principal: str | None = None
    ) -> list[PrincipalSummary]:
        """One summary per principal with records in the range, sorted by principal."""
        ...

    def hourly(self, principal: str, since_ms: int, until_ms: int) -> list[PrincipalSummary]:
        """The principal's hours with records in the range, oldest first."""
        ...
