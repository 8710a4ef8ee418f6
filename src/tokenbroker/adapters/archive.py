"""The usage ledger's cold tier: gzip JSONL objects in the digest bucket, one per stream
batch and UTC hour, under ``usage/hour=YYYY-MM-DDTHH/`` (the Glue table's partition
projection reads the same layout, so Athena needs no crawler).

**What is stored.** Each line is one stream ``NewImage`` as plain values, exactly what
the stream gave (no attribute is renamed or dropped here; this module knows no item
attribute name except the digests' ``at``/``id`` of :mod:`tokenbroker.domain.ledger`),
serialised like :func:`~tokenbroker.domain.ledger.record_hash` does (numbers as
integers, or as strings when not integral; sets as sorted lists), so hashing a line read
back gives the hash of the item in the table. Lines are sorted by ``(at, id)``.

**Deterministic names.** An object is named after the stream sequence number and event
id of the first record of its hour in the batch. Lambda delivers a failed batch again
from the same first record, so a retry rewrites the same names with the same bytes (a
new, identical version) or, if the retry carries more records of that hour, a superset;
never a second object holding the same records.

**Reading.** :class:`ArchiveReader` implements the digests' ``LedgerReader`` port
(segments = groups of the hour's objects, merged in (at, id) order; an object is
streamed through gzip line by line). A missing, deleted (delete marker) or unreadable
object and every S3 failure raise :class:`ArchiveUnavailable` naming the hour: an
auditor never gets a silently shorter answer.

**What an attacker with write access to the bucket can do (Object Lock, COMPLIANCE).**
They cannot delete or overwrite a locked version, shorten its retention, or disable
the lock (not even the root user). They *can* (1) write a new version of an object (a
doctored copy), (2) hide an object behind a delete marker, (3) add objects. The readers
read the *current* version, which is what Athena and ``audit usage`` show; so ``audit
verify`` compares exactly that with the sealed manifests: a doctored version shows as
``tampered`` (the altered record ids named), a delete marker fails the read of the
hour (naming the object; the locked original version is still there to recover), an
added object shows as ``late_record``. Before a period is sealed (its grace time), a
writer can also put records the sealer then seals: the digest attests what the archive
held at sealing time, and the hot-tier check of ``verify`` (BatchGetItem of every
sealed record while it is in DynamoDB) catches records the table never had.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from tokenbroker.adapters.aws import error_code
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import ID_ATTRIBUTE, SORT_KEY, hour_of
from tokenbroker.domain.units import HOUR_MS

PREFIX: Final = "usage/"
SUFFIX: Final = ".jsonl.gz"
_CHECKSUM: Final = "SHA256"  # Object Lock puts need a checksum (Content-MD5 or this)
#: one gzip member per object, level 6: ~10x on ledger lines; mtime 0 keeps bytes stable
_LEVEL: Final = 6
#: object groups per hour (the sealer's segments); fixed: a deployment's segment names
GROUPS: Final = 8192


class ArchiveUnavailable(TemporarilyUnavailable):
    """The archive of an hour cannot be read (missing, deleted, unreadable, or S3 down):
    nothing is returned for it rather than a shorter answer."""


class ArchiveWriteFailed(TemporarilyUnavailable):
    """A batch object could not be written: the batch fails and Lambda delivers it again."""


@dataclass(frozen=True)
class StreamImage:
    """One stream record to archive: its coordinates and its NewImage (plain values)."""

    sequence_number: str
    event_id: str
    image: Mapping[str, Any]


@dataclass(frozen=True)
class ArchiveResult:
    keys: list[str]  # the objects written
    archived: int  # records written
    skipped: list[int]  # batch positions that are not ledger records


def hour_prefix(hour: str, prefix: str = PREFIX) -> str:
    return f"{prefix}hour={hour}/"


def _plain(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "as_integer_ratio"):
        return int(value) if value == int(value) else str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def encode_line(image: Mapping[str, Any]) -> bytes:
    """One archive line (canonical JSON, as :func:`record_hash` serialises)."""
    text = json.dumps(
        image, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )
    return text.encode("utf-8") + b"\n"


def order_key(image: Mapping[str, Any]) -> tuple[int, str]:
    return int(image[SORT_KEY]), str(image[ID_ATTRIBUTE])


def encode_object(images: Iterable[Mapping[str, Any]]) -> bytes:
    """The gzip JSONL body of one object: lines sorted by (at, id), fixed gzip header."""
    lines = b"".join(encode_line(i) for i in sorted(images, key=order_key))
    return gzip.compress(lines, compresslevel=_LEVEL, mtime=0)


def batch_name(first: StreamImage) -> str:
    """The object name of an hour's records of a batch, from its first record there."""
    tag = hashlib.sha256(first.event_id.encode("utf-8")).hexdigest()[:16]
    return f"{first.sequence_number}-{tag}"


