"""DynamoDB adapter for the aggregates table (``AggregatesTable`` in template.yaml): the
only module that knows its item schema. Writes for the stream function, reads for the
audit CLI and the sharing rules.

**Pages.** A stream batch writes one page per UTC hour and principal shard
(:class:`tokenbroker.domain.aggregates.Page`): every principal's delta for that hour in
that batch, as compact JSON, zlib-compressed into one binary attribute. Items:

* pk ``AG#<YYYY-MM-DD>#<ss>`` (the hour's day, the shard ``shard_of(principal)``),
  sk ``<hour>#<page name>#<part>``; attributes ``e`` (the compressed deltas), ``w`` (the
  page's writer: a hash of its record ids), ``n`` (the page's parts), ``ttl`` (the
  newest record's TTL);
* a page whose deltas exceed PART_RAW_BYTES of JSON is split into parts (a delta holds
  at most DELTA_RECORDS records' strings, so a part stays well under DynamoDB's 400 KB).

So a batch costs the bytes of its pages in write units (a few per batch, not one item
per principal), and no read. A page is put on the condition that it does not hold the
same writer already: the same batch delivered again writes nothing new (and reports it
skipped); a retried batch with more records names the same pages and replaces them.
Parts are put last to first, so part 0 names the page's writer and part count; parts of
another writer are ignored, and a page whose parts are incomplete (a rewrite cut off
half-way) fails the read naming its hour rather than answering short.

**Reads.** One principal's hours: one Query per UTC day on its shard's partition (the
sharing rule's 25 hours are two Queries). Every principal: one Query per day and shard.
Every failure, and a page that does not decode, raises
:class:`~tokenbroker.domain.errors.TemporarilyUnavailable` naming the day or hour.

Items of earlier versions (pk ``P#...``) are no longer read. The hot tier's time index
pages (pk ``IX#...``/``IXP#...``) share the table: :mod:`tokenbroker.adapters.
archive_index` writes and reads them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from botocore.exceptions import ClientError

from tokenbroker.adapters.aws import error_code, failing_closed
from tokenbroker.adapters.ledger_items import from_plain
from tokenbroker.domain.aggregates import (
    AGG_SHARDS,
    Page,
    PrincipalSummary,
    add_to,
    cover,
    hour_start,
    merge,
    shard_of,
)
from tokenbroker.domain.errors import MalformedRecord, TemporarilyUnavailable
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.units import DAY_MS, HOUR_MS

PK: Final = "pk"
SK: Final = "sk"
TTL: Final = "ttl"
PAGE_PREFIX: Final = "AG#"
ENTRIES: Final = "e"
WRITER: Final = "w"
PARTS: Final = "n"
#: JSON bytes of deltas per part before compression (a delta adds at most ~100 KB of
#: strings: DELTA_RECORDS records' capped fields), so a part is far under 400 KB
PART_RAW_BYTES: Final = 128_000
#: record fields that become page keys are bounded (writers cap them at 256)
_MAX_NAME: Final = 500
# compact delta fields (inside a page; never DynamoDB attribute names)
_COUNTERS: Final = {
    "r": "requests",
    "a": "allowed",
    "d": "denied",
    "ti": "tokens_issued",
    "td": "tokens_denied",
}
_MAPS: Final = {"dn": "denials", "m": "models", "ev": "admin_events"}

#: a usage item (deserialised, as Powertools' ``new_image`` gives it) as a ledger record
decode_usage_image = from_plain


def page_pk(day: str, shard: int) -> str:
    return f"{PAGE_PREFIX}{day}#{shard:02d}"


def encode_delta(s: PrincipalSummary) -> dict[str, Any]:
    out: dict[str, Any] = {"p": s.principal}
    for short, name in _COUNTERS.items():
        if value := getattr(s, name):
            out[short] = value
    for short, name in _MAPS.items():
        if value := getattr(s, name):
            out[short] = dict(sorted(value.items()))
    if s.devices:
        out["dv"] = sorted(s.devices)
    if s.source_ips:
        out["ip"] = sorted(s.source_ips)
    if s.source_ips_overflow:
        out["ipo"] = 1
    if s.first_seen_ms is not None:
        out["f"] = s.first_seen_ms
    if s.last_seen_ms is not None:
        out["l"] = s.last_seen_ms
    return out


def decode_delta(d: Mapping[str, Any], since_ms: int, until_ms: int) -> PrincipalSummary:
    def count(short: str) -> int:
        return int(d.get(short, 0))

    def counts(short: str) -> dict[str, int]:
        return {str(k): int(v) for k, v in d.get(short, {}).items()}

    return PrincipalSummary(
        principal=str(d["p"]),
        since_ms=since_ms,
        until_ms=until_ms,
        requests=count("r"),
        allowed=count("a"),
        denied=count("d"),
        tokens_issued=count("ti"),
        tokens_denied=count("td"),
        denials=counts("dn"),
        models=counts("m"),
        admin_events=counts("ev"),
        devices=frozenset(d.get("dv", ())),
        source_ips=frozenset(d.get("ip", ())),
        source_ips_overflow=bool(d.get("ipo", 0)),
        first_seen_ms=_int(d.get("f")),
        last_seen_ms=_int(d.get("l")),
    )


def parts_of(page: Page) -> list[bytes]:
    """The page's deltas as compressed parts of at most PART_RAW_BYTES of JSON each."""
    parts: list[list[str]] = [[]]
    size = 0
    for delta in page.deltas:
        text = json.dumps(encode_delta(delta), separators=(",", ":"), sort_keys=True)
        if parts[-1] and size + len(text) > PART_RAW_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(text)
        size += len(text) + 1
    return [zlib.compress(("[" + ",".join(p) + "]").encode(), 6) for p in parts]


