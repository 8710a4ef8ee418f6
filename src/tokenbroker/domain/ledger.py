"""The usage ledger's key design: pure functions shared by the writer (adapters), the
readers (audit queries, digests, exports) and the hot-partition simulation.

Every record lands on one base-table partition chosen by its random id; the table has
no GSI (each was one more write unit and stored copy per request). Auditors read the
hot tier through the stream-built time index (adapters/archive_index.py), which keeps
its hottest partition under ~1,000 writes/s at 100,000 requests/s of skewed traffic
(benchmarks/ledger_partitions.py prints it). The digests' segments are the record ids'
``shard_of(id, HOUR_SHARDS)``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

#: the digests' segment count per hour (the shard count the former ``by_hour`` index had)
HOUR_SHARDS = 256
#: the record's time attribute: milliseconds since the epoch
SORT_KEY = "at"
#: the record id and the DynamoDB TTL attribute (epoch seconds), as the digests read them
ID_ATTRIBUTE = "id"
TTL_ATTRIBUTE = "ttl"


def hour_of(at_ms: int) -> str:
    """The UTC hour a record belongs to, e.g. ``2026-11-27T04`` (digest periods)."""
    return time.strftime("%Y-%m-%dT%H", time.gmtime(at_ms // 1000))


def shard_of(record_id: str, shards: int) -> int:
    digest = hashlib.sha256(record_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % shards


def record_hash(item: Mapping[str, Any]) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys, no whitespace), over plain
    values (str/int). The digests sign these; any change to any attribute changes it."""
    canonical = json.dumps(
        item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _plain(value: Any) -> Any:
    # DynamoDB numbers come back as Decimal; sets as set
    if isinstance(value, set | frozenset):
        return sorted(value)
    if hasattr(value, "as_integer_ratio"):
        return int(value) if value == int(value) else str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
