"""The auditors' use cases over the usage ledger: usage pages, exports, summaries,
anomalies. One concern per module beneath it:

- :mod:`tokenbroker.services.audit_query`: filters, cursors and the reads over the
  stream-built time index (the ledger's read side);
- :mod:`tokenbroker.services.anomalies`: the rules that flag shared or stolen
  credentials, over the aggregates;
- the ports it reads through live in :mod:`tokenbroker.domain.ports`
  (``AggregateSource``); the hot tier's index is
  :class:`~tokenbroker.services.audit_query.HourIndex`.

Built by :mod:`tokenbroker.bootstrap` (``Container.audit``). Bad queries raise
:class:`~tokenbroker.domain.errors.InvalidQuery`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

from tokenbroker.domain.aggregates import PrincipalSummary
from tokenbroker.domain.errors import InvalidQuery
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.ports import AggregateSource
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.anomalies import Anomaly, Thresholds, find_anomalies
from tokenbroker.services.audit_query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    HourIndex,
    IndexedQueries,
    Page,
    UsageFilters,
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
    "Thresholds",
    "UsageFilters",
    "query_fingerprint",
]


class AuditService:
    """Usage pages and exports from the ledger; summaries and anomalies from aggregates.

    ``index``: the stream-built hot-tier time index (``adapters.archive_index.HotIndex``);
    ``aggregates``: the per principal counters (None: this deployment keeps none).
    """

    def __init__(self, index: HourIndex, *, aggregates: AggregateSource | None = None) -> None:
        self._queries = IndexedQueries(index)
        self._aggregates = aggregates

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
        stream = self._newest(filters, until)
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

    def _newest(self, filters: UsageFilters, until_ms: int) -> Iterator[UsageRecord]:
        """Every record matching ``filters`` before ``until_ms``, newest first, lazily."""
        bounded = UsageFilters(**{**filters.__dict__, "until_ms": until_ms})
        return self._queries.newest_first(bounded)

    def export(
        self, since_ms: int, until_ms: int, filters: UsageFilters | None = None
    ) -> Iterator[UsageRecord]:
        """Every record of the range, oldest first, streamed hour by hour from the time
        index; ``filters`` (principal, device, model...) select among them.

        Memory: one hour's index entries and ``FETCH`` (100) records at a time.
        """
        UsageFilters(since_ms, until_ms).validate()
        wanted = (filters or UsageFilters(since_ms, until_ms)).fields()
        yield from self._queries.oldest_first(since_ms, until_ms, equals=wanted)

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
