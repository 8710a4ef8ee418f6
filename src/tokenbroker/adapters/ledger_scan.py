"""Reading every ledger record of a time range by scanning the usage table (test-only).

The usage table has no index (one write unit per request): the deployment reads the
hot tier through the stream-built time index (:mod:`tokenbroker.adapters.archive_index`)
and the digests read the archive (:mod:`tokenbroker.adapters.archive`). This scanner is
what the digest tests seal directly from the table: a paginated ``Scan`` filtered on
``at``, its cost proportional to the whole table, so never a production read path.
Segments are the record ids' shard numbers (``shard_of(id, HOUR_SHARDS)``).

Records are returned as plain Python values (``TypeDeserializer``: numbers as
``Decimal``); :func:`tokenbroker.domain.ledger.record_hash` hashes exactly these.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.domain.ledger import HOUR_SHARDS, ID_ATTRIBUTE, SORT_KEY, hour_of, shard_of
from tokenbroker.domain.units import HOUR_MS

_deser = TypeDeserializer()


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB JSON item as plain Python values."""
    return {k: _deser.deserialize(v) for k, v in item.items()}


def hours(start_ms: int, end_ms: int) -> list[str]:
    """The UTC hours (``YYYY-MM-DDTHH``) every hour [start_ms, end_ms) touches."""
    if end_ms <= start_ms:
        return []
    first = start_ms - start_ms % HOUR_MS
    return [hour_of(h) for h in range(first, end_ms, HOUR_MS)]


class LedgerScanner:
    """Every record with ``start_ms <= at < end_ms``, by scanning the table."""

    def __init__(self, dynamodb: Any, *, table: str, max_workers: int = 8) -> None:
        self._ddb = dynamodb
        self._table = table
        self._workers = max(1, max_workers)  # kept for callers; a Scan is read serially
        #: the (start, end) last scanned by ``segment_records``: records by segment
        self._cached: tuple[tuple[int, int], dict[str, list[dict[str, Any]]]] | None = None

    def records(self, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """Every record of [start_ms, end_ms), in no particular order (paginated)."""
        if end_ms <= start_ms:
            return
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#at BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#at": SORT_KEY},
            "ExpressionAttributeValues": {
                ":lo": {"N": str(start_ms)},
                ":hi": {"N": str(end_ms - 1)},
            },
        }
        while True:
            with failing_closed("dynamodb:Scan"):
                page = self._ddb.scan(**kwargs)
            for item in page.get("Items", []):
                yield plain(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    # ---- the digests' LedgerReader port: one segment per id shard ---------------------
    def segments(self, start_ms: int, end_ms: int) -> list[str]:
        """The shard numbers (``000``..) of a range inside one hour."""
        if hour_of(start_ms) != hour_of(end_ms - 1):
            raise ValueError("a segment range must lie inside one UTC hour")
        return [f"{shard:03d}" for shard in range(HOUR_SHARDS)]

    def segment_records(self, segment: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """One shard's records of [start_ms, end_ms), in (at, id) order (one Scan per
        range, remembered for the range's other segments)."""
        if hour_of(start_ms) != hour_of(end_ms - 1):
            raise ValueError("a segment range must lie inside one UTC hour")
        if self._cached is None or self._cached[0] != (start_ms, end_ms):
            grouped: dict[str, list[dict[str, Any]]] = {}
            for image in self.records(start_ms, end_ms):
                key = f"{shard_of(str(image[ID_ATTRIBUTE]), HOUR_SHARDS):03d}"
                grouped.setdefault(key, []).append(image)
            for images in grouped.values():
                images.sort(key=lambda i: (int(i[SORT_KEY]), str(i[ID_ATTRIBUTE])))
            self._cached = ((start_ms, end_ms), grouped)
        yield from list(self._cached[1].get(segment, []))
