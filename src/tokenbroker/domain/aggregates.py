"""Per-principal usage aggregates: the pure model (no AWS, no clock).

What one ledger record adds to its principal's UTC day and UTC hour
(:func:`contribution`), how a batch of them folds into ONE page per UTC hour and
principal shard holding every principal's delta (:func:`fold`), which hours cover a
time range (:func:`cover`), and the auditors' view of the sums
(:class:`PrincipalSummary`, :func:`merge`, :func:`add_to`). The store
(:mod:`tokenbroker.adapters.aggregates`) keeps each batch's page once, however often the
stream delivers the batch; readers sum the pages of the hours they need.

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
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tokenbroker.domain.errors import MalformedRecord
from tokenbroker.domain.ledger import hour_of
from tokenbroker.domain.models import Decision, EventType, UsageRecord
from tokenbroker.domain.units import DAY_MS, HOUR_MS

#: distinct source IPs kept per bucket; beyond it ``source_ips_overflow`` is set
MAX_SOURCE_IPS = 1000

_USE_EVENTS = frozenset({EventType.REQUEST, EventType.TOKEN_ISSUED})


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


# -------------------------------------------------------------------- batches and pages

#: principal shards of an hour's pages: one principal's reader reads 1/AGG_SHARDS of
#: them, and at 100,000 requests/s the page writes spread over as many partitions
AGG_SHARDS = 16
#: records of one principal folded into one delta at most: bounds a delta's size (its
#: device, address, model and reason strings) whatever the batch holds
DELTA_RECORDS = 200


def shard_of(principal: str) -> int:
    """The page shard a principal's deltas live in (stable: SHA-256 of the name)."""
    digest = hashlib.sha256(principal.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % AGG_SHARDS


@dataclass(frozen=True)
class Page:
    """What one stream batch adds to one UTC hour, for the principals of one shard.

    ``name`` is derived from the group's first record id in batch order, so a retried
    batch (the same records, or the same ones and later ones) names the same page and
    replaces it instead of adding a second one; ``writer`` is a hash of all the page's
    record ids (the same batch writes the same page: the store skips it).
    ``deltas`` are sorted by principal; a principal with more than DELTA_RECORDS records
    in the batch has several (they sum).
    """

    hour: str
    shard: int
    name: str
    writer: str
    deltas: tuple[PrincipalSummary, ...]
    #: the newest record's TTL (epoch seconds; 0: none): a page lives as long as it
    retain_until: int

    @property
    def day(self) -> str:
        return self.hour[:10]


def fold(contributions: Iterable[Contribution]) -> list[Page]:
    """One page per (UTC hour, principal shard) the batch touches, sorted by (hour,
    shard). A record id seen twice in the batch (a redelivery inside one batch) counts
    once."""
    unique = {c.record_id: c for c in contributions}  # keeps the first position
    groups: dict[tuple[str, int], list[Contribution]] = {}
    for c in unique.values():
        groups.setdefault((c.hour, shard_of(c.principal)), []).append(c)
    pages = []
    for (hour, shard), members in sorted(groups.items()):
        by_principal: dict[str, list[Contribution]] = {}
        for c in members:
            by_principal.setdefault(c.principal, []).append(c)
        deltas = []
        for principal, own in sorted(by_principal.items()):
            own.sort(key=lambda c: (c.at_ms, c.record_id))
            for start in range(0, len(own), DELTA_RECORDS):
                delta = summarize(principal, own[start : start + DELTA_RECORDS])
                deltas.append(add_to(PrincipalSummary(principal, 0, 0), delta))  # IP cap
        ids = "\n".join(sorted(c.record_id for c in members))
        pages.append(
            Page(
                hour=hour,
                shard=shard,
                name=hashlib.sha256(members[0].record_id.encode()).hexdigest()[:16],
                writer=hashlib.sha256(ids.encode()).hexdigest()[:16],
                deltas=tuple(deltas),
                retain_until=max(c.retain_until for c in members),
            )
        )
    return pages


def summarize(principal: str, contributions: Iterable[Contribution]) -> PrincipalSummary:
    """The sum of contributions as a summary (``since_ms``/``until_ms`` left 0)."""
    counters = {name: 0 for name in ("requests", "allowed", "denied")}
    counters.update(tokens_issued=0, tokens_denied=0)
    denials: dict[str, int] = {}
    models: dict[str, int] = {}
    events: dict[str, int] = {}
    devices: set[str] = set()
    ips: set[str] = set()
    first: int | None = None
    last: int | None = None
    for c in contributions:
        for name in counters:
            counters[name] += getattr(c, name)
        for mapping, key in ((denials, c.denial_reason), (models, c.model)):
            if key:
                mapping[key] = mapping.get(key, 0) + 1
        if c.admin_event:
            events[c.admin_event] = events.get(c.admin_event, 0) + 1
        if c.device:
            devices.add(c.device)
        if c.source_ip:
            ips.add(c.source_ip)
        first = c.at_ms if first is None else min(first, c.at_ms)
        last = c.at_ms if last is None else max(last, c.at_ms)
    return PrincipalSummary(
        principal,
        0,
        0,
        requests=counters["requests"],
        allowed=counters["allowed"],
        denied=counters["denied"],
        tokens_issued=counters["tokens_issued"],
        tokens_denied=counters["tokens_denied"],
        denials=denials,
        models=models,
        admin_events=events,
        devices=frozenset(devices),
        source_ips=frozenset(ips),
        first_seen_ms=first,
        last_seen_ms=last,
    )


def add_to(bucket: PrincipalSummary, delta: PrincipalSummary) -> PrincipalSummary:
    """``bucket`` with ``delta`` added, keeping at most MAX_SOURCE_IPS source IPs (the
    ones it has, then new ones in sorted order; ``source_ips_overflow`` says more came)."""
    total = merge(bucket.principal, bucket.since_ms, bucket.until_ms, (bucket, delta))
    if len(total.source_ips) <= MAX_SOURCE_IPS:
        return total
    room = MAX_SOURCE_IPS - len(bucket.source_ips)
    new = sorted(delta.source_ips - bucket.source_ips)[: max(0, room)]
    return replace(total, source_ips=bucket.source_ips | frozenset(new), source_ips_overflow=True)
