"""The auditors' queries over the usage ledger: usage pages, exports, summaries, anomalies.

Reading a sharded index (:mod:`tokenbroker.domain.ledger`): a value's records are spread
over ``shards`` partitions; each partition is read in time order, page by page, and the
partitions are merged by ``(at, id)`` with :func:`heapq.merge`. Everything is lazy: a
usage page of 50 reads the first page of each shard and only what the merge consumes
after that; an export holds at most one page per shard of one hour, however long the
range. Times are milliseconds since the epoch; ranges are half-open, ``since <= at <
until``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from tokenbroker.domain.ledger import INDEXES, hour_of, partition_keys
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.aggregates import PrincipalSummary, merge

Record = dict[str, Any]
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
DECISIONS = ("allow", "deny")
#: the smallest first page asked of each shard by a usage query
FIRST_PAGE_MIN = 8

# ---- ports ----------------------------------------------------------------------------


class ShardPage(Protocol):
    items: list[Record]
    next_key: dict[str, Any] | None


class LedgerReader(Protocol):
    """Reads one shard of one ledger index (adapter: ``adapters.ledger_query``)."""

    def query_shard(
        self,
        index: str,
        partition_key: str,
        since_ms: int,
        until_ms: int,
        *,
        newest_first: bool,
        limit: int,
        equals: Mapping[str, str] | None = None,
        start_key: dict[str, Any] | None = None,
    ) -> ShardPage: ...


class AuditQueryError(ValueError):
    """The query itself is invalid (time range, limit, cursor): the caller's mistake."""


# ---- usage ----------------------------------------------------------------------------


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

    def validate(self) -> None:
        if self.since_ms >= self.until_ms:
            raise AuditQueryError("the start of the range must be before its end")
        if self.decision and self.decision not in DECISIONS:
            raise AuditQueryError(f"decision must be one of {', '.join(DECISIONS)}")

    def attributes(self) -> dict[str, str]:
        """Record attribute -> required value, for every filter given."""
        given = {
            "token_jti": self.token,
            "jkt": self.device,
            "principal": self.principal,
            "resource": self.model,
            "decision": self.decision,
        }
        return {k: v for k, v in given.items() if v}


@dataclass(frozen=True)
class Page:
    """Records newest first, and the cursor of the next page (None: this is the last)."""

    records: list[Record]
    next_token: str | None


#: (index, record attribute), most selective first: the first one given is queried
_SELECTIVITY = (
    ("by_token", "token_jti"),
    ("by_device", "jkt"),
    ("by_principal", "principal"),
    ("by_resource", "resource"),
)


@dataclass(frozen=True)
class Segment:
    """One index value over one time range: its shards are merged together."""

    index: str
    value: str
    since_ms: int
    until_ms: int


def plan(filters: UsageFilters, *, newest_first: bool) -> tuple[list[Segment], dict[str, str]]:
    """The segments to read, in output order, and the filters left for DynamoDB to apply.

    The most selective id filter picks the index; with none, the range is read hour by
    hour from ``by_hour``.
    """
    wanted = filters.attributes()
    for index, attribute in _SELECTIVITY:
        if attribute in wanted:
            rest = {k: v for k, v in wanted.items() if k != attribute}
            return [Segment(index, wanted[attribute], filters.since_ms, filters.until_ms)], rest
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
            raise AuditQueryError("--next-token is not a token printed by this command")
        return cls(at=at, id=record_id, query=query)


def query_fingerprint(filters: UsageFilters) -> str:
    """Identifies the filters a cursor was made for (not the time range: relative times
    such as ``now`` move between invocations; the cursor itself bounds the range)."""
    wanted = json.dumps(filters.attributes(), sort_keys=True)
    return hashlib.sha256(wanted.encode()).hexdigest()[:16]


# ---- the service ----------------------------------------------------------------------


