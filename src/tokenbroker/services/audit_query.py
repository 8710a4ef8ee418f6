"""Query planning over the usage ledger's sharded indexes: filters, segments, cursors,
and the lazy merge of shards.

Reading a sharded index (:mod:`tokenbroker.domain.ledger`): a value's records are spread
over ``shards`` partitions; each partition is read in time order, page by page, and the
partitions are merged by ``(at, id)`` with :func:`heapq.merge`. Everything is lazy: a
usage page of 50 reads the first page of each shard and only what the merge consumes
after that; an export holds at most one page per shard of one hour, however long the
range. Times are milliseconds since the epoch; ranges are half-open, ``since <= at <
until``.

Without an id filter the range is read hour by hour from ``by_hour``. With an hour
registry (:class:`~tokenbroker.domain.ports.HourRegistry`, kept by the stream function)
only the shards that hold records are queried: one registry Query for the whole range,
then one Query per (hour, shard) with records, so the number of queries grows with the
data, not with the length of the range. Hours the stream may not have registered yet
(ending less than ``REGISTRY_LAG_MS`` ago) are read in full.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidQuery
from tokenbroker.domain.ledger import hour_of, partition_keys, shard_key
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.ports import HourRegistry, LedgerShardReader, ShardPage
from tokenbroker.domain.units import HOUR_MS

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
DECISIONS = tuple(d.value for d in Decision)
EVENTS = tuple(e.value for e in EventType)
#: the smallest first page asked of each shard by a usage query
FIRST_PAGE_MIN = 8
#: how long after an hour ends the stream function may still be registering its shards
#: (batching window + retries); such hours are read in all their shards
REGISTRY_LAG_MS = 15 * 60_000


@dataclass(frozen=True)
class UsageFilters:
    """What ``usage`` selects. Empty strings mean "any"."""

    since_ms: int
    until_ms: int
    principal: str = ""
    device: str = ""
    token: str = ""
    model: str = ""
    decision: str = ""
    event: str = ""
    actor: str = ""
    source_ip: str = ""

    def validate(self) -> None:
        if self.since_ms >= self.until_ms:
            raise InvalidQuery("the start of the range must be before its end", parameter="since")
        if self.decision and self.decision not in DECISIONS:
            raise InvalidQuery(
                f"decision must be one of {', '.join(DECISIONS)}", parameter="decision"
            )
        if self.event and self.event not in EVENTS:
            raise InvalidQuery(f"event must be one of {', '.join(EVENTS)}", parameter="event")

    def fields(self) -> dict[str, str]:
        """UsageRecord field -> required value, for every filter given."""
        given = {
            "token_jti": self.token,
            "jkt": self.device,
            "principal": self.principal,
            "resource": self.model,
            "decision": self.decision,
            "event": self.event,
            "actor": self.actor,
            "source_ip": self.source_ip,
        }
        return {k: v for k, v in given.items() if v}

    # the name the first version of this module used
    attributes = fields


@dataclass(frozen=True)
class Page:
    """Records newest first, and the cursor of the next page (None: this is the last)."""

    records: list[UsageRecord]
    next_token: str | None


@dataclass(frozen=True)
class Segment:
    """One index value over one time range: its shards are merged together."""

    index: str
    value: str
    since_ms: int
    until_ms: int


def plan(filters: UsageFilters, *, newest_first: bool) -> tuple[list[Segment], dict[str, str]]:
    """The segments to read, in output order, and the filters left for DynamoDB to apply.

    The range is read hour by hour from ``by_hour`` (only the hours' registered shards,
    with an hour registry) and every filter is applied by DynamoDB: the per-record
    GSIs by principal, device, token and resource were removed from the request path.
    """
    wanted = filters.fields()
    return hour_segments(filters.since_ms, filters.until_ms, newest_first=newest_first), wanted


def hour_segments(since_ms: int, until_ms: int, *, newest_first: bool) -> list[Segment]:
    segments = []
    start = since_ms - since_ms % HOUR_MS
    while start < until_ms:
        end = start + HOUR_MS
        segments.append(
            Segment("by_hour", hour_of(start), max(since_ms, start), min(until_ms, end))
        )
        start = end
    if newest_first:
        segments.reverse()
    return segments


@dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped: its last record, and which query it belongs to."""

    at: int
    id: str
    query: str

    def encode(self) -> str:
        raw = json.dumps({"v": 1, "at": self.at, "id": self.id, "q": self.query})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            at, record_id, query = data["at"], data["id"], data["q"]
            version = data["v"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            version = None
        if (
            version != 1
            or not isinstance(at, int)
            or not (isinstance(record_id, str) and isinstance(query, str))
        ):
            raise InvalidQuery(
                "the next-page token is not a token printed by this query",
                parameter="next_token",
            )
        return cls(at=at, id=record_id, query=query)


def query_fingerprint(filters: UsageFilters) -> str:
    """Identifies the filters a cursor was made for (not the time range: relative times
    such as ``now`` move between invocations; the cursor itself bounds the range)."""
    wanted = json.dumps(filters.fields(), sort_keys=True)
    return hashlib.sha256(wanted.encode()).hexdigest()[:16]


class LedgerQueries:
    """Reads segments of the sharded indexes and merges their shards lazily.

    ``page_size``: the most items a usage query asks of one shard per request;
    ``workers``: how many shards' first pages are fetched concurrently.
    """

    def __init__(
        self,
        reader: LedgerShardReader,
        *,
        registry: HourRegistry | None = None,
        clock: Clock | None = None,
        page_size: int = 100,
        workers: int = 8,
    ) -> None:
        self._reader = reader
        self._registry = registry
        self._clock = clock
        self._page_size = page_size
        self._workers = workers

    def newest_first(self, filters: UsageFilters, wanted: int) -> Iterator[UsageRecord]:
        """Matching records, newest first; ``wanted`` sizes the first page per shard."""
        segments, equals = plan(filters, newest_first=True)
        shards = self._active(segments)
        for segment in segments:
            keys = shards(segment)
            if not keys:
                continue
            # a shard holds ~wanted/shards of the first records; read twice that (at
            # least FIRST_PAGE_MIN) first, and further pages only where the merge needs
            first = min(self._page_size, max(FIRST_PAGE_MIN, -(-2 * wanted // len(keys))))
            yield from self.merged(segment, keys, equals, first, newest_first=True)

    def oldest_first(
        self,
        since_ms: int,
        until_ms: int,
        page_size: int,
        *,
        equals: Mapping[str, str] | None = None,
    ) -> Iterator[UsageRecord]:
        """Every record of the range (with ``equals``: the matching ones), hour by hour
        from by_hour (an export)."""
        segments = hour_segments(since_ms, until_ms, newest_first=False)
        shards = self._active(segments)
        for segment in segments:
            if keys := shards(segment):
                yield from self.merged(segment, keys, equals or {}, page_size, newest_first=False)

    def _active(self, segments: Sequence[Segment]) -> Callable[[Segment], list[str]]:
        """The partition keys to read per segment: every shard, or (by_hour, with a
        registry) the registered ones and every shard of the hours still settling."""
        hourly = [s for s in segments if s.index == "by_hour"]
        if not hourly or self._registry is None or self._clock is None:
            return lambda s: partition_keys(s.index, s.value)
        known = self._registry.active_shards(
            min(s.since_ms for s in hourly), max(s.until_ms for s in hourly)
        )
        settled_before = int(self._clock() * 1000) - REGISTRY_LAG_MS

        def keys(segment: Segment) -> list[str]:
            if segment.index != "by_hour":
                return partition_keys(segment.index, segment.value)
            hour_end = segment.since_ms - segment.since_ms % HOUR_MS + HOUR_MS
            if hour_end > settled_before:
                return partition_keys(segment.index, segment.value)
            return [shard_key(segment.value, n) for n in sorted(known.get(segment.value, ()))]

        return keys

    def merged(
        self,
        segment: Segment,
        keys: Sequence[str],
        equals: Mapping[str, str],
        page_size: int,
        *,
        newest_first: bool,
    ) -> Iterator[UsageRecord]:
        def first_page(key: str) -> ShardPage:
            return self._page(segment, key, equals, page_size, newest_first, None)

        firsts = self._in_parallel(first_page, keys)
        streams = [
            self._shard(segment, key, equals, page_size, newest_first, page)
            for key, page in zip(keys, firsts, strict=True)
        ]
        merged = heapq.merge(*streams, key=_at, reverse=newest_first)
        yield from _ties_ordered(merged, newest_first)

    def _shard(
        self,
        segment: Segment,
        key: str,
        equals: Mapping[str, str],
        page_size: int,
        newest_first: bool,
        page: ShardPage,
    ) -> Iterator[UsageRecord]:
        while True:
            items, next_key = page.items, page.next_key
            del page  # hold one page per shard, not two
            yield from items
            if next_key is None:
                return
            page = self._page(segment, key, equals, page_size, newest_first, next_key)

    def _page(
        self,
        segment: Segment,
        key: str,
        equals: Mapping[str, str],
        page_size: int,
        newest_first: bool,
        start_key: dict[str, Any] | None,
    ) -> ShardPage:
        return self._reader.query_shard(
            segment.index,
            key,
            segment.since_ms,
            segment.until_ms,
            newest_first=newest_first,
            limit=page_size,
            equals=equals,
            start_key=start_key,
        )

    def _in_parallel(
        self, call: Callable[[str], ShardPage], keys: Sequence[str]
    ) -> list[ShardPage]:
        if self._workers <= 1 or len(keys) <= 1:
            return [call(key) for key in keys]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(keys))) as pool:
            return list(pool.map(call, keys))


def _at(record: UsageRecord) -> int:
    return record.at_ms


def _ties_ordered(stream: Iterator[UsageRecord], newest_first: bool) -> Iterator[UsageRecord]:
    """Shards are merged by ``at`` alone (an index returns equal sort keys in no defined
    order); each run of equal times is then ordered by id, so the output is ordered by
    (at, id) and a cursor (at, id) resumes exactly. Looks ahead one record."""
    for _, run in itertools.groupby(stream, key=_at):
        group = list(run)
        if len(group) > 1:
            group.sort(key=lambda r: r.record_id, reverse=newest_first)
        yield from group


class HourIndex(Protocol):
    """The stream-built hot-tier time index (adapter: ``adapters.archive_index.HotIndex``)."""

    def hours(
        self,
        since_ms: int,
        until_ms: int,
        *,
        newest_first: bool,
        equals: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[str, list[Any]]]: ...

    def records(self, hour: str, entries: Sequence[Any]) -> list[UsageRecord]: ...


#: records fetched per BatchGetItem (its limit)
FETCH = 100


class IndexedQueries:
    """``LedgerQueries``' reads over the stream-built index: per hour that has records,
    its (prefiltered) entries, then the records in order, ``FETCH`` at a time; the
    exact filters are applied to each record. DynamoDB requests grow with the records
    read (and the months touched), not with the hours of the range."""

    def __init__(self, index: HourIndex) -> None:
        self._index = index

    def newest_first(self, filters: UsageFilters, wanted: int) -> Iterator[UsageRecord]:
        equals = filters.fields()
        yield from self._read(filters.since_ms, filters.until_ms, equals, newest_first=True)

    def oldest_first(
        self,
        since_ms: int,
        until_ms: int,
        page_size: int,
        *,
        equals: Mapping[str, str] | None = None,
    ) -> Iterator[UsageRecord]:
        yield from self._read(since_ms, until_ms, equals or {}, newest_first=False)

    def _read(
        self, since_ms: int, until_ms: int, equals: Mapping[str, str], *, newest_first: bool
    ) -> Iterator[UsageRecord]:
        hours = self._index.hours(since_ms, until_ms, newest_first=newest_first, equals=equals)
        for hour, entries in hours:
            for start in range(0, len(entries), FETCH):
                for record in self._index.records(hour, entries[start : start + FETCH]):
                    if all(_text(getattr(record, k)) == v for k, v in equals.items()):
                        yield record


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))
