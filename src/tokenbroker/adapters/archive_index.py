"""The hot tier's time index, built by the archive stream function off the request path.

The usage table keeps no GSI (one write unit per request). Instead, for every stream
batch and UTC hour the archive function writes one **index page**: the compact entries
``(at, id, short filter keys)`` of that hour's records in the batch. Auditors read the
pages of the hours they need and ``BatchGetItem`` the records from the usage table.

**Layout (in AggregatesTable, which the audit reader already reads).**

* Directory: pk ``IX#<YYYY-MM>`` (the hour's month), sk ``<hour>#<page name>``. One
  item per batch and hour. A small page (at most ``INLINE_BYTES`` of entries) is held in
  the directory item itself; a larger one holds only a pointer (its shard ``k``).
* Large pages: pk ``IXP#<hour>#<k>`` (``k = sha256(name) % PAGE_SHARDS``), sk the page
  name. At 100,000 requests/s (~40 batches/s of 2,500 records, ~40 B per entry) an
  hour's page writes (~4,400 WU/s) spread over ``PAGE_SHARDS`` (64) partitions (~70 WU/s
  each) and the month's directory partition takes ~40 WU/s.

A page name is the archive object's deterministic name (first sequence number and event
id of the hour's records in the batch), so a retried batch rewrites the same page with
the same or more entries: idempotent, never an entry twice. Items expire (TTL) with the
hot window plus a day, after the records they point to.

**Entries.** Per record: ``at`` (8 bytes), four 4-byte filter keys (truncated SHA-256 of
principal, device thumbprint, token id, model: only ids whose keys match are fetched;
the exact comparison is made on the fetched record, so a collision costs a read, never a
wrong answer) and the id; zlib-compressed into one binary attribute.

**Lag.** Records the stream has not delivered yet (seconds; the batching window) are not
in the index: ``audit usage`` does not see them until the archive function has run.

Every DynamoDB failure, and a record the index names but the usage table does not hold,
raises :class:`~tokenbroker.domain.errors.TemporarilyUnavailable` naming the hour: an
auditor never gets a silently shorter answer.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.adapters.ledger_items import ATTRIBUTES, from_item
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import ID_ATTRIBUTE, SORT_KEY, hour_of
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.units import DAY_SECONDS, HOUR_MS

#: the record fields an index entry carries a short key of (UsageRecord names)
KEYED: Final = ("principal", "jkt", "token_jti", "resource")
PAGE_SHARDS: Final = 64
#: pages up to this size (compressed entries) live in their directory item
INLINE_BYTES: Final = 900
#: entries per page item (~40 B each compressed: well under DynamoDB's 400 KB)
PAGE_ENTRIES: Final = 5000
#: BatchGetItem takes at most 100 keys; rounds for unprocessed keys, with backoff
BATCH_KEYS: Final = 100
ROUNDS: Final = 5
_HEAD = struct.Struct(">Q4s4s4s4sB")
# attribute names of the index items (not usage items)
_PK, _SK, _ENTRIES, _SHARD, _TTL = "pk", "sk", "e", "k", "ttl"


@dataclass(frozen=True, order=True)
class Entry:
    at: int
    id: str
    keys: tuple[bytes, ...] = ()


def short_key(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()[:4]


def encode_entries(entries: Iterable[Entry]) -> bytes:
    out = bytearray()
    for e in entries:
        raw = e.id.encode("utf-8")
        out += _HEAD.pack(e.at, *e.keys, len(raw)) + raw
    return zlib.compress(bytes(out), 6)


def decode_entries(blob: bytes) -> list[Entry]:
    data, entries, pos = zlib.decompress(blob), [], 0
    while pos < len(data):
        at, k1, k2, k3, k4, size = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        entries.append(Entry(at, data[pos : pos + size].decode("utf-8"), (k1, k2, k3, k4)))
        pos += size
    return entries


def entry_of(image: Mapping[str, Any]) -> Entry:
    """The index entry of a stream image (plain values)."""
    keys = tuple(short_key(str(image.get(ATTRIBUTES[f], "") or "")) for f in KEYED)
    record_id = str(image[ID_ATTRIBUTE])
    if len(record_id.encode("utf-8")) > 255:
        raise ValueError("a record id longer than 255 bytes cannot be indexed")
    return Entry(int(image[SORT_KEY]), record_id, keys)


def directory_key(hour: str) -> str:
    return f"IX#{hour[:7]}"


def page_key(hour: str, name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return f"IXP#{hour}#{int.from_bytes(digest[:4], 'big') % PAGE_SHARDS:02d}"


class HotIndexWriter:
    """Writes the index pages of a batch (called by ArchiveWriter per hour object)."""

    def __init__(self, dynamodb: Any, *, table: str, hot_window_days: int) -> None:
        self._ddb = dynamodb
        self._table = table
        self._keep_s = (hot_window_days + 1) * DAY_SECONDS

    def write_page(self, hour: str, name: str, images: Sequence[Mapping[str, Any]]) -> int:
        """Write one hour's page of a batch; the number of items put."""
        entries = sorted(entry_of(i) for i in images)
        ttl = {"N": str(max(e.at for e in entries) // 1000 + self._keep_s)}
        parts = [entries[n : n + PAGE_ENTRIES] for n in range(0, len(entries), PAGE_ENTRIES)]
        items = []
        for number, part in enumerate(parts):
            part_name = name if len(parts) == 1 else f"{name}-{number:03d}"
            blob = encode_entries(part)
            item: dict[str, Any] = {
                _PK: {"S": directory_key(hour)},
                _SK: {"S": f"{hour}#{part_name}"},
                _TTL: ttl,
            }
            if len(blob) <= INLINE_BYTES:
                item[_ENTRIES] = {"B": blob}
            else:
                shard = page_key(hour, part_name)
                item[_SHARD] = {"S": shard}
                items.append(
                    {_PK: {"S": shard}, _SK: {"S": part_name}, _ENTRIES: {"B": blob}, _TTL: ttl}
                )
            items.append(item)
        # the directory item last: a reader never meets a pointer to a page not yet put
        for item in items:
            with failing_closed("dynamodb:PutItem"):
                self._ddb.put_item(TableName=self._table, Item=item)
        return len(items)


def _matches(entry: Entry, wanted: Mapping[int, bytes]) -> bool:
    return all(entry.keys[n] == key for n, key in wanted.items())


class HotIndex:
    """Reads the index (``hours``) and the records it names (``records``)."""

    def __init__(
        self,
        dynamodb: Any,
        *,
        table: str,
        usage_table: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._ddb = dynamodb
        self._table = table
        self._usage = usage_table
        self._sleep = sleep

    # ---- the index -----------------------------------------------------------------
    def hours(
        self,
        since_ms: int,
        until_ms: int,
        *,
        newest_first: bool,
        equals: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[str, list[Entry]]]:
        """Per hour of [since_ms, until_ms) that has pages, in order: its entries in the
        range (and, with ``equals``, whose short keys match), sorted by (at, id) in the
        direction asked. Hours without records cost nothing: one directory Query per
        month touched (plus its 1 MB continuation pages) and one read per large page."""
        if since_ms >= until_ms:
            return
        given = equals or {}
        wanted = {n: short_key(given[f]) for n, f in enumerate(KEYED) if given.get(f)}
        months = sorted({h[:7] for h in _hours(since_ms, until_ms)}, reverse=newest_first)
        first, last = hour_of(since_ms), hour_of(until_ms - 1)
        for month in months:
            group: list[dict[str, Any]] = []
            for item in self._directory(month, first, last, newest_first):
                hour = item[_SK]["S"].split("#", 1)[0]
                if group and group[0][_SK]["S"].split("#", 1)[0] != hour:
                    yield self._hour(group, since_ms, until_ms, newest_first, wanted)
                    group = []
                group.append(item)
            if group:
                yield self._hour(group, since_ms, until_ms, newest_first, wanted)

    def _directory(
        self, month: str, first: str, last: str, newest_first: bool
    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": _PK, "#sk": _SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": f"IX#{month}"},
                ":lo": {"S": f"{first}#"},
                ":hi": {"S": f"{last}#\U0010ffff"},
            },
            "ScanIndexForward": not newest_first,
        }
        while True:
            with failing_closed(f"dynamodb:Query (usage index, {month})"):
                page = self._ddb.query(**request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _hour(
        self,
        group: list[dict[str, Any]],
        since_ms: int,
        until_ms: int,
        newest_first: bool,
        wanted: Mapping[int, bytes],
    ) -> tuple[str, list[Entry]]:
        hour = group[0][_SK]["S"].split("#", 1)[0]
        blobs = [i[_ENTRIES]["B"] for i in group if _ENTRIES in i]
        pointers = [
            {_PK: i[_SHARD], _SK: {"S": i[_SK]["S"].split("#", 1)[1]}}
            for i in group
            if _ENTRIES not in i
        ]
        for item in self._batch_get(self._table, pointers, hour, "usage index page"):
            blobs.append(item[_ENTRIES]["B"])
        entries = {
            e
            for blob in blobs
            for e in decode_entries(bytes(blob))
            if since_ms <= e.at < until_ms and _matches(e, wanted)
        }
        return hour, sorted(entries, reverse=newest_first)

    # ---- the records -----------------------------------------------------------------
    def records(self, hour: str, entries: Sequence[Entry]) -> list[UsageRecord]:
        """The usage records of ``entries`` (at most 100), in the same order."""
        keys = [{ATTRIBUTES["record_id"]: {"S": e.id}} for e in entries]
        found = {
            r.record_id: r
            for r in (from_item(i) for i in self._batch_get(self._usage, keys, hour, "usage"))
        }
        missing = [e.id for e in entries if e.id not in found]
        if missing:
            raise TemporarilyUnavailable(
                f"usage ledger for hour {hour}: {len(missing)} indexed record(s) are not in "
                "the usage table"
            )
        return [found[e.id] for e in entries]

    def _batch_get(
        self, table: str, keys: list[dict[str, Any]], hour: str, what: str
    ) -> Iterator[dict[str, Any]]:
        for start in range(0, len(keys), BATCH_KEYS):
            pending = keys[start : start + BATCH_KEYS]
            for attempt in range(ROUNDS):
                with failing_closed(f"dynamodb:BatchGetItem ({what}, hour {hour})"):
                    page = self._ddb.batch_get_item(RequestItems={table: {"Keys": pending}})
                yield from page.get("Responses", {}).get(table, [])
                pending = page.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
                if not pending:
                    break
                self._sleep(0.05 * 2**attempt)
            if pending:
                raise TemporarilyUnavailable(
                    f"usage ledger for hour {hour}: dynamodb:BatchGetItem left {len(pending)} "
                    f"{what} key(s) unprocessed after {ROUNDS} rounds"
                )


def _hours(since_ms: int, until_ms: int) -> list[str]:
    return [hour_of(h) for h in range(since_ms - since_ms % HOUR_MS, until_ms, HOUR_MS)]
