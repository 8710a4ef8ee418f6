"""Per-principal usage aggregates, kept from the usage ledger's stream (issue 4, item 3).

Pure: what one ledger record adds to its principal's UTC day and UTC hour
(:func:`contribution`), which day and hour buckets cover a time range (:func:`cover`), and
the auditors' view of the sums (:class:`PrincipalSummary`, :func:`merge`). The store
(:mod:`tokenbroker.adapters.aggregates`) applies each record's contribution exactly once,
however often the stream delivers it.

What a record counts, by event type:

- ``request`` (a use of an access token at the edge): ``requests``; ``allowed`` or
  ``denied``; a denial's reason in ``denials``; the model/resource in ``models``; the
  device key and the source IP in ``devices`` and ``source_ips``.
- ``token_issued`` / ``token_denied``: ``tokens_issued`` (or ``tokens_denied`` with the
  reason in ``denials``); the device and source IP as above.
- admin events (client created/disabled, device enrolled/revoked, and any later type):
  ``admin_events[type]``. Their device and IP are the admin's doing, not the principal's
  use, so they do not count as devices or source IPs.
- every record: ``first_seen_ms`` / ``last_seen_ms`` (exact minimum and maximum of ``at``,
  whatever order the stream delivers records in).

So ``requests == allowed + denied`` and ``sum(denials) == denied + tokens_denied``.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import BrokerError
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import DAY_MS, HOUR_MS

#: how long a record id is remembered as counted: the stream keeps records 24 hours,
#: so no redelivery can come later than that; a week leaves room for replays by hand
MARKER_LIFETIME_SECONDS = 7 * 24 * 3600
#: distinct source IPs kept per bucket; beyond it ``source_ips_overflow`` is set
MAX_SOURCE_IPS = 1000

_USE_EVENTS = frozenset({EventType.REQUEST, EventType.TOKEN_ISSUED})


class MalformedRecord(BrokerError):
    """A stream record that is not a readable ledger record (reported, never counted)."""

    reason = "malformed_record"


# ------------------------------------------------------------------- the write side


@dataclass(frozen=True)
class Contribution:
    """What one ledger record adds to its principal's day and hour buckets. A record
    adds at most one to each counter; empty strings mean "nothing to add"."""

    record_id: str
    principal: str
    at_ms: int
    #: the record's TTL (epoch seconds; 0: none): buckets live as long as their newest
    retain_until: int = 0
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    tokens_issued: int = 0
    tokens_denied: int = 0
    denial_reason: str = ""
    model: str = ""
    admin_event: str = ""
    device: str = ""
    source_ip: str = ""

    @property
    def day(self) -> str:
        return day_of(self.at_ms)

    @property
    def hour(self) -> str:
        return hour_of(self.at_ms)


def contribution(record: UsageRecord) -> Contribution:
    """The counters one ledger record adds (see the module docstring)."""
    principal = record.principal or record.client_id
    if not principal:
        raise MalformedRecord(f"record {record.record_id!r} names no principal or client")
    base = Contribution(
        record_id=record.record_id,
        principal=principal,
        at_ms=record.at_ms,
        retain_until=record.retain_until,
    )
    denied = record.decision is Decision.DENY
    reason = (record.reason or "unspecified") if denied else ""
    if record.event is EventType.REQUEST:
        return replace(
            base,
            requests=1,
            allowed=int(not denied),
            denied=int(denied),
            denial_reason=reason,
            model=record.resource,
            device=record.jkt,
            source_ip=record.source_ip,
        )
    if record.event in (EventType.TOKEN_ISSUED, EventType.TOKEN_DENIED):
        return replace(
            base,
            tokens_issued=int(not denied),
            tokens_denied=int(denied),
            denial_reason=reason,
            device=record.jkt,
            source_ip=record.source_ip,
        )
    return replace(base, admin_event=record.event.value)


class AggregatesStore(Protocol):
    """Where contributions are summed (the DynamoDB adapter; a fake in tests)."""

    def add(self, contribution: Contribution, *, remember_until: int) -> bool:
        """Add ``contribution`` to its day and hour buckets, atomically and at most once
        per ``contribution.record_id`` (the id is remembered until ``remember_until``,
        epoch seconds). Returns False if the record had been counted already. Raises
        TemporarilyUnavailable if the store fails (nothing is then counted)."""
        ...


#: turns a stream record's new image (deserialised values) into a ledger record, or
#: raises MalformedRecord (the adapter that knows the usage item's attribute names)
RecordDecoder = Callable[[Mapping[str, Any]], UsageRecord]


class AggregatesService:
    """Counts one ledger record from the stream into its principal's aggregates."""

    def __init__(self, *, store: AggregatesStore, decode: RecordDecoder, clock: Clock) -> None:
        self._store = store
        self._decode = decode
        self._clock = clock

    def count(self, new_image: Mapping[str, Any]) -> bool:
        """Count the record whose item is ``new_image``. True if counted now, False if
        it had been counted before (a redelivery). Raises MalformedRecord or
        TemporarilyUnavailable; then the stream delivers the record again."""
        record = self._decode(new_image)
        remember_until = int(self._clock()) + MARKER_LIFETIME_SECONDS
        return self._store.add(contribution(record), remember_until=remember_until)


