"""Quotas: the edge's gate (leases spent locally, one conditional UpdateItem per lease,
or, when the policy folds it, the lease executed with the usage record as ONE
TransactWriteItems: :meth:`QuotaGate.admission` / :meth:`QuotaGate.record_claimed`), the
protected function's units report, and the admin use cases. Design and bounds:
:mod:`tokenbroker.domain.quotas`.

The gate holds one lock per execution environment while it leases: Lambda runs one
request at a time per environment, and the local stack's threads then see one lease at a
time (the lease, not the lock, is what keeps environments within the limit).
"""

from __future__ import annotations

import itertools
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from tokenbroker.domain.clock import Clock
from tokenbroker.domain.errors import InvalidRequest, TemporarilyUnavailable
from tokenbroker.domain.models import EventType, UsageRecord
from tokenbroker.domain.quotas import (
    ALL_MODELS,
    CONFIG_TTL_SECONDS,
    Admission,
    CounterState,
    FoldPolicy,
    Lease,
    LeaseAsk,
    LeaseClaim,
    LeaseSizer,
    LegacyRule,
    QuotaContended,
    QuotaExceeded,
    QuotaLimits,
    QuotaStore,
    ask,
    day_of,
    effective_quota,
    minute_of,
    parse_quota_reference,
    plan_after_refusal,
    quota_reference,
    shard_count,
    shard_counter_id,
    shard_limits,
)

#: conditional attempts per lease before failing closed (each refusal re-plans from the
#: item's old values, so more than two happen only under heavy contention at the limit)
MAX_ATTEMPTS = 4
_MAX_ENTRIES = 10_000
MAX_UNITS_PER_REPORT = 10**9
#: how long a request finding no lease unit waits for this environment's claim in flight
#: on the same counter before taking a claim of its own (a claim left unexecuted, e.g.
#: its response failed to build, blocks nobody longer than this)
CLAIM_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class _InFlight:
    """A claim handed out by :meth:`QuotaGate.admission` and not yet settled."""

    ticket: int
    thread: int
    deadline: float  # time.monotonic()


@dataclass
class _Counter:
    sizer: LeaseSizer = field(default_factory=LeaseSizer)
    lease: Lease | None = None
    blocked_until: float = 0.0
    retry_at: float = 0.0
    blocked_limit: str = ""