class AuditService:
    """Usage pages and exports from the ledger; summaries and anomalies from aggregates.

    ``page_size``: the most items a usage query asks of one shard per request;
    ``export_page_size``: the same for exports (their memory bound is shards x it);
    ``workers``: how many shards' first pages are fetched concurrently.
    """

    def __init__(
        self,
        reader: LedgerReader,
        *,
        aggregates: AggregateSource | None = None,
        page_size: int = 100,
        export_page_size: int = 100,
        workers: int = 8,
    ) -> None:
        self._reader = reader
        self._aggregates = aggregates
        self._page_size = page_size
        self._export_page_size = export_page_size
        self._workers = workers

    def usage(self, filters: UsageFilters, limit: int = DEFAULT_LIMIT, cursor: str = "") -> Page:
        """One page of matching records, newest first (ties on ``at`` by id, descending)."""
        filters.validate()
        if not 1 <= limit <= MAX_LIMIT:
            raise AuditQueryError(f"limit must be within 1..{MAX_LIMIT}")
        fingerprint = query_fingerprint(filters)
        stream: Iterable[Record]
        if cursor:
            after = Cursor.decode(cursor)
            if after.query != fingerprint:
                raise AuditQueryError("--next-token belongs to a query with other filters")
            if after.at < filters.since_ms:
                return Page([], None)
            bounded = UsageFilters(
                **{**filters.__dict__, "until_ms": min(filters.until_ms, after.at + 1)}
            )
            stream = (
                r
                for r in self._records(bounded, limit + 1)
                if r["at"] < after.at or r["id"] < after.id
            )
        else:
            stream = self._records(filters, limit + 1)
        records = list(itertools.islice(stream, limit + 1))
        if len(records) <= limit:
            return Page(records, None)
        last = records[limit - 1]
        return Page(records[:limit], Cursor(last["at"], last["id"], fingerprint).encode())

    def export(self, since_ms: int, until_ms: int) -> Iterator[Record]:
        """Every record of the range, oldest first, streamed hour by hour from by_hour.

        Memory: at most one page (``export_page_size`` items) per shard of one hour.
        """
        UsageFilters(since_ms, until_ms).validate()
        for segment in hour_segments(since_ms, until_ms, newest_first=False):
            yield from self._merged(segment, {}, self._export_page_size, newest_first=False)

    def summary(self, since_ms: int, until_ms: int, principal: str = "") -> list[PrincipalSummary]:
        """Per principal, its aggregates over the range widened to whole UTC hours."""
        UsageFilters(since_ms, until_ms).validate()
        return self._source().summaries(since_ms, until_ms, principal or None)

    def anomalies(
        self, since_ms: int, until_ms: int, thresholds: Thresholds | None = None
    ) -> list[Anomaly]:
        """Principals whose credentials look shared or stolen in the range (widened to
        whole hours): thresholds on the window's totals and hours, and each principal's
        own baseline over the ``baseline_days`` whole UTC days before the range.
        Sorted by principal; reads one summary scan, then per active principal at most
        two queries (its hours when it has enough denials for a burst, its history)."""
        UsageFilters(since_ms, until_ms).validate()
        t = thresholds or Thresholds()
        source = self._source()
        day = since_ms - since_ms % DAY_MS
        found: list[Anomaly] = []
        for total in source.summaries(since_ms, until_ms):
            found.extend(threshold_findings(total, t))
            if _denials(total) >= t.max_denials:
                hours = source.hourly(total.principal, since_ms, until_ms)
                if burst := burst_finding(total.principal, hours, t):
                    found.append(burst)
            history = source.hourly(total.principal, day - t.baseline_days * DAY_MS, day)
            median = daily_median(history)
            if above := baseline_finding(total, median, t, window_ms=until_ms - since_ms):
                found.append(above)
        return found

    def _source(self) -> AggregateSource:
        if self._aggregates is None:
            raise AuditQueryError("this deployment keeps no aggregates")
        return self._aggregates

    # ---- reading and merging shards ---------------------------------------------------

    def _records(self, filters: UsageFilters, wanted: int) -> Iterator[Record]:
        """Matching records, newest first; ``wanted`` sizes the first page per shard."""
        segments, equals = plan(filters, newest_first=True)
        for segment in segments:
            shards = INDEXES[segment.index].shards
            # a shard holds ~wanted/shards of the first records; read twice that (at
            # least FIRST_PAGE_MIN) first, and further pages only where the merge needs
            first = min(self._page_size, max(FIRST_PAGE_MIN, -(-2 * wanted // shards)))
            yield from self._merged(segment, equals, first, newest_first=True)

    def _merged(
        self, segment: Segment, equals: Mapping[str, str], page_size: int, *, newest_first: bool
    ) -> Iterator[Record]:
        def first_page(key: str) -> ShardPage:
            return self._page(segment, key, equals, page_size, newest_first, None)

        keys = partition_keys(segment.index, segment.value)
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
    ) -> Iterator[Record]:
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
        if self._workers <= 1:
            return [call(key) for key in keys]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(keys))) as pool:
            return list(pool.map(call, keys))


def _at(record: Record) -> int:
    return int(record["at"])


def _ties_ordered(stream: Iterator[Record], newest_first: bool) -> Iterator[Record]:
    """Shards are merged by ``at`` alone (an index returns equal sort keys in no defined
    order); each run of equal times is then ordered by id, so the output is ordered by
    (at, id) and a cursor (at, id) resumes exactly. Looks ahead one record."""
    for _, run in itertools.groupby(stream, key=_at):
        group = list(run)
        if len(group) > 1:
            group.sort(key=lambda r: str(r["id"]), reverse=newest_first)
        yield from group


