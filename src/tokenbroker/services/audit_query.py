"""The auditors' queries over the usage ledger's hot tier: filters, cursors, and the
reads over the stream-built time index (:mod:`tokenbroker.adapters.archive_index`).

The usage table keeps no GSI: per UTC hour that has records, the index holds compact
entries ``(at, id, short filter keys)``; a query reads the entries of the hours it
needs, newest or oldest first, then fetches the records (``FETCH`` per BatchGetItem)
and applies the exact filters to each. The number of DynamoDB requests grows with the
records read (and the months touched), not with the hours of the range. Times are
milliseconds since the epoch; ranges are half-open, ``since <= at < until``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tokenbroker.domain.errors import InvalidQuery
from tokenbroker.domain.models import Decision, EventType, UsageRecord

MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
DECISIONS = tuple(d.value for d in Decision)
EVENTS = tuple(e.value for e in EventType)


@dataclass(frozen=True)
class UsageFilters:
    """What ``usage`` selects. Empty strings mean "any"."""

    since_ms: int
    until_ms: int
    principal: str = ""
    device: str = ""
    token: str = ""
    model: str = ""
    decision: str = ""
    event: str = ""
    actor: str = ""
    source_ip: str = ""

    def validate(self) -> None:
        if self.since_ms >= self.until_ms:
            raise InvalidQuery("the start of the range must be before its end", parameter="since")
        if self.decision and self.decision not in DECISIONS:
            raise InvalidQuery(
                f"decision must be one of {', '.join(DECISIONS)}", parameter="decision"
            )
        if self.event and self.event not in EVENTS:
            raise InvalidQuery(f"event must be one of {', '.join(EVENTS)}", parameter="event")

    def fields(self) -> dict[str, str]:
        """UsageRecord field -> required value, for every filter given."""
        given = {
            "token_jti": self.token,
            "jkt": self.device,
            "principal": self.principal,
            "resource": self.model,
            "decision": self.decision,
            "event": self.event,
            "actor": self.actor,
            "source_ip": self.source_ip,
        }
        return {k: v for k, v in given.items() if v}

    # the name the first version of this module used
    attributes = fields


@dataclass(frozen=True)
class Page:
    """Records newest first, and the cursor of the next page (None: this is the last)."""

    records: list[UsageRecord]
    next_token: str | None


@dataclass(frozen=True)
class Cursor:
    """Where the previous page stopped: its last record, and which query it belongs to."""

    at: int
    id: str
    query: str

    def encode(self) -> str:
        raw = json.dumps({"v": 1, "at": self.at, "id": self.id, "q": self.query})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            at, record_id, query = data["at"], data["id"], data["q"]
            version = data["v"]
        except (binascii.Error, ValueError, TypeError, KeyError):
            version = None
        if (
            version != 1
            or not isinstance(at, int)
            or not (isinstance(record_id, str) and isinstance(query, str))
        ):
            raise InvalidQuery(
                "the next-page token is not a token printed by this query",
                parameter="next_token",
            )
        return cls(at=at, id=record_id, query=query)


def query_fingerprint(filters: UsageFilters) -> str:
    """Identifies the filters a cursor was made for (not the time range: relative times
    such as ``now`` move between invocations; the cursor itself bounds the range)."""
    wanted = json.dumps(filters.fields(), sort_keys=True)
    return hashlib.sha256(wanted.encode()).hexdigest()[:16]


class HourIndex(Protocol):
    """The stream-built hot-tier time index (adapter: ``adapters.archive_index.HotIndex``)."""

    def hours(
        self,
        since_ms: int,
        until_ms: int,
        *,
        newest_first: bool,
        equals: Mapping[str, str] | None = None,
    ) -> Iterator[tuple[str, list[Any]]]: ...

    def records(self, hour: str, entries: Sequence[Any]) -> list[UsageRecord]: ...


#: records fetched per BatchGetItem (its limit)
FETCH = 100


class IndexedQueries:
    """Reads over the stream-built index: per hour that has records, its (prefiltered)
    entries, then the records in order, ``FETCH`` at a time; the exact filters are
    applied to each record. DynamoDB requests grow with the records read (and the
    months touched), not with the hours of the range."""

    def __init__(self, index: HourIndex) -> None:
        self._index = index

    def newest_first(self, filters: UsageFilters) -> Iterator[UsageRecord]:
        """The records matching ``filters``, newest first (ties by id, descending)."""
        equals = filters.fields()
        yield from self._read(filters.since_ms, filters.until_ms, equals, newest_first=True)

    def oldest_first(
        self, since_ms: int, until_ms: int, *, equals: Mapping[str, str] | None = None
    ) -> Iterator[UsageRecord]:
        """Every record of the range (with ``equals``: the matching ones), oldest first."""
        yield from self._read(since_ms, until_ms, equals or {}, newest_first=False)

    def _read(
        self, since_ms: int, until_ms: int, equals: Mapping[str, str], *, newest_first: bool
    ) -> Iterator[UsageRecord]:
        hours = self._index.hours(since_ms, until_ms, newest_first=newest_first, equals=equals)
        for hour, entries in hours:
            for start in range(0, len(entries), FETCH):
                for record in self._index.records(hour, entries[start : start + FETCH]):
                    if all(_text(getattr(record, k)) == v for k, v in equals.items()):
                        yield record


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))
