"""Reading every ledger record of a time range from the ``by_hour`` index.

The index partitions each UTC hour into ``INDEXES["by_hour"].shards`` keys
(``YYYY-MM-DDTHH#NNN``) with the record time ``at`` (ms) as sort key, so a time range is
read by querying every shard key of every hour it touches with ``at BETWEEN lo AND hi``.
The queries fan out over a small thread pool; at most ``max_workers`` shard results are
held at once (bounded memory however long the range), and records come back in no
particular order. Used by the digests and reusable by the audit export.

Records are returned as plain Python values (``TypeDeserializer``: numbers as
``Decimal``); :func:`tokenbroker.domain.ledger.record_hash` hashes exactly these.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from tokenbroker.adapters.aws import failing_closed
from tokenbroker.domain.ledger import INDEXES, SORT_KEY, hour_of, partition_keys, shard_key
from tokenbroker.domain.units import HOUR_MS

INDEX = "by_hour"
_deser = TypeDeserializer()


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB JSON item as plain Python values."""
    return {k: _deser.deserialize(v) for k, v in item.items()}


def hours(start_ms: int, end_ms: int) -> list[str]:
    """The ``by_hour`` values (``YYYY-MM-DDTHH``) of every hour [start_ms, end_ms) touches."""
    if end_ms <= start_ms:
        return []
    first = start_ms - start_ms % HOUR_MS
    return [hour_of(h) for h in range(first, end_ms, HOUR_MS)]


class LedgerScanner:
    """Every record with ``start_ms <= at < end_ms``, from the by_hour index."""

    def __init__(self, dynamodb: Any, *, table: str, max_workers: int = 8) -> None:
        self._ddb = dynamodb
        self._table = table
        self._workers = max(1, max_workers)
        self._index = INDEXES[INDEX]

    def query_shard(self, partition_key: str, lo_ms: int, hi_ms: int) -> Iterator[dict[str, Any]]:
        """One shard key's records with ``lo_ms <= at <= hi_ms``, oldest first, paginated.
        (A building block for readers that merge shards in time order.)"""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._index.name,
            "KeyConditionExpression": "#pk = :pk AND #at BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": self._index.attribute, "#at": SORT_KEY},
            "ExpressionAttributeValues": {
                ":pk": {"S": partition_key},
                ":lo": {"N": str(lo_ms)},
                ":hi": {"N": str(hi_ms)},
            },
        }
        while True:
            with failing_closed("dynamodb:Query"):
                page = self._ddb.query(**kwargs)
            for item in page.get("Items", []):
                yield plain(item)
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    # ---- the digests' LedgerReader port: one segment per by_hour shard ----------------
    def segments(self, start_ms: int, end_ms: int) -> list[str]:
        """The shard numbers (``000``..): a range inside one hour reads one key each."""
        if hour_of(start_ms) != hour_of(end_ms - 1):
            raise ValueError("a segment range must lie inside one UTC hour")
        return [f"{shard:03d}" for shard in range(self._index.shards)]

    def segment_records(self, segment: str, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """One shard's records of [start_ms, end_ms), oldest first (the index's sort key)."""
        if hour_of(start_ms) != hour_of(end_ms - 1):
            raise ValueError("a segment range must lie inside one UTC hour")
        key = shard_key(hour_of(start_ms), int(segment))
        yield from self.query_shard(key, start_ms, end_ms - 1)

    def partitions(self, start_ms: int, end_ms: int) -> list[tuple[str, int, int]]:
        """(partition key, lo, hi) for every shard of every hour of [start_ms, end_ms)."""
        work = []
        for hour in hours(start_ms, end_ms):
            for key in partition_keys(INDEX, hour):
                work.append((key, start_ms, end_ms - 1))
        return work

    def _collect(self, partition_key: str, lo_ms: int, hi_ms: int) -> list[dict[str, Any]]:
        return list(self.query_shard(partition_key, lo_ms, hi_ms))

    def records(self, start_ms: int, end_ms: int) -> Iterator[dict[str, Any]]:
        """Every record of [start_ms, end_ms), in no particular order."""
        work = iter(self.partitions(start_ms, end_ms))
        if self._workers == 1:
            for key, lo, hi in work:
                yield from self.query_shard(key, lo, hi)
            return
        with ThreadPoolExecutor(self._workers, thread_name_prefix="ledger-scan") as pool:
            running: set[Future[list[dict[str, Any]]]] = set()

            def submit() -> bool:
                task = next(work, None)
                if task is None:
                    return False
                running.add(pool.submit(self._collect, *task))
                return True

            try:
                while len(running) < self._workers and submit():
                    pass
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        running.discard(future)
                        yield from future.result()
                        submit()
            finally:
                for future in running:
                    future.cancel()
