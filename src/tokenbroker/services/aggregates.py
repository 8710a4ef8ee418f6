"""The stream function's use case: fold one batch of ledger records into aggregates.

A batch (up to the event source mapping's ``BatchSize`` records of one stream shard) is
decoded and folded in memory into ONE compressed page per UTC hour and principal shard,
holding every principal's delta (:func:`tokenbroker.domain.aggregates.fold`); each
page is written once, with no read: the aggregates cost the page's bytes, not one item
per principal. A page is named after its first record, so a batch that failed half-way
(some pages written, then a throttle) is delivered again and rewrites the same pages
(the store skips the ones it holds already): nothing counts twice. Readers sum the
pages of the hours they need.

What a record counts is :func:`tokenbroker.domain.aggregates.contribution`. A record
that is not a ledger record is skipped and reported (``BatchResult.malformed``): one
bad item must not stop a stream shard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tokenbroker.domain.aggregates import (
    MAX_SOURCE_IPS,
    Contribution,
    Cover,
    Page,
    PrincipalSummary,
    add_to,
    contribution,
    cover,
    day_of,
    fold,
    hour_start,
    merge,
    shard_of,
    summarize,
)
from tokenbroker.domain.errors import MalformedRecord
from tokenbroker.domain.models import UsageRecord
from tokenbroker.domain.ports import AggregatesStore
from tokenbroker.domain.units import DAY_MS, HOUR_MS

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "MAX_SOURCE_IPS",
    "AggregatesService",
    "BatchResult",
    "Contribution",
    "Cover",
    "MalformedRecord",
    "Page",
    "PrincipalSummary",
    "RecordDecoder",
    "add_to",
    "contribution",
    "cover",
    "day_of",
    "fold",
    "hour_start",
    "merge",
    "shard_of",
    "summarize",
]

#: turns a stream record's new image (deserialised values) into a ledger record, or
#: raises MalformedRecord (the adapter that knows the usage item's attribute names)
RecordDecoder = Callable[[Mapping[str, object]], UsageRecord]


@dataclass(frozen=True)
class BatchResult:
    """``counted``: records folded; ``malformed``: positions (0-based) of skipped
    images; ``written``/``skipped``: pages written now / kept before (a redelivery)."""

    counted: int
    malformed: tuple[int, ...]
    written: int
    skipped: int
    #: the pages written now (the sharing burst rule counts their requests)
    new_pages: tuple[Page, ...] = ()


class AggregatesService:
    """Counts a batch of ledger records from the stream into per-principal aggregates."""

    def __init__(self, *, store: AggregatesStore, decode: RecordDecoder) -> None:
        self._store = store
        self._decode = decode

    def count_batch(self, images: Sequence[Mapping[str, object]]) -> BatchResult:
        """Fold and write the batch. Raises TemporarilyUnavailable if the store fails
        (then the stream delivers the batch again, and what was written is skipped)."""
        records: list[UsageRecord] = []
        contributions: list[Contribution] = []
        malformed: list[int] = []
        for position, image in enumerate(images):
            try:
                record = self._decode(image)
                contributions.append(contribution(record))
            except MalformedRecord:
                malformed.append(position)
                continue
            records.append(record)
        new_pages: list[Page] = []
        skipped = 0
        for page in fold(contributions):
            if self._store.write(page):
                new_pages.append(page)
            else:
                skipped += 1
        return BatchResult(
            len(contributions), tuple(malformed), len(new_pages), skipped, tuple(new_pages)
        )

    def count(self, new_image: Mapping[str, object]) -> bool:
        """One record as a batch of one (True if it was counted now)."""
        result = self.count_batch([new_image])
        if result.malformed:
            raise MalformedRecord("the stream record is not a ledger record")
        return result.written > 0
