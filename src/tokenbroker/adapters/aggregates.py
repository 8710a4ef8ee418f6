"""DynamoDB adapter for the aggregates table (``AggregatesTable`` in template.yaml): the
only module that knows its item schema. Writes for the stream function, reads for the
audit CLI.

Items, per principal (pk ``P#<principal>``) and UTC hour (sk ``H#2026-11-27T04``); a
day or a longer range is the sum of its hours, read with one Query per principal (the
stream writes one bucket per principal and batch, not two: benchmarks/ledger_cost.py).
Items of earlier versions per UTC day (sk ``D#...``) are no longer read:

- counters ``requests allowed denied tokens_issued tokens_denied``, one flat counter per
  denial reason ``deny:<reason>``, per model ``model:<resource>`` and per admin event
  type ``event:<type>``;
- string sets ``devices`` (jkt) and ``source_ips`` (at most MAX_SOURCE_IPS members; the
  flag ``source_ips_overflow`` says more were seen);
- ``first_seen`` / ``last_seen`` (ms) and ``ttl`` (the newest record's TTL);
- ``v`` (a version for optimistic writes) and ``batches`` (the keys of the last
  ``REMEMBERED_BATCHES`` batch deltas applied to this bucket).

A batch delta is applied by read-modify-write: GetItem (consistent), add in memory,
PutItem on the condition that ``v`` is still what was read. So one bucket costs one
write per batch whatever the number of records, and order-dependent values (first and
last seen, the TTL, the capped IP set) are exact without DynamoDB having a max().
A delta whose key is among ``batches`` was applied already (a redelivered batch) and is
skipped; two writers on one bucket (two stream shards) retry on the version.

The hot tier's time index pages (pk ``IX#...``/``IXP#...``) share the table:
:mod:`tokenbroker.adapters.archive_index` writes and reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.adapters.ledger_items import from_plain
from tokenbroker.domain.aggregates import (
    DAY,
    BucketDelta,
    PrincipalSummary,
    add_to,
    cover,
    hour_start,
    merge,
)
from tokenbroker.domain.errors import MalformedRecord, TemporarilyUnavailable
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.units import HOUR_MS

PK = "pk"
SK = "sk"
TTL = "ttl"
PRINCIPAL_PREFIX = "P#"
DAY_PREFIX = "D#"
HOUR_PREFIX = "H#"
REQUESTS = "requests"
ALLOWED = "allowed"
DENIED = "denied"
TOKENS_ISSUED = "tokens_issued"
TOKENS_DENIED = "tokens_denied"
DENY_PREFIX = "deny:"
MODEL_PREFIX = "model:"
EVENT_PREFIX = "event:"
DEVICES = "devices"
SOURCE_IPS = "source_ips"
SOURCE_IPS_OVERFLOW = "source_ips_overflow"
FIRST_SEEN = "first_seen"
LAST_SEEN = "last_seen"
VERSION = "v"
BATCHES = "batches"

_COUNTERS = (REQUESTS, ALLOWED, DENIED, TOKENS_ISSUED, TOKENS_DENIED)
_PREFIXED = {DENY_PREFIX: "denials", MODEL_PREFIX: "models", EVENT_PREFIX: "admin_events"}
#: a redelivery comes within the stream's 24 hours, after at most MaximumRetryAttempts
#: other batches of its shard touched the bucket; 64 keys (~1.4 KB) leave room for many
#: shards writing one principal
REMEMBERED_BATCHES = 64
#: optimistic writes lost to another writer before giving up (the stream retries)
_MAX_ATTEMPTS = 8
#: record fields that become keys or attribute names are bounded (writers cap them at
#: 256): 500 characters are at most 2,000 bytes of UTF-8, and a key may have 2,048
_MAX_NAME = 500
_des = TypeDeserializer()
_ser = TypeSerializer()

#: a usage item (deserialised, as Powertools' ``new_image`` gives it) as a ledger record
decode_usage_image = from_plain


# ---------------------------------------------------------------------- the writer


class DynamoAggregatesStore:
    """Implements :class:`tokenbroker.domain.ports.AggregatesStore`."""

    def __init__(self, dynamodb: Any, *, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def apply(self, delta: BucketDelta) -> bool:
        if len(delta.principal) > _MAX_NAME:
            raise MalformedRecord("the record's principal is too long")
        prefix = DAY_PREFIX if delta.period == DAY else HOUR_PREFIX  # days: older items
        key = {PK: {"S": PRINCIPAL_PREFIX + delta.principal}, SK: {"S": prefix + delta.key}}
        for _ in range(_MAX_ATTEMPTS):
            with failing_closed("dynamodb:GetItem"):
                found = self._ddb.get_item(TableName=self._table, Key=key, ConsistentRead=True).get(
                    "Item"
                )
            old = {k: _des.deserialize(v) for k, v in (found or {}).items()}
            applied = list(old.get(BATCHES) or [])
            if delta.batch_key in applied:
                return False  # this batch's records were counted here before
            bucket = _summary(old, delta.principal, 0, 0)
            total = add_to(bucket, delta.summary)
            version = int(old.get(VERSION, 0))
            item = _item(total)
            item.update(
                {
                    PK: key[PK],
                    SK: key[SK],
                    VERSION: {"N": str(version + 1)},
                    BATCHES: _ser.serialize([*applied, delta.batch_key][-REMEMBERED_BATCHES:]),
                }
            )
            ttl = max(int(old.get(TTL, 0)), delta.retain_until)
            if ttl:
                item[TTL] = {"N": str(ttl)}
            condition: dict[str, Any] = (
                {
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": VERSION},
                    "ExpressionAttributeValues": {":v": {"N": str(version)}},
                }
                if found
                else {
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": PK},
                }
            )
            with failing_closed("dynamodb:PutItem"):
                try:
                    self._ddb.put_item(TableName=self._table, Item=item, **condition)
                except ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise
                    continue  # another writer came first: read again
            return True
        raise TemporarilyUnavailable("aggregates kept changing under the update; will retry")


def _item(total: PrincipalSummary) -> dict[str, Any]:
    """A bucket's attributes (DynamoDB JSON; zero counters and empty sets left out)."""
    values: dict[str, Any] = {
        REQUESTS: total.requests,
        ALLOWED: total.allowed,
        DENIED: total.denied,
        TOKENS_ISSUED: total.tokens_issued,
        TOKENS_DENIED: total.tokens_denied,
    }
    for prefix, name in _PREFIXED.items():
        for key, count in getattr(total, name).items():
            values[prefix + key] = count
    item: dict[str, Any] = {k: {"N": str(v)} for k, v in values.items() if v}
    if total.devices:
        item[DEVICES] = {"SS": sorted(total.devices)}
    if total.source_ips:
        item[SOURCE_IPS] = {"SS": sorted(total.source_ips)}
    if total.source_ips_overflow:
        item[SOURCE_IPS_OVERFLOW] = {"BOOL": True}
    if total.first_seen_ms is not None:
        item[FIRST_SEEN] = {"N": str(total.first_seen_ms)}
    if total.last_seen_ms is not None:
        item[LAST_SEEN] = {"N": str(total.last_seen_ms)}
    return item


