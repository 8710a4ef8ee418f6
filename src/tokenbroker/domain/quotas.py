"""Quotas per principal, per client and per model: the pure arithmetic (no AWS, no clock).

What is limited. A client declares limits (admin CLI), for all its routes (model ``*``)
and optionally per model; unset fields fall back to the client's ``*`` rule, then to the
template defaults (0 = unlimited). Each limit applies to each principal of the client:
the counter is keyed by (client, principal, model key, UTC day), never by device or
secret, so rotating either keeps the windows. The model key is the model when the client
declared a rule for that model, else ``*`` (every route of the client shares it).

Design (against the 1,000 writes/s per-partition limit and the one-round-trip budget).
A counter item per (client, principal, model key, day) holds ``d`` (requests leased
today), one attribute per recent minute (requests leased in it; each lease removes the
one of two minutes before, so the item stays under 1 KB) and ``u`` (model units reported
today). An execution environment does not write per request: it takes a **lease** of
``n`` requests with ONE conditional UpdateItem whose condition is the limit itself
(``m<now> <= rpm - n AND d <= rpd - n AND u < upd``), then spends the lease
locally, request by request, under a lock. When the condition fails, the item's old values
(``ReturnValuesOnConditionCheckFailure``) say how much is left, and the environment asks
again for exactly that (:func:`plan_after_refusal`), or learns the window is spent and
remembers it until the window ends (no AWS call per denied request).

Lease size is adaptive (:class:`LeaseSizer`): it starts at 1, doubles while a lease is
spent within T = ``LEASE_TARGET_SECONDS`` (2 s) and halves when it lasts over 2T, capped
at ``MAX_LEASE`` (256) and at ``limit // UNDERUSE_DIVISOR`` of the smallest request limit
(floor 1). So an environment serving a principal at r req/s holds leases of about 2r..4r
and writes that principal's counter at most 1/T = 0.5 times a second, whatever r is: the
counter item takes <= min(rate / n, E / T) writes/s for E environments serving it, i.e.
<= 500 writes/s up to 1,000 concurrent environments, and rate / 256 beyond that (a single
principal at 100,000 req/s: ~390 writes/s). benchmarks/quotas.py measures it with Zipf
principals at 100,000 req/s. The lease is what spreads writes over time, so a window
stays one exact count, except for a principal whose request limits exceed what one
partition takes (> 60,000/min): its window is split over up to MAX_SHARDS counter items
(:func:`shard_count`), each holding its share of every limit (the shares sum to the
limit exactly, so the shards together cannot overshoot it; traffic uneven across shards
means more under-use). An environment keeps one shard and moves on when it is spent; a
request is denied only when every shard is. A window with a units limit is never split.

Bounds (proved in tests/quotas):
- **No overshoot** of requests per minute or per day: an allowed request spends one unit
  of a lease, and a lease is granted only by a condition that keeps the leased sum within
  the limit. Allowed requests in a window <= the limit, exactly, across every environment.
- **Under-use**: units leased but not spent before the window ends are lost: at most
  ``n - 1`` per other environment holding a lease, so with E environments a window with a
  denial allowed >= limit - (E - 1) * (n - 1), n <= max(1, limit // UNDERUSE_DIVISOR); and
  since n is about 2..4 s of each environment's own traffic, at most ~4 s of the
  principal's traffic (7% of a saturated minute). One environment (the local stack)
  under-uses nothing: 64 requests against 50/min -> exactly 50 allowed.
  A lease spent on a request whose usage write then fails is lost too (fails closed).
- **Units per day** are reported after the call, so they are enforced on the next lease:
  a principal may run over ``upd`` by the units of the requests already allowed (in flight
  and the rest of each environment's lease, <= n - 1 requests per environment).
- Round trips per allowed request: 1 (the usage write) + 1/n (the lease), or exactly 1
  when the lease rides in the usage write (:class:`FoldPolicy`: ONE TransactWriteItems of
  the usage Put and the counter Update, both conditions, all or nothing; the template's
  QuotaLeaseFold chooses, default every lease). The client's
  rules are one item read inside the edge's liveness BatchGetItem (adapters/quotas.py::
  RulesRider), cached as long as that view: no round trip of their own. A hot
  principal: ~1.005 (benchmarks/quotas.py). The Zipf tail is not amortised: a principal
  an environment sees less than every 2 s costs it a lease per request (fleet-wide
  1.526 at 100,000 req/s over 1,000 environments and 2,000 principals; the benchmark's
  docstring says why the design stays strict rather than admit the tail unsynced). With
  leases of one folded into the usage write (``FoldPolicy.SINGLE``): 1.143, at 4 write
  units instead of 2 for each folded request; every lease folded: 1.000 (benchmarks/
  quotas.py prints round trips, write units and dollars for each).
- A folded lease keeps every bound above: its Update carries the lease's condition, and
  a cancelled transaction writes neither the record nor the lease (a replay spends no
  unit, and none is given back); tests/quotas/test_folded_lease.py runs the concurrency
  cases on the new path (overshoot 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from tokenbroker.domain.errors import OAuthError, TemporarilyUnavailable
from tokenbroker.domain.models import UsageRecord

ALL_MODELS = "*"
MAX_LEASE = 256
UNDERUSE_DIVISOR = 10
LEASE_TARGET_SECONDS = 2.0
CONFIG_TTL_SECONDS = 30
MAX_LIMIT = 10**12
#: a limit of 0 means "no limit" (template defaults use it)
UNLIMITED = 0


class QuotaExceeded(OAuthError):
    """A request quota or the day's model units are spent (answered 429 + Retry-After).
    ``reason``: ``quota_exceeded:<requests_per_minute|requests_per_day|units_per_day>``."""

    error = "quota_exceeded"

    def __init__(self, limit: str, retry_after: int) -> None:
        super().__init__(
            f"the {limit.replace('_', ' ')} quota is spent", reason=f"quota_exceeded:{limit}"
        )
        self.limit = limit
        self.retry_after = max(1, int(retry_after))


@dataclass(frozen=True)
class QuotaLimits:
    """None = not set here (inherit); 0 = unlimited."""

    requests_per_minute: int | None = None
    requests_per_day: int | None = None
    units_per_day: int | None = None

    def over(self, base: QuotaLimits) -> QuotaLimits:
        """These limits, with unset fields taken from ``base``."""
        return QuotaLimits(
            *(
                mine if mine is not None else theirs
                for mine, theirs in zip(self.astuple(), base.astuple(), strict=True)
            )
        )

    def astuple(self) -> tuple[int | None, int | None, int | None]:
        return (self.requests_per_minute, self.requests_per_day, self.units_per_day)

    def unlimited(self) -> bool:
        return all(not v for v in self.astuple())

    def validate(self) -> QuotaLimits:
        for name, value in zip(
            ("requests_per_minute", "requests_per_day", "units_per_day"),
            self.astuple(),
            strict=True,
        ):
            if value is not None and not 0 <= value <= MAX_LIMIT:
                raise ValueError(f"{name} must be within 0..{MAX_LIMIT}")
        return self


@dataclass(frozen=True)
class EffectiveQuota:
    model_key: str  # "*" or the model with its own rule
    limits: QuotaLimits  # fully resolved (no None)


def effective_quota(
    rules: Mapping[str, QuotaLimits], defaults: QuotaLimits, model: str
) -> EffectiveQuota:
    """The limits a request to ``model`` ("" = not a model route) is counted under."""
    base = rules.get(ALL_MODELS, QuotaLimits()).over(defaults).over(QuotaLimits(0, 0, 0))
    if model and model in rules:
        return EffectiveQuota(model, rules[model].over(base))
    return EffectiveQuota(ALL_MODELS, base)


def minute_of(now: float) -> int:
    return int(now // 60)


def day_of(now: float) -> int:
    return int(now // 86_400)


def seconds_to_next_minute(now: float) -> int:
    return max(1, math.ceil((minute_of(now) + 1) * 60 - now))


def seconds_to_next_day(now: float) -> int:
    return max(1, math.ceil((day_of(now) + 1) * 86_400 - now))


@dataclass(frozen=True)
class CounterState:
    """What a counter item held: requests leased per minute (epoch minute -> count; the
    item keeps the last two minutes it saw), today's requests and units."""

    minutes: Mapping[int, int] = field(default_factory=dict)
    day_count: int = 0
    units: int = 0

    def count(self, minute: int) -> int:
        return self.minutes.get(minute, 0)

    def latest(self) -> int:
        return max(self.minutes, default=-1)