# -------------------------------------------------------------------- the read side


def day_of(at_ms: int) -> str:
    """The UTC day a record belongs to, e.g. ``2026-11-27``."""
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms // 1000))


def hour_start(key: str) -> int:
    """Epoch ms of an hour key (``2026-11-27T04``) or a day key (``2026-11-27``)."""
    layout = "%Y-%m-%dT%H" if "T" in key else "%Y-%m-%d"
    return calendar.timegm(time.strptime(key, layout)) * 1000


@dataclass(frozen=True)
class Cover:
    """The buckets that sum to a time range widened to whole UTC hours
    (``since_ms``..``until_ms``): whole days where the range holds them, hours at the
    edges. No bucket overlaps another."""

    since_ms: int
    until_ms: int
    days: tuple[str, ...]
    hours: tuple[str, ...]


def cover(since_ms: int, until_ms: int) -> Cover:
    """The buckets covering ``since_ms <= at < until_ms``, widened to whole hours."""
    if until_ms <= since_ms:
        raise ValueError("the range is empty: until must be after since")
    start = since_ms - since_ms % HOUR_MS
    end = -(-until_ms // HOUR_MS) * HOUR_MS
    first_day = -(-start // DAY_MS) * DAY_MS
    last_day = end - end % DAY_MS
    if first_day >= last_day:  # no whole day inside: hours only
        return Cover(start, end, (), _hours(start, end))
    days = tuple(day_of(at) for at in range(first_day, last_day, DAY_MS))
    return Cover(start, end, days, _hours(start, first_day) + _hours(last_day, end))


def _hours(start_ms: int, end_ms: int) -> tuple[str, ...]:
    return tuple(hour_of(at) for at in range(start_ms, end_ms, HOUR_MS))


@dataclass(frozen=True)
class PrincipalSummary:
    """One principal's aggregates over ``since_ms <= at < until_ms`` (whole UTC hours).

    ``denials`` maps reason -> count (denied requests and token requests); ``models``
    maps model/resource -> requests; ``admin_events`` maps event type -> count.
    ``source_ips`` is partial when ``source_ips_overflow`` is set (a day or hour had more
    than MAX_SOURCE_IPS distinct addresses). ``first_seen_ms``/``last_seen_ms`` are the
    principal's first and last record in the period (None: no records).
    """

    principal: str
    since_ms: int
    until_ms: int
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    tokens_issued: int = 0
    tokens_denied: int = 0
    denials: Mapping[str, int] = field(default_factory=dict)
    models: Mapping[str, int] = field(default_factory=dict)
    admin_events: Mapping[str, int] = field(default_factory=dict)
    devices: frozenset[str] = frozenset()
    source_ips: frozenset[str] = frozenset()
    source_ips_overflow: bool = False
    first_seen_ms: int | None = None
    last_seen_ms: int | None = None

    @property
    def distinct_devices(self) -> int:
        return len(self.devices)

    @property
    def distinct_source_ips(self) -> int:
        """A lower bound when ``source_ips_overflow`` is set."""
        return len(self.source_ips)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values (sets as sorted lists, maps with sorted keys)."""
        return {
            "principal": self.principal,
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "requests": self.requests,
            "allowed": self.allowed,
            "denied": self.denied,
            "tokens_issued": self.tokens_issued,
            "tokens_denied": self.tokens_denied,
            "denials": dict(sorted(self.denials.items())),
            "models": dict(sorted(self.models.items())),
            "admin_events": dict(sorted(self.admin_events.items())),
            "distinct_devices": self.distinct_devices,
            "devices": sorted(self.devices),
            "distinct_source_ips": self.distinct_source_ips,
            "source_ips": sorted(self.source_ips),
            "source_ips_overflow": self.source_ips_overflow,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
        }


def merge(
    principal: str, since_ms: int, until_ms: int, buckets: Iterable[PrincipalSummary]
) -> PrincipalSummary:
    """The sum of ``buckets`` (non-overlapping periods) as one summary of the period."""
    total = PrincipalSummary(principal, since_ms, until_ms)
    for b in buckets:
        total = replace(
            total,
            requests=total.requests + b.requests,
            allowed=total.allowed + b.allowed,
            denied=total.denied + b.denied,
            tokens_issued=total.tokens_issued + b.tokens_issued,
            tokens_denied=total.tokens_denied + b.tokens_denied,
            denials=_add(total.denials, b.denials),
            models=_add(total.models, b.models),
            admin_events=_add(total.admin_events, b.admin_events),
            devices=total.devices | b.devices,
            source_ips=total.source_ips | b.source_ips,
            source_ips_overflow=total.source_ips_overflow or b.source_ips_overflow,
            first_seen_ms=_extreme(min, total.first_seen_ms, b.first_seen_ms),
            last_seen_ms=_extreme(max, total.last_seen_ms, b.last_seen_ms),
        )
    return total


def _add(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    total = dict(a)
    for key, count in b.items():
        total[key] = total.get(key, 0) + count
    return total


def _extreme(pick: Callable[[int, int], int], a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)