# ---------------------------------------------------------------------- the reader


class AggregatesReader:
    """The auditors' view of the aggregates (read-only: Query, and Scan when no
    principal is given)."""

    def __init__(self, dynamodb: Any, *, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def summaries(
        self, since_ms: int, until_ms: int, principal: str | None = None
    ) -> list[PrincipalSummary]:
        """One summary per principal with records in ``since_ms <= at < until_ms``
        (widened to whole UTC hours: see each summary's ``since_ms``/``until_ms``),
        sorted by principal. ValueError if the range is empty."""
        span = cover(since_ms, until_ms)
        first, last = hour_of(span.since_ms), hour_of(span.until_ms - HOUR_MS)
        low, high = HOUR_PREFIX + first, HOUR_PREFIX + last
        if principal is not None:
            items = self._query(principal, low, high)
        else:
            items = self._scan_buckets(low, high)
        by_principal: dict[str, list[PrincipalSummary]] = {}
        for item in items:
            if low <= item[SK] <= high:
                who = item[PK].removeprefix(PRINCIPAL_PREFIX)
                by_principal.setdefault(who, []).append(_summary(item, who, 0, 0))
        return [
            merge(who, span.since_ms, span.until_ms, buckets)
            for who, buckets in sorted(by_principal.items())
        ]

    def hourly(self, principal: str, since_ms: int, until_ms: int) -> list[PrincipalSummary]:
        """The principal's hours with records in the range (widened to whole hours),
        oldest first; hours without records are left out."""
        span = cover(since_ms, until_ms)
        last_hour = hour_of(span.until_ms - HOUR_MS)
        items = self._query(
            principal, HOUR_PREFIX + hour_of(span.since_ms), HOUR_PREFIX + last_hour
        )
        summaries = []
        for item in items:
            start = hour_start(item[SK].removeprefix(HOUR_PREFIX))
            summaries.append(_summary(item, principal, start, start + HOUR_MS))
        return summaries

    # ---- DynamoDB ---------------------------------------------------------------------
    def _query(self, principal: str, low: str, high: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": PRINCIPAL_PREFIX + principal},
                ":low": {"S": low},
                ":high": {"S": high},
            },
        }
        yield from self._pages("Query", kwargs)

    def _scan_buckets(self, low: str, high: str) -> Iterator[dict[str, Any]]:
        """Every principal's hour buckets from ``low`` to ``high``. A Scan: the table has
        no index by period, so this reads every item and is the slow path."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(#pk, :p) AND #sk BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":p": {"S": PRINCIPAL_PREFIX},
                ":low": {"S": low},
                ":high": {"S": high},
            },
        }
        yield from self._pages("Scan", kwargs)

    def _pages(self, operation: str, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        call = self._ddb.query if operation == "Query" else self._ddb.scan
        while True:
            with failing_closed(f"dynamodb:{operation}"):
                page = call(**kwargs)
            for item in page.get("Items", []):
                yield {k: _des.deserialize(v) for k, v in item.items()}
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _summary(
    item: Mapping[str, Any], principal: str, since_ms: int, until_ms: int
) -> PrincipalSummary:
    maps: dict[str, dict[str, int]] = {field: {} for field in _PREFIXED.values()}
    for attribute, value in item.items():
        for prefix, field in _PREFIXED.items():
            if attribute.startswith(prefix):
                maps[field][attribute.removeprefix(prefix)] = int(value)
    return PrincipalSummary(
        principal=principal,
        since_ms=since_ms,
        until_ms=until_ms,
        requests=int(item.get(REQUESTS, 0)),
        allowed=int(item.get(ALLOWED, 0)),
        denied=int(item.get(DENIED, 0)),
        tokens_issued=int(item.get(TOKENS_ISSUED, 0)),
        tokens_denied=int(item.get(TOKENS_DENIED, 0)),
        denials=maps["denials"],
        models=maps["models"],
        admin_events=maps["admin_events"],
        devices=frozenset(item.get(DEVICES) or ()),
        source_ips=frozenset(item.get(SOURCE_IPS) or ()),
        source_ips_overflow=bool(item.get(SOURCE_IPS_OVERFLOW, False)),
        first_seen_ms=_int(item.get(FIRST_SEEN)),
        last_seen_ms=_int(item.get(LAST_SEEN)),
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
