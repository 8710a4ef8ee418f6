"""The auditors' use cases over the usage ledger: usage pages, exports, summaries,
anomalies. One concern per module beneath it:

- :mod:`tokenbroker.services.audit_query`: filters, query planning, cursors and the
  lazy merge of index shards (the ledger's read side);
- :mod:`tokenbroker.services.anomalies`: the rules that flag shared or stolen
  credentials, over the aggregates;
- the ports it reads through live in :mod:`tokenbroker.domain.ports`
  (``LedgerShardReader``, ``HourRegistry``, ``AggregateSource``).

Built by :mod:`tokenbroker.bootstrap` (``Container.audit``). Bad queries raise
:class:`~tokenbroker.domain.errors.InvalidQuery`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

from tokenbroker.domain.aggregates import PrincipalSummary
from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidQuery
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.ports import AggregateSource, HourRegistry, LedgerShardReader
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.anomalies import Anomaly, Thresholds, find_anomalies
from tokenbroker.services.audit_query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    HourIndex,
    IndexedQueries,
    LedgerQueries,
    Page,
    Segment,
    UsageFilters,
    hour_segments,
    plan,
    query_fingerprint,
)

#: the name callers used before the error joined the BrokerError tree
AuditQueryError = InvalidQuery

__all__ = [
    "DAY_MS",
    "DEFAULT_LIMIT",
    "HOUR_MS",
    "MAX_LIMIT",
    "Anomaly",
    "AuditQueryError",
    "AuditService",
    "Cursor",
    "Page",
    "Segment",
    "Thresholds",
    "UsageFilters",
    "hour_segments",
    "plan",
    "query_fingerprint",
]


class AuditService:
    """Usage pages and exports from the ledger; summaries and anomalies from aggregates.

    ``page_size``: the most items a usage query asks of one shard per request;
    ``export_page_size``: the same for exports (their memory bound is shards x it);
    ``workers``: how many shards' first pages are fetched concurrently; ``registry``
    and ``clock``: the hour registry that lets unfiltered reads skip empty shards.
    """

    def __init__(
        self,
        reader: LedgerShardReader | None = None,
        *,
        aggregates: AggregateSource | None = None,
        registry: HourRegistry | None = None,
        clock: Clock | None = None,
        page_size: int = 100,
        export_page_size: int = 100,
        workers: int = 8,
        index: HourIndex | None = None,
    ) -> None:
        # ``index``: the stream-built hot-tier index (the deployment's read path; then
        # ``reader`` is not used)
        self._queries: LedgerQueries | IndexedQueries
        if index is not None:
            self._queries = IndexedQueries(index)
        elif reader is not None:
            self._queries = LedgerQueries(
                reader, registry=registry, clock=clock, page_size=page_size, workers=workers
            )
        else:
            raise ValueError("AuditService needs the hot-tier index (or a shard reader)")
        self._aggregates = aggregates
        self._export_page_size = export_page_size

    def usage(
        self,
        filters: UsageFilters,
        limit: int = DEFAULT_LIMIT,
        cursor: str = "",
        *,
        progress: Callable[[int], None] | None = None,
    ) -> Page:
        """One page of matching records, newest first (ties on ``at`` by id, descending).
        ``progress`` is called with each record's ``at_ms`` as it is read (how far back
        through the range the query has come: the CLI's progress bar)."""
        filters.validate()
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidQuery(f"limit must be within 1..{MAX_LIMIT}", parameter="limit")
        fingerprint = query_fingerprint(filters)
        until, after = filters.until_ms, None
        if cursor:
            after = Cursor.decode(cursor)
            if after.query != fingerprint:
                raise InvalidQuery(
                    "the next-page token belongs to a query with other filters",
                    parameter="next_token",
                )
            if after.at < filters.since_ms:
                return Page([], None)
            until = min(until, after.at + 1)
        stream = self._newest(filters, until, limit + 1)
        if after is not None:
            position = (after.at, after.id)
            stream = (r for r in stream if (r.at_ms, r.record_id) < position)
        if progress is not None:
            stream = reporting(stream, progress)
        records = list(itertools.islice(stream, limit + 1))
        if len(records) <= limit:
            return Page(records, None)
        last = records[limit - 1]
        return Page(records[:limit], Cursor(last.at_ms, last.record_id, fingerprint).encode())

    def _newest(self, filters: UsageFilters, until_ms: int, wanted: int) -> Iterator[UsageRecord]:
        """Every record matching ``filters`` before ``until_ms``, newest first, lazily
        (``wanted``: how many the caller expects to take; it sizes the first pages)."""
        bounded = UsageFilters(**{**filters.__dict__, "until_ms": until_ms})
        return self._queries.newest_first(bounded, wanted)

    def export(
        self, since_ms: int, until_ms: int, filters: UsageFilters | None = None
    ) -> Iterator[UsageRecord]:
        """Every record of the range, oldest first, streamed hour by hour from by_hour;
        ``filters`` (principal, device, model...) select among them.

        Memory: at most one page (``export_page_size`` items) per shard of one hour.
        """
        UsageFilters(since_ms, until_ms).validate()
        wanted = (filters or UsageFilters(since_ms, until_ms)).fields()
        yield from self._queries.oldest_first(
            since_ms, until_ms, self._export_page_size, equals=wanted
        )

    def summary(self, since_ms: int, until_ms: int, principal: str = "") -> list[PrincipalSummary]:
        """Per principal, its aggregates over the range widened to whole UTC hours."""
        UsageFilters(since_ms, until_ms).validate()
        return self._source().summaries(since_ms, until_ms, principal or None)

    def anomalies(
        self,
        since_ms: int,
        until_ms: int,
        thresholds: Thresholds | None = None,
        principal: str = "",
    ) -> list[Anomaly]:
        """Principals (or the one given) whose credentials look shared or stolen in the
        range (widened to whole hours): see :func:`~tokenbroker.services.anomalies.
        find_anomalies`."""
        UsageFilters(since_ms, until_ms).validate()
        return find_anomalies(self._source(), since_ms, until_ms, thresholds, principal)

    def _source(self) -> AggregateSource:
        if self._aggregates is None:
            raise InvalidQuery("this deployment keeps no aggregates")
        return self._aggregates


def reporting(
    stream: Iterable[UsageRecord], progress: Callable[[int], None]
) -> Iterator[UsageRecord]:
    for record in stream:
        progress(record.at_ms)
        yield record
