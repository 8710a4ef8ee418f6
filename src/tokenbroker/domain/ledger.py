"""The usage ledger's key design: pure functions shared by the writer (adapters), the
readers (audit queries, digests, exports) and the hot-partition simulation.

Every record lands on one base-table partition chosen by its random id. Each auditor
index is keyed by a value (principal, device, token, resource, hour) suffixed with a
shard number derived from the record id, so no index partition takes more than its
share of a hot value's writes; a reader fans out over ``shards`` keys and merges by
time. The shard counts keep the hottest partition under ~1,000 writes/s at 100,000
requests/s of skewed traffic (benchmarks/ledger_partitions.py prints it).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LedgerIndex:
    name: str  # GSI name in template.yaml
    attribute: str  # the GSI's partition key attribute
    source: str  # the record attribute it is derived from
    shards: int


#: index name -> definition (the template declares the same GSIs; a test checks). None
#: is left: every GSI was one more write unit and stored copy per request. Auditors read
#: the hot tier through the stream-built time index (adapters/archive_index.py).
INDEXES: dict[str, LedgerIndex] = {}
#: the shard count the former ``by_hour`` index had (the sealing simulation's segments)
HOUR_SHARDS = 256
#: the sort key of every index: milliseconds since the epoch
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


def shard_key(value: str, shard: int) -> str:
    return f"{value}#{shard:03d}"


def index_keys(record_id: str, values: Mapping[str, str]) -> dict[str, str]:
    """The index partition keys of one record. ``values`` maps each index's source
    attribute (principal, jkt, token_jti, resource, hour) to the record's value; empty
    values are left out, so the index stays sparse (an admin event has no token)."""
    keys = {}
    for index in INDEXES.values():
        value = values.get(index.source, "")
        if value:
            keys[index.attribute] = shard_key(value, shard_of(record_id, index.shards))
    return keys


def partition_keys(index: str, value: str) -> list[str]:
    """Every partition key a reader must query to see all records of ``value``."""
    spec = INDEXES[index]
    return [shard_key(value, s) for s in range(spec.shards)]


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