@dataclass(frozen=True)
class LeaseAsk:
    """One conditional UpdateItem: lease ``size`` requests in ``minute``. ``max_*``: the
    highest old count that still fits (None = no limit). The update ADDs to the minute's
    own attribute and REMOVEs the one of ``minute - 2``; the condition refuses when the
    item already holds ``minute + 1`` or ``minute + 2`` (another environment's clock is
    ahead: a lease for a minute that may have been removed would count it from zero)."""

    minute: int
    size: int
    max_minute_count: int | None
    max_day_count: int | None
    max_units: int | None  # old units must be <= this


def ask(limits: QuotaLimits, minute: int, size: int) -> LeaseAsk:
    rpm, rpd, upd = limits.astuple()
    size = max(1, min([size] + [limit for limit in (rpm, rpd) if limit]))
    return LeaseAsk(
        minute=minute,
        size=size,
        max_minute_count=rpm - size if rpm else None,
        max_day_count=rpd - size if rpd else None,
        max_units=upd - 1 if upd else None,
    )


def fits(a: LeaseAsk, old: CounterState) -> bool:
    """The condition the store evaluates (the in-memory fake and the tests use it)."""
    if a.minute + 1 in old.minutes or a.minute + 2 in old.minutes:
        return False
    return (
        (a.max_minute_count is None or old.count(a.minute) <= a.max_minute_count)
        and (a.max_day_count is None or old.day_count <= a.max_day_count)
        and (a.max_units is None or old.units <= a.max_units)
    )