# ---------------------------------------------------------------------- the writer


class DynamoAggregatesStore:
    """Implements :class:`tokenbroker.domain.ports.AggregatesStore`."""

    def __init__(self, dynamodb: Any, *, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def write(self, page: Page) -> bool:
        if any(len(d.principal) > _MAX_NAME for d in page.deltas):
            raise MalformedRecord("the record's principal is too long")
        blobs = parts_of(page)
        written = False
        # the last part first: part 0 (which names the writer and the part count) is put
        # once every other part of this writer is in place
        for number in reversed(range(len(blobs))):
            item: dict[str, Any] = {
                PK: {"S": page_pk(page.day, page.shard)},
                SK: {"S": f"{page.hour}#{page.name}#{number:03d}"},
                ENTRIES: {"B": blobs[number]},
                WRITER: {"S": page.writer},
                PARTS: {"N": str(len(blobs))},
            }
            if page.retain_until:
                item[TTL] = {"N": str(page.retain_until)}
            with failing_closed(f"dynamodb:PutItem (aggregates, hour {page.hour})"):
                try:
                    self._ddb.put_item(
                        TableName=self._table,
                        Item=item,
                        # the same batch again: this part is kept already (no read needed)
                        ConditionExpression="attribute_not_exists(#pk) OR #w <> :w",
                        ExpressionAttributeNames={"#pk": PK, "#w": WRITER},
                        ExpressionAttributeValues={":w": {"S": page.writer}},
                    )
                    written = True
                except ClientError as exc:
                    if error_code(exc) != "ConditionalCheckFailedException":
                        raise
        return written


# ---------------------------------------------------------------------- the reader


class AggregatesReader:
    """The auditors' view of the aggregates (read-only: Query)."""

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
        shards = range(AGG_SHARDS) if principal is None else (shard_of(principal),)
        by_principal: dict[str, PrincipalSummary] = {}
        for shard in shards:
            for day, first, last in _days(span.since_ms, span.until_ms):
                for (who, _hour), total in self._hours(day, shard, first, last, principal):
                    before = by_principal.get(who)
                    buckets = (total,) if before is None else (before, total)
                    by_principal[who] = merge(who, span.since_ms, span.until_ms, buckets)
        return [by_principal[who] for who in sorted(by_principal)]

    def hourly(self, principal: str, since_ms: int, until_ms: int) -> list[PrincipalSummary]:
        """The principal's hours with records in the range (widened to whole hours),
        oldest first; hours without records are left out."""
        span = cover(since_ms, until_ms)
        out = []
        for day, first, last in _days(span.since_ms, span.until_ms):
            hours = self._hours(day, shard_of(principal), first, last, principal)
            for (_who, hour), total in sorted(hours, key=lambda kv: kv[0][1]):
                start = hour_start(hour)
                out.append(merge(principal, start, start + HOUR_MS, (total,)))
        return out

    # ---- pages -----------------------------------------------------------------------
    def _hours(
        self, day: str, shard: int, first: str, last: str, principal: str | None
    ) -> list[tuple[tuple[str, str], PrincipalSummary]]:
        """((principal, hour), that hour's sum) for the shard's pages of the day, from
        hour ``first`` to ``last``: an hour's pages summed in name order (add_to: the
        source IP cap per hour)."""
        pages: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for item in self._query(day, shard, first, last):
            hour, name, _part = item[SK]["S"].rsplit("#", 2)
            pages.setdefault((hour, name), []).append(item)
        sums: dict[tuple[str, str], PrincipalSummary] = {}
        for (hour, _name), parts in sorted(pages.items()):
            for delta in self._deltas(hour, parts):
                try:
                    if principal is not None and delta["p"] != principal:
                        continue
                    summary = decode_delta(delta, 0, 0)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    why = f"a page does not decode ({type(exc).__name__})"
                    raise _unreadable(hour, why) from exc
                key = (summary.principal, hour)
                sums[key] = summary if key not in sums else add_to(sums[key], summary)
        return list(sums.items())

    def _deltas(self, hour: str, parts: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """The deltas of one page's parts (those of part 0's writer, all of them)."""
        try:
            by_number = {int(p[SK]["S"].rsplit("#", 1)[1]): p for p in parts}
            head = by_number.get(0)
            if head is None:
                raise _unreadable(hour, "a page has no part 0")
            writer, count = head[WRITER]["S"], int(head[PARTS]["N"])
            own = [by_number.get(n) for n in range(count)]
            torn = any(p is None or p[WRITER]["S"] != writer for p in own)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise _unreadable(hour, f"a page does not decode ({type(exc).__name__})") from exc
        if torn:
            raise _unreadable(hour, "a page is half rewritten (its stream batch is retrying)")
        for part in own:
            assert part is not None
            try:
                deltas = json.loads(zlib.decompress(bytes(part[ENTRIES]["B"])))
            except (zlib.error, ValueError, KeyError) as exc:
                raise _unreadable(hour, f"a page does not decode ({type(exc).__name__})") from exc
            yield from deltas

    def _query(self, day: str, shard: int, first: str, last: str) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk AND #sk BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#pk": PK, "#sk": SK},
            "ExpressionAttributeValues": {
                ":pk": {"S": page_pk(day, shard)},
                ":lo": {"S": f"{first}#"},
                ":hi": {"S": f"{last}#\U0010ffff"},
            },
        }
        what = f"dynamodb:Query (aggregates of {first}..{last}, shard {shard:02d})"
        while True:
            with failing_closed(what):
                page = self._ddb.query(**request)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _days(since_ms: int, until_ms: int) -> Iterable[tuple[str, str, str]]:
    """(day, first hour, last hour) of whole hours ``since_ms..until_ms`` per UTC day."""
    at = since_ms
    while at < until_ms:
        end = min(until_ms, at - at % DAY_MS + DAY_MS)
        yield hour_of(at)[:10], hour_of(at), hour_of(end - HOUR_MS)
        at = end


def _unreadable(hour: str, why: str) -> TemporarilyUnavailable:
    return TemporarilyUnavailable(f"aggregates for hour {hour}: {why}")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
