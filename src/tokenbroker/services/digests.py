"""Tamper evidence for the usage ledger: signed, chained digests of closed periods, in
the spirit of CloudTrail digest files.

Periods are ``[start, start + period)`` aligned to the epoch. A period is *due* once
``now >= end + grace`` (late writes land first); the scheduled function seals every due
period after the newest sealed one, in order. Sealing a period reads all its records from
the ``by_hour`` index and stores, apart from the records:

* a **manifest**: JSON Lines sorted by id, one ``{"id", "sha256", "ttl"}`` per record
  (``sha256`` = :func:`~tokenbroker.domain.ledger.record_hash` of the whole item; ``ttl``
  only if the record has one) -- empty for an empty period, so "everything deleted" shows;
* a **statement** ``{"version", "period_start", "period_end", "record_count",
  "manifest_sha256", "previous_digest_sha256", "sealed_at", "key_id"}``, signed with KMS
  (ECDSA_SHA_256, MessageType=RAW) over its canonical JSON (sorted keys, no whitespace,
  UTF-8), and stored as ``{"statement", "signature" (base64 DER), "signing_algorithm"}``.
  ``previous_digest_sha256`` is the SHA-256 of the previous period's stored digest file
  (null if that period has none), so deleting or editing a digest breaks the next link.

The statement is written last and only if absent: sealing is idempotent. The write path
is untouched (digests never run on the request path).

:meth:`DigestService.verify` re-reads a range and reports each period as intact or
exactly what differs (altered, deleted, added record ids; expired ones apart).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.ledger import hour_of, record_hash
from tokenbroker.domain.pairs import unique_mapping
from tokenbroker.domain.units import DAY_MS, DAY_SECONDS

if TYPE_CHECKING:
    from tokenbroker.settings import Settings

VERSION = 1
#: a period is sealed at most this many at a time (the function runs every 15 minutes)
MAX_PERIODS_PER_RUN = 48
#: with no digest in this window, sealing (re)starts at the period containing now - 1 day
HEAD_LOOKBACK_MS = 7 * DAY_MS
START_BACK_MS = DAY_MS

Status = Literal[
    "intact", "tampered", "unsealed", "missing_digest", "bad_signature", "broken_chain"
]


# ------------------------------------------------------------------------ ports
class DigestStore(Protocol):
    def get_statement(self, period_start_ms: int) -> bytes | None: ...
    def get_manifest(self, period_start_ms: int) -> bytes | None: ...
    def has_statement(self, period_start_ms: int) -> bool: ...
    def put_manifest(self, period_start_ms: int, body: bytes) -> None: ...
    def put_statement(self, period_start_ms: int, body: bytes) -> bool: ...
    def latest_statement(self, *, before_ms: int, not_before_ms: int) -> int | None: ...


class LedgerReader(Protocol):
    def records(self, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]: ...


class DigestSigner(Protocol):
    key_id: str
    algorithm: str

    def sign(self, message: bytes) -> bytes: ...
    def verify(self, message: bytes, signature: bytes) -> bool: ...


# ----------------------------------------------------------------- pure pieces
def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that are signed and hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    sha256: str
    ttl: int | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.id, "sha256": self.sha256}
        if self.ttl is not None:
            entry["ttl"] = self.ttl
        return entry


def manifest_entry(item: dict[str, Any]) -> ManifestEntry:
    """The manifest line of one ledger record (plain values, as read from the index)."""
    ttl = item.get("ttl")
    return ManifestEntry(
        id=str(item["id"]),
        sha256=record_hash(item),
        ttl=int(ttl) if ttl is not None else None,
    )


def encode_manifest(entries: dict[str, ManifestEntry]) -> bytes:
    return b"".join(canonical_json(entries[i].as_json()) + b"\n" for i in sorted(entries))


class DigestFormatError(ValueError):
    """A digest or manifest file that is not what a seal writes."""


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return unique_mapping(pairs, lambda key: DigestFormatError(f"duplicate key {key!r}"))


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_strict_object)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DigestFormatError(str(exc)) from exc


def decode_manifest(body: bytes) -> dict[str, ManifestEntry]:
    entries: dict[str, ManifestEntry] = {}
    for line in body.splitlines():
        value = _loads(line)
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            raise DigestFormatError("manifest line without an id")
        ttl = value.get("ttl")
        if not isinstance(value.get("sha256"), str) or not (ttl is None or type(ttl) is int):
            raise DigestFormatError("malformed manifest line")
        if value["id"] in entries:
            raise DigestFormatError(f"duplicate id {value['id']!r} in manifest")
        entries[value["id"]] = ManifestEntry(value["id"], value["sha256"], ttl)
    return entries


def encode_digest(statement: dict[str, Any], signature: bytes, algorithm: str) -> bytes:
    envelope = {
        "statement": statement,
        "signature": base64.b64encode(signature).decode("ascii"),
        "signing_algorithm": algorithm,
    }
    return json.dumps(envelope, sort_keys=True, indent=2).encode("utf-8") + b"\n"


def decode_digest(body: bytes) -> tuple[dict[str, Any], bytes]:
    """(statement, DER signature) of a stored digest file."""
    envelope = _loads(body)
    if not isinstance(envelope, dict) or not isinstance(envelope.get("statement"), dict):
        raise DigestFormatError("no statement")
    try:
        signature = base64.b64decode(str(envelope.get("signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DigestFormatError("signature is not base64") from exc
    return envelope["statement"], signature


# --------------------------------------------------------------------- reports
@dataclass(frozen=True)
class PeriodReport:
    """One period's verdict. ``record_count`` is the sealed count when the period has a
    readable digest, else the number of records the table holds for it now. The id
    lists are sorted; ``expired`` records (sealed, gone, ``ttl`` passed) are not
    tampering. ``detail`` says what failed, in words."""

    period_start: int  # ms
    period_end: int  # ms, exclusive
    status: Status
    record_count: int
    altered: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("intact", "unsealed")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------- service
class DigestService:
    def __init__(
        self,
        *,
        store: DigestStore,
        ledger: LedgerReader,
        signer: DigestSigner,
        period_seconds: int = 3600,
        grace_seconds: int = 900,
        clock: Clock = time.time,
        max_periods_per_run: int = MAX_PERIODS_PER_RUN,
        #: how long past ``end + grace`` a missing digest still counts as "unsealed"
        #: (the function runs every 15 minutes and may be retried)
        pending_seconds: int = 1800,
    ) -> None:
        if period_seconds <= 0 or DAY_SECONDS % period_seconds:
            raise ConfigurationError("DIGEST_PERIOD_SECONDS must divide a day")
        if grace_seconds < 0:
            raise ConfigurationError("DIGEST_GRACE_SECONDS must not be negative")
        self._store = store
        self._ledger = ledger
        self._signer = signer
        self.period_ms = period_seconds * 1000
        self.grace_ms = grace_seconds * 1000
        self._clock = clock
        self._max_periods = max_periods_per_run
        self._pending_ms = pending_seconds * 1000

    # ---- time -----------------------------------------------------------------------
    def _now(self, now_ms: int | None) -> int:
        return int(self._clock() * 1000) if now_ms is None else now_ms

    def period_of(self, at_ms: int) -> int:
        """The start of the period containing ``at_ms``."""
        return at_ms - at_ms % self.period_ms

    def is_due(self, period_start: int, now_ms: int) -> bool:
        return now_ms >= period_start + self.period_ms + self.grace_ms

    def last_due(self, now_ms: int) -> int:
        """The start of the newest period that may be sealed at ``now_ms``."""
        return self.period_of(now_ms - self.grace_ms) - self.period_ms

    # ---- sealing --------------------------------------------------------------------
    def seal_due(
        self, now_ms: int | None = None, *, keep_going: Callable[[], bool] | None = None
    ) -> list[int]:
        """Seal, oldest first, every due period after the newest sealed one (at most
        ``max_periods_per_run``; ``keep_going`` is asked before each, e.g. for the
        function's remaining time). Returns the starts of the periods sealed now."""
        now = self._now(now_ms)
        last = self.last_due(now)
        head = self._store.latest_statement(
            before_ms=last + self.period_ms, not_before_ms=now - HEAD_LOOKBACK_MS
        )
        if head is None:
            # a first run seals at most one run's worth back (a day at most)
            back = min(START_BACK_MS, self._max_periods * self.period_ms)
            start = self.period_of(now - back)
            previous = self._previous_hash(start)
        else:
            start = head + self.period_ms
            previous = self._digest_hash(head)
        due = list(range(start, last + 1, self.period_ms)[: self._max_periods])
        sealed: list[int] = []
        for group in _by_hour(due):  # one read of the ledger per hour
            entries: dict[int, dict[str, ManifestEntry]] | None = None
            for period in group:
                if keep_going is not None and not keep_going():
                    return sealed
                if entries is None:
                    entries = self._entries(group[0], group[-1] + self.period_ms)
                written, previous = self._seal(period, previous, now, entries.get(period, {}))
                if written:
                    sealed.append(period)
        return sealed

    def seal(self, period_start: int, *, now_ms: int | None = None) -> bool:
        """Seal one due period; False if it already was (nothing is written then).

        Periods are chained to the previous period's digest as it is now: seal in
        order (``seal_due`` does), or a later seal of an earlier period breaks a link.
        """
        now = self._now(now_ms)
        if period_start % self.period_ms:
            raise ValueError("period_start is not the start of a period")
        if not self.is_due(period_start, now):
            raise ValueError("the period has not closed (end + grace) yet")
        if self._store.has_statement(period_start):
            return False
        entries = self._entries(period_start, period_start + self.period_ms)
        previous = self._previous_hash(period_start)
        written, _ = self._seal(period_start, previous, now, entries.get(period_start, {}))
        return written

    def _previous_hash(self, period_start: int) -> str | None:
        return self._digest_hash(period_start - self.period_ms)

    def _digest_hash(self, period_start: int) -> str | None:
        body = self._store.get_statement(period_start)
        return None if body is None else sha256_hex(body)

    def _entries(self, start: int, end: int) -> dict[int, dict[str, ManifestEntry]]:
        """period start -> record id -> manifest entry, for the records the table holds
        now with ``start <= at < end``."""
        periods: dict[int, dict[str, ManifestEntry]] = {}
        for item in self._ledger.records(start, end):
            entry = manifest_entry(item)
            periods.setdefault(self.period_of(int(item["at"])), {})[entry.id] = entry
        return periods

    def _seal(
        self, start: int, previous: str | None, now: int, entries: dict[str, ManifestEntry]
    ) -> tuple[bool, str | None]:
        """Seal ``start`` with ``entries`` (its records); (written, hash of its stored
        digest file, for the next link)."""
        manifest = encode_manifest(entries)
        statement = {
            "version": VERSION,
            "period_start": start,
            "period_end": start + self.period_ms,
            "record_count": len(entries),
            "manifest_sha256": sha256_hex(manifest),
            "previous_digest_sha256": previous,
            "sealed_at": now,
            "key_id": self._signer.key_id,
        }
        signature = self._signer.sign(canonical_json(statement))
        body = encode_digest(statement, signature, self._signer.algorithm)
        self._store.put_manifest(start, manifest)
        if self._store.put_statement(start, body):
            return True, sha256_hex(body)
        # sealed concurrently: chain the next period to what is stored
        return False, self._digest_hash(start)

    # ---- verification ---------------------------------------------------------------
    def verify(
        self, since_ms: int, until_ms: int, *, now_ms: int | None = None
    ) -> list[PeriodReport]:
        """One report per period overlapping [since_ms, until_ms), oldest first."""
        return list(self.iter_verify(since_ms, until_ms, now_ms=now_ms))

    def iter_verify(
        self, since_ms: int, until_ms: int, *, now_ms: int | None = None
    ) -> Iterator[PeriodReport]:
        """:meth:`verify`, one period at a time (records are read an hour at a time)."""
        if until_ms <= since_ms:
            raise ValueError("the range is empty (until must be after since)")
        now = self._now(now_ms)
        starts = list(range(self.period_of(since_ms), until_ms, self.period_ms))
        previous = self._store.get_statement(starts[0] - self.period_ms)
        for group in _by_hour(starts):
            current = self._entries(group[0], group[-1] + self.period_ms)
            for start in group:
                body = self._store.get_statement(start)
                yield self._check(start, body, previous, current.get(start, {}), now)
                previous = body

    def _check(
        self,
        start: int,
        body: bytes | None,
        previous: bytes | None,
        current: dict[str, ManifestEntry],
        now: int,
    ) -> PeriodReport:
        end = start + self.period_ms

        def report(status: Status, count: int, detail: str, **ids: list[str]) -> PeriodReport:
            return PeriodReport(start, end, status, count, detail=detail, **ids)

        if body is None:
            if now < end + self.grace_ms + self._pending_ms:
                return report("unsealed", len(current), "the period is not sealed yet")
            return report("missing_digest", len(current), "no digest for a closed period")
        try:
            statement, signature = decode_digest(body)
        except DigestFormatError as exc:
            return report("bad_signature", len(current), f"unreadable digest: {exc}")
        if statement.get("key_id") != self._signer.key_id:
            return report("bad_signature", len(current), "digest signed by another key")
        if not self._signer.verify(canonical_json(statement), signature):
            return report("bad_signature", len(current), "signature does not verify")
        # authentic from here on
        count = statement.get("record_count")
        if (
            statement.get("version") != VERSION
            or statement.get("period_start") != start
            or statement.get("period_end") != end
            or type(count) is not int
        ):
            return report("bad_signature", len(current), "a valid digest of another period")
        manifest_body = self._store.get_manifest(start)
        if manifest_body is None:
            return report("bad_signature", count, "the manifest is missing")
        if sha256_hex(manifest_body) != statement.get("manifest_sha256"):
            return report("bad_signature", count, "the manifest does not match its digest")
        try:
            manifest = decode_manifest(manifest_body)
        except DigestFormatError as exc:  # signed, so only a sealing bug gets here
            return report("bad_signature", count, f"unreadable manifest: {exc}")
        if len(manifest) != count:
            return report("bad_signature", count, "manifest and record count disagree")

        now_s = now // 1000
        altered = sorted(
            i for i, e in manifest.items() if i in current and current[i].sha256 != e.sha256
        )
        gone = [e for i, e in manifest.items() if i not in current]
        expired = sorted(e.id for e in gone if e.ttl is not None and e.ttl < now_s)
        deleted = sorted(e.id for e in gone if e.ttl is None or e.ttl >= now_s)
        added = sorted(i for i in current if i not in manifest)
        ids = {"altered": altered, "deleted": deleted, "added": added, "expired": expired}

        expected = None if previous is None else sha256_hex(previous)
        if statement.get("previous_digest_sha256") != expected:
            what = (
                "the previous period's digest is missing"
                if previous is None
                else "the previous period's digest was changed or replaced"
            )
            return report("broken_chain", count, what, **ids)
        if altered or deleted or added:
            parts = [f"{len(v)} {k}" for k, v in ids.items() if v and k != "expired"]
            return report("tampered", count, ", ".join(parts), **ids)
        return report("intact", count, "", **ids)


def _by_hour(starts: list[int]) -> Iterator[list[int]]:
    """Consecutive period starts grouped by the UTC hour they start in."""
    group: list[int] = []
    for start in starts:
        if group and hour_of(start) != hour_of(group[0]):
            yield group
            group = []
        group.append(start)
    if group:
        yield group


# --------------------------------------------------------------------- factory
def from_settings(
    settings: Settings, client_factory: Callable[[str], Any], *, clock: Clock = time.time
) -> DigestService:
    """The service for a deployment (``client_factory``: service name -> boto3 client)."""
    from tokenbroker.adapters.digest_keys import KmsDigestKey
    from tokenbroker.adapters.digest_store import S3DigestStore
    from tokenbroker.adapters.ledger_scan import LedgerScanner

    settings.require("usage_table", "digest_bucket", "digest_key_id")
    return DigestService(
        store=S3DigestStore(client_factory("s3"), bucket=settings.digest_bucket),
        ledger=LedgerScanner(client_factory("dynamodb"), table=settings.usage_table),
        signer=KmsDigestKey(client_factory("kms"), settings.digest_key_id),
        period_seconds=settings.digest_period_seconds,
        grace_seconds=settings.digest_grace_seconds,
        clock=clock,
    )