def apply(a: LeaseAsk, old: CounterState) -> CounterState:
    """The counter after a lease that fits."""
    minutes = {m: c for m, c in old.minutes.items() if m != a.minute - 2}
    minutes[a.minute] = old.count(a.minute) + a.size
    return CounterState(minutes=minutes, day_count=old.day_count + a.size, units=old.units)


def plan_after_refusal(
    limits: QuotaLimits, minute: int, wanted: int, old: CounterState, now: float
) -> LeaseAsk:
    """The next ask after a refused one, from the item's old values; raises QuotaExceeded
    when nothing is left. A minute ahead of ours (another environment's clock) is taken as
    the current one: its budget is counted, never ours reset (no overshoot)."""
    rpm, rpd, upd = limits.astuple()
    if upd and old.units >= upd:
        raise QuotaExceeded("units_per_day", seconds_to_next_day(now))
    if rpd and old.day_count >= rpd:
        raise QuotaExceeded("requests_per_day", seconds_to_next_day(now))
    current = max(minute, old.latest())
    used = old.count(current)
    if rpm and used >= rpm:
        raise QuotaExceeded(
            "requests_per_minute", seconds_to_next_minute(now) + (current - minute) * 60
        )
    left = [wanted]
    if rpm:
        left.append(rpm - used)
    if rpd:
        left.append(rpd - old.day_count)
    return ask(limits, current, max(1, min(left)))