# ---- aggregates: summary and anomalies ------------------------------------------------


class AggregateSource(Protocol):
    """Per principal counters kept from the ledger's stream (the aggregates function;
    adapter: ``adapters.aggregates.AggregatesReader``). Ranges widen to whole UTC hours."""

    def summaries(
        self, since_ms: int, until_ms: int, principal: str | None = None
    ) -> list[PrincipalSummary]:
        """One summary per principal with records in the range, sorted by principal."""
        ...

    def hourly(self, principal: str, since_ms: int, until_ms: int) -> list[PrincipalSummary]:
        """The principal's hours with records in the range, oldest first."""
        ...


@dataclass(frozen=True)
class Thresholds:
    max_devices: int = 3
    max_ips: int = 5
    #: denials (requests and token requests) of one principal within one hour
    max_denials: int = 20
    baseline_factor: float = 5.0
    baseline_days: int = 7


@dataclass(frozen=True)
class Anomaly:
    kind: str
    principal: str
    #: the counts behind the finding, and the threshold it crossed
    evidence: dict[str, Any]
    first_seen_ms: int | None
    last_seen_ms: int | None


MANY_DEVICES = "many_devices"
MANY_SOURCE_IPS = "many_source_ips"
PROOF_REPLAYED = "proof_replayed"
DENIAL_BURST = "denial_burst"
REVOKED_DEVICE_USED = "revoked_device_used"
ABOVE_BASELINE = "above_baseline"
#: addresses named in a many_source_ips finding (the count is always complete)
IP_SAMPLE = 10


def threshold_findings(total: PrincipalSummary, t: Thresholds) -> Iterator[Anomaly]:
    """Findings from a principal's totals over the window."""
    if total.distinct_devices > t.max_devices:
        yield _finding(
            MANY_DEVICES,
            total,
            devices=total.distinct_devices,
            threshold=t.max_devices,
            device_ids=sorted(total.devices),
        )
    if total.distinct_source_ips > t.max_ips:
        yield _finding(
            MANY_SOURCE_IPS,
            total,
            source_ips=total.distinct_source_ips,
            at_least=total.source_ips_overflow,
            threshold=t.max_ips,
            sample=sorted(total.source_ips)[:IP_SAMPLE],
        )
    if replays := total.denials.get("proof_replayed", 0):
        yield _finding(PROOF_REPLAYED, total, replays=replays)
    if revoked := total.denials.get("device_revoked", 0):
        yield _finding(REVOKED_DEVICE_USED, total, attempts=revoked)


def _denials(bucket: PrincipalSummary) -> int:
    return bucket.denied + bucket.tokens_denied


def burst_finding(
    principal: str, hours: Sequence[PrincipalSummary], t: Thresholds
) -> Anomaly | None:
    """Hours in which the principal was denied at least ``max_denials`` times."""
    bursts = [h for h in hours if _denials(h) >= t.max_denials]
    if not bursts:
        return None
    worst = max(bursts, key=lambda h: (_denials(h), h.since_ms))
    span = merge(principal, bursts[0].since_ms, bursts[-1].until_ms, bursts)
    return _finding(
        DENIAL_BURST,
        span,
        burst_hours=len(bursts),
        max_denials_in_an_hour=_denials(worst),
        worst_hour_start_ms=worst.since_ms,
        denials=_denials(span),
        threshold=t.max_denials,
    )


def daily_median(hours: Iterable[PrincipalSummary]) -> float | None:
    """Median of the daily requests on the UTC days with any (None: no history)."""
    per_day: dict[int, int] = {}
    for h in hours:
        day = h.since_ms - h.since_ms % DAY_MS
        per_day[day] = per_day.get(day, 0) + h.requests
    counts = sorted(n for n in per_day.values() if n)
    if not counts:
        return None
    mid = len(counts) // 2
    return float(counts[mid]) if len(counts) % 2 else (counts[mid - 1] + counts[mid]) / 2


def baseline_finding(
    total: PrincipalSummary, median: float | None, t: Thresholds, *, window_ms: int
) -> Anomaly | None:
    """Requests in the window above ``baseline_factor`` times the daily median (scaled
    to the window's length in days when it is longer than one day)."""
    if median is None:
        return None
    limit = t.baseline_factor * median * max(1.0, window_ms / DAY_MS)
    if total.requests <= limit:
        return None
    return _finding(
        ABOVE_BASELINE,
        total,
        requests=total.requests,
        baseline_daily_median=median,
        factor=t.baseline_factor,
        limit=limit,
    )


def _finding(kind: str, total: PrincipalSummary, **evidence: Any) -> Anomaly:
    return Anomaly(kind, total.principal, evidence, total.first_seen_ms, total.last_seen_ms)
