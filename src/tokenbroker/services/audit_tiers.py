"""The auditors' queries across the two tiers of the usage ledger: DynamoDB holds the
hot window (``usage_hot_window_days``), the archive (gzip JSONL under Object Lock, see
:mod:`tokenbroker.adapters.archive`) holds everything older. ``usage`` and ``export``
split a range at ``now - hot window``: the part after it is answered by the hot tier's
own service (:class:`~tokenbroker.services.audit.AuditService`), the part before it by
the archive, hour by hour, with the same filters, and the two are joined in order, so
the answer does not change when records move tiers. Cursors are the hot tier's
``(at, id)`` cursors, so a page may end in one tier and the next begin in the other.

Memory for the archive part: one hour's matching records (an hour is read whole, then
sorted and filtered); larger questions are Athena's (README: "Querying the archive").
Archive failures raise ArchiveUnavailable naming the hour: never a shorter answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import ConfigurationError
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.ports import AggregateSource
from tokenbroker.domain.units import DAY_MS, HOUR_MS
from tokenbroker.services.audit import AuditService
from tokenbroker.services.audit_query import HourIndex, UsageFilters


class ArchivedHours(Protocol):
    """The cold tier, one UTC hour at a time."""

    def hour_records(self, hour_start: int, lo: int, hi: int) -> list[dict[str, Any]]:
        """The hour's records with ``lo <= at < hi`` (plain values) in (at, id) order."""
        ...


class AuditTiers(AuditService):
    """:class:`AuditService` whose record reads span the hot tier and the archive."""

    def __init__(
        self,
        index: HourIndex,
        *,
        archive: ArchivedHours,
        decode: Callable[[Mapping[str, Any]], UsageRecord],
        hot_window_days: int,
        clock: Clock,
        aggregates: AggregateSource | None = None,
    ) -> None:
        super().__init__(index, aggregates=aggregates)
        if hot_window_days < 1:
            raise ConfigurationError("USAGE_HOT_WINDOW_DAYS must be at least 1")
        self._archive = archive
        self._decode = decode
        self._window_ms = hot_window_days * DAY_MS
        self._clock = clock

    def boundary(self) -> int:
        """Records before this time (ms) are read from the archive."""
        return int(self._clock() * 1000) - self._window_ms

    # ---- usage: newest first (paging and cursors: AuditService.usage) -------------
    def _newest(self, filters: UsageFilters, until_ms: int) -> Iterator[UsageRecord]:
        cut = self.boundary()
        if filters.since_ms >= cut:
            return super()._newest(filters, until_ms)
        hot: Iterator[UsageRecord] = iter(())
        if until_ms > cut:
            hot = super()._newest(UsageFilters(**{**filters.__dict__, "since_ms": cut}), until_ms)
        return itertools.chain(hot, self._cold_newest(filters, cut, until_ms))

    def _cold_newest(self, filters: UsageFilters, cut: int, until: int) -> Iterator[UsageRecord]:
        hi = min(until, cut)
        wanted = filters.fields()
        for hour_start in reversed(_hour_starts(filters.since_ms, hi)):
            lo, top = max(filters.since_ms, hour_start), min(hi, hour_start + HOUR_MS)
            found = self._matching(self._archive.hour_records(hour_start, lo, top), wanted)
            yield from reversed(list(found))

    # ---- export: oldest first ------------------------------------------------------
    def export(
        self, since_ms: int, until_ms: int, filters: UsageFilters | None = None
    ) -> Iterator[UsageRecord]:
        UsageFilters(since_ms, until_ms).validate()
        cut = self.boundary()
        if since_ms >= cut:
            yield from super().export(since_ms, until_ms, filters)
            return
        wanted = (filters or UsageFilters(since_ms, until_ms)).fields()
        hi = min(until_ms, cut)
        for hour_start in _hour_starts(since_ms, hi):
            lo, top = max(since_ms, hour_start), min(hi, hour_start + HOUR_MS)
            yield from self._matching(self._archive.hour_records(hour_start, lo, top), wanted)
        if until_ms > cut:
            yield from super().export(cut, until_ms, filters)

    def _matching(
        self, images: Iterable[Mapping[str, Any]], wanted: Mapping[str, str]
    ) -> Iterator[UsageRecord]:
        for image in images:
            record = self._decode(image)
            if all(_text(getattr(record, k)) == v for k, v in wanted.items()):
                yield record


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _hour_starts(since_ms: int, until_ms: int) -> list[int]:
    if until_ms <= since_ms:
        return []
    return list(range(since_ms - since_ms % HOUR_MS, until_ms, HOUR_MS))
