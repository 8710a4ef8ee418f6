"""DynamoDB adapter for the aggregates table (``AggregatesTable`` in template.yaml): the
only module that knows its item schema. Writes for the stream function, reads for the
audit CLI.

Items, per principal (pk ``P#<principal>``) and per UTC day (sk ``D#2026-11-27``) and
UTC hour (sk ``H#2026-11-27T04``):

- counters ``requests allowed denied tokens_issued tokens_denied``, one flat counter per
  denial reason ``deny:<reason>``, per model ``model:<resource>`` and per admin event
  type ``event:<type>``;
- string sets ``devices`` (jkt) and ``source_ips`` (at most MAX_SOURCE_IPS members; the
  flag ``source_ips_overflow`` says more were seen);
- ``first_seen`` / ``last_seen`` (ms) and ``ttl`` (the newest record's TTL).

Markers (pk ``seen#<record id>``, sk ``-``, ``ttl``) make counting idempotent: each
record is counted by ONE transaction that puts its marker only if absent and updates its
day and hour items, so a redelivered record finds its marker and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from tokenbroker.adapters import usage
from tokenbroker.adapters.aws import error_code, failing_closed, new_item
from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import TemporarilyUnavailable
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import HOUR_MS
from tokenbroker.services.aggregates import (
    MAX_SOURCE_IPS,
    AggregatesService,
    Contribution,
    MalformedRecord,
    PrincipalSummary,
    cover,
    hour_start,
    merge,
)
from tokenbroker.settings import Settings

PK = "pk"
SK = "sk"
TTL = "ttl"
PRINCIPAL_PREFIX = "P#"
DAY_PREFIX = "D#"
HOUR_PREFIX = "H#"
MARKER_PREFIX = "seen#"
MARKER_SK = "-"
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

_COUNTERS = (REQUESTS, ALLOWED, DENIED, TOKENS_ISSUED, TOKENS_DENIED)
_PREFIXED = {DENY_PREFIX: "denials", MODEL_PREFIX: "models", EVENT_PREFIX: "admin_events"}
_CONDITION_FAILED = "ConditionalCheckFailed"
#: one try, then one per condition that can turn (first/last seen, ttl, the IP cap)
_MAX_ATTEMPTS = 6
#: record fields that become keys or attribute names are bounded (writers cap them at
#: 256): 500 characters are at most 2,000 bytes of UTF-8, and a key may have 2,048
_MAX_NAME = 500
_des = TypeDeserializer()


# ------------------------------------------------------------------- stream input


def decode_usage_image(image: Mapping[str, Any]) -> UsageRecord:
    """A usage item (deserialised, as Powertools' ``new_image`` gives it) as a ledger
    record; MalformedRecord if it is not one."""

    def text(name: str, *, required: bool = False, limit: int = _MAX_NAME) -> str:
        value = image.get(name, "")
        if not isinstance(value, str) or len(value) > limit or (required and not value):
            raise MalformedRecord(f"attribute {name!r} is missing or not a valid string")
        return value

    def number(name: str, *, required: bool = False) -> int:
        value = image.get(name)
        if value is None and not required:
            return 0
        if not isinstance(value, Decimal | int) or isinstance(value, bool):
            raise MalformedRecord(f"attribute {name!r} is missing or not a number")
        if value != int(value) or value < 0:
            raise MalformedRecord(f"attribute {name!r} is not a non-negative integer")
        return int(value)

    try:
        event = EventType(text(usage.EVENT, required=True))
        decision = Decision(text(usage.DECISION, required=True))
    except ValueError as exc:
        raise MalformedRecord(f"unknown event type or decision: {exc}") from exc
    return UsageRecord(
        record_id=text(usage.ID, required=True),
        at_ms=number(usage.AT, required=True),
        decision=decision,
        reason=text(usage.REASON),
        principal=text(usage.PRINCIPAL),
        client_id=text(usage.CLIENT_ID),
        jkt=text(usage.JKT),
        token_jti=text(usage.TOKEN_JTI),
        proof_jti_hash=text(usage.PROOF_JTI_HASH),
        method=text(usage.METHOD),
        route=text(usage.ROUTE),
        resource=text(usage.RESOURCE),
        source_ip=text(usage.SOURCE_IP),
        user_agent=text(usage.USER_AGENT, limit=64 * 1024),
        request_id=text(usage.REQUEST_ID),
        retain_until=number(usage.TTL),
        event=event,
        actor=text(usage.ACTOR, limit=64 * 1024),
    )


# ---------------------------------------------------------------------- the writer

# How a bucket's order-dependent attributes are written. Records arrive out of order
# (many stream shards feed one principal), and DynamoDB has no max() in updates, so each
# is written assuming the common case, under a condition that says so; when the
# condition fails, the transaction returns the item (ALL_OLD) and the next try knows.
# Every switch is one-way (first_seen only falls, last_seen and ttl only rise, a full
# IP set stays full), so what was learned stays true and the tries are bounded.
_OPTIMISTIC = "optimistic"  # assume at >= the bucket's values (the in-order case)
_LOWER = "lower"  # first_seen: known to be after this record: set it
_SKIP = "skip"  # known not to need a write


@dataclass
class _Bucket:
    sk: str
    first: str = _OPTIMISTIC
    last: str = _OPTIMISTIC
    ttl: str = _OPTIMISTIC
    ips_full: bool = False

    def learn(self, old: Mapping[str, Any], c: Contribution) -> bool:
        """Take in the item as it was when the condition failed; True if that changes
        how the next try writes."""
        before = (self.first, self.last, self.ttl, self.ips_full)
        first, last, ttl = (_int(old.get(name)) for name in (FIRST_SEEN, LAST_SEEN, TTL))
        if last is not None and last > c.at_ms:
            self.last = _SKIP
        if first is not None and self.first != _SKIP:
            self.first = _LOWER if first > c.at_ms else _SKIP
        if ttl is not None and ttl > c.retain_until:
            self.ttl = _SKIP
        ips = old.get(SOURCE_IPS) or set()
        if c.source_ip and len(ips) >= MAX_SOURCE_IPS and c.source_ip not in ips:
            self.ips_full = True
        return (self.first, self.last, self.ttl, self.ips_full) != before


class _Expression:
    """Placeholders for one update: only what is used is sent (DynamoDB rejects the rest)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def name(self, attribute: str) -> str:
        for placeholder, known in self.names.items():
            if known == attribute:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, placeholder: str, value: Any) -> str:
        self.values[placeholder] = value
        return placeholder