class QuotaGate:
    """Admits a request within its quotas or raises QuotaExceeded (a spent window) or
    TemporarilyUnavailable (the store failed: fail closed, never an unmetered Allow)."""

    def __init__(
        self,
        store: QuotaStore,
        *,
        defaults: QuotaLimits,
        clock: Clock,
        config_ttl: float = CONFIG_TTL_SECONDS,
        rng: random.Random | None = None,
        fold: FoldPolicy = FoldPolicy.SINGLE,
    ) -> None:
        """``fold``: which leases :meth:`admission` hands to the usage write as a claim
        (domain/quotas.py::FoldPolicy); :meth:`admit` always leases by itself."""
        self._fold = fold
        self._store = store
        self._defaults = defaults
        self._clock = clock
        self._config_ttl = config_ttl
        self._rules: dict[str, tuple[float, Mapping[str, QuotaLimits]]] = {}
        self._counters: dict[str, _Counter] = {}
        self._shard_of: dict[str, int] = {}
        self._rng = rng or random.Random()  # noqa: S311 - spreads load, not a secret
        self._lock = threading.Lock()
        #: per counter, the claim in flight (at most one per gate: :meth:`_await_claim`)
        self._in_flight: dict[str, _InFlight] = {}
        self._settled = threading.Condition(self._lock)
        self._tickets = itertools.count(1)
        #: AWS calls made (the benchmark prints round trips per allowed request)
        self.calls = 0

    @property
    def fold(self) -> FoldPolicy:
        """The policy :meth:`admission` folds leases by (bootstrap.py decides it)."""
        return self._fold

    def admission(self, client_id: str, principal: str, model: str, now: float) -> Admission:
        """:meth:`admit`, except that a lease the fold policy folds is not taken here:
        it comes back as ``claim``, for :meth:`record_claimed` to execute together with
        the request's usage record (one round trip). A window split over shards folds
        the lease of this environment's shard; if that shard turns out spent, the
        others are tried with separate leases (``record_claimed``'s ``plain``)."""
        if self._fold is FoldPolicy.NEVER:
            return Admission(self.admit(client_id, principal, model, now))
        with self._lock:
            quota = effective_quota(self._rules_of(client_id, now), self._defaults, model)
            if quota.limits.unlimited():
                return Admission("")
            counter_id = self._store.counter_id(client_id, principal, quota.model_key)
            day = day_of(now)
            shard_id, claim = self._admit_sharded(counter_id, quota.limits, day, now, fold=True)
            return Admission(quota_reference(day, shard_id), claim)

    def record_claimed(
        self,
        claim: LeaseClaim,
        record: UsageRecord,
        now: float,
        plain: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        """Write ``record`` and take ``claim``'s lease in ONE transaction (the store's
        ``lease_with_use``). The lease's condition refusing it re-plans from the counter's
        old values (QuotaExceeded when nothing is left: recorded by the edge as a denial,
        and remembered as :meth:`admit` remembers it), a conflict retries; both within
        MAX_ATTEMPTS, then fail closed. ProofReplayed (the record's id exists) and
        TemporarilyUnavailable propagate: nothing was written, no unit was spent.

        A claim on one shard of a split window whose shard is spent moves on as
        :meth:`admit` does: the other shards with separate leases, then ``plain(record)``
        (the usage write alone; without ``plain`` the QuotaExceeded propagates)."""
        try:
            self._record_claimed(claim, record, now)
        except QuotaExceeded:
            if not claim.window or plain is None:
                raise
            with self._lock:  # this shard is spent; the others, as admit tries them
                assert claim.window_limits is not None
                self._admit_sharded(claim.window, claim.window_limits, claim.day, now)
            plain(record)

    def _record_claimed(self, claim: LeaseClaim, record: UsageRecord, now: float) -> None:
        try:
            self._execute_claim(claim, record, now)
        finally:
            with self._lock:  # settled (granted, refused or failed): waiters re-check
                held = self._in_flight.get(claim.counter_id)
                if held is not None and held.ticket == claim.ticket:
                    del self._in_flight[claim.counter_id]
                self._settled.notify_all()

    def _await_claim(self, counter_id: str) -> bool:
        """Called with the lock held by a request that found no lease unit: while this
        gate has a claim in flight on the counter, wait for it to settle (True: re-check
        the lease it may have installed). Two claims of one environment in flight at once
        lost units (issue 12, FoldPolicy.ALWAYS under 16 threads: 49 of 50 allowed): one
        claim's refusal cleared the lease the other's grant had just installed, or blocked
        the counter before that grant's leftover units arrived. Lambda serves one request
        at a time, so a claim there is never waited for (its own thread's claim is stale:
        it was left unexecuted); the local stack's threads wait at most
        CLAIM_WAIT_SECONDS, then claim by themselves (never an overshoot: the counter's
        condition still holds every lease)."""
        held = self._in_flight.get(counter_id)
        if held is None or held.thread == threading.get_ident():
            return False
        left = held.deadline - time.monotonic()
        if left <= 0:
            return False
        self._settled.wait(left)
        return True

    def _execute_claim(self, claim: LeaseClaim, record: UsageRecord, now: float) -> None:
        attempt = claim.ask
        for i in range(MAX_ATTEMPTS):
            with self._lock:
                self.calls += 1
            try:
                granted, counter = self._store.lease_with_use(
                    record, claim.counter_id, claim.day, attempt, i
                )
            except QuotaContended:
                continue  # cancelled, nothing written: the next attempt may pass
            with self._lock:
                state = self._counters.setdefault(claim.counter_id, _Counter())
                if granted:
                    self._install(state, claim.day, attempt, now)
                    return
                attempt = self._replan(
                    state, claim.limits, claim.day, claim.minute, claim.wanted, counter, now
                )
        raise QuotaContended()

    def admit(self, client_id: str, principal: str, model: str, now: float) -> str:
        with self._lock:
            quota = effective_quota(self._rules_of(client_id, now), self._defaults, model)
            if quota.limits.unlimited():
                return ""
            counter_id = self._store.counter_id(client_id, principal, quota.model_key)
            day = day_of(now)
            shard_id, _ = self._admit_sharded(counter_id, quota.limits, day, now)
            return quota_reference(day, shard_id)

    def _admit_sharded(
        self, counter_id: str, limits: QuotaLimits, day: int, now: float, *, fold: bool = False
    ) -> tuple[str, LeaseClaim | None]:
        """A hot principal's window is split over ``shard_count`` items, each with its
        part of every limit (the parts sum to the limit: no overshoot). This environment
        stays on one shard (picked at random) and moves on only when that one is spent;
        the request is denied only when every shard is. Returns the shard's item id and,
        with ``fold``, the claim of its lease (None: no lease to take, or taken here)."""
        shards = shard_count(limits)
        if shards == 1:
            return counter_id, self._admit(counter_id, limits, day, now, fold=fold)
        if len(self._shard_of) >= _MAX_ENTRIES:
            self._shard_of.clear()
        first = self._shard_of.setdefault(counter_id, self._rng.randrange(shards))
        exceeded: QuotaExceeded | None = None
        for i in range(shards):
            shard = (first + i) % shards
            shard_id = shard_counter_id(counter_id, shard, shards)
            try:
                claim = self._admit(
                    shard_id, shard_limits(limits, shard, shards), day, now, fold=fold
                )
            except QuotaExceeded as spent:
                exceeded = exceeded or spent
                continue
            self._shard_of[counter_id] = shard
            if claim is not None:
                claim = replace(claim, window=counter_id, window_limits=limits)
            return shard_id, claim
        assert exceeded is not None
        raise exceeded

    def release(self, reference: str, now: float) -> None:
        if not reference:
            return
        try:
            day, counter_id = parse_quota_reference(reference)
        except ValueError:
            return
        with self._lock:
            state = self._counters.get(counter_id)
            lease = state.lease if state is not None else None
            # the unit came from this lease (admit spent it; Lambda serves one request at
            # a time): back into it while its day and minute last, else it is under-used
            if (
                state is not None
                and lease is not None
                and lease.day == day == day_of(now)
                and minute_of(now) <= lease.minute
            ):
                state.lease = lease.give_back()

    def rules_read(self, client_id: str, rules: Mapping[str, QuotaLimits]) -> None:
        """The client's rules as the edge's liveness read just brought them (the rules
        item rides in its BatchGetItem: adapters/quotas.py::RulesRider). With
        ``config_ttl`` = the liveness bound they live exactly as long as that view, so
        a request whose liveness was just read or served from cache finds them here and
        costs no rules read of its own."""
        if len(self._rules) >= _MAX_ENTRIES and client_id not in self._rules:
            self._rules.clear()
        self._rules[client_id] = (self._clock(), rules)

    def _rules_of(self, client_id: str, now: float) -> Mapping[str, QuotaLimits]:
        cached = self._rules.get(client_id)
        # abs: the liveness read that delivered them ran after the request's ``now``
        if cached is not None and abs(now - cached[0]) < self._config_ttl:
            return cached[1]
        self.calls += 1
        rules = self._store.rules(client_id)  # a failure propagates: fail closed
        if len(self._rules) >= _MAX_ENTRIES:
            self._rules.clear()
        self._rules[client_id] = (now, rules)
        return rules

    def _admit(
        self, counter_id: str, limits: QuotaLimits, day: int, now: float, *, fold: bool = False
    ) -> LeaseClaim | None:
        """Spend a unit of this environment's lease, or lease anew (an UpdateItem), or,
        with ``fold`` and a policy that folds this lease's size, return the lease as a
        claim for the usage write to take (nothing sent here)."""
        if len(self._counters) >= _MAX_ENTRIES and counter_id not in self._counters:
            self._counters.clear()  # bounded memory: forgetting a lease only under-uses
        while True:
            state = self._counters.setdefault(counter_id, _Counter())
            if now < state.blocked_until:
                raise QuotaExceeded(state.blocked_limit, math.ceil(state.retry_at - now))
            if state.lease is not None and state.lease.day == day and state.lease.usable(now):
                state.lease = state.lease.spend()
                return None
            if not self._await_claim(counter_id):
                break
        minute = minute_of(now)
        size = state.sizer.next_size(limits, now)
        attempt = ask(limits, minute, size)
        if fold and self._fold.folds(attempt.size):
            if len(self._in_flight) >= _MAX_ENTRIES:
                self._in_flight.clear()  # only claims left unexecuted pile up
            ticket = next(self._tickets)
            self._in_flight[counter_id] = _InFlight(
                ticket, threading.get_ident(), time.monotonic() + CLAIM_WAIT_SECONDS
            )
            return LeaseClaim(counter_id, day, attempt, limits, minute, size, ticket=ticket)
        for _ in range(MAX_ATTEMPTS):
            self.calls += 1
            granted, counter = self._store.lease(counter_id, day, attempt)
            if granted:
                self._install(state, day, attempt, now)
                return None
            attempt = self._replan(state, limits, day, minute, size, counter, now)
        raise TemporarilyUnavailable("the quota counter is contended", reason="quota_contention")

    @staticmethod
    def _install(state: _Counter, day: int, granted: LeaseAsk, now: float) -> None:
        """A granted lease of ``granted.size``: one unit is this request's, the rest is
        kept. Units still left of a lease for the same minute are kept too (two claims of
        one environment granted concurrently: neither one's units are lost)."""
        remaining = granted.size
        old = state.lease
        if old is not None and old.day == day and old.minute == granted.minute:
            remaining += max(0, old.remaining)
        state.lease = Lease(day=day, minute=granted.minute, remaining=remaining - 1)
        state.sizer.granted(now)

    def _replan(
        self,
        state: _Counter,
        limits: QuotaLimits,
        day: int,
        minute: int,
        size: int,
        counter: CounterState,
        now: float,
    ) -> LeaseAsk:
        """The next ask after a refusal, or QuotaExceeded (remembered: denied requests
        cost no AWS call until the window ends, or the rules are read again, so a raised
        limit applies within the TTL)."""
        try:
            return plan_after_refusal(limits, minute, size, counter, now)
        except QuotaExceeded as exceeded:
            if exceeded.limit == "requests_per_minute":
                window_end = (max(minute, counter.latest()) + 1) * 60.0
            else:
                window_end = (day + 1) * 86_400.0
            state.lease = None
            state.blocked_limit = exceeded.limit
            state.retry_at = window_end
            state.blocked_until = min(window_end, now + self._config_ttl)
            raise


def check_units(units: object) -> int:
    if isinstance(units, bool) or not isinstance(units, int):
        raise InvalidRequest("units must be an integer")
    if not 0 <= units <= MAX_UNITS_PER_REPORT:
        raise InvalidRequest(f"units must be within 0..{MAX_UNITS_PER_REPORT}")
    return units


#: the ledger event of a units report: ``units:<usage record id>`` (one per usage record)
UNITS_EVENT_PREFIX = "units:"
UNITS_ACTOR = "tokenbroker:report_usage"


class UnitsReporter:
    """The protected function's side: count model units against the grant's quota
    counter, once per usage record. Enforced on the next lease (domain/quotas.py).

    Each report is also a ledger event (``units_reported``, id ``units:<usage id>``,
    reason ``units:<n>``, resource the model) written in the same transaction as the
    counter, with a condition, so digests seal it, ``audit usage`` lists it and a retried
    report is neither counted nor recorded twice."""

    def __init__(self, store: QuotaStore, *, clock: Clock, retention_days: int = 400) -> None:
        self._store = store
        self._clock = clock
        self._retention_days = retention_days

    def report(self, context: Mapping[str, object], *, units: int, model: str = "") -> bool:
        """``context``: the authorizer context. False if this usage was reported before.
        A grant with no quota (no ``quota`` reference) records its units event alone."""
        check_units(units)
        usage_id = str(context.get("usage_id") or "")
        reference = str(context.get("quota") or "")
        if not usage_id:
            raise InvalidRequest("the authorizer context names no usage record")
        if reference:
            try:
                day, counter_id = parse_quota_reference(reference)
            except ValueError as exc:
                raise InvalidRequest("the authorizer context's quota reference is invalid") from exc
        now = self._clock()
        event = UsageRecord.build(
            at=now,
            retention_days=self._retention_days,
            record_id=UNITS_EVENT_PREFIX + usage_id,
            principal=str(context.get("principal") or ""),
            client_id=str(context.get("client_id") or ""),
            jkt=str(context.get("jkt") or ""),
            token_jti=str(context.get("token_jti") or ""),
            reason=f"units:{units}",
            event=EventType.UNITS_REPORTED,
            resource=model,
            actor=UNITS_ACTOR,
        )
        if not reference:
            # no quota applies to this grant: nothing to count against, but the units
            # are still recorded in the ledger against the usage record (issue 12)
            return self._store.record_units(event)
        return self._store.report_units(
            usage_id=usage_id,
            counter_id=counter_id,
            day=day,
            model=model,
            units=units,
            at=int(now),
            event=event,
        )


@dataclass(frozen=True)
class QuotaRule:
    client_id: str
    model: str
    limits: QuotaLimits

    def asdict(self) -> dict[str, object]:
        rpm, rpd, upd = self.limits.astuple()
        return {
            "client_id": self.client_id,
            "model": self.model,
            "requests_per_minute": rpm,
            "requests_per_day": rpd,
            "units_per_day": upd,
        }


_MODEL = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")


class QuotaAdmin:
    """``tokenbroker quotas set|list``: rules per client (model ``*`` = every route)."""

    def __init__(self, store: QuotaRuleStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def set(self, client_id: str, model: str, limits: QuotaLimits) -> QuotaRule:
        model = model or ALL_MODELS
        if model != ALL_MODELS and not _MODEL.fullmatch(model):
            raise InvalidRequest("--model must be 1-128 printable characters without spaces")
        if all(v is None for v in limits.astuple()):
            raise InvalidRequest(
                "give at least one of --requests-per-minute, --requests-per-day, --units-per-day"
            )
        try:
            limits.validate()
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        # the previous version's items of this client are folded in first, so what this
        # sets is never read beside an item an admin would not see changing
        self._store.migrate_client(client_id)
        stored = self._store.set_rule(client_id, model, limits, int(self._clock()))
        return QuotaRule(client_id, model, stored)

    def migrate(self, *, dry_run: bool = False) -> MigrationReport:
        """``tokenbroker quotas migrate``: fold every rule stored in the previous
        version's format (one item per model) into its client's rules item, delete it,
        then mark the table migrated so the edge reads the rules item alone (until then
        it reads both formats with a Query per client: adapters/quota_rules.py).
        Idempotent; safe to run twice at once; a failure leaves the unmigrated items in
        place (still enforced) and the marker unwritten: run it again."""
        found: list[LegacyRule] = []
        for client_id in self._store.legacy_clients():
            found += self._store.migrate_client(client_id, dry_run=dry_run)
        if dry_run:
            return MigrationReport(tuple(found), dry_run=True, marked=self._store.migrated())
        left = self._store.legacy_clients()
        if left:
            raise TemporarilyUnavailable(
                f"rules of the previous format appeared during the migration ({len(left)} "
                "clients; is the previous version's CLI still in use?): run it again"
            )
        self._store.mark_migrated(int(self._clock()))
        return MigrationReport(tuple(found), dry_run=False, marked=True)

    def list(self, client_id: str) -> list[QuotaRule]:
        rules = self._store.rules(client_id)
        return [QuotaRule(client_id, model, rules[model]) for model in sorted(rules)]


@dataclass(frozen=True)
class MigrationReport:
    rules: tuple[LegacyRule, ...]  # found (and, unless dry_run, migrated)
    dry_run: bool
    #: the table is marked migrated: the edge reads each client's rules item alone
    marked: bool

    def rows(self) -> list[dict[str, object]]:
        done = "would migrate" if self.dry_run else "migrated"
        return [
            {
                **QuotaRule(r.client_id, r.model, r.limits).asdict(),
                "result": done,
                "superseded": " ".join(r.superseded),
            }
            for r in self.rules
        ]


class QuotaRuleStore(Protocol):
    def rules(self, client_id: str) -> dict[str, QuotaLimits]: ...

    def set_rule(self, client_id: str, model: str, limits: QuotaLimits, at: int) -> QuotaLimits: ...

    def legacy_clients(self) -> list[str]: ...

    def migrate_client(self, client_id: str, *, dry_run: bool = False) -> list[LegacyRule]: ...

    def mark_migrated(self, at: int) -> None: ...

    def migrated(self) -> bool: ...