@dataclass
class LeaseSizer:
    """Adaptive lease size for one counter in one environment."""

    size: int = 1
    granted_at: float = 0.0

    def next_size(self, limits: QuotaLimits, now: float) -> int:
        if self.granted_at and now - self.granted_at < LEASE_TARGET_SECONDS:
            self.size *= 2
        elif self.granted_at and now - self.granted_at > 2 * LEASE_TARGET_SECONDS:
            self.size = max(1, self.size // 2)
        self.size = max(1, min(self.size, lease_cap(limits)))
        return self.size

    def granted(self, now: float) -> None:
        self.granted_at = now


#: counter shards of one principal at most (hot principals only: :func:`shard_count`)
MAX_SHARDS = 16
#: a shard is kept for each this many requests per minute of the smallest request limit:
#: a principal limited to <= 60,000/min (1,000 req/s) is never allowed more than the
#: partition takes, so it keeps one exact counter item
SHARD_REQUESTS_PER_MINUTE = 60_000


def shard_count(limits: QuotaLimits) -> int:
    """Counter items of one (client, principal, model key, day). 1 unless the request
    limits let the principal run above one partition's 1,000 writes/s at cold start
    (every environment's first leases are small). Derived from the limits only, so every
    environment splits a window the same way."""
    rpm, rpd, upd = limits.astuple()
    bounds = [MAX_SHARDS]
    if upd:
        # model units are reported after the call, many at once: split over shards, one
        # shard's report would not stop the others admitting (an overshoot of a report per
        # shard), so a window with a units limit keeps one exact counter
        return 1
    if rpm:
        bounds.append(rpm // SHARD_REQUESTS_PER_MINUTE)
    if rpd:
        bounds.append(rpd // (SHARD_REQUESTS_PER_MINUTE * 1440))
    return max(1, min(bounds))


def shard_limits(limits: QuotaLimits, shard: int, shards: int) -> QuotaLimits:
    """Shard ``shard``'s part of each limit; the parts sum to the limit exactly (so the
    shards together cannot overshoot it), 0 (unlimited) stays 0."""

    def part(limit: int | None) -> int | None:
        if not limit:
            return limit
        return limit // shards + (1 if shard < limit % shards else 0)

    return QuotaLimits(*(part(v) for v in limits.astuple()))


def shard_counter_id(counter_id: str, shard: int, shards: int) -> str:
    """Shard 0 of an unsharded window is the counter item itself."""
    return counter_id if shards == 1 else f"{counter_id}#{shard}"


def lease_cap(limits: QuotaLimits) -> int:
    caps = [MAX_LEASE]
    rpm, rpd, _ = limits.astuple()
    caps += [max(1, limit // UNDERUSE_DIVISOR) for limit in (rpm, rpd) if limit]
    return min(caps)


@dataclass(frozen=True)
class Lease:
    """Requests an environment may still allow in ``minute`` of ``day`` (its clock may
    be behind the item's: a lease for a later minute is spent early, never twice)."""

    day: int
    minute: int
    remaining: int

    def usable(self, now: float) -> bool:
        return self.remaining > 0 and day_of(now) == self.day and minute_of(now) <= self.minute

    def spend(self) -> Lease:
        return replace(self, remaining=self.remaining - 1)

    def give_back(self) -> Lease:
        return replace(self, remaining=self.remaining + 1)


class FoldPolicy(StrEnum):
    """When a lease rides in the usage write's round trip (ONE TransactWriteItems: the
    usage Put with its replay condition + the counter Update with the lease's condition)
    instead of a conditional UpdateItem of its own before it.

    ``never``: every lease is its own UpdateItem (1 + 1/n round trips, 1 + 1/n write
    units per request). ``single``: a lease of ONE request is folded (it would cost a
    round trip per request; folded: 1 round trip, 4 write units, as a transaction costs 2
    per item), a larger lease stays an UpdateItem (amortised over n requests, and a hot
    counter written by many environments is not exposed to transaction conflicts).
    ``always``: every lease is folded (1 round trip per request, 1 + 3/n write units).
    benchmarks/quotas.py prints all three; template parameter QuotaLeaseFold chooses
    (QUOTA_LEASE_FOLD, default ``always``)."""

    NEVER = "never"
    SINGLE = "single"
    ALWAYS = "always"

    def folds(self, size: int) -> bool:
        return self is FoldPolicy.ALWAYS or (self is FoldPolicy.SINGLE and size == 1)


@dataclass(frozen=True)
class LeaseClaim:
    """A lease the gate did not take itself: it is executed together with the request's
    usage record (``QuotaGate.record_claimed``), so admission and record are one round
    trip. ``wanted``: the lease size the gate would have asked for (re-plans start from
    it); ``minute``: the clock minute the ask was planned in."""

    counter_id: str
    day: int
    ask: LeaseAsk
    limits: QuotaLimits
    minute: int
    wanted: int
    #: a shard's claim: the whole window's counter id and limits ("" = not split)
    window: str = ""
    window_limits: QuotaLimits | None = None
    #: the gate's mark of this claim while it is in flight (0 = none)
    ticket: int = 0


@dataclass(frozen=True)
class Admission:
    """What the gate decided for one request: ``reference`` as ``admit`` returns it ("" =
    no limit applies) and, when no local lease unit was left and the policy folds, the
    ``claim`` to execute with the usage write (None: a lease unit was spent locally, the
    usage write is the plain PutItem)."""

    reference: str
    claim: LeaseClaim | None = None


class QuotaStore(Protocol):
    """Port: the quota table (adapters/quotas.py; an in-memory fake in tests/quotas)."""

    def counter_id(self, client_id: str, principal: str, model_key: str) -> str: ...

    def rules(self, client_id: str) -> dict[str, QuotaLimits]: ...

    def lease(self, counter_id: str, day: int, a: LeaseAsk) -> tuple[bool, CounterState]: ...

    def lease_with_use(
        self, record: UsageRecord, counter_id: str, day: int, a: LeaseAsk, attempt: int
    ) -> tuple[bool, CounterState]:
        """ONE transaction: the usage ``record`` (new id only) and the lease ``a``.
        (True, state) when both were written (state may be empty: the adapter does not
        read the counter back); (False, the counter's old values) when the lease's
        condition refused it and nothing was written. Raises ProofReplayed when the
        record's id exists (another request's record: nothing written),
        TemporarilyUnavailable on any other failure, :class:`QuotaContended` on a
        transaction conflict (nothing written; may be retried). ``attempt`` (0, 1, ...)
        tells the idempotency token of each re-planned attempt apart."""
        ...

    def report_units(
        self,
        *,
        usage_id: str,
        counter_id: str,
        day: int,
        model: str,
        units: int,
        at: int,
        event: UsageRecord | None = None,
    ) -> bool:
        """Count ``units`` once per usage record, with ``event`` (the report's ledger
        record) written in the same transaction; False if reported before."""
        ...

    def record_units(self, event: UsageRecord) -> bool:
        """The units event of a grant no quota applies to (nothing to count against):
        written once per usage record; False if reported before."""
        ...


class QuotaContended(TemporarilyUnavailable):
    """A transaction on the counter met another one on the same item (DynamoDB cancels
    one): nothing was written; the gate retries within its bounded attempts, then fails
    closed with this error."""

    def __init__(self, description: str = "the quota counter is contended") -> None:
        super().__init__(description, reason="quota_contention")


class QuotaCheck(Protocol):
    """What the edge calls (services/quotas.py::QuotaGate): admit one request or raise
    QuotaExceeded / TemporarilyUnavailable. Returns the grant's quota reference
    ("" when no limit applies), which the protected function reports units against."""

    def admit(self, client_id: str, principal: str, model: str, now: float) -> str: ...

    def admission(self, client_id: str, principal: str, model: str, now: float) -> Admission:
        """``admit``, or a lease left for the usage write to take (``Admission.claim``)."""
        ...

    def record_claimed(
        self,
        claim: LeaseClaim,
        record: UsageRecord,
        now: float,
        plain: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        """Write the usage ``record`` and take ``claim``'s lease in one round trip, or
        raise (QuotaExceeded, ProofReplayed, TemporarilyUnavailable: nothing written).
        ``plain``: the usage write alone, for a split window whose shard was spent."""
        ...

    def release(self, reference: str, now: float) -> None:
        """Give back the unit ``admit`` spent for a request that was then refused without
        a record (a replayed proof: its usage write's condition failed, nothing was
        written). Back into this environment's lease, never into the counter item: a
        unit that cannot go back (the lease's minute is over) is under-used, never
        counted twice."""
        ...


def quota_reference(day: int, counter_id: str) -> str:
    return f"{day}/{counter_id}"


def parse_quota_reference(reference: str) -> tuple[int, str]:
    day, _, counter_id = reference.partition("/")
    if not day.isdigit() or not counter_id:
        raise ValueError("not a quota reference")
    return int(day), counter_id


@dataclass(frozen=True)
class LegacyRule:
    """A rule stored in the previous version's format (one item per model), and what
    migrating it does (adapters/quota_rules.py): its limits are folded into the client's
    rules item, except those the item already sets (``superseded``: they win)."""

    client_id: str
    model: str
    limits: QuotaLimits
    superseded: tuple[str, ...] = ()