def _update(table: str, c: Contribution, bucket: _Bucket) -> dict[str, Any]:
    x = _Expression()
    adds: list[str] = []
    sets: list[str] = []
    conditions: list[str] = []
    one = {"N": "1"}
    counters = dict(
        zip(
            _COUNTERS,
            (c.requests, c.allowed, c.denied, c.tokens_issued, c.tokens_denied),
            strict=True,
        )
    )
    for prefix, key in (
        (DENY_PREFIX, c.denial_reason),
        (MODEL_PREFIX, c.model),
        (EVENT_PREFIX, c.admin_event),
    ):
        if key:
            counters[prefix + key] = 1
    for attribute, count in counters.items():
        if count:
            adds.append(f"{x.name(attribute)} {x.value(':one', one)}")
    if c.device:
        adds.append(f"{x.name(DEVICES)} {x.value(':device', {'SS': [c.device]})}")
    if c.source_ip and bucket.ips_full:
        sets.append(f"{x.name(SOURCE_IPS_OVERFLOW)} = {x.value(':true', {'BOOL': True})}")
    elif c.source_ip:
        ips = x.name(SOURCE_IPS)
        adds.append(f"{ips} {x.value(':ip', {'SS': [c.source_ip]})}")
        cap = x.value(":cap", {"N": str(MAX_SOURCE_IPS)})
        ip = x.value(":ipstr", {"S": c.source_ip})
        # the set may grow while it is under the cap or if it holds this IP already
        conditions.append(
            f"(attribute_not_exists({ips}) OR size({ips}) < {cap} OR contains({ips}, {ip}))"
        )
    at = {"N": str(c.at_ms)}
    if bucket.first == _OPTIMISTIC:  # this record is not before the bucket's first
        first, value = x.name(FIRST_SEEN), x.value(":at", at)
        sets.append(f"{first} = if_not_exists({first}, {value})")
        conditions.append(f"(attribute_not_exists({first}) OR {first} <= {value})")
    elif bucket.first == _LOWER:
        first, value = x.name(FIRST_SEEN), x.value(":at", at)
        sets.append(f"{first} = {value}")
        conditions.append(f"{first} > {value}")
    if bucket.last == _OPTIMISTIC:  # this record is not before the bucket's last
        last, value = x.name(LAST_SEEN), x.value(":at", at)
        sets.append(f"{last} = {value}")
        conditions.append(f"(attribute_not_exists({last}) OR {last} <= {value})")
    if c.retain_until and bucket.ttl == _OPTIMISTIC:
        ttl, value = x.name(TTL), x.value(":ttl", {"N": str(c.retain_until)})
        sets.append(f"{ttl} = {value}")
        conditions.append(f"(attribute_not_exists({ttl}) OR {ttl} <= {value})")
    expression = "ADD " + ", ".join(adds)  # every record adds to at least one counter
    if sets:
        expression += " SET " + ", ".join(sets)
    update: dict[str, Any] = {
        "TableName": table,
        "Key": {PK: {"S": PRINCIPAL_PREFIX + c.principal}, SK: {"S": bucket.sk}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": x.names,
        "ExpressionAttributeValues": x.values,
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    if conditions:
        update["ConditionExpression"] = " AND ".join(conditions)
    return {"Update": update}


class DynamoAggregatesStore:
    """Implements :class:`tokenbroker.services.aggregates.AggregatesStore`."""

    def __init__(self, dynamodb: Any, *, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def add(self, contribution: Contribution, *, remember_until: int) -> bool:
        c = contribution
        if len(c.principal) > _MAX_NAME or len(c.record_id) > _MAX_NAME:
            raise MalformedRecord("the record's principal or id is too long")
        buckets = [_Bucket(DAY_PREFIX + c.day), _Bucket(HOUR_PREFIX + c.hour)]
        # absent: this record was never counted (the marker and the counters are
        # written together or not at all)
        item = {
            PK: {"S": MARKER_PREFIX + c.record_id},
            SK: {"S": MARKER_SK},
            TTL: {"N": str(remember_until)},
        }
        marker = {"Put": new_item(self._table, item, PK)}
        with failing_closed("dynamodb:TransactWriteItems"):
            for _ in range(_MAX_ATTEMPTS):
                items = [marker, *(_update(self._table, c, b) for b in buckets)]
                try:
                    self._ddb.transact_write_items(TransactItems=items)
                except ClientError as exc:
                    if error_code(exc) != "TransactionCanceledException":
                        raise
                    reasons = exc.response.get("CancellationReasons") or []
                    if len(reasons) != len(items):
                        raise
                    if reasons[0].get("Code") == _CONDITION_FAILED:
                        return False  # counted before: a redelivery
                    if not _learn(buckets, reasons[1:], c):
                        raise  # a conflict, throttling...: the stream retries the record
                    continue
                return True
        raise TemporarilyUnavailable("aggregates kept changing under the update; will retry")


def _learn(buckets: list[_Bucket], reasons: Iterable[Mapping[str, Any]], c: Contribution) -> bool:
    """True if every cancellation was a condition of ours and the next try differs."""
    learned = False
    for bucket, reason in zip(buckets, reasons, strict=True):
        code = reason.get("Code")
        if code in (None, "", "None"):
            continue
        if code != _CONDITION_FAILED or "Item" not in reason:
            return False
        old = {k: _des.deserialize(v) for k, v in reason["Item"].items()}
        learned = bucket.learn(old, c) or learned
    return learned


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
        wanted = {DAY_PREFIX + d for d in span.days} | {HOUR_PREFIX + h for h in span.hours}
        if principal is not None:
            items = self._bucket_items(principal, span.days, span.hours)
        else:
            items = self._scan_buckets(wanted)
        by_principal: dict[str, list[PrincipalSummary]] = {}
        for item in items:
            if item[SK] in wanted:
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
    def _bucket_items(
        self, principal: str, days: tuple[str, ...], hours: tuple[str, ...]
    ) -> Iterator[dict[str, Any]]:
        if days:
            yield from self._query(principal, DAY_PREFIX + days[0], DAY_PREFIX + days[-1])
        for first, last in _runs(hours):
            yield from self._query(principal, HOUR_PREFIX + first, HOUR_PREFIX + last)

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

    def _scan_buckets(self, wanted: set[str]) -> Iterator[dict[str, Any]]:
        """Every principal's buckets among ``wanted``. A Scan: the table has no index by
        period, so this reads every item (markers included) and is the slow path."""
        low, high = min(wanted), max(wanted)
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


def _runs(hours: tuple[str, ...]) -> list[tuple[str, str]]:
    """Consecutive hours as (first, last) pairs."""
    runs: list[tuple[str, str]] = []
    for hour in hours:
        if runs and hour_start(hour) - hour_start(runs[-1][1]) == HOUR_MS:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    return runs


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


# ------------------------------------------------------------------------- factories


def from_settings(
    settings: Settings, dynamodb: Any, *, clock: Clock = time.time
) -> AggregatesService:
    """The stream function's service (what ``bootstrap.Container.aggregates`` builds)."""
    settings.require("aggregates_table")
    store = DynamoAggregatesStore(dynamodb, table=settings.aggregates_table)
    return AggregatesService(store=store, decode=decode_usage_image, clock=clock)


def reader_from_settings(settings: Settings, dynamodb: Any) -> AggregatesReader:
    """The audit CLI's reader."""
    settings.require("aggregates_table")
    return AggregatesReader(dynamodb, table=settings.aggregates_table)