def is_archivable(image: Mapping[str, Any]) -> bool:
    """A ledger record has an integer time and an id (anything else is not one)."""
    at, record_id = image.get(SORT_KEY), image.get(ID_ATTRIBUTE)
    if not isinstance(record_id, str) or not record_id:
        return False
    if isinstance(at, bool) or not hasattr(at, "as_integer_ratio"):
        return False
    return bool(at == int(at) and at >= 0)  # type: ignore[arg-type]


def plan_batch(records: Sequence[StreamImage]) -> dict[str, tuple[str, list[Mapping[str, Any]]]]:
    """Object key -> (hour, images) for a batch (records in stream order)."""
    groups: dict[str, tuple[str, list[Mapping[str, Any]]]] = {}
    names: dict[str, str] = {}
    for record in records:
        hour = hour_of(int(record.image[SORT_KEY]))
        if hour not in names:
            names[hour] = f"{hour_prefix(hour)}{batch_name(record)}{SUFFIX}"
            groups[names[hour]] = (hour, [])
        groups[names[hour]][1].append(record.image)
    return groups


class PageIndex(Protocol):
    """Where the writer puts each object's index page (``archive_index.HotIndexWriter``)."""

    def write_page(self, hour: str, name: str, images: Sequence[Mapping[str, Any]]) -> int: ...


class ArchiveWriter:
    """Writes a stream batch as one object per UTC hour it touches."""

    def __init__(self, s3: Any, *, bucket: str, index: PageIndex | None = None) -> None:
        self._s3 = s3
        self.bucket = bucket
        #: the hot tier's time index (adapters/archive_index.py): one page per object
        self._index = index

    def archive(self, records: Sequence[StreamImage]) -> ArchiveResult:
        """Archive a batch: every ledger record is written; positions of stream records
        that are not ledger records (no integer ``at`` or no ``id``) are returned."""
        skipped = [n for n, r in enumerate(records) if not is_archivable(r.image)]
        wanted = [r for r in records if is_archivable(r.image)]
        return ArchiveResult(self.write_batch(wanted), len(wanted), skipped)

    def write_batch(self, records: Sequence[StreamImage]) -> list[str]:
        """Put every hour's object (records must be archivable); the keys written.
        Raises ArchiveWriteFailed on the first failed put (the batch is retried)."""
        written = []
        for key, (hour, images) in plan_batch(records).items():
            body = encode_object(images)
            try:
                self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType="application/x-ndjson",
                    ChecksumAlgorithm=_CHECKSUM,
                )
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
                raise ArchiveWriteFailed(
                    f"usage archive for hour {hour}: s3:PutObject {key} failed ({code})"
                ) from exc
            if self._index is not None:
                name = key[len(hour_prefix(hour)) : -len(SUFFIX)]
                try:
                    self._index.write_page(hour, name, images)
                except TemporarilyUnavailable as exc:
                    raise ArchiveWriteFailed(
                        f"usage index for hour {hour}: page {name} not written ({exc})"
                    ) from exc
            written.append(key)
        return written


class ArchiveReader:
    """The archive as the digests and the auditors read it (``LedgerReader``)."""

    def __init__(self, s3: Any, *, bucket: str, prefix: str = PREFIX, groups: int = GROUPS) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._prefix = prefix
        self._group_count = groups
        #: the hour last listed by ``segments``: its groups' object names
        self._groups: tuple[str, dict[str, list[str]]] | None = None

    # ---- LedgerReader: a segment is a group of the hour's objects ------------------
    def segments(self, start_ms: int, end_ms: int) -> list[str]:
        """The non-empty object groups of the hour of [start_ms, end_ms) (inside one UTC
        hour), sorted. An object belongs to group ``sha256(name) % groups``: a few
        objects per segment at any rate (at 100,000 requests/s an hour is ~144,000
        objects, ~18 per group), so a sealed hour lists thousands of segments, not
        hundreds of thousands. Lists the hour (remembered for ``segment_records``)."""
        hour = _one_hour(start_ms, end_ms)
        groups: dict[str, list[str]] = {}
        for name in self.objects(start_ms, end_ms):
            groups.setdefault(self.group_of(name), []).append(name)
        self._groups = (hour, groups)
        return sorted(groups)

    def group_of(self, name: str) -> str:
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        return f"{int.from_bytes(digest[:4], 'big') % self._group_count:04d}"

    def segment_records(self, segment: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """A group's records of [start_ms, end_ms) in (at, id) order: its objects merged
        (each held as compressed bytes, lines parsed as the merge reaches them; memory:
        the group's objects, each at most one stream batch)."""
        hour = _one_hour(start_ms, end_ms)
        if self._groups is None or self._groups[0] != hour:
            self.segments(start_ms, end_ms)
        assert self._groups is not None
        names = self._groups[1].get(segment, [])
        if len(names) == 1:
            yield from self.object_records(names[0], start_ms, end_ms)
            return
        streams = [self._buffered(name, hour, start_ms, end_ms) for name in names]
        yield from heapq.merge(*streams, key=order_key)

    def _buffered(
        self, name: str, hour: str, start_ms: int, end_ms: int
    ) -> Iterator[dict[str, Any]]:
        key = f"{hour_prefix(hour, self._prefix)}{name}{SUFFIX}"
        response = self._call(
            hour, "s3:GetObject", self._s3.get_object, {"Bucket": self.bucket, "Key": key}
        )
        try:
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: reading {key} failed ({code})"
            ) from exc
        finally:
            response["Body"].close()
        return self._lines(io.BytesIO(data), hour, key, start_ms, end_ms)

    # ---- one object ----------------------------------------------------------------
    def objects(self, start_ms: int, end_ms: int) -> list[str]:
        """The object names of the hour of [start_ms, end_ms) (inside one UTC hour),
        sorted; ArchiveUnavailable if an object's current version is a delete marker."""
        hour = _one_hour(start_ms, end_ms)
        prefix = hour_prefix(hour, self._prefix)
        names: list[str] = []
        deleted: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._call(hour, "s3:ListObjectVersions", self._s3.list_object_versions, kwargs)
            for version in page.get("Versions", []):
                if version.get("IsLatest") and version["Key"].endswith(SUFFIX):
                    names.append(version["Key"][len(prefix) : -len(SUFFIX)])
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest") and marker["Key"].endswith(SUFFIX):
                    deleted.append(marker["Key"])
            if not page.get("IsTruncated"):
                break
            kwargs["KeyMarker"] = page.get("NextKeyMarker")
            kwargs["VersionIdMarker"] = page.get("NextVersionIdMarker")
        if deleted:
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: {deleted[0]} is deleted (a delete marker; "
                f"{len(deleted)} object(s)); its locked versions are still in the bucket"
            )
        return sorted(set(names))

    def object_records(self, name: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """One object's records of [start_ms, end_ms), in (at, id) order, streamed."""
        hour = _one_hour(start_ms, end_ms)
        key = f"{hour_prefix(hour, self._prefix)}{name}{SUFFIX}"
        response = self._call(
            hour, "s3:GetObject", self._s3.get_object, {"Bucket": self.bucket, "Key": key}
        )
        yield from self._lines(response["Body"], hour, key, start_ms, end_ms)

    def _lines(
        self, body: Any, hour: str, key: str, start_ms: int, end_ms: int
    ) -> Iterator[dict[str, Any]]:
        last: tuple[int, str] | None = None
        try:
            with gzip.GzipFile(fileobj=body, mode="rb") as unzipped:
                for number, raw in enumerate(unzipped, 1):
                    try:
                        image = json.loads(raw)
                        at_id = order_key(image)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ArchiveUnavailable(
                            f"usage archive for hour {hour}: {key} line {number} is not a record"
                        ) from exc
                    if last is not None and at_id < last:
                        raise ArchiveUnavailable(
                            f"usage archive for hour {hour}: {key} is out of (at, id) order"
                        )
                    last = at_id
                    if start_ms <= at_id[0] < end_ms:
                        yield image
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: {key} is not readable gzip ({exc})"
            ) from exc
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: reading {key} failed ({code})"
            ) from exc
        finally:
            body.close()

    # ---- audit -------------------------------------------------------------------
    def records(self, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """Every archived record of [start_ms, end_ms), oldest hour first; inside an
        hour object by object (each in (at, id) order), not merged."""
        for hour_start in _hour_starts(start_ms, end_ms):
            lo, hi = max(start_ms, hour_start), min(end_ms, hour_start + HOUR_MS)
            for name in self.objects(lo, hi):
                yield from self.object_records(name, lo, hi)

    def hour_records(self, hour_start: int, lo: int, hi: int) -> list[dict[str, Any]]:
        """One hour's records of [lo, hi) sorted by (at, id) (memory: that hour)."""
        found = [
            image for name in self.objects(lo, hi) for image in self.object_records(name, lo, hi)
        ]
        found.sort(key=order_key)
        return found

    def _call(self, hour: str, what: str, operation: Any, kwargs: dict[str, Any]) -> Any:
        try:
            return operation(**kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NoSuchVersion"):
                raise ArchiveUnavailable(
                    f"usage archive for hour {hour}: {kwargs.get('Key')} is missing"
                ) from exc
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: {what} failed ({code})"
            ) from exc
        except BotoCoreError as exc:
            raise ArchiveUnavailable(
                f"usage archive for hour {hour}: {what} failed ({type(exc).__name__})"
            ) from exc


def _one_hour(start_ms: int, end_ms: int) -> str:
    if end_ms <= start_ms or hour_of(start_ms) != hour_of(end_ms - 1):
        raise ValueError("a segment range must lie inside one UTC hour")
    return hour_of(start_ms)


def _hour_starts(start_ms: int, end_ms: int) -> range:
    return range(start_ms - start_ms % HOUR_MS, end_ms, HOUR_MS)
